"""Argument checks shared by the public API; each error names the argument, the expectation and the value."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf


def invalid(name: str, expected: str, value) -> ValueError:
    """A ValueError in Keras' style: names the argument, says what was expected, echoes the value."""
    return ValueError(f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}")


def _real(name: str, value, expected: str) -> float:
    """``value`` as a float when it is a finite real number (not a bool), else the ValueError naming it."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise invalid(name, expected, value)
    return float(value)


def check_in_range(name: str, value, low: float, high: float, *, open_low: bool = False) -> float:
    """A finite real number in [low, high] (in (low, high] with ``open_low``), as a float."""
    expected = f"a number in {'(' if open_low else '['}{low:g}, {high:g}]"
    value = _real(name, value, expected)
    if value > high or value < low or (open_low and value == low):
        raise invalid(name, expected, value)
    return value


def check_in_unit_interval(name: str, value, *, open_low: bool = False) -> float:
    """A probability, fraction or L-inf budget in pixel units: a number in [0, 1] (or (0, 1])."""
    return check_in_range(name, value, 0.0, 1.0, open_low=open_low)


def check_nonnegative(name: str, value) -> float:
    """A finite real number >= 0 (a loss weight, an L2 budget), as a float."""
    value = _real(name, value, "a finite number >= 0")
    if value < 0:
        raise invalid(name, "a finite number >= 0", value)
    return value


def check_positive(name: str, value) -> float:
    """A finite real number > 0 (a learning rate, a step size, a variance), as a float."""
    value = _real(name, value, "a finite number > 0")
    if value <= 0:
        raise invalid(name, "a finite number > 0", value)
    return value


def check_int_at_least(name: str, value, minimum: int) -> int:
    """An integer >= ``minimum`` (not a bool), e.g. a batch size of at least 2 for in-batch negatives."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise invalid(name, f"an integer >= {minimum}", value)
    return int(value)


def check_positive_int(name: str, value) -> int:
    """An integer >= 1 (not a bool): a count, a number of steps or epochs."""
    return check_int_at_least(name, value, 1)


def check_nonnegative_int(name: str, value) -> int:
    """An integer >= 0 (not a bool): a count that may be zero, e.g. a number of warm-up steps."""
    return check_int_at_least(name, value, 0)


def check_choice(name: str, value, choices):
    """``value`` when it is one of ``choices`` (a sequence), else the ValueError listing them."""
    if isinstance(value, (list, dict, set)) or value not in tuple(choices):
        raise invalid(name, f"one of {tuple(choices)}", value)
    return value


def check_layer_names(name: str, layers, *, allow_none: bool = False):
    """A non-empty list of layer names (a single name is wrapped in a list); None passes when ``allow_none``.

    Only the form is checked here; ``_model.resolve_layers`` also checks the names against a model."""
    if layers is None and allow_none:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers):
        raise invalid(name, f"{'None or ' if allow_none else ''}a non-empty list of layer names, e.g. ['conv1']",
                      layers)
    return list(layers)


def check_seed(name: str, value, allow_none: bool = True):
    """An integer seed (not a bool), or None where ``allow_none``; returned as int or None."""
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, numbers.Integral):
        raise invalid(name, "an integer or None" if allow_none else "an integer", value)
    return int(value)


def check_bool(name: str, value) -> bool:
    if not isinstance(value, (bool, np.bool_)):
        raise invalid(name, "True or False", value)
    return bool(value)


def check_norm(value):
    if value in (np.inf, "inf", "linf", "Linf"):
        return np.inf
    if value in (2, "2", "l2", "L2"):
        return 2
    raise invalid("norm", "np.inf or 2", value)


def check_images(name: str, x, *, allow_tensor=True):
    """A batch of images (N, ...): numeric, finite, pixel values in [0, 1]; returned unchanged.

    A symbolic tensor (inside a graph) passes unchecked; an eager tensor is checked like an array. The
    range check is the one ``fit`` applies, so an attack given 0-255 images fails as ``fit`` does."""
    if allow_tensor and isinstance(x, (tf.Tensor, tf.Variable)) and not tf.executing_eagerly():
        return x  # symbolic: checked by the graph's own shape logic
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise invalid(name, "a batch of inputs of rank >= 2 (N, ...)", f"array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise invalid(name, "a numeric array", f"array of dtype {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise invalid(name, "finite values (no NaN or Inf)", f"array with {int(np.sum(~np.isfinite(arr)))} non-finite values")
    if arr.size and (arr.min() < 0 or arr.max() > 1):
        raise invalid(name, "pixel values in [0, 1]", f"values in [{arr.min():.3g}, {arr.max():.3g}]")
    return x


def check_labels(name: str, y, n: int | None = None, num_classes: int | None = None):
    """Integer class labels of shape (N,) (one-hot (N, C) and eager tensors are converted), as int64.

    ``n``: the number of labels required (one per input); ``num_classes``: labels must lie below it.
    """
    arr = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
    if arr.ndim == 2 and arr.shape[1] > 1:
        arr = arr.argmax(axis=1)
    arr = arr.reshape(-1) if arr.ndim == 2 else arr
    if arr.ndim != 1:
        raise invalid(name, "integer labels of shape (N,)", f"array of shape {np.asarray(y).shape}")
    if not np.issubdtype(arr.dtype, np.integer):
        if not np.issubdtype(arr.dtype, np.floating) or not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
            raise invalid(name, "integer class labels", f"array of dtype {arr.dtype}")
        arr = arr.astype(np.int64)
    if n is not None and len(arr) != n:
        raise invalid(name, f"{n} labels (one per input)", f"{len(arr)} labels")
    if arr.size and arr.min() < 0:
        raise invalid(name, "labels >= 0", f"min label {arr.min()}")
    if num_classes is not None and arr.size and arr.max() >= num_classes:
        raise invalid(name, f"labels in [0, {num_classes - 1}] (the model has {num_classes} outputs)",
                      f"max label {arr.max()}")
    return arr.astype(np.int64)

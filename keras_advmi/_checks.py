"""Argument checks shared by the public API; each error names the argument, the expectation and the value."""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf


def invalid(name: str, expected: str, value) -> ValueError:
    """A ValueError in Keras' style: names the argument, says what was expected, echoes the value."""
    return ValueError(f"Received an invalid value for `{name}`, expected {expected}. Received: {name}={value!r}")


def check_fraction(name: str, value, low: float = 0.0, high: float = 1.0, *, low_open=False) -> float:
    """A real number in [low, high] (or (low, high] with ``low_open``)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Real) or not np.isfinite(value):
        raise invalid(name, f"a number in {'(' if low_open else '['}{low}, {high}]", value)
    if value > high or value < low or (low_open and value == low):
        raise invalid(name, f"a number in {'(' if low_open else '['}{low}, {high}]", value)
    return float(value)


def check_positive_int(name: str, value, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise invalid(name, f"an integer >= {minimum}", value)
    return int(value)


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
    """Validate a batch of images in [0, 1]: rank >= 2, finite; returns it unchanged."""
    if allow_tensor and isinstance(x, (tf.Tensor, tf.Variable)) and not tf.executing_eagerly():
        return x  # symbolic: checked by the graph's own shape logic
    arr = np.asarray(x)
    if arr.ndim < 2:
        raise invalid(name, "a batch of inputs of rank >= 2 (N, ...)", f"array of shape {arr.shape}")
    if not np.issubdtype(arr.dtype, np.number):
        raise invalid(name, "a numeric array", f"array of dtype {arr.dtype}")
    if arr.size and not np.all(np.isfinite(arr)):
        raise invalid(name, "finite values (no NaN or Inf)", f"array with {int(np.sum(~np.isfinite(arr)))} non-finite values")
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

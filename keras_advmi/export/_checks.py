"""What ``kam.export`` accepts: a logits model, a directory path, a detector fitted on that model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import keras

from .._checks import invalid
from ..detection.base import Detector

__all__ = ["check_logits_model", "check_detector", "check_input_signature", "export_path", "input_shape_of_export",
           "version_path"]


def check_logits_model(model: keras.Model, input_shape: tuple[int, ...], seed: int = 0) -> int:
    """Raise ValueError when ``model`` visibly outputs probabilities (a softmax/sigmoid head).

    Two checks: the last layer is a ``Softmax`` layer or has a softmax/sigmoid activation; or, on 16
    seeded uniform inputs, every output row lies in [0, 1] and sums to 1 (1e-4).
    """
    layers = getattr(model, "layers", None) or []
    last = layers[-1] if layers else None
    act = getattr(last, "activation", None)
    names = {getattr(a, "__name__", "") for a in (act,)}
    if isinstance(last, keras.layers.Softmax) or names & {"softmax", "sigmoid", "log_softmax"}:
        raise invalid("model", "a model that outputs logits (no softmax/sigmoid on the last layer; "
                               "export adds the softmax itself)", f"last layer {last.name!r} with "
                                                                  f"{'Softmax' if act is None else act.__name__}")
    x = np.random.default_rng(seed).uniform(0, 1, (16,) + tuple(input_shape)).astype(np.float32)
    out = np.asarray(model(x, training=False) if isinstance(model, keras.layers.Layer) else model(x), np.float64)
    if out.ndim != 2:
        raise invalid("model", "a model whose output is logits of shape (N, classes)", f"output shape {out.shape}")
    if out.shape[1] > 1 and out.min() >= 0 and out.max() <= 1 and np.allclose(out.sum(axis=1), 1.0, atol=1e-4):
        raise invalid("model", "a model that outputs logits, not probabilities (its rows sum to 1)",
                      f"outputs in [{out.min():.3g}, {out.max():.3g}] summing to 1")
    return int(out.shape[1])


def export_path(path: str | os.PathLike) -> Path:
    """``path`` as an absolute ``Path`` (any directory name; ``BASE/NAME/VERSION`` is the layout to serve)."""
    if not isinstance(path, (str, os.PathLike)) or not os.fspath(path):
        raise invalid("path", "a directory path (str or os.PathLike; BASE/NAME/VERSION to serve it)", path)
    target = Path(path).expanduser().absolute()
    if target.exists() and not target.is_dir():
        raise invalid("path", "a directory path (an existing file is never replaced)", str(path))
    return target


def version_path(path: str | os.PathLike) -> Path:
    """``path`` as an absolute ``Path`` whose last part is a positive integer (TF Serving's version)."""
    if not isinstance(path, (str, os.PathLike)):
        raise invalid("path", "a directory path BASE/NAME/VERSION (VERSION a positive integer)", path)
    target = Path(path).expanduser().absolute()
    if not target.name.isdigit() or int(target.name) < 1:
        raise invalid("path", "a directory path BASE/NAME/VERSION whose last part is a positive integer "
                              "(TensorFlow Serving only loads numeric version directories)", str(path))
    return target


def input_shape_of_export(logits_model: keras.Model, model) -> tuple[int, ...]:
    """The fixed per-sample input shape of a built model (ValueError when it has none)."""
    try:
        return tuple(int(d) for d in logits_model.inputs[0].shape[1:])
    except (AttributeError, IndexError, TypeError):
        raise invalid("model", "a built model with a fixed input shape (call it once or give keras.Input a shape)",
                      getattr(logits_model, "name", model)) from None


def check_detector(detector, logits_model: keras.Model, input_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``detector`` is None or a calibrated detector fitted on this model and shape."""
    if detector is None:
        return
    if not isinstance(detector, Detector):
        raise invalid("detector", "None or a kam.detection detector", type(detector).__name__)
    detector.require_calibrated("export")
    if tuple(detector.input_shape_) != input_shape:
        raise invalid("detector", f"a detector fitted on the model's input shape {input_shape}",
                      f"{type(detector).__name__} fitted on input shape {tuple(detector.input_shape_)}")
    if detector.model is not logits_model:
        raise invalid("detector", "a detector fitted on this model (detector.fit(model, x_clean))",
                      f"{type(detector).__name__} fitted on model {getattr(detector.model, 'name', '?')!r}")


def check_input_signature(input_signature, input_shape: tuple[int, ...]) -> None:
    """Raise ValueError unless ``input_signature`` is None or one spec (``tf.TensorSpec``, ``keras.InputSpec``
    or ``keras.KerasTensor``, alone or in a one-element list/tuple) of shape (None or N, *input_shape) and
    dtype float32: the exported signatures always take float32 images of the model's input shape."""
    if input_signature is None:
        return
    spec = input_signature
    if isinstance(spec, (list, tuple)) and len(spec) == 1:
        spec = spec[0]
    shape = getattr(spec, "shape", None)
    dtype = getattr(spec, "dtype", None)
    try:
        dims = None if shape is None else tuple(None if d is None else int(d) for d in shape)
    except TypeError:
        dims = None
    dtype_name = getattr(dtype, "name", dtype)
    if dims is None or dims[1:] != tuple(input_shape) or dtype_name not in (None, "float32"):
        shape_text = ", ".join(map(str, input_shape))
        raise invalid("input_signature", f"None or one float32 spec of shape (None, {shape_text}) (the signatures "
                                         f"take float32 images of the model's input shape)", input_signature)

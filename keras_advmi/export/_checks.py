"""What ``kam.export`` accepts: a logits model, a numeric version path, a detector fitted on that model."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import keras

from .._checks import invalid
from ..detection.base import Detector

__all__ = ["check_logits_model", "check_detector", "input_shape_of_export", "version_path"]


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
    detector._require_calibrated("export")
    if tuple(detector.input_shape_) != input_shape:
        raise invalid("detector", f"a detector fitted on the model's input shape {input_shape}",
                      f"{type(detector).__name__} fitted on input shape {tuple(detector.input_shape_)}")
    if detector.model is not logits_model:
        raise invalid("detector", "a detector fitted on this model (detector.fit(model, x_clean))",
                      f"{type(detector).__name__} fitted on model {getattr(detector.model, 'name', '?')!r}")

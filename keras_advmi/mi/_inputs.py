"""Input checks and unit conversion shared by the MI estimators."""

from __future__ import annotations

import math

import numpy as np

from .._checks import check_choice, invalid

UNITS = ("nats", "bits")


def check_unit(unit) -> str:
    """``unit`` when it is 'nats' or 'bits'."""
    return check_choice("unit", unit, UNITS)


def in_unit(value_nats, unit: str):
    """Convert a value in nats to ``unit`` ('nats' or 'bits')."""
    return value_nats / math.log(2.0) if check_unit(unit) == "bits" else value_nats


def activations_2d(h, name: str = "h") -> np.ndarray:
    """Flatten activations (N, ...) to float64 (N, d); require N >= 2 and finite values."""
    arr = np.asarray(h.numpy() if hasattr(h, "numpy") else h)
    if arr.ndim < 1 or not np.issubdtype(arr.dtype, np.number):
        raise invalid(name, "numeric activations of shape (N, ...)", f"array of shape {arr.shape} and dtype {arr.dtype}")
    if arr.shape[0] < 2:
        raise invalid(name, "at least 2 samples (N >= 2)", f"array of shape {arr.shape}")
    arr = arr.reshape(arr.shape[0], -1).astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise invalid(name, "finite activations (no NaN or Inf)",
                      f"array with {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr

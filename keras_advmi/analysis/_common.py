"""Checks shared by the analyses: the model (unwrapped, callable) and class indices.

Model access (unwrapping, logits in batches, layer taps, images checked against the model) lives in
``keras_advmi._model``.
"""

from __future__ import annotations

import numbers

import numpy as np

from .._checks import invalid
from .._model import check_network  # noqa: F401 (the analyses import it from here)


def check_class_index(name, value, n, num_classes):
    """An int or an int array of shape (n,) with every entry in [0, num_classes); returns int64 (n,)."""
    if isinstance(value, bool):
        raise invalid(name, f"a class index in [0, {num_classes - 1}]", value)
    if isinstance(value, numbers.Integral):
        arr = np.full(n, int(value), dtype=np.int64)
    else:
        arr = np.asarray(value)
        if arr.ndim != 1 or len(arr) != n or not np.issubdtype(arr.dtype, np.integer):
            raise invalid(name, f"an int or an int array of shape ({n},)", f"{type(value).__name__} of shape "
                                                                             f"{getattr(arr, 'shape', None)}")
        arr = arr.astype(np.int64)
    if arr.size and (arr.min() < 0 or arr.max() >= num_classes):
        bad = int(arr[(arr < 0) | (arr >= num_classes)][0])
        raise invalid(name, f"class indices in [0, {num_classes - 1}] (the model has {num_classes} outputs)", bad)
    return arr

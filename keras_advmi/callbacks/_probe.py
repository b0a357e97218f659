"""Argument checks shared by the loggers that measure a fixed probe set at epoch ends."""

from __future__ import annotations

import os

import numpy as np

from .._checks import check_images, check_labels, invalid


def check_probe(x_probe, y_probe, minimum: int = 1) -> tuple[np.ndarray, np.ndarray]:
    """(x float32 (N, ...), y int64 (N,)) with N >= ``minimum``; clear errors otherwise."""
    check_images("x_probe", x_probe)
    x = np.asarray(x_probe, np.float32)
    if len(x) < minimum:
        raise invalid("x_probe", f"at least {minimum} probe image{'s' if minimum > 1 else ''}"
                                 f"{' (MI estimates need N >= 2)' if minimum >= 2 else ''}", f"{len(x)} images")
    return x, check_labels("y_probe", y_probe, n=len(x))


def check_log_dir(log_dir) -> str:
    """``log_dir`` as a str; a ValueError when it is not a non-empty path."""
    if not isinstance(log_dir, (str, os.PathLike)) or not str(log_dir):
        raise invalid("log_dir", "a directory path", log_dir)
    return str(log_dir)


def check_layer_names(layers, allow_none: bool = False) -> list[str] | None:
    """A list of layer names (a single name is wrapped); None passes through when ``allow_none``."""
    if layers is None and allow_none:
        return None
    if isinstance(layers, str):
        layers = [layers]
    if not isinstance(layers, (list, tuple)) or not layers or not all(isinstance(n, str) for n in layers):
        raise invalid("layers", f"{'None or ' if allow_none else ''}a non-empty list of layer names", layers)
    return list(layers)

"""Helpers shared by subcommands: dataset loading, model loading, defense construction."""

from __future__ import annotations

import argparse
import math
import os

import keras

from .. import data
from . import UsageError


def load_dataset(name):
    try:
        return data.load(name)
    except data.DatasetUnavailableError as exc:
        raise UsageError(str(exc)) from None


def load_model(path):
    """A .keras file (plain logits model or AdversarialModel)."""
    if not os.path.exists(path):
        raise UsageError(f"model file {path!r} does not exist")
    if not str(path).endswith(".keras"):
        raise UsageError(f"model {path!r}: expected a .keras file saved by Keras 3")
    return keras.models.load_model(path, compile=False)


def epsilon_arg(value):
    """argparse type: a float in [0, 1]."""
    try:
        eps = float(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"epsilon must be a number in [0, 1], got {value!r}") from None
    if not 0.0 <= eps <= 1.0:
        raise argparse.ArgumentTypeError(f"epsilon must be in [0, 1] (pixel scale), got {eps}")
    return eps


def _positive(value, cast, what):
    try:
        out = cast(value)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive {what}, got {value!r}") from None
    if not math.isfinite(out) or out <= 0:
        raise argparse.ArgumentTypeError(f"expected a positive {what}, got {out}")
    return out


def positive_float(value):
    """argparse type: a finite float > 0."""
    return _positive(value, float, "number")


def positive_int(value):
    """argparse type: an integer >= 1."""
    return _positive(value, int, "integer")

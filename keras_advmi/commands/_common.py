"""Helpers shared by subcommands: argparse types (checked while parsing, so that the error names the flag
the user typed), dataset and model loading.

Module level imports the standard library only; Keras and ``keras_advmi.data`` load inside the loaders.
"""

from __future__ import annotations

import argparse
import math
import os

from . import CommandFailed, UsageError

#: ``keras_advmi.data.DATASETS``, spelled out so that parsers build without importing the data module
#: (it imports Keras and scikit-learn); a test keeps the two equal.
DATASET_NAMES = ("digits", "mnist", "fashion_mnist", "cifar10")


def dataset_arg(value):
    """argparse type: a dataset name (``DATASET_NAMES``, ``-`` or ``_``, any case) or an existing .npz file."""
    if value.endswith(".npz"):
        if not os.path.isfile(value):
            raise argparse.ArgumentTypeError(f"no such .npz file {value!r}")
        return value
    if value.lower().replace("-", "_") not in DATASET_NAMES:
        raise argparse.ArgumentTypeError(f"expected one of {', '.join(DATASET_NAMES)} or an .npz file; "
                                         f"got {value!r}")
    return value


def keras_file_arg(value):
    """argparse type: an existing .keras file (a model saved by Keras 3)."""
    if not os.path.exists(value):
        raise argparse.ArgumentTypeError(f"model file {value!r} does not exist")
    if not value.endswith(".keras"):
        raise argparse.ArgumentTypeError(f"expected a .keras file saved by Keras 3, got {value!r}")
    return value


def existing_file_arg(value):
    """argparse type: a path to an existing file."""
    if not os.path.isfile(value):
        raise argparse.ArgumentTypeError(f"no such file {value!r}")
    return value


def load_dataset(name):
    """``keras_advmi.data.load(name)``; a dataset that cannot be read here is a runtime failure."""
    from .. import data

    try:
        return data.load(name)
    except data.DatasetUnavailableError as exc:
        raise CommandFailed(str(exc)) from None


def load_model(path):
    """A .keras file (plain logits model or AdversarialModel), with the package's classes registered."""
    if not os.path.exists(path):
        raise UsageError(f"model file {path!r} does not exist")
    if not str(path).endswith(".keras"):
        raise UsageError(f"model {path!r}: expected a .keras file saved by Keras 3")
    import keras

    import keras_advmi

    keras_advmi.register_saveables()
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

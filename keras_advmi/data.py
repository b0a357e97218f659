"""Datasets as ``((x_train, y_train), (x_test, y_test))``, images float32 in [0, 1], NHWC.

* ``digits``: scikit-learn's bundled 8x8 digits (1,797 images, upscaled intensities 0..16 -> [0, 1]);
  no download, the offline default. Split 75/25 with a fixed seed.
* ``mnist`` / ``fashion_mnist``: the original IDX files (``train-images-idx3-ubyte.gz`` ...) from
  ``data_dir`` or ``$KERAS_ADVMI_DATA`` (laid out as ``<dir>/mnist/`` and ``<dir>/fashion-mnist/``),
  else ``keras.datasets`` (downloads).
* ``cifar10``: ``keras.datasets.cifar10`` (downloads).
* ``*.npz``: a file with arrays ``x_train, y_train, x_test, y_test``; uint8 images are scaled by 1/255.
"""

from __future__ import annotations

import gzip
import logging
import os
import struct
from pathlib import Path

import keras
import numpy as np
from sklearn.datasets import load_digits

from ._checks import invalid

logger = logging.getLogger(__name__)

DATA_ENV = "KERAS_ADVMI_DATA"

#: Default L-inf budget per dataset, in [0, 1] pixel units (MNIST 0.3, Fashion 0.1, CIFAR 8/255).
DEFAULT_EPSILON = {"digits": 0.2, "mnist": 0.3, "fashion_mnist": 0.1, "cifar10": 8 / 255}

_IDX_FOLDER = {"mnist": "mnist", "fashion_mnist": "fashion-mnist"}
_IDX_FILES = {
    "x_train": "train-images-idx3-ubyte.gz",
    "y_train": "train-labels-idx1-ubyte.gz",
    "x_test": "t10k-images-idx3-ubyte.gz",
    "y_test": "t10k-labels-idx1-ubyte.gz",
}
DATASETS = ("digits", "mnist", "fashion_mnist", "cifar10")


class DatasetUnavailableError(RuntimeError):
    """The dataset cannot be read here (not on disk and no download possible)."""


def default_epsilon(name: str) -> float:
    """The conventional L-inf epsilon for a dataset name (0.3 when the name is unknown)."""
    return DEFAULT_EPSILON.get(_canonical(name), 0.3)


def _canonical(name: str) -> str:
    return str(name).lower().replace("-", "_")


def read_idx(path: str | os.PathLike) -> np.ndarray:
    """Read an IDX file (optionally gzipped) into a uint8 array.

    Format: big-endian magic ``0x0000 08 ndim``, then ``ndim`` uint32 sizes, then uint8 data
    (images: magic 2051, labels: magic 2049).
    """
    path = Path(path)
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        raw = f.read()
    if len(raw) < 4:
        raise ValueError(f"{path} is not an IDX file: {len(raw)} bytes.")
    zero, dtype_code, ndim = struct.unpack(">HBB", raw[:4])
    if zero != 0 or dtype_code != 0x08:
        raise ValueError(f"{path} is not a uint8 IDX file (magic bytes {raw[:4].hex()}).")
    shape = struct.unpack(">" + "I" * ndim, raw[4 : 4 + 4 * ndim])
    data = np.frombuffer(raw, dtype=np.uint8, offset=4 + 4 * ndim)
    if data.size != int(np.prod(shape)):
        raise ValueError(f"{path}: header says shape {shape} but holds {data.size} values.")
    return data.reshape(shape)


def _images(x: np.ndarray, scale: float) -> np.ndarray:
    x = np.asarray(x, dtype=np.float32) / np.float32(scale)
    if x.ndim == 3:
        x = x[..., None]
    return x


def _labels(y: np.ndarray) -> np.ndarray:
    return np.asarray(y).reshape(-1).astype(np.int64)


def _load_digits(seed: int = 0):
    bunch = load_digits()
    x = _images(bunch.images, 16.0)
    y = _labels(bunch.target)
    order = np.random.default_rng(seed).permutation(len(x))
    x, y = x[order], y[order]
    n_train = int(round(0.75 * len(x)))
    return (x[:n_train], y[:n_train]), (x[n_train:], y[n_train:])


def _load_idx(name: str, data_dir: str | os.PathLike):
    folder = Path(data_dir) / _IDX_FOLDER[name]
    missing = [f for f in _IDX_FILES.values() if not (folder / f).exists()]
    if missing:
        raise DatasetUnavailableError(
            f"{name}: {folder} lacks {', '.join(missing)}. Put the original IDX files there "
            f"(layout <dir>/{_IDX_FOLDER[name]}/{_IDX_FILES['x_train']} ...) or unset "
            f"{DATA_ENV} and pass no data_dir to download with keras.datasets."
        )
    arrays = {k: read_idx(folder / f) for k, f in _IDX_FILES.items()}
    return ((_images(arrays["x_train"], 255.0), _labels(arrays["y_train"])),
            (_images(arrays["x_test"], 255.0), _labels(arrays["y_test"])))


def _load_keras(name: str):
    loader = getattr(keras.datasets, name)
    try:
        (xtr, ytr), (xte, yte) = loader.load_data()
    except Exception as exc:  # network errors come in many types
        hint = (f" Or set {DATA_ENV} to a folder holding the original IDX files."
                if name in _IDX_FOLDER else "")
        raise DatasetUnavailableError(
            f"{name}: keras.datasets could not download it ({type(exc).__name__}: {exc}).{hint}"
        ) from exc
    return (_images(xtr, 255.0), _labels(ytr)), (_images(xte, 255.0), _labels(yte))


def _load_npz(path: Path):
    if not path.exists():
        raise DatasetUnavailableError(f"name: no such file {str(path)!r}.")
    with np.load(path) as f:
        missing = [k for k in ("x_train", "y_train", "x_test", "y_test") if k not in f]
        if missing:
            raise ValueError(f"{path} lacks arrays {missing}; expected x_train, y_train, x_test, y_test.")
        out = []
        for split in ("train", "test"):
            x = f[f"x_{split}"]
            scale = 255.0 if x.dtype == np.uint8 else 1.0
            out.append((_images(x, scale), _labels(f[f"y_{split}"])))
    return tuple(out)


def load(name: str, data_dir: str | os.PathLike | None = None):
    """Load a dataset as ``((x_train, y_train), (x_test, y_test))``.

    Args:
      name: ``"digits"``, ``"mnist"``, ``"fashion_mnist"`` (or ``"fashion-mnist"``), ``"cifar10"``,
        or a path to an ``.npz`` file.
      data_dir: folder holding ``mnist/`` and ``fashion-mnist/`` IDX files; defaults to
        ``$KERAS_ADVMI_DATA``; when neither is set, ``keras.datasets`` downloads.

    Returns:
      images float32 in [0, 1] of shape (N, H, W, C); labels int64 of shape (N,).
    """
    if not isinstance(name, (str, os.PathLike)):
        raise TypeError(f"Received an invalid value for `name`, expected a dataset name or an .npz path. "
                        f"Received: name={name!r}")
    if str(name).endswith(".npz"):
        return _load_npz(Path(name))
    key = _canonical(name)
    if key not in DATASETS:
        raise invalid("name", f"one of {DATASETS} or a path ending in .npz", name)
    if key == "digits":
        return _load_digits()
    if key in _IDX_FOLDER:
        folder = data_dir if data_dir is not None else os.environ.get(DATA_ENV)
        if folder:
            return _load_idx(key, folder)
    return _load_keras(key)

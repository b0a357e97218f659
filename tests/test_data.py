import gzip
import struct

import numpy as np
import pytest

from keras_advmi import data
from conftest import needs_mnist


def test_digits_shapes_and_range(digits):
    (x, y), (xt, yt) = digits
    assert x.shape == (1348, 8, 8, 1) and xt.shape == (449, 8, 8, 1)
    assert x.dtype == np.float32 and 0.0 <= x.min() and x.max() == 1.0
    assert set(np.unique(y)) == set(range(10)) and y.dtype == np.int64


def test_read_idx_roundtrip(tmp_path):
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    path = tmp_path / "imgs-idx3-ubyte.gz"
    with gzip.open(path, "wb") as f:
        f.write(struct.pack(">HBB", 0, 8, 3) + struct.pack(">III", 2, 3, 4) + images.tobytes())
    np.testing.assert_array_equal(data.read_idx(path), images)


def test_read_idx_rejects_truncated(tmp_path):
    path = tmp_path / "bad-idx1-ubyte"
    path.write_bytes(struct.pack(">HBB", 0, 8, 1) + struct.pack(">I", 10) + b"\x01\x02")
    with pytest.raises(ValueError, match="header says shape"):
        data.read_idx(path)


def test_unknown_dataset_names_argument():
    with pytest.raises(ValueError, match="`name`.*Received: name='svhn'"):
        data.load("svhn")


def test_missing_idx_files_say_how_to_fix(tmp_path):
    with pytest.raises(data.DatasetUnavailableError, match="KERAS_ADVMI_DATA"):
        data.load("mnist", data_dir=tmp_path)


def test_npz(tmp_path):
    path = tmp_path / "d.npz"
    np.savez(path, x_train=np.full((3, 4, 4), 255, np.uint8), y_train=[0, 1, 2],
             x_test=np.zeros((2, 4, 4), np.uint8), y_test=[1, 0])
    (x, y), (xt, yt) = data.load(str(path))
    assert x.shape == (3, 4, 4, 1) and x.max() == 1.0 and list(yt) == [1, 0]
    np.savez(tmp_path / "bad.npz", x_train=np.zeros((1, 2, 2)))
    with pytest.raises(ValueError, match="lacks arrays"):
        data.load(str(tmp_path / "bad.npz"))


def test_default_epsilon():
    assert data.default_epsilon("mnist") == 0.3 and data.default_epsilon("fashion-mnist") == 0.1


@needs_mnist
def test_mnist_from_idx():
    (x, y), (xt, yt) = data.load("mnist")
    assert x.shape == (60000, 28, 28, 1) and xt.shape == (10000, 28, 28, 1)
    assert y[:5].tolist() == [5, 0, 4, 1, 9] and yt[:3].tolist() == [7, 2, 1]
    assert x.dtype == np.float32 and x.max() == 1.0


@needs_mnist
def test_fashion_mnist_from_idx():
    (x, y), (xt, yt) = data.load("fashion_mnist")
    assert x.shape == (60000, 28, 28, 1) and y[:3].tolist() == [9, 0, 0]

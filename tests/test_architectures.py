"""Model presets: shapes and sizes of the published networks, logits out, a clear error for a bad name."""

import numpy as np
import pytest

from keras_advmi import architectures


@pytest.mark.parametrize("name", sorted(architectures.PRESETS))
def test_every_preset_maps_images_to_logits(name):
    model = architectures.build(name, (28, 28, 1), 10)
    out = model(np.zeros((2, 28, 28, 1), np.float32))
    assert tuple(out.shape) == (2, 10)
    assert model.layers[-1].get_config()["activation"] == "linear"


def test_madry_cnn_has_madrys_layers():
    model = architectures.madry_cnn()
    # conv 5x5x1x32 + 32, conv 5x5x32x64 + 64, fc 3136x1024 + 1024, logits 1024x10 + 10
    assert model.count_params() == 832 + 51_264 + 3_212_288 + 10_250
    assert tuple(model.get_layer("flatten").output.shape) == (None, 7 * 7 * 64)


def test_wong_cnn_matches_the_reference_net():
    """locuslab/fast_adversarial MNIST/mnist_net.py: Conv2d(1,16,4,2,1), Conv2d(16,32,4,2,1), Linear(1568,100), Linear(100,10)."""
    model = architectures.wong_cnn()
    assert [tuple(model.get_layer(n).output.shape) for n in ("conv1", "conv2", "fc1")] == \
        [(None, 14, 14, 16), (None, 7, 7, 32), (None, 100)]
    assert model.count_params() == (16 * 16 + 16) + (16 * 16 * 32 + 32) + (1568 * 100 + 100) + (100 * 10 + 10)


def test_trades_cnn_matches_the_trades_smallcnn():
    """yaodongyu/TRADES models/small_cnn.py: Conv2d(1,32,3), Conv2d(32,32,3), pool, Conv2d(32,64,3), Conv2d(64,64,3),
    pool, Linear(1024,200), dropout 0.5, Linear(200,200), Linear(200,10)."""
    model = architectures.trades_cnn()
    assert tuple(model.get_layer("flatten").output.shape) == (None, 4 * 4 * 64)
    assert model.get_layer("drop").rate == 0.5
    assert model.count_params() == (9 * 32 + 32) + (9 * 32 * 32 + 32) + (9 * 32 * 64 + 64) + (9 * 64 * 64 + 64) + \
        (1024 * 200 + 200) + (200 * 200 + 200) + (200 * 10 + 10)


def test_unknown_preset_is_refused_by_name():
    with pytest.raises(ValueError, match="`arch`.*wong_cnn"):
        architectures.build("resnet", (28, 28, 1))

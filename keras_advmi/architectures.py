"""Model presets for the CLI, examples and benchmarks; each returns an unbuilt-free Keras model with logits out."""

from __future__ import annotations

import keras

from ._checks import check_choice


def small_cnn(input_shape, classes=10):
    """Two 3x3 convs (32), dense 128, logits: trains on digits in seconds, on MNIST in minutes."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(128, activation="relu", name="dense1"),
        keras.layers.Dense(classes, name="logits"),
    ], name="small_cnn")


def _two_conv_net(name, input_shape, classes, filters, kernel, dense, dense_name):
    """conv-pool-conv-pool-flatten-dense-logits with "same" padding and ReLUs."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(filters[0], kernel, padding="same", activation="relu", name="conv1"),
        keras.layers.MaxPooling2D(2, name="pool1"),
        keras.layers.Conv2D(filters[1], kernel, padding="same", activation="relu", name="conv2"),
        keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(dense, activation="relu", name=dense_name),
        keras.layers.Dense(classes, name="logits"),
    ], name=name)


def madry_cnn(input_shape=(28, 28, 1), classes=10) -> keras.Sequential:
    """Madry et al. 2018's MNIST model: conv32-5x5, pool, conv64-5x5, pool, fc1024, logits."""
    return _two_conv_net("madry_cnn", input_shape, classes, (32, 64), 5, 1024, "fc1")


def bench_cnn(input_shape=(28, 28, 1), classes=10) -> keras.Sequential:
    """conv16-pool-conv32-pool-dense64-logits (about 7 MFLOP per forward+backward on MNIST): the
    small model of the RAT, SNS and neuron-sensitivity benchmarks."""
    return _two_conv_net("bench_cnn", input_shape, classes, (16, 32), 3, 64, "dense1")


def wong_cnn(input_shape=(28, 28, 1), classes=10):
    """The MNIST net of Wong et al. 2020's fast-AT code: conv16-4x4 stride 2, conv32-4x4 stride 2, fc100,
    logits. It trains PGD-10 AT several times faster than ``madry_cnn`` (measured in docs/results.md).

    "same" padding with stride 2 pads one pixel per side here, as the reference's ``padding=1``
    (28 -> 14 -> 7). Reference: github.com/locuslab/fast_adversarial, MNIST/mnist_net.py.
    """
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(16, 4, strides=2, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 4, strides=2, padding="same", activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(100, activation="relu", name="fc1"),
        keras.layers.Dense(classes, name="logits"),
    ], name="wong_cnn")


def trades_cnn(input_shape=(28, 28, 1), classes=10, dropout=0.5):
    """The MNIST SmallCNN of TRADES (Zhang et al., "Theoretically principled trade-off between robustness and
    accuracy", 2019; github.com/yaodongyu/TRADES, models/small_cnn.py): conv32-conv32-pool-conv64-conv64-pool
    (3x3, "valid": 28 -> 26 -> 24 -> 12 -> 10 -> 8 -> 4), fc200, dropout 0.5, fc200, logits."""
    conv = lambda f, name: keras.layers.Conv2D(f, 3, activation="relu", name=name)   # noqa: E731
    return keras.Sequential([
        keras.Input(input_shape),
        conv(32, "conv1"), conv(32, "conv2"), keras.layers.MaxPooling2D(2, name="pool1"),
        conv(64, "conv3"), conv(64, "conv4"), keras.layers.MaxPooling2D(2, name="pool2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(200, activation="relu", name="fc1"),
        keras.layers.Dropout(dropout, name="drop"),
        keras.layers.Dense(200, activation="relu", name="fc2"),
        keras.layers.Dense(classes, name="logits"),
    ], name="trades_cnn")


def mlp(input_shape, classes=10):
    """Flatten, two dense 256 ReLU layers, logits."""
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(256, activation="relu", name="dense1"),
        keras.layers.Dense(256, activation="relu", name="dense2"),
        keras.layers.Dense(classes, name="logits"),
    ], name="mlp")


PRESETS = {"small_cnn": small_cnn, "madry_cnn": madry_cnn, "wong_cnn": wong_cnn, "bench_cnn": bench_cnn,
           "trades_cnn": trades_cnn, "mlp": mlp}


def build(name, input_shape, classes=10):
    """A preset by name."""
    return PRESETS[check_choice("arch", name, sorted(PRESETS))](tuple(input_shape), classes)

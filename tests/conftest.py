"""Shared fixtures: the bundled digits data and small, fast models."""

import os

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

import keras  # noqa: E402

DATA_DIR = os.environ.get("KERAS_ADVMI_DATA")
needs_mnist = pytest.mark.skipif(
    not DATA_DIR or not os.path.isdir(os.path.join(DATA_DIR or "", "mnist")),
    reason="needs the MNIST IDX files: set KERAS_ADVMI_DATA to a folder holding mnist/ (the original IDX files)")


@pytest.fixture(scope="session")
def digits():
    """((x_train, y_train), (x_test, y_test)) of scikit-learn's digits, 8x8x1 float32 in [0, 1]."""
    from keras_advmi import data

    return data.load("digits")


def small_cnn(input_shape=(8, 8, 1), classes=10, seed=0):
    """A small conv net with logits out; trains on digits in seconds."""
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input(input_shape),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, padding="same", activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(64, activation="relu", name="dense1"),
        keras.layers.Dense(classes, name="logits"),
    ])


@pytest.fixture(scope="session")
def cnn_factory():
    return small_cnn


@pytest.fixture(scope="session")
def trained_digits_model(digits):
    """A normally trained small CNN on digits (about 97% clean test accuracy)."""
    (x, y), _ = digits
    model = small_cnn()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    model.fit(x, y, epochs=15, batch_size=64, verbose=0)
    return model


def pytest_terminal_summary(terminalreporter, config):
    """Print the random-order seed at the end, where `-q` still shows it: rerun the same order with it."""
    seed = getattr(config.option, "randomly_seed", None)
    if config.pluginmanager.hasplugin("randomly") and seed is not None:
        terminalreporter.write_line(f"test order: pytest-randomly seed {seed} (the same order again: "
                                    f"--randomly-seed={seed}; file order: -p no:randomly)")

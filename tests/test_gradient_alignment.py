"""kam.analysis.gradient_alignment: analytic values, saturated samples, seeds and argument errors."""

import numpy as np
import pytest
import keras

import keras_advmi as kam


def linear_two_class(scale=1.0, seed=0):
    """logits = x W + b with 2 classes: grad_x CE = (p_0 - [y = 0]) (w_0 - w_1), always the same direction."""
    rng = np.random.default_rng(seed)
    model = keras.Sequential([keras.Input((6, 6, 1)), keras.layers.Flatten(), keras.layers.Dense(2)])
    model.layers[-1].set_weights([scale * rng.normal(size=(36, 2)).astype("float32"), np.zeros(2, "float32")])
    return model


def oscillating(seed=0):
    """A loss far from linear at the scale of eps = 0.3: logits depend on sin(40 * random projections)."""
    keras.utils.set_random_seed(seed)
    inputs = keras.Input((6, 6, 1))
    h = keras.layers.Dense(64, kernel_initializer=keras.initializers.RandomNormal(stddev=1.0))(
        keras.layers.Flatten()(inputs))
    h = keras.layers.Lambda(lambda t: keras.ops.sin(40.0 * t))(h)
    return keras.Model(inputs, keras.layers.Dense(3)(h))


def images(n=64, seed=1):
    return np.random.default_rng(seed).uniform(0, 1, (n, 6, 6, 1)).astype("float32")


def test_a_two_class_linear_model_has_alignment_one():
    x = images()
    y = np.arange(len(x)) % 2
    result = kam.analysis.gradient_alignment(linear_two_class(), x, y, epsilon=0.3)
    assert result["n"] == len(x)
    np.testing.assert_allclose(result["per_sample"], 1.0, atol=1e-5)
    assert result["mean"] == pytest.approx(1.0, abs=1e-5)


def test_a_loss_oscillating_inside_the_ball_has_alignment_near_zero():
    x = images(256)
    y = np.arange(len(x)) % 3
    model = oscillating()
    wide = kam.analysis.gradient_alignment(model, x, y, epsilon=0.3)
    # eps 0.3 spans many periods of sin(40 t): the two gradients are nearly independent.
    assert abs(wide["mean"]) < 0.15
    # The same model is smooth at a scale far below one period: alignment close to 1.
    narrow = kam.analysis.gradient_alignment(model, x, y, epsilon=1e-4)
    assert narrow["mean"] > 0.95


def test_samples_with_a_zero_gradient_are_left_out_of_the_mean():
    model = linear_two_class(scale=1e4)
    x = images(32)
    predicted = np.argmax(model.predict(x, verbose=0), axis=-1)
    y = predicted.copy()
    y[:8] = 1 - y[:8]  # misclassified: softmax far from one-hot, a gradient in the fixed direction
    result = kam.analysis.gradient_alignment(model, x, y, epsilon=0.01)
    per_sample = result["per_sample"]
    # Correctly classified with a margin of thousands of logits: the softmax is exactly one-hot in
    # float32 and the gradient exactly zero, so the cosine is undefined.
    assert np.isnan(per_sample[8:]).all()
    assert result["n"] == 8
    np.testing.assert_allclose(per_sample[:8], 1.0, atol=1e-5)
    assert result["mean"] == pytest.approx(1.0, abs=1e-5)


def test_the_noise_is_set_by_the_seed():
    x, model = images(100), oscillating()
    y = np.zeros(len(x), int)
    a = kam.analysis.gradient_alignment(model, x, y, epsilon=0.05, seed=3, batch_size=32)
    b = kam.analysis.gradient_alignment(model, x, y, epsilon=0.05, seed=3, batch_size=32)
    c = kam.analysis.gradient_alignment(model, x, y, epsilon=0.05, seed=4, batch_size=32)
    np.testing.assert_array_equal(a["per_sample"], b["per_sample"])
    assert np.abs(a["per_sample"] - c["per_sample"]).max() > 1e-3


def test_an_adversarial_model_gives_its_networks_alignment():
    model = linear_two_class()
    robust = kam.AdversarialModel(model, kam.defenses.PGD(epsilon=0.1, steps=1))
    x, y = images(16), np.zeros(16, int)
    np.testing.assert_array_equal(kam.analysis.gradient_alignment(robust, x, y, 0.1)["per_sample"],
                                  kam.analysis.gradient_alignment(model, x, y, 0.1)["per_sample"])


@pytest.mark.parametrize("kwargs, name", [
    ({"epsilon": 1.5}, "epsilon"),
    ({"epsilon": -0.1}, "epsilon"),
    ({"y": np.zeros(5, int)}, "y"),
    ({"y": np.full(64, 2)}, "y"),           # the model has 2 classes
    ({"x": images()[:, :5]}, "x"),
    ({"x": images() * 2}, "x"),
    ({"seed": "zero"}, "seed"),
    ({"batch_size": 0}, "batch_size"),
])
def test_bad_arguments_are_named(kwargs, name):
    args = {"model": linear_two_class(), "x": images(), "y": np.zeros(64, int), "epsilon": 0.3, **kwargs}
    with pytest.raises(ValueError, match=f"`{name}`"):
        kam.analysis.gradient_alignment(**args)

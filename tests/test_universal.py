"""Targeted universal perturbations (RAT, 2020) and their fooling rate: analytic cases, budget, seeds, errors."""

import numpy as np
import pytest
import tensorflow as tf

from keras_advmi.attacks.universal import (apply_perturbation, boundary_margin, fooling_rate, fooling_rates,
                                           targeted_universal_perturbation, universal_perturbations)


def identity_logits(x):
    """A 'model' whose logits are the inputs themselves: x of shape (N, 3) -> logits (N, 3)."""
    return tf.reshape(x, [-1, 3])


X3 = np.array([[0.9, 0.1, 0.0], [0.2, 0.8, 0.1], [0.5, 0.0, 0.4], [0.1, 0.2, 0.9]], np.float32)
Y3 = np.array([0, 1, 0, 2])


def test_boundary_margin_fixture():
    logits = tf.constant([[4.0, 1.0, 0.0], [1.0, 3.0, 0.0]])
    np.testing.assert_allclose(boundary_margin(logits, 1).numpy(), [3.0, -2.0])


def test_fooling_rate_analytic():
    # x + [0, 0, 0.6]: rows with label != 2 become [.9,.1,.6] -> 0, [.2,.8,.7] -> 1, [.5,0,1] -> 2
    assert fooling_rate(identity_logits, X3, Y3, np.array([0, 0, 0.6], np.float32), 2) == pytest.approx(1 / 3)
    rates = fooling_rates(identity_logits, X3, Y3, np.array([[0, 0, 0.6], [0, 0.75, 0]], np.float32), targets=[2, 1])
    # target 1 with +0.75 on logit 1: rows with label != 1: [.9,.85,0] -> 0, [.5,.75,.4] -> 1, [.1,.95,.9] -> 1
    np.testing.assert_allclose(rates, [1 / 3, 2 / 3])


def test_universal_perturbation_analytic_linear_model():
    # logits = x: lowering CE(., 2) means raising x_2 and lowering x_0, x_1 -> delta = (-eps, -eps, +eps)
    delta = targeted_universal_perturbation(identity_logits, X3, Y3, 2, epsilon=0.3, steps=10, step_size=0.05, seed=0)
    np.testing.assert_allclose(delta, [-0.3, -0.3, 0.3], atol=1e-6)


def test_budget_box_and_seeds(trained_digits_model, digits):
    (x, y), _ = digits
    kw = dict(epsilon=0.2, steps=20, batch_size=64, boundary_fraction=0.5)
    d1 = targeted_universal_perturbation(trained_digits_model, x, y, 3, seed=1, **kw)
    d2 = targeted_universal_perturbation(trained_digits_model, x, y, 3, seed=1, **kw)
    d3 = targeted_universal_perturbation(trained_digits_model, x, y, 3, seed=2, **kw)
    assert d1.shape == x.shape[1:] and d1.dtype == np.float32
    assert np.abs(d1).max() <= 0.2 + 1e-6 and np.abs(d1).max() == pytest.approx(0.2)
    x_adv = apply_perturbation(x, d1)
    assert x_adv.min() >= 0.0 and x_adv.max() <= 1.0
    np.testing.assert_array_equal(d1, d2)
    assert np.abs(d1 - d3).max() > 0.05  # different minibatch draws
    # universal_perturbations row t equals the single-target call with the same seed
    many = universal_perturbations(trained_digits_model, x, y, targets=[3, 5], seed=1, **kw)
    np.testing.assert_array_equal(many[0], d1)


def test_fooling_rate_on_trained_model_beats_noise(trained_digits_model, digits):
    (x, y), (xt, yt) = digits
    deltas = universal_perturbations(trained_digits_model, x, y, epsilon=0.25, steps=40, seed=0)
    rates = fooling_rates(trained_digits_model, xt, yt, deltas)
    noise = np.sign(np.random.default_rng(0).standard_normal(deltas.shape)).astype(np.float32) * 0.25
    noise_rates = fooling_rates(trained_digits_model, xt, yt, noise)
    assert rates.mean() > 0.3  # measured 0.61 (noise of the same L-inf size: 0.005)
    assert rates.mean() > noise_rates.mean() + 0.2
    assert fooling_rate(trained_digits_model, xt, yt, np.zeros(xt.shape[1:], np.float32), 4) < 0.03


@pytest.mark.parametrize("target", [10, -1, 1.5, True, "3"])
def test_target_out_of_range(trained_digits_model, digits, target):
    (x, y), _ = digits
    with pytest.raises(ValueError, match="target"):
        targeted_universal_perturbation(trained_digits_model, x[:50], y[:50], target, epsilon=0.2, steps=2)
    with pytest.raises(ValueError, match="target"):
        fooling_rate(trained_digits_model, x[:50], y[:50], np.zeros(x.shape[1:], np.float32), target)


@pytest.mark.parametrize("kwargs, name", [
    (dict(epsilon=1.5), "epsilon"), (dict(epsilon=-0.1), "epsilon"), (dict(steps=0), "steps"),
    (dict(step_size=0.0), "step_size"), (dict(boundary_fraction=0.0), "boundary_fraction"),
    (dict(boundary_fraction=1.2), "boundary_fraction"), (dict(batch_size=0), "batch_size")])
def test_bad_arguments(trained_digits_model, digits, kwargs, name):
    (x, y), _ = digits
    args = dict(epsilon=0.2, steps=2)
    args.update(kwargs)
    with pytest.raises(ValueError, match=name):
        targeted_universal_perturbation(trained_digits_model, x[:50], y[:50], 1, **args)


def test_bad_data(trained_digits_model, digits):
    (x, y), _ = digits
    with pytest.raises(ValueError, match="y"):  # nothing to push toward target 1
        targeted_universal_perturbation(trained_digits_model, x[:5], np.ones(5, int), 1, epsilon=0.2, steps=2)
    with pytest.raises(ValueError, match="x"):
        targeted_universal_perturbation(trained_digits_model, x[:5] * 3, y[:5], 1, epsilon=0.2, steps=2)
    with pytest.raises(ValueError, match="y"):
        targeted_universal_perturbation(trained_digits_model, x[:5], y[:4], 1, epsilon=0.2, steps=2)
    with pytest.raises(ValueError, match="delta"):
        fooling_rate(trained_digits_model, x[:5], y[:5], np.zeros((4, 4, 1), np.float32), 1)
    with pytest.raises(ValueError, match="deltas"):
        fooling_rates(trained_digits_model, x[:5], y[:5], np.zeros((3, 8, 8, 1), np.float32), targets=[1, 2])

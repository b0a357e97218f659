"""MI estimators: METHODS.md fixtures, parity with TFP, analytic Gaussian MI, bad input."""

import math

import numpy as np
import pytest
import tensorflow as tf
import tensorflow_probability as tfp

from keras_advmi import mi
from keras_advmi.layers import ConcatCritic

TWO = [[0.0, 0.0], [1.0, 0.0]]
SQUARE = [[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]]
SQUARE_Y = [0, 0, 1, 1]
BINS_H = [[.1, .2], [.3, .4], [.6, .1], [.9, .9], [1.2, .2], [1.4, .3]]
BINS_Y = [0, 0, 0, 1, 1, 1]
S2 = np.array([[2.0, 0.0], [0.0, 2.0]], np.float32)
S3 = np.array([[3.0, 1.0, 0.0], [0.5, 2.0, -1.0], [0.0, 1.0, 1.0]], np.float32)


def test_kde_fixtures():
    assert mi.kde_upper(TWO, 0.1) == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_lower(TWO, 0.1) == pytest.approx(0.441218, abs=1e-5)
    assert mi.kde_upper(SQUARE) == pytest.approx(1.372864, abs=1e-5)
    assert mi.kde_label_mi(SQUARE, SQUARE_Y) == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_lower(SQUARE) == pytest.approx(0.882436, abs=1e-5)
    assert mi.kde_label_mi(SQUARE, SQUARE_Y, bound="lower") == pytest.approx(0.441218, abs=1e-5)
    assert mi.kde_upper(TWO, unit="bits") == pytest.approx(0.686432 / math.log(2), abs=1e-5)


def test_kde_chunking_and_saturation():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(300, 7)).astype(np.float32)
    whole = mi.kde_upper(h, chunk=1000)
    assert mi.kde_upper(h, chunk=7) == pytest.approx(whole, rel=1e-12)
    # Far-apart points saturate at log N; identical points carry nothing.
    assert mi.kde_upper(100.0 * np.eye(50)) == pytest.approx(math.log(50), abs=1e-9)
    assert mi.kde_upper(np.ones((50, 3))) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= mi.kde_lower(h) <= mi.kde_upper(h) <= math.log(300)


def test_kde_translation_invariant_large_offsets():
    """The Gram identity on un-centred float32 data goes negative (P1's bug); ours does not."""
    rng = np.random.default_rng(1)
    h = rng.normal(scale=0.01, size=(200, 64))
    assert mi.kde_upper(h + 1e4) == pytest.approx(mi.kde_upper(h), rel=1e-6)


def test_binning_fixture():
    ixt, ity = mi.binning_mi(BINS_H, BINS_Y, 0.5, unit="bits")
    assert ixt == pytest.approx(1.918296, abs=1e-5)
    assert ity == pytest.approx(1.0, abs=1e-5)
    ixt_nats, _ = mi.binning_mi(BINS_H, BINS_Y)
    assert ixt_nats == pytest.approx(1.918296 * math.log(2), abs=1e-5)


@pytest.mark.parametrize("scores, expected", [
    (S2, {"dv": 2.0, "infonce": 0.566219, "nwj": 1.632121, "js": -0.820075}),
    (S3, {"dv": 1.545410, "infonce": 0.674228, "nwj": 1.420396, "js": -1.046285}),
])
def test_bound_fixtures(scores, expected):
    for name, value in expected.items():
        assert float(mi.BOUNDS[name](scores)) == pytest.approx(value, abs=1e-5), name


@pytest.mark.parametrize("ours, theirs", [
    (mi.infonce, tfp.vi.mutual_information.lower_bound_info_nce),
    (mi.nwj, tfp.vi.mutual_information.lower_bound_nguyen_wainwright_jordan),
    (mi.js, tfp.vi.mutual_information.lower_bound_jensen_shannon),
])
def test_bounds_match_tfp_on_random_scores(ours, theirs):
    scores = tf.random.stateless_normal((64, 64), seed=(3, 4), stddev=2.0)
    assert float(ours(scores)) == pytest.approx(float(theirs(logu=scores)), abs=1e-5)


def test_dv_against_numpy_and_per_sample():
    rng = np.random.default_rng(2)
    s = rng.normal(size=(16, 16))
    off = s[~np.eye(16, dtype=bool)]
    expected = np.mean(np.diag(s)) - np.log(np.mean(np.exp(off)))
    assert float(mi.dv(s)) == pytest.approx(expected, abs=1e-9)
    per = mi.dv_per_sample(s).numpy()
    neg = np.array([np.log(np.mean(np.exp(np.delete(s[i], i)))) for i in range(16)])
    np.testing.assert_allclose(per, np.diag(s) - neg, atol=1e-9)
    zeroed = mi.dv_per_sample(s, diagonal="zero").numpy()
    s0 = s * (1 - np.eye(16))
    np.testing.assert_allclose(zeroed, np.diag(s) - (np.log(np.exp(s0).sum(1)) - np.log(15)), atol=1e-9)
    # (N, N, L): the mean over locations of the per-location terms
    s3 = rng.normal(size=(8, 8, 5))
    np.testing.assert_allclose(mi.dv_per_sample(s3).numpy(),
                               np.mean([mi.dv_per_sample(s3[:, :, l]).numpy() for l in range(5)], axis=0), atol=1e-9)


def test_bounds_are_differentiable():
    s = tf.Variable(tf.random.stateless_normal((8, 8), seed=(1, 2)))
    for name, fn in mi.BOUNDS.items():
        with tf.GradientTape() as tape:
            value = fn(s)
        grad = tape.gradient(value, s)
        assert grad is not None and bool(tf.reduce_all(tf.math.is_finite(grad))), name


@pytest.mark.parametrize("dims", [1, 2, 3, 4, 5])
def test_trained_critic_recovers_gaussian_mi(dims):
    """rho 0.8: I = -(d/2) log(1 - rho^2); a separable critic with InfoNCE lands within 15%."""
    x, y = mi.correlated_gaussians(0.8, dims, 20_000, seed=dims)
    result = mi.estimate(x, y, critic="separable", bound="infonce", steps=1200, batch_size=512, seed=dims)
    truth = mi.gaussian_mi(0.8, dims)
    assert truth == pytest.approx(0.510826 * dims, abs=1e-5)
    assert abs(result.value - truth) <= 0.15 * truth, (result.value, truth)
    assert result.curve.shape == (1200,)
    assert result.curve[-100:].mean() > result.curve[:10].mean()


def test_concat_critic():
    x, y = mi.correlated_gaussians(0.8, 1, 5_000, seed=7)
    critic = ConcatCritic(hidden_units=(64, 64))
    result = mi.estimate(x, y, critic=critic, bound="infonce", steps=400, batch_size=128)
    assert result.critic is critic
    assert abs(result.value - 0.510826) <= 0.15 * 0.510826, result.value


@pytest.mark.parametrize("call, match", [
    (lambda: mi.kde_upper([[0.0, 1.0]]), "N >= 2"),
    (lambda: mi.kde_upper([[0.0, np.nan], [1.0, 2.0]]), "finite"),
    (lambda: mi.kde_upper(TWO, noise_var=0.0), "noise_var"),
    (lambda: mi.kde_lower(TWO, noise_var=-1), "noise_var"),
    (lambda: mi.kde_label_mi(SQUARE, [0, 1]), "4 labels"),
    (lambda: mi.kde_mi(TWO, bound="middle"), "bound"),
    (lambda: mi.binning_mi(BINS_H, BINS_Y, bin_width=0), "bin_width"),
    (lambda: mi.binning_mi(BINS_H, BINS_Y[:3]), "6 labels"),
    (lambda: mi.binning_mi(BINS_H, BINS_Y, unit="bytes"), "unit"),
    (lambda: mi.infonce(np.zeros((2, 3))), "square"),
    (lambda: mi.dv(np.zeros((1, 1))), "N >= 2"),
    (lambda: mi.nwj([[0.0, np.inf], [0.0, 0.0]]), "finite"),
    (lambda: mi.estimate(np.zeros((10, 2)), np.zeros((9, 2))), "10 samples"),
    (lambda: mi.estimate(np.zeros((10, 2)), np.zeros((10, 2)), bound="mine"), "bound"),
    (lambda: mi.estimate(np.zeros((10, 2)), np.zeros((10, 2)), critic="mlp"), "critic"),
])
def test_bad_input_raises_value_error(call, match):
    with pytest.raises(ValueError, match=match):
        call()

"""MI estimators: analytic fixtures, parity with TFP, analytic Gaussian MI, bad input."""

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
    """The analytic values at the absolute s2 = 0.1 of the information-plane papers."""
    assert mi.kde_upper(TWO, 0.1) == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_lower(TWO, 0.1) == pytest.approx(0.441218, abs=1e-5)
    assert mi.kde_upper(SQUARE, 0.1) == pytest.approx(1.372864, abs=1e-5)
    assert mi.kde_label_mi(SQUARE, SQUARE_Y, 0.1) == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_lower(SQUARE, 0.1) == pytest.approx(0.882436, abs=1e-5)
    assert mi.kde_label_mi(SQUARE, SQUARE_Y, 0.1, bound="lower") == pytest.approx(0.441218, abs=1e-5)
    assert mi.kde_upper(TWO, 0.1, unit="bits") == pytest.approx(0.686432 / math.log(2), abs=1e-5)


def test_every_kde_function_defaults_to_the_relative_noise():
    """One default noise everywhere: the KDE functions, the MI logger and the information plane all use the
    scale-aware 'relative' s2; the absolute 0.1 is an explicit choice."""
    import inspect

    import keras_advmi as kam

    rng = np.random.default_rng(5)
    h = 30.0 * np.maximum(rng.normal(size=(200, 16)), 0.0)     # spread far wider than s2 = 0.1
    y = rng.integers(0, 3, 200)
    assert mi.kde_upper(h) == mi.kde_upper(h, "relative") != mi.kde_upper(h, 0.1)
    assert mi.kde_lower(h) == mi.kde_lower(h, "relative") != mi.kde_lower(h, 0.1)
    assert mi.kde_mi(h) == mi.kde_mi(h, "relative")
    assert mi.kde_label_mi(h, y) == mi.kde_label_mi(h, y, "relative") != mi.kde_label_mi(h, y, 0.1)
    assert mi.kde_information_plane(h, y) == mi.kde_information_plane(h, y, "relative")
    for function in (mi.kde_mi, mi.kde_upper, mi.kde_lower, mi.kde_label_mi, mi.kde_information_plane,
                     kam.callbacks.MutualInformationLogger, kam.analysis.information_plane):
        assert inspect.signature(function).parameters["noise_var"].default == "relative", function


def test_kde_chunking_and_saturation():
    rng = np.random.default_rng(0)
    h = rng.normal(size=(300, 7)).astype(np.float32)
    whole = mi.kde_upper(h, 0.1, chunk=1000)     # a narrow kernel: distances in float64
    assert mi.kde_upper(h, 0.1, chunk=7) == pytest.approx(whole, rel=1e-12)
    assert mi.kde_upper(h, chunk=7) == pytest.approx(mi.kde_upper(h, chunk=1000), rel=1e-6)   # float32 distances
    # Far-apart points saturate at log N; identical points carry nothing.
    assert mi.kde_upper(100.0 * np.eye(50), 0.1) == pytest.approx(math.log(50), abs=1e-9)
    assert mi.kde_upper(np.ones((50, 3))) == pytest.approx(0.0, abs=1e-12)
    assert 0.0 <= mi.kde_lower(h) <= mi.kde_upper(h) <= math.log(300)


def test_kde_translation_invariant_large_offsets():
    """The Gram identity on un-centred float32 data goes negative (a bug of the 2022 MI paper's code); ours
    does not."""
    rng = np.random.default_rng(1)
    h = rng.normal(scale=0.01, size=(200, 64))
    assert mi.kde_upper(h + 1e4, 0.1) == pytest.approx(mi.kde_upper(h, 0.1), rel=1e-6)
    assert mi.kde_upper(h + 1e4) == pytest.approx(mi.kde_upper(h), rel=1e-6)


def test_relative_noise_is_the_median_heuristic_and_scale_free():
    # two points: the median squared distance is their distance, so s2 = 0.1 D reproduces the s2 = 0.1, D = 1
    # fixture at any scale
    for scale in (1.0, 3.0, 1e-3, 1e4):
        h = scale * np.asarray(TWO)
        assert mi.kde_noise_var(h) == pytest.approx(0.1 * scale ** 2, rel=1e-9)
        assert mi.kde_upper(h, "relative") == pytest.approx(0.686432, abs=1e-5)
        assert mi.kde_lower(h, "relative") == pytest.approx(0.441218, abs=1e-5)
    # the square: squared distances 1, 1, 1, 1, 2, 2 -> median 1 -> the s2 = 0.1 fixtures
    big = 50.0 * np.asarray(SQUARE)
    assert mi.kde_upper(big, "relative") == pytest.approx(1.372864, abs=1e-5)
    assert mi.kde_label_mi(big, SQUARE_Y, "relative") == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_information_plane(big, SQUARE_Y, "relative", "lower") == pytest.approx((0.882436, 0.441218), abs=1e-5)
    rng = np.random.default_rng(0)
    h = np.maximum(rng.normal(size=(400, 32)), 0.0)
    assert mi.kde_upper(1e3 * h, "relative") == pytest.approx(mi.kde_upper(h, "relative"), rel=1e-6)
    assert mi.kde_upper(h, "relative", relative_noise=0.05) > mi.kde_upper(h, "relative") > \
        mi.kde_upper(h, "relative", relative_noise=0.2)
    # where the absolute s2 saturates at log N, the relative one does not
    assert mi.kde_upper(1e3 * h, 0.1) == pytest.approx(math.log(400), abs=1e-9)
    assert 0.05 * math.log(400) < mi.kde_upper(1e3 * h, "relative") < 0.95 * math.log(400)
    # identical rows: s2 = 0 and no information; more than half the pairs identical: the mean is used
    assert mi.kde_noise_var(np.ones((20, 3))) == 0.0
    assert mi.kde_upper(np.ones((20, 3)), "relative") == 0.0
    assert mi.kde_information_plane(np.ones((20, 3)), [0, 1] * 10, "relative") == (0.0, 0.0)
    mostly_same = np.zeros((10, 1))
    mostly_same[0] = 1.0                                     # 9 of 45 pairs at distance 1, the rest 0
    assert mi.kde_noise_var(mostly_same) == pytest.approx(0.1 * 9 / 45)


def test_median_of_a_large_set_uses_a_seeded_subsample():
    rng = np.random.default_rng(3)
    h = rng.normal(size=(2500, 4))
    assert mi.kde_noise_var(h) == mi.kde_noise_var(h)                   # deterministic
    assert mi.kde_noise_var(h) == pytest.approx(0.1 * 2 * 4 * 0.839, rel=0.05)   # median of 2 chi2_4


def test_label_entropy():
    assert mi.label_entropy([0, 0, 1, 1]) == pytest.approx(math.log(2))
    assert mi.label_entropy([3, 3, 3]) == 0.0
    assert mi.label_entropy([0, 1, 2, 3], unit="bits") == pytest.approx(2.0)


def test_online_label_mi_tracks_a_changing_representation():
    from keras_advmi.mi.online import OnlineLabelMI, Standardizer

    rng = np.random.default_rng(0)
    y = rng.integers(0, 4, 800)
    informative = np.eye(4)[y] * 3.0 + rng.normal(size=(800, 4))         # separable classes
    noise = rng.normal(size=(800, 4))                                     # no label information
    wide = informative @ rng.normal(size=(4, 300)) + 0.5 * rng.normal(size=(800, 300))   # projected to 64 dims
    feats = [Standardizer(a)(a) for a in (informative, noise, wide)]
    assert [f.shape[1] for f in feats] == [4, 4, 64]
    bank = OnlineLabelMI(3, 4, steps=50, seed=0)
    first = bank.update(feats, y)
    later = [bank.update(feats, y) for _ in range(4)][-1]
    h_y = mi.label_entropy(y)
    assert 0.8 * h_y < later[0] <= h_y + 0.05, later       # near H(Y) on held-out rows
    assert abs(later[1]) < 0.1, later                       # ~0 without information
    assert later[2] > 0.4 * h_y, later                      # found through a random projection too
    assert later[0] >= first[0] - 0.05                      # warm start: training continues
    np.testing.assert_allclose(OnlineLabelMI(3, 4, steps=50, seed=0).update(feats, y), first, rtol=1e-5)
    # a rescaled layer gives the same features, hence the same bound
    np.testing.assert_allclose(Standardizer(10 * informative)(10 * informative), feats[0], rtol=1e-4, atol=1e-5)
    with pytest.raises(ValueError, match="features"):
        bank.update(feats[:2], y)


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



@pytest.mark.parametrize("fn", [mi.infonce, mi.dv, mi.nwj, mi.js, mi.dv_per_sample,
                                lambda s, name=None: mi.per_sample_bound(s, "jsd", name=name)])
def test_bounds_open_a_name_scope(fn):
    """As tfp.vi.mutual_information's functions do: ops of a traced graph sit under ``name/``."""
    def op_names(name):
        graph = tf.function(lambda s: fn(s, name=name)).get_concrete_function(
            tf.TensorSpec([4, 4], tf.float32)).graph
        return [op.name for op in graph.get_operations() if op.type not in ("Placeholder", "NoOp", "Identity")]
    named = op_names("foo")
    assert named and all(n.startswith("foo/") for n in named), named
    assert not any(n.startswith("foo/") for n in op_names(None))


def test_numpy_estimators_take_a_name():
    assert mi.kde_upper(TWO, 0.1, name="foo") == pytest.approx(0.686432, abs=1e-5)
    assert mi.kde_label_mi(SQUARE, SQUARE_Y, 0.1, name="foo") == pytest.approx(0.686432, abs=1e-5)
    assert mi.binning_mi(BINS_H, BINS_Y, name="foo") == mi.binning_mi(BINS_H, BINS_Y)
    assert mi.label_entropy(SQUARE_Y, name="foo") == pytest.approx(math.log(2))

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
    (lambda: mi.kde_upper(TWO, noise_var="median"), "noise_var.*'relative'"),
    (lambda: mi.kde_upper(TWO, noise_var="relative", relative_noise=0), "relative_noise"),
    (lambda: mi.kde_noise_var([[0.0, np.inf], [1.0, 2.0]]), "finite"),
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

"""Detectors: AUROC floors on digits, calibration, parity with reference computations, bad input."""

import numpy as np
import pytest
import scipy.ndimage
import tensorflow as tf
import keras
from sklearn.covariance import EmpiricalCovariance

from keras_advmi import detection as kd
from keras_advmi.detection.feature_squeezing import median_filter, reduce_bit_depth
from keras_advmi.detection.mi_score import dv_scores_batch, dv_scores_reference

EPS = 0.2  # digits' default L-inf budget


def make_detector(name):
    # On 8x8 digits a 2x2 median filter erases the digit itself, so the bit-depth squeezer alone is used.
    return {"mahalanobis": lambda: kd.MahalanobisDetector(),
            "feature_squeezing": lambda: kd.FeatureSqueezingDetector(bits=1, median=None),
            "mi": lambda: kd.MIScoreDetector(epochs=20, noise=0.2)}[name]()  # noise ~ digits epsilon


@pytest.fixture(scope="module")
def fitted(digits, trained_digits_model):
    (x, y), (xt, _) = digits
    return {name: make_detector(name).fit(trained_digits_model, x, y).calibrate(xt[:225], fpr=0.05)
            for name in ("mahalanobis", "feature_squeezing", "mi")}


@pytest.mark.parametrize("name", ["mahalanobis", "feature_squeezing", "mi"])
def test_auroc_against_pgd_on_nt_model(name, fitted, digits, trained_digits_model):
    _, (xt, yt) = digits
    report = kd.evaluate(fitted[name], trained_digits_model, xt[225:], yt[225:], attacks=["pgd-40"], epsilon=EPS)
    row = report["pgd-40"]
    assert row["attack_success"] > 0.9 and row["n_adv"] > 150  # PGD really fools the NT model
    assert row["auroc"] >= 0.8, str(report)


@pytest.fixture(scope="module")
def split_model(digits, cnn_factory):
    """NT CNN trained on 900 training images, so 447 training + 450 test images stay held out."""
    (x, y), _ = digits
    model = cnn_factory()
    model.compile(optimizer=keras.optimizers.Adam(2e-3),
                  loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    model.fit(x[:900], y[:900], epochs=20, batch_size=64, verbose=0)
    return model


@pytest.mark.parametrize("name", ["mahalanobis", "feature_squeezing", "mi"])
def test_calibrated_fpr_on_held_out_clean_data(name, split_model, digits):
    (x, y), (xt, _) = digits
    det = make_detector(name).fit(split_model, x[:900], y[:900]).calibrate(x[900:], fpr=0.05)
    assert det.calibration["fpr_measured"] <= 0.05
    measured = float(np.mean(det.score(xt) > det.threshold.numpy()))
    assert abs(measured - 0.05) <= 0.02, measured
    np.testing.assert_array_equal(det.detect(xt), det.score(xt) > det.threshold.numpy())


def test_threshold_is_the_clean_quantile_and_a_weight(fitted, digits):
    _, (xt, _) = digits
    det = fitted["mahalanobis"]
    s = det.score(xt[:225])
    assert float(det.threshold.numpy()) == pytest.approx(float(np.quantile(s, 0.95, method="higher")), rel=1e-6)
    assert any(w is det.threshold for w in det.non_trainable_weights)
    det2 = kd.MahalanobisDetector().fit(det.model, xt).calibrate(xt, fpr=0.1)
    assert np.mean(det2.score(xt) > det2.threshold.numpy()) == pytest.approx(0.1, abs=1 / len(xt) + 1e-9)


def test_layer_call_matches_score_and_batch_independence(fitted, digits):
    _, (xt, _) = digits
    for det in fitted.values():
        np.testing.assert_allclose(np.asarray(det(xt[:32])), det.score(xt[:32]), rtol=1e-5, atol=1e-5)
        # a served sample's score must not depend on the rest of its request
        np.testing.assert_allclose(det.score(xt[3:4]), det.score(xt[:64])[3:4], rtol=1e-4, atol=1e-5)


def test_mahalanobis_matches_sklearn():
    rng = np.random.default_rng(0)
    x = rng.normal(size=(300, 3)).astype(np.float32) @ np.array([[1, 0.5, 0], [0, 1, 0.3], [0, 0, 2]], np.float32)
    x = (x - x.min()) / (x.max() - x.min())   # detectors take inputs in [0, 1]
    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((3,)), keras.layers.Dense(3, name="feat"), keras.layers.Dense(4, name="out")])
    y = rng.integers(0, 4, 300)
    det = kd.MahalanobisDetector(layers="feat", shrinkage=0.0).fit(model, x, y)
    f = np.asarray(model.get_layer("feat")(x), np.float64)
    means = np.stack([f[y == c].mean(0) for c in range(4)])
    cov = EmpiricalCovariance(assume_centered=True).fit(f - means[y])
    expected = np.min(np.stack([cov.mahalanobis(f - means[c]) for c in range(4)], 1), 1) / 3
    np.testing.assert_allclose(det.score(x), expected, rtol=1e-4)


def test_feature_squeezers_match_scipy_and_rounding():
    rng = np.random.default_rng(1)
    x = rng.uniform(size=(2, 7, 9, 3)).astype(np.float32)
    for size in (2, 3):
        ref = scipy.ndimage.median_filter(x, size=(1, size, size, 1), mode="reflect")
        np.testing.assert_allclose(median_filter(tf.constant(x), size).numpy(), ref, atol=1e-7)
    np.testing.assert_allclose(reduce_bit_depth(tf.constant([[0.2, 0.49, 0.51, 0.9]]), 1).numpy(), [[0, 0, 1, 1]])
    np.testing.assert_allclose(reduce_bit_depth(tf.constant([[0.2, 0.5]]), 2).numpy(), [[1 / 3, 2 / 3]], atol=1e-7)
    xt = tf.constant([[0.3, 0.7]])
    with tf.GradientTape() as tape:
        tape.watch(xt)
        out = tf.reduce_sum(reduce_bit_depth(xt, 1) * [2.0, 3.0])
    np.testing.assert_allclose(tape.gradient(out, xt).numpy(), [[2.0, 3.0]])  # straight-through (BPDA)


def test_dv_terms_match_fixture():
    # known answer: S = [[2, 0], [0, 2]] -> DV 2.0 (one location, g_i . L_j = S_ij)
    g = tf.constant([[2.0, 0.0], [0.0, 2.0]])
    local = tf.constant([[[1.0, 0.0]], [[0.0, 1.0]]])
    np.testing.assert_allclose(dv_scores_batch(g, local).numpy(), [2.0, 2.0], atol=1e-6)
    bank = tf.constant([[[1.0, 0.0]], [[0.0, 1.0]], [[0.5, 0.5]]])
    u = np.array([[2, 0, 1], [0, 2, 1]], np.float64)
    expected = np.diag(u[:, :2]) - np.log(np.exp(u).mean(1))
    np.testing.assert_allclose(dv_scores_reference(g, local, bank).numpy(), expected, rtol=1e-6)


def test_adaptive_attack_evades_more_than_pgd(fitted, digits, trained_digits_model):
    _, (xt, yt) = digits
    det = fitted["mahalanobis"]
    report = kd.evaluate(det, trained_digits_model, xt[225:325], yt[225:325], attacks=["pgd-20", "adaptive-40"],
                         epsilon=EPS)
    assert report["adaptive-40"]["evasion"] > report["pgd-20"]["evasion"] + 0.2, str(report)
    x_adv = kd.adaptive_attack(det, xt[225:257], yt[225:257], epsilon=EPS, steps=10, seed=3)
    assert np.abs(x_adv - xt[225:257]).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    np.testing.assert_array_equal(x_adv, kd.adaptive_attack(det, xt[225:257], yt[225:257], epsilon=EPS, steps=10,
                                                            seed=3))


def test_consensus_objective_targets_every_squeezed_view(fitted, digits, trained_digits_model):
    """The "consensus" loss is sum over the detector's views of CE toward one wrong class (He et al. 2017)."""
    from keras_advmi.detection.evaluation import _consensus_loss, _most_likely_wrong_class

    _, (xt, yt) = digits
    det = fitted["feature_squeezing"]
    x = tf.constant(xt[225:257])
    logits = trained_digits_model(x).numpy()
    masked = logits.copy()
    masked[np.arange(len(masked)), yt[225:257]] = -np.inf
    target = _most_likely_wrong_class(tf.constant(logits), tf.constant(yt[225:257], tf.int64))
    np.testing.assert_array_equal(target.numpy(), masked.argmax(-1))
    views = [x.numpy(), reduce_bit_depth(x, 1).numpy()]
    expected = sum(-tf.nn.log_softmax(trained_digits_model(v)).numpy()[np.arange(32), target.numpy()] for v in views)
    score, view_logits = det.score_and_view_logits(x)
    np.testing.assert_allclose(_consensus_loss(view_logits, target).numpy(), expected, rtol=1e-5)
    np.testing.assert_allclose(score.numpy(), det.score(xt[225:257]), rtol=1e-6)
    assert len(fitted["mahalanobis"].score_and_view_logits(x)[1]) == 1
    x_adv = kd.adaptive_attack(det, xt[225:257], yt[225:257], epsilon=EPS, steps=10, objectives="consensus")
    assert np.abs(x_adv - xt[225:257]).max() <= EPS + 1e-6 and x_adv.min() >= 0 and x_adv.max() <= 1
    with pytest.raises(ValueError, match="objectives"):
        kd.adaptive_attack(det, xt[:4], yt[:4], objectives=["concensus"])


@pytest.mark.parametrize("fpr", [0, 1, 1.5, -0.1, float("nan"), "0.05"])
def test_bad_fpr(fpr, fitted, digits):
    _, (xt, _) = digits
    with pytest.raises(ValueError, match="fpr"):
        kd.MahalanobisDetector().fit(fitted["mahalanobis"].model, xt[:50]).calibrate(xt, fpr=fpr)


def test_bad_inputs(fitted, digits, trained_digits_model):
    _, (xt, yt) = digits
    det = fitted["mahalanobis"]
    with pytest.raises(ValueError, match=r"shape \(N, 8, 8, 1\)"):
        det.score(np.zeros((4, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="fit"):
        kd.MahalanobisDetector().score(xt)
    with pytest.raises(ValueError, match="calibrate"):
        kd.FeatureSqueezingDetector().fit(trained_digits_model, xt).detect(xt)
    with pytest.raises(ValueError, match="x_clean"):
        kd.MahalanobisDetector().fit(trained_digits_model, np.zeros((10, 28, 28, 1), np.float32))
    with pytest.raises(ValueError, match="layers"):
        kd.MahalanobisDetector(layers="nope").fit(trained_digits_model, xt)
    with pytest.raises(ValueError, match="bits"):
        kd.FeatureSqueezingDetector(bits=9)
    with pytest.raises(ValueError, match="estimators"):
        kd.MIScoreDetector(estimators=object())
    for kwargs in ({"seed": 1.5}, {"noise": True}, {"learning_rate": True}, {"critic_input": "probs"}):
        with pytest.raises(ValueError, match=f"`{next(iter(kwargs))}`"):
            kd.MIScoreDetector(**kwargs)
    with pytest.raises(ValueError, match="`layers`"):
        kd.MahalanobisDetector(layers=[])
    with pytest.raises(ValueError, match="`c`"):
        kd.adaptive_attack(det, xt[:4], yt[:4], c=True)
    with pytest.raises(ValueError, match="`batch_size`"):
        kd.adaptive_attack(det, xt[:4], yt[:4], batch_size=0)
    with pytest.raises(ValueError, match="attacks"):
        kd.evaluate(det, trained_digits_model, xt[:10], yt[:10], attacks=["cw"])


def test_a_subclass_overrides_fit_state_and_score_and_logits(trained_digits_model, digits):
    """The subclass protocol: fit_state stores fitted constants, score_and_logits scores; the base does the rest."""

    class MeanPixelDetector(kd.Detector):
        def fit_state(self, model, x, y):
            self.add_fitted_constant("mean_pixel", x.mean())

        def score_and_logits(self, x):
            return tf.abs(tf.reduce_mean(x, axis=[1, 2, 3]) - self.mean_pixel), self.model(x, training=False)

    (x, _), (xt, _) = digits
    det = MeanPixelDetector().fit(trained_digits_model, x).calibrate(xt[:100], fpr=0.1)
    assert not det.mean_pixel.trainable and det.mean_pixel in det.weights
    np.testing.assert_allclose(det.score(xt[100:110]), np.abs(xt[100:110].mean(axis=(1, 2, 3)) - x.mean()),
                               rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(det.detect(xt[100:110]), det.score(xt[100:110]) > det.threshold.numpy())


class _FakeMIAT:
    """Stands in for a MIAT defense: its natural estimator is the mean pixel value (a known function of x)."""

    @staticmethod
    def natural(pattern, outputs, training=False):
        return tf.reduce_mean(pattern, axis=[1, 2, 3])


def test_mi_detector_uses_miat_estimators_when_given(trained_digits_model, digits):
    _, (xt, _) = digits
    det = kd.MIScoreDetector(estimators=_FakeMIAT()).fit(trained_digits_model, xt[:100])
    assert not hasattr(det, "local_encoder")  # no own critics trained
    np.testing.assert_allclose(det.score(xt[:50]), -xt[:50].mean(axis=(1, 2, 3)), rtol=1e-5, atol=1e-6)


def test_mi_detector_with_a_real_miat_defense(trained_digits_model, digits):
    """estimators=MIAT: the score is -v_n(x -> h(x)) of MIAT's natural estimator (same batch)."""
    import keras_advmi as kam

    (x, y), (xt, _) = digits
    defense = kam.defenses.MIAT(epsilon=0.2, steps=2, estimators=kam.defenses.MIATEstimators(hsize=16))
    defense.pretrain_estimators(trained_digits_model, x[:256], y[:256], epochs=1, verbose=0)
    det = kd.MIScoreDetector(estimators=defense).fit(trained_digits_model, xt[:100])
    expected = -defense.mi_scores(trained_digits_model, xt[:64], xt[:64], batch_size=64)["mi_natural/clean"]
    np.testing.assert_allclose(det.score(xt[:64]), expected, rtol=1e-4, atol=1e-4)

"""Robust-accuracy floors on digits (PGD-AT beats normal training by >= 30 points under PGD-20), the
masking checks, and the ART attacks (APGD, AutoAttack) behind `evaluate_robustness`."""

import numpy as np
import pytest
import keras
import tensorflow as tf

import keras_advmi as kam

EPS = 0.2


@pytest.fixture(scope="module")
def at_model(digits, cnn_factory):
    (x, y), _ = digits
    robust = kam.AdversarialModel(cnn_factory(seed=1), kam.defenses.PGD(epsilon=EPS, steps=7, seed=0))
    robust.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    robust.fit(x, y, epochs=30, batch_size=64, verbose=0)
    return robust


def test_pgd_at_beats_normal_training_under_pgd20(at_model, trained_digits_model, digits):
    _, (xt, yt) = digits
    at = kam.evaluate_robustness(at_model, xt, yt, attacks=["clean", "pgd-20"], epsilons=[EPS], seed=0)
    nt = kam.evaluate_robustness(trained_digits_model, xt, yt, attacks=["clean", "pgd-20"], epsilons=[EPS], seed=0)
    assert at["clean"][0.0] > 0.85
    assert at["pgd-20"][EPS] >= nt["pgd-20"][EPS] + 0.30, (str(at), str(nt))


def test_robust_accuracy_non_increasing_in_epsilon(at_model, digits):
    _, (xt, yt) = digits
    report = kam.evaluate_robustness(at_model, xt, yt, attacks=["fgsm", "pgd-20"],
                                     epsilons=[0.0, 0.05, 0.1, 0.2, 0.3], seed=0)
    for attack in ("fgsm", "pgd-20"):
        accs = [report[attack][e] for e in (0.0, 0.05, 0.1, 0.2, 0.3)]
        assert all(b <= a + 1e-9 for a, b in zip(accs, accs[1:])), (attack, accs)
    assert not report.suspected_gradient_masking, report.warnings


def test_report_flags_non_monotonic_table():
    from keras_advmi.evaluation._masking import masking_warnings

    rows = [{"attack": "pgd-20", "epsilon": 0.1, "accuracy": 0.5, "n": 100},
            {"attack": "pgd-20", "epsilon": 0.2, "accuracy": 0.7, "n": 100},
            {"attack": "fgsm", "epsilon": 0.1, "accuracy": 0.4, "n": 100}]
    warnings = masking_warnings(rows, 100)
    assert len(warnings) == 2 and "non-monotonic" in warnings[0] and "weaker than FGSM" in warnings[1]


def test_report_serialises(at_model, digits, tmp_path):
    _, (xt, yt) = digits
    report = kam.evaluate_robustness(at_model, xt[:50], yt[:50], attacks=["clean", "fgsm", "cleverhans-pgd-10"],
                                     epsilons=[0.1])
    text = report.to_csv(tmp_path / "r.csv")
    assert text.splitlines()[0] == "attack,epsilon,accuracy,n" and len(text.splitlines()) == 4
    assert "cleverhans-pgd-10" in str(report)
    with pytest.raises(ValueError, match="`attacks`"):
        kam.evaluate_robustness(at_model, xt[:5], yt[:5], attacks=["deepfool"])
    for epsilons in ([True], [-0.1], [1.5], []):   # a bool is no budget; L-inf budgets lie in [0, 1]
        with pytest.raises(ValueError, match="`epsilons`"):
            kam.evaluate_robustness(at_model, xt[:5], yt[:5], attacks=["fgsm"], epsilons=epsilons)
    with pytest.raises(ValueError, match="`progress`"):
        kam.evaluate_robustness(at_model, xt[:5], yt[:5], attacks=["clean"], progress="yes")


def test_vectorised_dlr_equals_arts_loop():
    """Our DLR (used for APGD-DLR) has the values and input gradients of ART's per-sample loop."""
    from art.attacks.evasion import AutoProjectedGradientDescent

    from keras_advmi.evaluation import DifferenceOfLogitsRatio
    from keras_advmi.evaluation._art import art_classifier

    rng = np.random.default_rng(0)
    x = rng.uniform(size=(4, 8, 8, 1)).astype(np.float32)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    art_loss = AutoProjectedGradientDescent(art_classifier(net, x), eps=0.1, eps_step=0.02, max_iter=1,
                                            loss_type="difference_logits_ratio", verbose=False).estimator._loss_object
    ours = DifferenceOfLogitsRatio()
    logits = tf.constant(rng.normal(size=(32, 10)).astype(np.float32))
    labels = rng.integers(0, 10, 32)
    labels[:8] = np.argmax(logits.numpy()[:8], 1)          # include samples whose top logit is the label
    onehot = tf.constant(np.eye(10, dtype=np.float32)[labels])
    for reduction in ("none", "mean", "sum"):
        art_loss.reduction = ours.reduction = reduction
        with tf.GradientTape(persistent=True) as tape:
            tape.watch(logits)
            a, b = art_loss(onehot, logits), ours(onehot, logits)
        np.testing.assert_allclose(b.numpy(), a.numpy(), rtol=1e-6)
        np.testing.assert_allclose(tape.gradient(b, logits).numpy(), tape.gradient(a, logits).numpy(), atol=1e-6)


def test_art_attacks_through_evaluate_robustness(at_model, trained_digits_model, digits):
    """APGD-CE/DLR and AutoAttack run end to end; AutoAttack is at least as strong as each APGD and PGD-20."""
    _, (xt, yt) = digits
    x, y = xt[:60], yt[:60]
    for model in (trained_digits_model, at_model):
        report = kam.evaluate_robustness(model, x, y, attacks=["pgd-20", "apgd-ce", "apgd-dlr", "autoattack"],
                                         epsilons=[EPS], seed=0)
        aa = report["autoattack"][EPS]
        assert aa <= min(report["apgd-ce"][EPS], report["apgd-dlr"][EPS]) + 1e-9, str(report)
        assert aa <= report["pgd-20"][EPS] + 2 / len(x), str(report)
    assert report["autoattack"][EPS] > 0.3, str(report)      # the AT model keeps real robustness

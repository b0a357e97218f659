"""MIAT / NAMID on digits: P2's MI ordering after pretraining, accuracy vs PGD-AT on the same budget,
MI logs in history, .keras round-trip, distribution-free checks of the loss, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_advmi as kam
from keras_advmi.defenses.miat import _masked_cos

EPS = 0.2
WARM_EPOCHS, MORE_EPOCHS = 10, 10


def _compile(model, decay_steps=None):
    """Adam(2e-3); with ``decay_steps``, cosine-decayed to 0 over them (both arms of a comparison get it)."""
    lr = 2e-3 if decay_steps is None else keras.optimizers.schedules.CosineDecay(2e-3, decay_steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"])
    return model


def _accuracies(net, xt, yt):
    x_adv = kam.attacks.pgd(net, xt, yt, EPS, 2.5 * EPS / 20, 20, seed=11)
    clean = float((np.argmax(net.predict(xt, verbose=0), 1) == yt).mean())
    robust = float((np.argmax(net.predict(x_adv, verbose=0), 1) == yt).mean())
    return clean, robust


@pytest.fixture(scope="module")
def warm(digits, cnn_factory):
    """PGD-AT for WARM_EPOCHS epochs (P2, step 1): the shared starting point."""
    (x, y), _ = digits
    model = _compile(kam.AdversarialModel(cnn_factory(seed=0), kam.defenses.PGD(epsilon=EPS, steps=5, seed=0)))
    model.fit(x, y, epochs=WARM_EPOCHS, batch_size=64, verbose=0)
    return model.model.get_weights()


def _net_from(weights, cnn_factory):
    net = cnn_factory(seed=0)
    net.set_weights(weights)
    return net


@pytest.fixture(scope="module")
def pretrained(digits, cnn_factory, warm):
    (x, y), _ = digits
    # MI weight ramped over the first MIAT epoch: without it the term's first steps cost 5 points (below).
    defense = kam.defenses.MIAT(epsilon=EPS, steps=5, seed=0, hsize=64, alpha_warmup_steps=-(-len(x) // 64))
    model = kam.AdversarialModel(_net_from(warm, cnn_factory), defense)
    history = defense.pretrain_estimators(model, x, y, batch_size=128, verbose=0)   # 20 epochs, lr 3e-3
    return model, defense, history


def test_mi_ordering_on_held_out_data(digits, pretrained):
    """P2's finding: on successful attacks, natural MI is higher for (x, h(x)) than for (x, h(x~)), and
    adversarial MI higher for (n, h(x~)) than for (n, h(x)). Held-out pairs, the pretraining attack (L2)."""
    model, defense, history = pretrained
    _, (xt, yt) = digits
    assert len(history["natural_loss"]) == 20 and defense.pretrained
    eps2 = defense.pretrain_attack_epsilon(xt.shape[1:])
    assert eps2 == pytest.approx(0.3 * EPS * 8.0)
    x_adv = kam.attacks.pgd(model.model, xt, yt, eps2, 2.5 * eps2 / 20, 20, norm=2, seed=5)
    scores = defense.mi_scores(model, xt, x_adv)
    assert set(scores) == {"mi_natural/clean", "mi_natural/adv", "mi_adversarial/clean", "mi_adversarial/adv"}
    pred_clean = model.model.predict(xt, verbose=0).argmax(1)
    pred_adv = model.model.predict(x_adv, verbose=0).argmax(1)
    fooled = (pred_clean == yt) & (pred_adv != yt)
    assert fooled.sum() >= 30
    mean = {k: float(v[fooled].mean()) for k, v in scores.items()}
    assert mean["mi_natural/clean"] > mean["mi_natural/adv"] + 0.1, mean
    assert mean["mi_adversarial/adv"] > mean["mi_adversarial/clean"] + 0.1, mean


def test_miat_fit_keeps_up_with_pgd_at_on_the_same_budget(digits, cnn_factory, warm, pretrained, tmp_path):
    """Same budget: WARM_EPOCHS of PGD-AT, then MORE_EPOCHS of MIAT(pgd) or of PGD-AT from the same weights,
    the same batches and the same cosine-decayed learning rate.

    Issue 5: clean and robust accuracy within 3 points of PGD-AT's. Two runs of the *same* loss (MIAT at
    alpha 0) end 0.2-3.1 PGD-20 points apart (mean 1.1 with the decay, 2.0 without), as much as the
    criterion, so the same batches and the decay keep the comparison about the MI term. Over 4 seeds,
    MIAT (alpha 5, MI weight ramped in over the first epoch) trails by 1.9 PGD-20 / 0.4 clean points on
    average and 3.1 / 1.1 on its worst seed (the control's worst: 3.1 PGD-20); in this test's order
    (with attack_chains) it ends 1.1 PGD-20 points above PGD-AT and 0.4 clean below (docs/benchmarks.md, MIAT).
    """
    (x, y), (xt, yt) = digits
    model, defense, _ = pretrained
    decay_steps = MORE_EPOCHS * -(-len(x) // 64)
    _compile(model, decay_steps)
    keras.utils.set_random_seed(1000)
    logger = kam.callbacks.MutualInformationLogger(xt[:200], yt[:200], str(tmp_path), layers=["logits"],
                                                   every_n_epochs=MORE_EPOCHS, steps=5, plane_image=False)
    history = model.fit(x, y, epochs=MORE_EPOCHS, batch_size=64, verbose=0, callbacks=[logger])
    # The MI logger picks up MIAT's natural / adversarial MI (TensorBoard tags mi/output/...).
    for tag in ("mi/output/mi_natural/clean", "mi/output/mi_natural/adv", "mi/output/mi_adversarial/clean",
                "mi/output/mi_adversarial/adv"):
        assert len(logger.history[tag]) == 1 and np.isfinite(logger.history[tag][0]), tag
    for name in ("mi_natural", "mi_adversarial", "mi_loss", "selected_fraction", "adv_accuracy"):
        assert len(history.history[name]) == MORE_EPOCHS and np.all(np.isfinite(history.history[name])), name
    assert 0.0 < history.history["selected_fraction"][-1] < 1.0
    assert history.history["mi_loss"][-1] >= 0.0
    miat_clean, miat_robust = _accuracies(model.model, xt, yt)

    reference = _compile(kam.AdversarialModel(_net_from(warm, cnn_factory), kam.defenses.PGD(epsilon=EPS, steps=5, seed=0)),
                         decay_steps)
    keras.utils.set_random_seed(1000)
    reference.fit(x, y, epochs=MORE_EPOCHS, batch_size=64, verbose=0)
    pgd_clean, pgd_robust = _accuracies(reference.model, xt, yt)
    print(f"PGD-AT clean {pgd_clean:.3f} PGD-20 {pgd_robust:.3f} | MIAT clean {miat_clean:.3f} PGD-20 {miat_robust:.3f}")
    assert miat_clean >= pgd_clean - 0.03
    assert miat_robust >= pgd_robust - 0.03
    assert miat_robust > 0.5   # a real robust model, not two broken ones


def test_keras_round_trip_keeps_predictions_and_estimators(digits, pretrained, tmp_path):
    _, (xt, yt) = digits
    model, defense, _ = pretrained
    path = str(tmp_path / "miat.keras")
    model.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded.defense, kam.defenses.MIAT) and loaded.defense.pretrained
    assert loaded.defense.get_config() == defense.get_config()
    np.testing.assert_array_equal(loaded.predict(xt[:64], verbose=0), model.predict(xt[:64], verbose=0))
    x_adv = np.clip(xt[:64] + 0.1 * np.sign(np.random.default_rng(0).normal(size=xt[:64].shape)), 0, 1).astype(np.float32)
    before, after = defense.mi_scores(model, xt[:64], x_adv), loaded.defense.mi_scores(loaded, xt[:64], x_adv)
    for key in before:
        np.testing.assert_allclose(after[key], before[key], rtol=1e-5, atol=1e-5)


def test_fit_before_pretraining_is_refused(digits, cnn_factory):
    (x, y), _ = digits
    model = _compile(kam.AdversarialModel(cnn_factory(), kam.defenses.MIAT(epsilon=EPS, steps=2)))
    with pytest.raises(ValueError, match="pretrain_estimators"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)
    # Opting out trains (MI term from untrained estimators), with the logs present.
    model = _compile(kam.AdversarialModel(cnn_factory(), kam.defenses.MIAT(epsilon=EPS, steps=2, base="trades",
                                                                            require_pretrained=False, hsize=16)))
    history = model.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    assert {"natural_loss", "robust_kl", "mi_natural", "mi_loss"} <= set(history.history)


def test_mi_term_follows_the_card():
    """alpha * (|1 - cos(v_nn, v_na)| + |1 - cos(v_aa, v_an)|) over the selected samples (hand-computed)."""
    a, b, m = tf.constant([1.0, 2.0, 3.0]), tf.constant([2.0, 1.0, -1.0]), tf.constant([1.0, 1.0, 0.0])
    assert float(_masked_cos(a, b, m)) == pytest.approx(4.0 / (np.sqrt(5.0) * np.sqrt(5.0)), abs=1e-6)

    class Fixed(kam.defenses.MIAT):
        def _scores(self, x, x_adv, logits_clean, logits_adv, training=False, rows=None):
            full = (tf.constant([1.0, 2.0, 3.0]), tf.constant([2.0, 1.0, -1.0]),
                    tf.constant([1.0, 0.0, 2.0]), tf.constant([1.0, 1.0, 1.0]))
            return full if rows is None else tuple(tf.gather(v, rows) for v in full)

    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, use_bias=False)])
    net.set_weights([np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)])
    x = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1)
    y = np.array([0, 1, 2])
    x_adv = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1)  # fools 0 and 1
    defense = Fixed(epsilon=0.5, steps=1, alpha=5.0)
    out = defense.loss(net, tf.constant(x), tf.constant(y), tf.constant(x_adv), training=False)
    # selected = [1, 1, 0]: natural cos = (2 + 2) / (sqrt(5) sqrt(5)) = 0.8; adversarial: v_aa = [1, 1], v_an = [1, 0]
    expected_mi = abs(1 - 0.8) + abs(1 - 1 / np.sqrt(2))
    np.testing.assert_allclose(out.logs["mi_loss"].numpy(), expected_mi, rtol=1e-5)
    np.testing.assert_allclose(out.logs["selected_fraction"].numpy(), [1, 1, 0])
    values, weights = out.logs["mi_natural"]          # v_n(x -> h(x~)), a mean over the selected samples
    np.testing.assert_allclose(values.numpy(), [2, 1, 0])
    np.testing.assert_allclose(weights.numpy(), [1, 1, 0])
    base = keras.losses.sparse_categorical_crossentropy(y, net(x_adv), from_logits=True).numpy()
    np.testing.assert_allclose(out.per_sample.numpy(), base + 5.0 * expected_mi, rtol=1e-5)


def test_alpha_warmup_ramps_the_mi_weight_and_saves_its_step_count(digits, tmp_path):
    """alpha_warmup_steps=4: the MI term enters training with weight alpha * min(1, t / 4), t = 1, 2, ...;
    evaluation uses the full weight and does not count; fit's steps are counted and saved in .keras."""
    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, use_bias=False)])
    net.set_weights([np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)])
    x = tf.constant(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1))
    y = tf.constant([0, 1, 2])
    x_adv = tf.constant(np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1))
    defense = kam.defenses.MIAT(epsilon=0.5, steps=1, alpha=5.0, alpha_warmup_steps=4, hsize=8,
                                require_pretrained=False)
    defense.build(net)
    base = defense.base.loss(net, x, y, x_adv, False).per_sample.numpy()
    mi = float(defense.loss(net, x, y, x_adv, training=False).logs["mi_loss"][0])
    assert mi > 0
    weights = []
    for _ in range(5):
        out = defense.loss(net, x, y, x_adv, training=True)
        weights.append(float(out.per_sample[0] - base[0]) / (5.0 * mi))
    np.testing.assert_allclose(weights, [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-4)
    evaluation = defense.loss(net, x, y, x_adv, training=False)
    np.testing.assert_allclose(float(evaluation.per_sample[0] - base[0]), 5.0 * mi, rtol=1e-4)
    assert int(defense._steps.counter.numpy()) == 5

    (xd, yd), _ = digits
    model = kam.AdversarialModel(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                                   keras.layers.Dense(10)]),
                                 kam.defenses.MIAT(epsilon=0.1, steps=1, alpha_warmup_steps=10, hsize=8,
                                                   require_pretrained=False))
    model.compile(optimizer="adam")
    model.fit(xd[:128], yd[:128], batch_size=64, epochs=1, verbose=0)
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.defense.alpha_warmup_steps == 10 and int(loaded.defense._steps.counter.numpy()) == 2


@pytest.mark.parametrize("bound, diagonal", [("dv", "exclude"), ("dv", "zero"), ("jsd", "exclude"),
                                             ("infonce", "exclude")])
def test_scoring_selected_rows_equals_the_full_tensor(bound, diagonal):
    """score_features(rows=S) gives the full (N,) scores at S: the loss's cheaper path changes no value."""
    from keras_advmi.layers.dim import MIEstimator

    keras.utils.set_random_seed(3)
    estimator = MIEstimator(16, (8, 8), bound, diagonal)
    estimator.build((None, 8, 8, 1), (None, 10))
    pattern = tf.random.uniform((12, 8, 8, 1))
    outputs = tf.random.normal((12, 10))
    local = estimator.local_features(pattern)
    full = estimator.score_features(local, outputs).numpy()
    rows = tf.constant([0, 3, 4, 11], tf.int64)
    np.testing.assert_allclose(estimator.score_features(local, outputs, rows=rows).numpy(), full[rows.numpy()],
                               rtol=1e-5, atol=1e-5)
    assert estimator.score_features(local, outputs, rows=tf.zeros([0], tf.int64)).shape == (0,)


def test_miat_loss_on_selected_rows_matches_the_masked_full_computation(digits, cnn_factory):
    """The MI term computed from the selected rows equals the card's masked formula on all N rows."""
    (x, y), _ = digits
    net = cnn_factory(seed=0)
    defense = kam.defenses.MIAT(epsilon=0.3, steps=3, seed=0, hsize=16, require_pretrained=False)
    defense.build(net)
    xb, yb = tf.constant(x[:64]), tf.constant(y[:64])
    x_adv = defense.adversarial_examples(net, xb, yb)
    with tf.GradientTape(persistent=True) as tape:
        out = defense.loss(net, xb, yb, x_adv, training=False)
        mask = out.logs["selected_fraction"]
        v_nn, v_na, v_an, v_aa = defense._scores(xb, x_adv, out.logits_clean, out.logits_adv)
        reference = 5.0 * (tf.abs(1.0 - _masked_cos(v_nn, v_na, mask)) + tf.abs(1.0 - _masked_cos(v_aa, v_an, mask)))
        ours = out.per_sample[0] - defense.base.loss(net, xb, yb, x_adv, False).per_sample[0]
    assert 0 < float(tf.reduce_sum(mask)) < 64
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-4)
    weights = net.trainable_weights
    for g_ours, g_ref in zip(tape.gradient(ours, weights), tape.gradient(reference, weights)):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-1.0), "alpha"),
    (dict(alpha_warmup_steps=-1), "alpha_warmup_steps"),
    (dict(base="fgsm"), "base"),
    (dict(estimator="mine"), "estimator"),
    (dict(selection="wrong"), "selection"),
    (dict(variant="adversarial"), "variant"),
    (dict(diagonal="keep"), "diagonal"),
    (dict(hsize=0), "hsize"),
    (dict(base_options=[1]), "base_options"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        kam.defenses.MIAT(epsilon=0.3, **kwargs)

"""MIAT / NAMID on digits: the MIAT paper's MI ordering after pretraining, accuracy vs PGD-AT on the same budget,
MI logs in history, .keras round-trip, distribution-free checks of the loss, bad arguments."""

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_advmi as kam
from keras_advmi.defenses.miat_scores import masked_cos

EPS = 0.2
WARM_EPOCHS, MORE_EPOCHS = 10, 10


def _compile(model, decay_steps=None):
    """Adam(2e-3); with ``decay_steps``, cosine-decayed to 0 over them (both arms of a comparison get it)."""
    lr = 2e-3 if decay_steps is None else keras.optimizers.schedules.CosineDecay(2e-3, decay_steps)
    model.compile(optimizer=keras.optimizers.Adam(lr), metrics=["accuracy"])
    return model


def _accuracies(net, xt, yt):
    x_adv = kam.attacks.pgd(net, xt, yt, epsilon=EPS, step_size=None, steps=20, seed=11)
    clean = float((np.argmax(net.predict(xt, verbose=0), 1) == yt).mean())
    robust = float((np.argmax(net.predict(x_adv, verbose=0), 1) == yt).mean())
    return clean, robust


@pytest.fixture(scope="module")
def warm(digits, cnn_factory):
    """PGD-AT for WARM_EPOCHS epochs (the paper's step 1): the shared starting point."""
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
    # The paper's explicit protocol: warm (PGD-AT) -> pretrain_estimators -> fit (whose "auto" schedule then skips its
    # own base and pretraining phases).
    defense = kam.defenses.MIAT(epsilon=EPS, steps=5, seed=0, estimators=kam.defenses.MIATEstimators(hsize=64),
                                phases=kam.defenses.MIATPhases(alpha_warmup_steps=-(-len(x) // 64)))
    model = kam.AdversarialModel(_net_from(warm, cnn_factory), defense)
    history = defense.pretrain_estimators(model, x, y, batch_size=128, verbose=0)   # 20 epochs, lr 3e-3
    return model, defense, history


def test_mi_ordering_on_held_out_data(digits, pretrained):
    """The paper's finding: on successful attacks, natural MI is higher for (x, h(x)) than for (x, h(x~)), and
    adversarial MI higher for (n, h(x~)) than for (n, h(x)). Held-out pairs, the pretraining attack (L2)."""
    model, defense, history = pretrained
    _, (xt, yt) = digits
    assert len(history["natural_loss"]) == 20 and defense.pretrained
    eps2 = defense.pretrain_attack_epsilon(xt.shape[1:])
    assert eps2 == pytest.approx(0.3 * EPS * 8.0)
    x_adv = kam.attacks.pgd(model.model, xt, yt, epsilon=eps2, step_size=None, steps=20, norm=2, seed=5)
    scores = defense.mi_scores(model, xt, x_adv)
    assert set(scores) == {"mi_natural/clean", "mi_natural/adv", "mi_adversarial/clean", "mi_adversarial/adv"}
    pred_clean = model.model.predict(xt, verbose=0).argmax(1)
    pred_adv = model.model.predict(x_adv, verbose=0).argmax(1)
    fooled = (pred_clean == yt) & (pred_adv != yt)
    assert fooled.sum() >= 30
    mean = {k: float(v[fooled].mean()) for k, v in scores.items()}
    assert mean["mi_natural/clean"] > mean["mi_natural/adv"] + 0.1, mean
    assert mean["mi_adversarial/adv"] > mean["mi_adversarial/clean"] + 0.1, mean


def test_fit_alone_from_an_untrained_cnn_keeps_up_with_pgd_at(digits, cnn_factory, tmp_path):
    """``fit`` alone, defaults, 12 epochs from an untrained small CNN (3 base epochs,
    1 of estimator pretraining, 8 of MIAT with 3 of ramp): within 3 points of PGD-AT's clean and 5 of its
    adversarial validation accuracy (PGD-10, eps 0.1), the same budget (12 epochs of fit), seed and batches.
    Measured over 5 batch orders (docs/results.md, digits table); this order: +0.0 / +1.3 points.
    58 s on a quiet machine (5.5 min when the 2 cores are shared by four jobs)."""
    (x, y), (xt, yt) = digits
    results = {}
    for name in ("pgd", "miat"):
        cls = kam.defenses.PGD if name == "pgd" else kam.defenses.MIAT
        model = _compile(kam.AdversarialModel(cnn_factory(seed=0), cls(epsilon=0.1, step_size=0.025, steps=5, seed=0)))
        callbacks = []
        if name == "miat":   # the MI logger reads MIAT's estimators (TensorBoard tags mi/output/...)
            callbacks = [kam.callbacks.MutualInformationLogger(xt[:128], yt[:128], str(tmp_path), layers=["logits"],
                                                               every_n_epochs=12, steps=5, plane_image=False)]
        keras.utils.set_random_seed(1000)
        history = model.fit(x, y, epochs=12, batch_size=64, verbose=0, validation_data=(xt, yt), validation_freq=12,
                            callbacks=callbacks).history
        results[name] = (history["val_accuracy"][-1], history["val_adv_accuracy"][-1])
    print(f"PGD-AT clean/adv {results['pgd']} | MIAT {results['miat']}")
    assert history["miat_phase"] == [0, 0, 0, 1, 2, 2, 2, 2, 2, 2, 2, 2]
    assert [v != 0 for v in history["estimator_natural_loss"]] == [False] * 3 + [True] + [False] * 8
    w = history["mi_weight"]
    assert w[3] == 0 and 0 < w[4] < w[5] < w[6] < 5 and w[7:] == [5.0] * 5
    assert all(np.isfinite(history[k][-1]) for k in ("mi_natural", "mi_adversarial", "mi_loss"))
    assert model.defense.pretrained
    tags = ("mi/output/mi_natural/clean", "mi/output/mi_natural/adv", "mi/output/mi_adversarial/clean",
            "mi/output/mi_adversarial/adv")
    assert all(np.isfinite(callbacks[0].history[t][-1]) for t in tags)
    assert results["miat"][0] >= results["pgd"][0] - 0.03
    assert results["miat"][1] >= results["pgd"][1] - 0.05
    assert results["miat"][1] > 0.6   # a real robust model, not two broken ones


@pytest.mark.slow   # 49 s on a quiet machine, 3.5 min under load: two processes, each tracing MIAT's step
def test_killed_miat_run_resumes_in_its_phase_and_finishes(tmp_path):
    """SIGKILL after 2 of the 4 steps of the second (of two) estimator-pretraining
    epochs; the rerun
    restores the state saved after the first (MIAT's step 8, 4 estimator and 4 model updates), redoes the
    second pretraining epoch (model frozen) and finishes the MIAT phase: 6 epochs of 4 steps, phases
    0, 1, 1, 2, 2, 2."""
    import os
    import signal
    import subprocess
    import sys
    from pathlib import Path

    script = Path(__file__).parent / "scripts" / "resumable_miat.py"
    env = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
    backup = str(tmp_path / "backup")
    proc = subprocess.Popen([sys.executable, str(script), backup, "6"], stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL, text=True, env={**env, "PAUSE_AT": "2:1"})
    seen = []
    for line in proc.stdout:   # killed after 2 of the 4 steps of epoch 2: two estimator updates not backed up
        seen.append(line.strip())
        if line.startswith("paused"):
            proc.send_signal(signal.SIGKILL)
            break
    proc.wait(timeout=60)
    assert proc.returncode == -signal.SIGKILL, seen
    assert seen[:2] == ["epoch_begin 0 counts 0 0 0", "phase 0 0.000"], seen
    assert seen[-1] == "paused counts 10 6 4", seen   # mid-phase 1: 6 estimator updates, the model frozen at 4
    out = subprocess.run([sys.executable, str(script), backup, "6"], capture_output=True, text=True, env=env,
                         timeout=900)
    assert out.returncode == 0, out.stderr[-2000:]
    lines = out.stdout.splitlines()
    assert lines[0] == "epoch_begin 2 counts 8 4 4", out.stdout      # epochs 0 (base) and 1 (pretraining) restored
    phases = [float(l.split()[2]) for l in lines if l.startswith("phase")]
    assert phases == [1.0, 2.0, 2.0, 2.0], out.stdout
    assert lines[-1] == "done 24 8 16", out.stdout    # 24 steps: 8 estimator updates (epochs 1-2), 16 model ones


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


def test_fit_without_pretraining_phase_or_pretrained_estimators_is_refused(digits, cnn_factory):
    (x, y), _ = digits
    defense = kam.defenses.MIAT(epsilon=EPS, steps=2, phases=kam.defenses.MIATPhases(pretrain_epochs=0))
    model = _compile(kam.AdversarialModel(cnn_factory(), defense))
    with pytest.raises(ValueError, match="pretrain_estimators"):
        model.fit(x[:64], y[:64], epochs=1, verbose=0)


def _weights(variables):
    return [v.numpy().copy() for v in variables]


def _changed(before, after):
    return any(not np.array_equal(a, b) for a, b in zip(before, after))


def test_fit_runs_the_phases_gates_each_update_and_saves_its_state(digits, tmp_path):
    """base_steps=2, pretrain_steps=2, alpha_warmup_steps=2 on 6 steps of TRADES-based MIAT: the model is
    updated in steps 1-2 and 5-6 only, the estimators in steps 3-4 only (the estimator optimizer counts 2,
    the model's 4); the MI weight is 0, 0, 0, 0, alpha/2, alpha; the phase and the schedule are logged
    and saved with the model."""
    (x, y), _ = digits
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    defense = kam.defenses.MIAT(epsilon=0.1, steps=2, base="trades", seed=0, attack_chains=1,
                                estimators=kam.defenses.MIATEstimators(hsize=8, filters=(8, 8)),
                                phases=kam.defenses.MIATPhases(base_steps=2, pretrain_steps=2, alpha_warmup_steps=2),
                                pretraining=kam.defenses.MIATPretraining(attack_steps=2))
    model = _compile(kam.AdversarialModel(net, defense))
    assert model.trainable_weights == net.trainable_weights   # the estimators are trained by MIAT, not by fit
    seen = []

    class Watch(keras.callbacks.Callback):
        def on_train_batch_begin(self, batch, logs=None):
            seen.append({"model": _weights(net.weights), "estimators": _weights(defense.estimator_variables())})

        def on_train_batch_end(self, batch, logs=None):
            seen[-1].update(model_after=_weights(net.weights), estimators_after=_weights(defense.estimator_variables()),
                            logs=dict(logs))

    history = model.fit(x[:96], y[:96], epochs=1, batch_size=16, verbose=0, callbacks=[Watch()])
    assert len(seen) == 6
    assert [_changed(s["model"], s["model_after"]) for s in seen] == [True, True, False, False, True, True]
    assert [_changed(s["estimators"], s["estimators_after"]) for s in seen] == [False, False, True, True, False, False]
    assert int(defense.state.optimizer.iterations.numpy()) == 2 and int(model.optimizer.iterations.numpy()) == 4
    assert defense.pretrained
    assert defense.schedule == {"resolved": True, "base": 2, "pretrain": 2, "ramp": 2, "step": 6}
    # Batch logs are running means over the epoch: the per-step phases 0, 0, 1, 1, 2, 2 and weights 0, 0, 0, 0, 2.5, 5.
    np.testing.assert_allclose([s["logs"]["miat_phase"] for s in seen], np.cumsum([0, 0, 1, 1, 2, 2]) / np.arange(1, 7))
    np.testing.assert_allclose([s["logs"]["mi_weight"] for s in seen],
                               np.cumsum([0, 0, 0, 0, 2.5, 5]) / np.arange(1, 7), rtol=1e-6)
    assert history.history["miat_phase"][0] == pytest.approx(1.0)
    for name in ("natural_loss", "robust_kl", "estimator_natural_loss", "estimator_adversarial_loss", "mi_loss"):
        assert np.isfinite(history.history[name][0]), name
    assert history.history["estimator_natural_loss"][0] != 0.0
    model.save(tmp_path / "m.keras")
    loaded = keras.models.load_model(tmp_path / "m.keras")
    assert loaded.defense.schedule == defense.schedule and loaded.defense.pretrained
    assert int(loaded.defense.state.optimizer.iterations.numpy()) == 2


def test_phase_longer_than_the_run_missing_layer_and_unit_clashes_are_refused(digits, cnn_factory):
    (x, y), _ = digits
    defense = kam.defenses.MIAT(epsilon=EPS, steps=1, estimators=kam.defenses.MIATEstimators(hsize=8),
                                phases=kam.defenses.MIATPhases(base_epochs=1, pretrain_epochs=2))
    model = _compile(kam.AdversarialModel(cnn_factory(), defense))
    with pytest.raises(ValueError, match=r"pretrain_epochs.*leave no MIAT step"):
        model.fit(x[:128], y[:128], epochs=3, batch_size=64, verbose=0)
    assert not model.defense.schedule["resolved"] and model.defense.schedule["step"] == 0
    with pytest.raises(ValueError, match="`layer`.*'conv1'.*Received: layer='conv9'"):
        kam.AdversarialModel(cnn_factory(), kam.defenses.MIAT(epsilon=EPS, estimators=kam.defenses.MIATEstimators(layer="conv9")))
    with pytest.raises(ValueError, match="`base_epochs`, expected 'auto' when `base_steps` is given"):
        kam.defenses.MIATPhases(base_epochs=2, base_steps=10)


def test_estimators_on_an_internal_layer(digits, cnn_factory):
    """layer='dense1': the global encoders read the 64 features of that layer, not the 10 logits."""
    (x, y), _ = digits
    defense = kam.defenses.MIAT(epsilon=EPS, steps=1, estimators=kam.defenses.MIATEstimators(hsize=8, layer="dense1"))
    model = kam.AdversarialModel(cnn_factory(), defense)
    assert defense.natural.global_encoder.block.hidden.kernel.shape == (64, 8)
    scores = defense.mi_scores(model, x[:32], np.clip(x[:32] + 0.1, 0, 1))
    assert all(v.shape == (32,) and np.all(np.isfinite(v)) for v in scores.values())


def test_mi_term_follows_the_card():
    """alpha * (|1 - cos(v_nn, v_na)| + |1 - cos(v_aa, v_an)|) over the selected samples (hand-computed)."""
    a, b, m = tf.constant([1.0, 2.0, 3.0]), tf.constant([2.0, 1.0, -1.0]), tf.constant([1.0, 1.0, 0.0])
    assert float(masked_cos(a, b, m)) == pytest.approx(4.0 / (np.sqrt(5.0) * np.sqrt(5.0)), abs=1e-6)

    def fixed_scores(x, x_adv, logits_clean, logits_adv, training=False, rows=None):
        full = (tf.constant([1.0, 2.0, 3.0]), tf.constant([2.0, 1.0, -1.0]),
                tf.constant([1.0, 0.0, 2.0]), tf.constant([1.0, 1.0, 1.0]))
        return full if rows is None else tuple(tf.gather(v, rows) for v in full)

    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, use_bias=False)])
    net.set_weights([np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)])
    x = np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1)
    y = np.array([0, 1, 2])
    x_adv = np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1)  # fools 0 and 1
    defense = kam.defenses.MIAT(epsilon=0.5, steps=1, alpha=5.0)
    defense.build(net)
    defense.estimator_pair.scores = fixed_scores      # the four scores fixed: the term is the card's arithmetic
    out = defense.loss(net, tf.constant(x), tf.constant(y), tf.constant(x_adv), training=False)
    # selected = [1, 1, 0]: natural cos = (2 + 2) / (sqrt(5) sqrt(5)) = 0.8; adversarial: v_aa = [1, 1], v_an = [1, 0]
    expected_mi = abs(1 - 0.8) + abs(1 - 1 / np.sqrt(2))
    values, weights = out.logs["mi_loss"]               # (values, weights): evaluation weighs every sample
    np.testing.assert_allclose(values.numpy(), expected_mi, rtol=1e-5)
    np.testing.assert_allclose(weights.numpy(), 1.0)
    np.testing.assert_allclose(out.logs["selected_fraction"].numpy(), [1, 1, 0])
    values, weights = out.logs["mi_natural"]          # v_n(x -> h(x~)), a mean over the selected samples
    np.testing.assert_allclose(values.numpy(), [2, 1, 0])
    np.testing.assert_allclose(weights.numpy(), [1, 1, 0])
    base = keras.losses.sparse_categorical_crossentropy(y, net(x_adv), from_logits=True).numpy()
    np.testing.assert_allclose(out.per_sample.numpy(), base + 5.0 * expected_mi, rtol=1e-5)


def test_alpha_warmup_ramps_the_mi_weight():
    """alpha_warmup_steps=4 (a custom loop, schedule not resolved: no base or pretraining phase): the MI term
    enters training with weight alpha * min(1, t / 4), t = 1, 2, ...; evaluation uses the full weight and
    does not count."""
    net = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.Flatten(), keras.layers.Dense(3, use_bias=False)])
    net.set_weights([np.array([[1, 0, 0], [0, 1, 0], [0, 0, 1], [0, 0, 0]], np.float32)])
    x = tf.constant(np.array([[1, 0, 0, 0], [0, 1, 0, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1))
    y = tf.constant([0, 1, 2])
    x_adv = tf.constant(np.array([[0, 1, 0, 0], [0, 0, 1, 0], [0, 0, 1, 0]], np.float32).reshape(3, 2, 2, 1))
    defense = kam.defenses.MIAT(epsilon=0.5, steps=1, alpha=5.0, estimators=kam.defenses.MIATEstimators(hsize=8),
                                phases=kam.defenses.MIATPhases(alpha_warmup_steps=4),
                                pretraining=kam.defenses.MIATPretraining(required=False))
    defense.build(net)
    base = defense.base.loss(net, x, y, x_adv, False).per_sample.numpy()
    mi = float(defense.loss(net, x, y, x_adv, training=False).logs["mi_loss"][0][0])
    assert mi > 0
    weights = []
    for _ in range(5):
        out = defense.loss(net, x, y, x_adv, training=True)
        weights.append(float(out.per_sample[0] - base[0]) / (5.0 * mi))
    np.testing.assert_allclose(weights, [0.25, 0.5, 0.75, 1.0, 1.0], rtol=1e-4)
    evaluation = defense.loss(net, x, y, x_adv, training=False)
    np.testing.assert_allclose(float(evaluation.per_sample[0] - base[0]), 5.0 * mi, rtol=1e-4)
    assert defense.schedule["step"] == 5


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
    defense = kam.defenses.MIAT(epsilon=0.3, steps=3, seed=0, estimators=kam.defenses.MIATEstimators(hsize=16),
                                pretraining=kam.defenses.MIATPretraining(required=False))
    defense.build(net)
    xb, yb = tf.constant(x[:64]), tf.constant(y[:64])
    x_adv = defense.adversarial_examples(net, xb, yb)
    with tf.GradientTape(persistent=True) as tape:
        out = defense.loss(net, xb, yb, x_adv, training=False)
        mask = out.logs["selected_fraction"]
        v_nn, v_na, v_an, v_aa = defense.estimator_pair.scores(xb, x_adv, out.logits_clean, out.logits_adv)
        reference = 5.0 * (tf.abs(1.0 - masked_cos(v_nn, v_na, mask)) + tf.abs(1.0 - masked_cos(v_aa, v_an, mask)))
        ours = out.per_sample[0] - defense.base.loss(net, xb, yb, x_adv, False).per_sample[0]
    assert 0 < float(tf.reduce_sum(mask)) < 64
    np.testing.assert_allclose(float(ours), float(reference), rtol=1e-4)
    weights = net.trainable_weights
    for g_ours, g_ref in zip(tape.gradient(ours, weights), tape.gradient(reference, weights)):
        np.testing.assert_allclose(g_ours.numpy(), g_ref.numpy(), rtol=1e-3, atol=1e-5)


@pytest.mark.parametrize("kwargs, match", [
    (dict(alpha=-1.0), "alpha"),
    (dict(lam=float("nan")), "lam"),
    (dict(base="fgsm"), "base"),
    (dict(selection="wrong"), "selection"),
    (dict(variant="adversarial"), "variant"),
    (dict(base_options=[1]), "base_options"),
    (dict(estimators={"hsize": 8}), "estimators"),
    (dict(phases=kam.defenses.MIATEstimators()), "phases"),
    (dict(pretraining="official"), "pretraining"),
])
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=f"`{match}`"):
        kam.defenses.MIAT(epsilon=0.3, **kwargs)


@pytest.mark.parametrize("cls, kwargs, match", [
    ("MIATEstimators", dict(bound="mine"), "bound"),
    ("MIATEstimators", dict(hsize=0), "hsize"),
    ("MIATEstimators", dict(filters=(8, 0)), "filters"),
    ("MIATEstimators", dict(filters=8), "filters"),
    ("MIATEstimators", dict(diagonal="keep"), "diagonal"),
    ("MIATEstimators", dict(layer=3), "layer"),
    ("MIATPhases", dict(alpha_warmup_steps=-1), "alpha_warmup_steps"),
    ("MIATPhases", dict(pretrain_epochs=-1), "pretrain_epochs"),
    ("MIATPhases", dict(base_steps=1.5), "base_steps"),
    ("MIATPhases", dict(base_epochs="half"), "base_epochs"),
    ("MIATPhases", dict(base_epochs=2, base_steps=10), "base_epochs"),
    ("MIATPretraining", dict(learning_rate=0.0), "learning_rate"),
    ("MIATPretraining", dict(norm=1), "norm"),
    ("MIATPretraining", dict(epsilon=0.0), "epsilon"),
    ("MIATPretraining", dict(norm=np.inf, epsilon=2.0), "epsilon"),
    ("MIATPretraining", dict(attack_steps=0), "attack_steps"),
    ("MIATPretraining", dict(required="yes"), "required"),
])
def test_config_objects_refuse_bad_arguments_by_name(cls, kwargs, match):
    with pytest.raises(ValueError, match=f"`{match}`"):
        getattr(kam.defenses, cls)(**kwargs)


def test_config_objects_round_trip_and_nest_in_miat_config():
    """Each config object's get_config rebuilds an equal object; MIAT.get_config nests them and from_config
    rebuilds MIAT with equal ones (the .keras round trip goes through these)."""
    estimators = kam.defenses.MIATEstimators(bound="jsd", hsize=16, filters=[8, 8], layer="dense1")
    phases = kam.defenses.MIATPhases(base_epochs=1, pretrain_steps=3, alpha_warmup_epochs=0.5)
    pretraining = kam.defenses.MIATPretraining(learning_rate=1e-3, norm="inf", epsilon=0.1, required=False)
    assert estimators.filters == (8, 8) and phases.base_epochs == 1.0 and pretraining.norm == np.inf
    for config in (estimators, phases, pretraining):
        assert type(config).from_config(config.get_config()) == config
    defense = kam.defenses.MIAT(epsilon=0.2, steps=3, base="trades", base_options={"beta": 3.0}, seed=1,
                                estimators=estimators, phases=phases, pretraining=pretraining)
    config = defense.get_config()
    assert config["estimators"] == estimators.get_config() and config["phases"]["pretrain_steps"] == 3
    assert config["pretraining"]["norm"] == "inf" and config["steps"] == 3 and config["eval_steps"] == 10
    rebuilt = kam.defenses.MIAT.from_config(config)
    assert (rebuilt.estimators, rebuilt.phases, rebuilt.pretraining) == (estimators, phases, pretraining)
    assert rebuilt.get_config() == config and rebuilt.base.beta == 3.0


def test_flat_options_of_the_former_api_are_unexpected_keywords():
    for name, value in (("hsize", 64), ("estimator", "dv"), ("base_epochs", 1), ("pretrain_learning_rate", 1e-3),
                        ("require_pretrained", False)):
        with pytest.raises(TypeError, match=f"unexpected keyword argument '{name}'"):
            kam.defenses.MIAT(epsilon=0.3, **{name: value})


def test_eval_steps_and_the_base_attack_options_reach_the_base():
    defense = kam.defenses.MIAT(epsilon=2.0, steps=20, norm=2, random_start=False)
    assert defense.eval_steps == defense.base.eval_steps == 20
    assert defense.base.norm == 2 and defense.base.random_start is False and defense.base.steps == 20
    assert kam.defenses.MIAT(epsilon=0.3, eval_steps=7).base.eval_steps == 7


def test_fit_traces_the_train_step_once(digits):
    """AdversarialModel.fit creates the optimizer's and the compiled metrics' variables before the first trace:
    without a strategy Keras creates them inside it, and a tf.function that creates variables is traced twice
    (MIAT's graph took 94 s to trace twice on the shared cores, 38-49 s once)."""
    (x, y), _ = digits
    traces = []

    class Counting(kam.AdversarialModel):
        def train_step(self, data):
            traces.append(1)
            return super().train_step(data)

    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model = _compile(Counting(net, kam.defenses.PGD(epsilon=0.1, steps=1, seed=0, attack_chains=1)))
    model.fit(x[:64], y[:64], epochs=2, batch_size=32, verbose=0)
    assert len(traces) == 1

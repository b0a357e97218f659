import inspect

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_advmi as kam
from keras_advmi.attacks.trades import kl_divergence

DEFENSES = {
    "pgd": lambda: kam.defenses.PGD(epsilon=0.2, steps=5, seed=0),
    "trades": lambda: kam.defenses.TRADES(epsilon=0.2, steps=5, seed=0),
    "mart": lambda: kam.defenses.MART(epsilon=0.2, steps=5, seed=0),
    "fast_at": lambda: kam.defenses.FastAT(epsilon=0.2, seed=0),
}


class Fixed(keras.layers.Layer):
    """Returns fixed logits per sample index (for hand-checked loss formulas)."""

    def __init__(self, logits):
        super().__init__()
        self.table = tf.constant(logits, tf.float32)

    def call(self, x, training=None):
        return tf.gather(self.table, tf.cast(x[:, 0], tf.int32))


def test_trades_and_mart_losses_match_formulas():
    clean = [[2.0, 0.0, -1.0], [0.5, 0.3, 0.0]]
    adv = [[0.5, 1.0, -1.0], [0.0, 1.0, 0.2]]
    logits = np.array(clean + adv, np.float32)
    model = Fixed(logits)
    x, x_adv, y = tf.constant([[0.0], [1.0]]), tf.constant([[2.0], [3.0]]), tf.constant([0, 1], tf.int64)
    pc, pa = tf.nn.softmax(clean).numpy(), tf.nn.softmax(adv).numpy()
    kl = (pc * (np.log(pc) - np.log(pa))).sum(1)
    out = kam.defenses.TRADES(epsilon=0.1, beta=6.0).loss(model, x, y, x_adv, training=False)
    np.testing.assert_allclose(out.per_sample.numpy(), -np.log(pc[[0, 1], [0, 1]]) + 6 * kl, rtol=1e-5)
    out = kam.defenses.MART(epsilon=0.1, lam=6.0).loss(model, x, y, x_adv, training=False)
    other = np.array([max(pa[0, 1], pa[0, 2]), max(pa[1, 0], pa[1, 2])])
    bce = -np.log(pa[[0, 1], [0, 1]]) - np.log(1 - other)
    np.testing.assert_allclose(out.per_sample.numpy(), bce + 6 * kl * (1 - pc[[0, 1], [0, 1]]), rtol=1e-5)
    np.testing.assert_allclose(kl_divergence(tf.constant(clean), tf.constant(adv)).numpy(), kl, rtol=1e-5)


def test_fast_at_examples_in_ball(trained_digits_model, digits):
    (x, y), _ = digits
    d = kam.defenses.FastAT(epsilon=0.1)
    adv = d.adversarial_examples(trained_digits_model, tf.constant(x[:32]), tf.constant(y[:32]),
                                 seed=tf.constant([1, 2], tf.int64)).numpy()
    assert np.abs(adv - x[:32]).max() <= 0.1 + 1e-6 and 0 <= adv.min() and adv.max() <= 1
    assert d.step_size == pytest.approx(0.125)


def test_n_fgsm_examples_leave_the_ball_up_to_three_eps(trained_digits_model, digits):
    """N-FGSM: noise U(-2 eps, 2 eps) plus one eps step, not projected: |delta| <= 3 eps, often > eps."""
    (x, y), _ = digits
    x, y = tf.constant(x[:64]), tf.constant(y[:64])
    seed = tf.constant([1, 2], tf.int64)
    d = kam.defenses.FastAT(epsilon=0.1, step_size=0.1, noise=2.0, project=False)
    delta = d.adversarial_examples(trained_digits_model, x, y, seed=seed).numpy() - x.numpy()
    assert np.abs(delta).max() <= 0.3 + 1e-6 and np.mean(np.abs(delta) > 0.1 + 1e-6) > 0.2
    assert 0 <= (x.numpy() + delta).min() and (x.numpy() + delta).max() <= 1 + 1e-6
    # noise 0 and projection on: plain FGSM at eps (the step lands on the ball's faces or the [0, 1] box)
    fgsm = kam.defenses.FastAT(epsilon=0.1, step_size=0.1, noise=0.0).adversarial_examples(
        trained_digits_model, x, y, seed=seed).numpy()
    np.testing.assert_allclose(fgsm, kam.attacks.fgsm(trained_digits_model, x, y, epsilon=0.1), atol=1e-6)
    restored = kam.defenses.FastAT.from_config(d.get_config())
    assert (restored.noise, restored.project) == (2.0, False)


@pytest.mark.parametrize("name", sorted(DEFENSES))
def test_defense_trains_saves_and_loads(name, digits, cnn_factory, tmp_path):
    (x, y), (xt, yt) = digits
    robust = kam.AdversarialModel(cnn_factory(), DEFENSES[name]())
    robust.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    hist = robust.fit(x, y, epochs=3, batch_size=64, validation_data=(xt, yt), verbose=0).history
    assert {"loss", "accuracy", "adv_accuracy", "val_accuracy", "val_adv_accuracy"} <= set(hist)
    assert hist["loss"][-1] < hist["loss"][0]
    assert hist["val_accuracy"][-1] > 0.6
    for log_name in robust.defense.log_names:
        assert log_name in hist and f"val_{log_name}" in hist
    path = tmp_path / f"{name}.keras"
    robust.save(path)
    loaded = keras.models.load_model(path)
    assert isinstance(loaded, kam.AdversarialModel) and type(loaded.defense) is type(robust.defense)
    assert loaded.defense.get_config() == robust.defense.get_config()
    np.testing.assert_array_equal(loaded.predict(xt, verbose=0), robust.predict(xt, verbose=0))


def test_sample_weight_zero_rows_do_not_train(digits, cnn_factory):
    (x, y), _ = digits
    robust = kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.1, steps=2, seed=0))
    robust.compile(optimizer=keras.optimizers.SGD(0.1))
    before = [w.copy() for w in robust.get_weights()]
    robust.fit(x[:64], y[:64], sample_weight=np.zeros(64), epochs=1, batch_size=64, verbose=0)
    for a, b in zip(before, robust.get_weights()):
        np.testing.assert_array_equal(a, b)


def test_fast_at_reports_fgsm_accuracy_in_validation(digits, cnn_factory):
    (x, y), (xt, yt) = digits
    robust = kam.AdversarialModel(cnn_factory(), kam.defenses.FastAT(epsilon=0.2, seed=0))
    robust.compile(optimizer="adam", metrics=["accuracy"])
    hist = robust.fit(x, y, epochs=1, validation_data=(xt, yt), verbose=0).history
    assert "val_fgsm_accuracy" in hist and "fgsm_accuracy" not in hist
    assert 0.0 <= hist["val_fgsm_accuracy"][0] <= 1.0


def test_catastrophic_overfitting_monitor_flags_collapse():
    from keras_advmi.callbacks.overfitting import CatastrophicOverfittingMonitor

    monitor = CatastrophicOverfittingMonitor(drop=0.2, restore_best_weights=False)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    monitor.set_model(model)
    logs = [{"val_adv_accuracy": 0.5, "val_fgsm_accuracy": 0.55}, {"val_adv_accuracy": 0.6, "val_fgsm_accuracy": 0.62},
            {"val_adv_accuracy": 0.05, "val_fgsm_accuracy": 0.9}]
    flags = []
    for epoch, log in enumerate(logs):
        monitor.on_epoch_end(epoch, log)
        flags.append(log["catastrophic_overfitting"])
    assert flags == [0.0, 0.0, 1.0] and monitor.detected_epoch == 2 and model.stop_training


def test_catastrophic_overfitting_monitor_restores_the_best_weight_average():
    """With weight averaging (use_ema + SwapEMAWeights), validation scores the averages and fit ends by
    writing the averages into the model: a collapse at epoch 3 must leave the model with epoch 2's
    averages (the most robust epoch), not the averages that fit ends with."""
    from keras_advmi.callbacks.overfitting import CatastrophicOverfittingMonitor

    keras.utils.set_random_seed(0)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    model.compile(keras.optimizers.Adam(0.1, use_ema=True, ema_momentum=0.5), "mse")
    fake = [(0.5, 0.55), (0.6, 0.62), (0.05, 0.9), (0.05, 0.9)]   # (PGD, FGSM) validation accuracy per epoch
    averages = {}

    class FakeValidation(keras.callbacks.Callback):   # runs before the monitor, on the same logs
        def on_epoch_end(self, epoch, logs=None):
            logs["val_adv_accuracy"], logs["val_fgsm_accuracy"] = fake[epoch]
            averages[epoch] = [v.numpy() for v in self.model.optimizer._model_variables_moving_average]

    monitor = CatastrophicOverfittingMonitor(drop=0.2, gap=None)
    x, y = np.random.rand(64, 2).astype("float32"), np.random.rand(64, 2).astype("float32")
    model.fit(x, y, epochs=4, batch_size=8, verbose=0,
              callbacks=[FakeValidation(), monitor, keras.callbacks.SwapEMAWeights()])
    assert monitor.detected_epoch == 2
    assert not np.allclose(averages[1][0], averages[2][0])   # the average moved between the epochs
    for final, best in zip(model.trainable_weights, averages[1]):
        np.testing.assert_allclose(final.numpy(), best, rtol=1e-6)


def test_catastrophic_overfitting_monitor_flags_a_gap_before_any_robust_epoch():
    """Our MNIST FastAT run: PGD 0.2-0.7% with FGSM 90-93% from the first epoch (no earlier best)."""
    from keras_advmi.callbacks.overfitting import CatastrophicOverfittingMonitor

    monitor = CatastrophicOverfittingMonitor(drop=0.2, gap=0.5, restore_best_weights=False)
    model = keras.Sequential([keras.Input((2,)), keras.layers.Dense(2)])
    monitor.set_model(model)
    logs = [{"val_adv_accuracy": 0.002, "val_fgsm_accuracy": 0.93}, {"val_adv_accuracy": 0.61, "val_fgsm_accuracy": 0.8},
            {"val_adv_accuracy": 0.0, "val_fgsm_accuracy": 0.07}]   # the last: a non-robust model, no gap
    flags = []
    for epoch, log in enumerate(logs):
        monitor.on_epoch_end(epoch, log)
        flags.append(log["catastrophic_overfitting"])
    assert flags == [1.0, 0.0, 0.0] and monitor.gap_epochs == [0] and not getattr(model, "stop_training", False)
    with pytest.raises(ValueError, match="`gap`"):
        CatastrophicOverfittingMonitor(gap=1.5)


@pytest.mark.parametrize("bad,match", [
    (lambda m: m.fit(np.zeros((4, 9, 9, 1), np.float32), np.zeros(4), verbose=0), "shape"),
    (lambda m: m.fit(np.zeros((4, 8, 8, 1), np.float32), np.array([0, 1, 2, 12]), verbose=0), "labels in \\[0, 9\\]"),
    (lambda m: m.fit(np.full((4, 8, 8, 1), np.nan, np.float32), np.zeros(4), verbose=0), "finite"),
    (lambda m: m.fit(np.full((4, 8, 8, 1), 255.0, np.float32), np.zeros(4), verbose=0), "\\[0, 1\\]"),
])
def test_bad_training_data_is_rejected(cnn_factory, bad, match):
    robust = kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.1, steps=1))
    robust.compile(optimizer="adam")
    with pytest.raises(ValueError, match=match):
        bad(robust)


@pytest.mark.parametrize("factory,match", [
    (lambda: kam.defenses.PGD(epsilon=1.2), "`epsilon`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, steps=-1), "`steps`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, step_size=0.0), "`step_size`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, norm=1), "`norm`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, random_start="yes"), "`random_start`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, eval_steps=0), "`eval_steps`"),
    (lambda: kam.defenses.TRADES(epsilon=0.3, beta=-1), "`beta`"),
    (lambda: kam.defenses.TRADES(epsilon=0.3, norm=2), "`norm`.*L-inf"),
    (lambda: kam.defenses.TRADES(epsilon=0.3, norm="l1"), "`norm`"),
    (lambda: kam.defenses.TRADES(epsilon=0.3, random_start=False), "`random_start`"),
    (lambda: kam.defenses.MART(epsilon=0.3, lam=-1), "`lam`"),
    (lambda: kam.defenses.PGD(epsilon=0.3, seed="x"), "`seed`"),
    (lambda: kam.defenses.FastAT(epsilon=0.3, noise=-1.0), "`noise`"),
    (lambda: kam.defenses.FastAT(epsilon=0.3, project="no"), "`project`"),
    (lambda: kam.defenses.FastAT(epsilon=0.3, step_size=-0.1), "`step_size`"),
])
def test_bad_defense_arguments(factory, match):
    with pytest.raises(ValueError, match=match):
        factory()


@pytest.mark.parametrize("factory,argument", [
    (lambda: kam.defenses.FastAT(epsilon=0.3, steps=7), "steps"),
    (lambda: kam.defenses.FastAT(epsilon=0.3, norm=2), "norm"),
    (lambda: kam.defenses.FastAT(epsilon=0.3, random_start=False), "random_start"),
    (lambda: kam.defenses.RegionAT(epsilon=0.3, step_size=0.1), "step_size"),
    (lambda: kam.defenses.RegionAT(epsilon=0.3, steps=20), "steps"),
    (lambda: kam.defenses.RegionAT(epsilon=0.3, norm=2), "norm"),
    (lambda: kam.defenses.RegionAT(epsilon=0.3, random_start=True), "random_start"),
])
def test_a_defense_refuses_arguments_it_does_not_use(factory, argument):
    """FastAT's attack is one step and RegionAT's a stored delta: a PGD setting given to them is an error
    naming it, not silently dropped."""
    with pytest.raises(TypeError, match=f"unexpected keyword argument '{argument}'"):
        factory()


DEFENSE_OPTIONS = {"epsilon", "eval_steps", "epsilon_warmup_steps", "seed", "attack_dtype", "attack_chains"}


@pytest.mark.parametrize("name", ["pgd", "trades", "mart", "fast_at", "region_at", "sns"])
def test_get_config_holds_exactly_the_defenses_own_arguments(name):
    """The config's keys are the class's named arguments plus ``Defense``'s, and it rebuilds an equal defense."""
    cls = kam.defenses.REGISTRY[name]
    own = set()
    for klass in cls.__mro__:
        if "__init__" in vars(klass) and issubclass(klass, kam.defenses.Defense):
            own |= {p.name for p in inspect.signature(klass.__init__).parameters.values()
                    if p.kind is p.POSITIONAL_OR_KEYWORD or p.kind is p.KEYWORD_ONLY} - {"self"}
    defense = cls(epsilon=0.2, layers=["conv1"]) if name == "sns" else cls(epsilon=0.2)
    config = defense.get_config()
    assert set(config) == own | DEFENSE_OPTIONS
    assert cls.from_config(config).get_config() == config


def test_registry_is_keyed_by_each_classes_name():
    assert set(kam.defenses.REGISTRY) == {"pgd", "trades", "mart", "fast_at", "region_at", "sns", "miat"}
    assert all(cls.name == name for name, cls in kam.defenses.REGISTRY.items())


def test_pgd_family_keeps_positional_order_and_eval_steps_default():
    assert [kam.defenses.PGD(0.1, 0.02, 4).step_size, kam.defenses.PGD(0.1, 0.02, 4).steps] == [0.02, 4]
    assert kam.defenses.TRADES(0.1, 0.02, 4, 3.0).beta == 3.0 and kam.defenses.MART(0.1, 0.02, 4, 2.0).lam == 2.0
    assert kam.defenses.PGD(0.1, steps=20).eval_steps == 20 and kam.defenses.PGD(0.1, steps=3).eval_steps == 10
    assert kam.defenses.PGD(0.1, steps=4).step_size == pytest.approx(2.5 * 0.1 / 4)
    assert kam.defenses.FastAT(0.1).eval_steps == 10 and kam.defenses.RegionAT(0.1).eval_steps == 10


def test_warmup_scales_the_training_step_with_epsilon(trained_digits_model, digits):
    """Under warm-up the step shrinks with the ball: at step 0 of 4, PGD runs at eps/4 with step/4."""
    (x, y), _ = digits
    x, y = tf.constant(x[:32]), tf.constant(y[:32])
    seed = tf.constant([3, 4], tf.int64)
    warm = kam.defenses.PGD(epsilon=0.2, steps=3, epsilon_warmup_steps=4)
    adv = warm.adversarial_examples(trained_digits_model, x, y, seed=seed, step=tf.constant(0, tf.int64))
    ref = kam.attacks.pgd_graph(trained_digits_model, x, y, 0.05, 0.2 * 2.5 / 3 / 4, 3, seed=seed)
    np.testing.assert_allclose(adv.numpy(), ref.numpy(), atol=1e-6)
    assert warm.warmup_scaled(0.5, tf.constant(0.1)).numpy() == pytest.approx(0.25)


def test_defenses_without_mi_estimators_report_no_mi_scores(trained_digits_model, digits):
    (x, _), _ = digits
    for cls in (kam.defenses.PGD, kam.defenses.TRADES, kam.defenses.FastAT):
        defense = cls(epsilon=0.1)
        assert defense.mi_score_names == () and defense.mi_scores(trained_digits_model, x[:4], x[:4]) == {}


def test_adversarial_model_rejects_non_defense(cnn_factory):
    with pytest.raises(ValueError, match="`defense`"):
        kam.AdversarialModel(cnn_factory(), defense="pgd")


def test_jit_compile_matches_graph_mode(digits, cnn_factory):
    (x, y), _ = digits
    losses = {}
    for jit in (False, True):
        robust = kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.2, steps=3, random_start=False))
        robust.compile(optimizer=keras.optimizers.SGD(0.05), jit_compile=jit)
        losses[jit] = robust.fit(x[:256], y[:256], epochs=2, batch_size=64, shuffle=False, verbose=0).history["loss"]
    np.testing.assert_allclose(losses[True], losses[False], rtol=1e-3)


def test_mixed_precision_policy(digits):
    (x, y), _ = digits
    keras.mixed_precision.set_global_policy("mixed_float16")
    try:
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(16, 3, activation="relu"),
                                keras.layers.Flatten(), keras.layers.Dense(10, dtype="float32")])
        robust = kam.AdversarialModel(net, kam.defenses.TRADES(epsilon=0.2, steps=2, seed=0))
        robust.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
        hist = robust.fit(x, y, epochs=3, batch_size=64, verbose=0).history
    finally:
        keras.mixed_precision.set_global_policy("float32")
    assert np.all(np.isfinite(hist["loss"])) and hist["loss"][-1] < hist["loss"][0]


def test_validation_attack_uses_a_proper_pgd_step(trained_digits_model, digits):
    """FastAT's training step (1.25 eps) must not leak into the multi-step validation PGD."""
    _, (xt, yt) = digits
    fast = kam.defenses.FastAT(epsilon=0.1, eval_steps=10)
    x, y = tf.constant(xt[:200]), tf.constant(yt[:200])
    adv = fast.evaluation_examples(trained_digits_model, x, y, seed=tf.constant([0, 1], tf.int64)).numpy()
    reference = kam.attacks.pgd(trained_digits_model, xt[:200], yt[:200], epsilon=0.1, step_size=0.025, steps=10, seed=0)
    acc = lambda a: np.mean(np.argmax(trained_digits_model.predict(a, verbose=0), -1) == yt[:200])
    assert abs(acc(adv) - acc(reference)) <= 0.03


@pytest.mark.parametrize("name", ["fast_at", "trades"])
def test_clean_train_metrics_off_skips_only_the_training_metrics(name, digits, cnn_factory, tmp_path):
    """clean_train_metrics=False: the same weights as with it on (the clean pass never trains), no
    compiled metric in the training logs, every metric in validation; the flag survives save/load."""
    (x, y), (xt, yt) = digits
    x, y, xt, yt = x[:256], y[:256], xt[:128], yt[:128]
    runs = {}
    for flag in (True, False):
        keras.utils.set_random_seed(0)
        robust = kam.AdversarialModel(cnn_factory(), DEFENSES[name](), clean_train_metrics=flag)
        robust.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
        hist = robust.fit(x, y, epochs=2, batch_size=64, validation_data=(xt, yt), shuffle=False, verbose=0).history
        runs[flag] = robust, hist
    (on, hist_on), (off, hist_off) = runs[True], runs[False]
    for a, b in zip(on.get_weights(), off.get_weights()):
        np.testing.assert_allclose(a, b, atol=1e-6)
    assert "accuracy" in hist_on and "accuracy" not in hist_off
    assert {"loss", "adv_accuracy", "val_accuracy", "val_adv_accuracy"} <= set(hist_off)
    np.testing.assert_allclose(hist_off["val_accuracy"], hist_on["val_accuracy"], atol=1e-6)
    np.testing.assert_allclose(hist_off["loss"], hist_on["loss"], rtol=1e-5)
    off.save(tmp_path / "off.keras")
    assert keras.models.load_model(tmp_path / "off.keras").clean_train_metrics is False


def test_clean_train_metrics_must_be_a_bool(cnn_factory):
    with pytest.raises(ValueError, match="clean_train_metrics"):
        kam.AdversarialModel(cnn_factory(), kam.defenses.PGD(epsilon=0.1), clean_train_metrics="no")

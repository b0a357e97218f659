"""SNS (Zhang et al., 2019): the loss against a hand computation, top-k re-picking schedule, training, save/load, errors."""

import keras
import numpy as np
import pytest
import tensorflow as tf

from keras_advmi.defenses.sns import SNS
from keras_advmi.models import AdversarialModel


def ce(logits, y):
    logits = logits - logits.max(-1, keepdims=True)
    return np.log(np.exp(logits).sum(-1)) - logits[np.arange(len(y)), y]


def features(model, names, x):
    sub = keras.Model(model.inputs[0], [model.get_layer(n).output for n in names] + [model.outputs[0]])
    return [np.asarray(o, np.float64) for o in sub(x, training=False)]


def per_sample_sigma(fc, fa):
    diff = np.abs(fc - fa)
    return diff.mean(axis=tuple(range(1, diff.ndim - 1))) if diff.ndim > 2 else diff


def test_loss_matches_hand_computation(trained_digits_model, digits):
    (x, y), _ = digits
    xb, yb = x[:32], y[:32]
    x_adv = np.clip(xb + np.random.default_rng(0).uniform(-0.2, 0.2, xb.shape), 0, 1).astype(np.float32)
    defense = SNS(epsilon=0.2, layers=["conv1", "dense1"], top_k=3, gamma=0.5, seed=0)
    defense.build(trained_digits_model)
    out = defense.loss(trained_digits_model, tf.constant(xb), tf.constant(yb), tf.constant(x_adv), training=True)

    *fc, logits_c = features(trained_digits_model, ["conv1", "dense1"], xb)
    *fa, logits_a = features(trained_digits_model, ["conv1", "dense1"], x_adv)
    penalty = np.zeros(len(yb))
    for i, (c, a) in enumerate(zip(fc, fa)):
        sig = per_sample_sigma(c, a)
        top = np.argsort(-sig.mean(0))[:3]
        penalty += sig[:, top].mean(1)
        np.testing.assert_array_equal(np.flatnonzero(defense._state.masks[i].numpy()), np.sort(top))
    expected = ce(logits_a, yb) + ce(logits_c, yb) + 0.5 * penalty
    np.testing.assert_allclose(out.per_sample.numpy(), expected, rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out.logs["sensitivity"].numpy(), penalty, rtol=1e-4, atol=1e-6)
    assert int(defense._state.counter.numpy()) == 1


def test_gamma_zero_is_pgd_at_plus_clean_ce(trained_digits_model, digits):
    (x, y), _ = digits
    xb, yb = x[:16], y[:16]
    x_adv = np.clip(xb + 0.1, 0, 1).astype(np.float32)
    defense = SNS(epsilon=0.2, layers=["conv2"], gamma=0.0)
    defense.build(trained_digits_model)
    out = defense.loss(trained_digits_model, tf.constant(xb), tf.constant(yb), tf.constant(x_adv), training=False)
    logits_c = trained_digits_model(xb).numpy().astype(np.float64)
    logits_a = trained_digits_model(x_adv).numpy().astype(np.float64)
    np.testing.assert_allclose(out.per_sample.numpy(), ce(logits_a, yb) + ce(logits_c, yb), rtol=1e-4, atol=1e-5)


def test_top_k_re_picked_every_refresh_steps(trained_digits_model, digits):
    (x, y), _ = digits
    defense = SNS(epsilon=0.2, layers=["conv2"], top_k=4, refresh=3)
    defense.build(trained_digits_model)
    rng = np.random.default_rng(1)
    picked, expected = [], []
    current = None
    for step in range(7):
        xb = x[16 * step:16 * (step + 1)]
        # noise at steps 0 and 6, none elsewhere: a re-pick at step 3 gives channels 0..3 (all sigma 0, ties
        # go to the lower index); a wrong schedule would show at steps 1-2 or 4-5
        noise = rng.uniform(-0.3, 0.3, xb.shape) if step in (0, 6) else 0.0
        x_adv = np.clip(xb + noise, 0, 1).astype(np.float32)
        defense.loss(trained_digits_model, tf.constant(xb), tf.constant(y[:16]), tf.constant(x_adv), training=True)
        fc, _ = features(trained_digits_model, ["conv2"], xb)
        fa, _ = features(trained_digits_model, ["conv2"], x_adv)
        if step % 3 == 0:
            current = np.sort(np.argsort(-per_sample_sigma(fc, fa).mean(0), kind="stable")[:4])
        expected.append(current)
        picked.append(np.flatnonzero(defense._state.masks[0].numpy()))
    for p, e in zip(picked, expected):
        np.testing.assert_array_equal(p, e)
    assert tuple(picked[3]) == (0, 1, 2, 3) and tuple(picked[0]) != (0, 1, 2, 3)
    # evaluation calls do not advance the schedule
    defense.loss(trained_digits_model, tf.constant(x[:16]), tf.constant(y[:16]), tf.constant(x[:16]), training=False)
    assert int(defense._state.counter.numpy()) == 7


def test_trains_through_fit_and_round_trips(tmp_path, digits, cnn_factory):
    (x, y), (xt, yt) = digits
    defense = SNS(epsilon=0.2, steps=5, layers=["conv1", "conv2", "dense1"], top_k=4, gamma=1.0, refresh=2, seed=0)
    robust = AdversarialModel(cnn_factory(), defense)
    robust.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    history = robust.fit(x, y, epochs=4, batch_size=64, verbose=0, validation_data=(xt, yt))
    steps = 4 * int(np.ceil(len(x) / 64))
    assert int(defense._state.counter.numpy()) == steps
    assert all(m.numpy().sum() == 4 for m in defense._state.masks)
    # measured: val accuracy 0.96, val PGD accuracy 0.43-0.49 after 4-5 epochs (eps 0.2)
    assert history.history["val_accuracy"][-1] > 0.85
    assert history.history["val_adv_accuracy"][-1] > 0.25
    assert {"sensitivity", "natural_loss", "adversarial_loss"} <= set(history.history)
    path = str(tmp_path / "sns.keras")
    robust.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.defense, SNS) and loaded.defense.get_config() == defense.get_config()
    for a, b in zip(loaded.defense._state.masks, defense._state.masks):
        np.testing.assert_array_equal(a.numpy(), b.numpy())
    np.testing.assert_allclose(loaded.predict(xt[:16], verbose=0), robust.predict(xt[:16], verbose=0), atol=1e-5)


@pytest.mark.parametrize("top_k", [0, -1, 1.5, True, "3"])
def test_top_k_below_one_raises(top_k):
    with pytest.raises(ValueError, match="top_k"):
        SNS(layers=["conv1"], top_k=top_k)


@pytest.mark.parametrize("kwargs, name", [
    (dict(layers=None), "layers"), (dict(layers=[]), "layers"), (dict(layers=[3]), "layers"),
    (dict(layers=["conv1"], gamma=-1.0), "gamma"), (dict(layers=["conv1"], refresh=0), "refresh"),
    (dict(layers=["conv1"], epsilon=1.5), "epsilon")])
def test_bad_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        SNS(**kwargs)


def test_unknown_layer_names(cnn_factory):
    with pytest.raises(ValueError, match=r"layers.*conv7"):
        AdversarialModel(cnn_factory(), SNS(layers=["conv1", "conv7"]))


def test_top_k_clipped_to_channels(cnn_factory):
    defense = SNS(layers=["conv1", "logits"], top_k=20)
    defense.build(cnn_factory())
    assert defense._k == [20, 10]
    default = SNS(layers=["conv1", "logits"])
    default.build(cnn_factory())
    assert default._k == [3, 1]  # 10% of 32 and of 10 channels


def test_jit_compiled_fit_updates_state(digits, cnn_factory):
    (x, y), _ = digits
    defense = SNS(epsilon=0.2, steps=2, layers=["conv2"], top_k=3, refresh=2, seed=0)
    robust = AdversarialModel(cnn_factory(), defense)
    robust.compile(optimizer="adam", metrics=["accuracy"], jit_compile=True)
    robust.fit(x[:128], y[:128], epochs=1, batch_size=32, verbose=0)
    assert robust.jit_compile and int(defense._state.counter.numpy()) == 4
    assert defense._state.masks[0].numpy().sum() == 3

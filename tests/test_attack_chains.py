"""``attack_chains``: the training attack on sub-batches, as parallel chains of ops in one graph.

Splitting must not change the attack (it is per sample), must give each part its own random start,
and must survive odd and tiny batches whose size is unknown at trace time.
"""

import numpy as np
import pytest
import tensorflow as tf
import keras

import keras_advmi as kam

EPS = 0.2
SPEC = [tf.TensorSpec([None, 8, 8, 1], tf.float32), tf.TensorSpec([None], tf.int64)]


def _attack_fn(defense, model, seed=(3, 4)):
    """The training attack as ``AdversarialModel.train_step`` runs it, traced with an unknown batch size."""
    seed = tf.constant(seed, tf.int64)

    @tf.function(input_signature=SPEC)
    def run(x, y):
        return defense.in_chains(lambda x_, y_, s: defense.adversarial_examples(model, x_, y_, seed=s), x, y, seed)

    return run


@pytest.mark.parametrize("make", [lambda c: kam.defenses.PGD(EPS, steps=5, random_start=False, attack_chains=c),
                                  lambda c: kam.defenses.MART(EPS, steps=5, random_start=False, attack_chains=c)],
                         ids=["pgd", "mart"])
@pytest.mark.parametrize("n", [7, 1])
def test_chains_give_the_same_examples_as_one_chain(trained_digits_model, digits, make, n):
    (_, _), (x, y) = digits
    x, y = x[:n], y[:n].astype("int64")
    reference = _attack_fn(make(1), trained_digits_model)(x, y).numpy()
    assert np.abs(reference - x).max() > 0.1          # the attack moved the images
    for chains in (2, 3):
        got = _attack_fn(make(chains), trained_digits_model)(x, y).numpy()
        assert got.shape == x.shape                    # n=1 leaves empty parts: passed through
        np.testing.assert_allclose(got, reference, atol=1e-6)


def test_each_part_draws_its_own_random_start(trained_digits_model, digits):
    (_, _), (x, y) = digits
    twins, labels = np.repeat(x[:1], 2, axis=0), np.repeat(y[:1], 2).astype("int64")
    defense = kam.defenses.PGD(EPS, steps=0, attack_chains=2)   # steps=0: x_adv is the random start
    starts = _attack_fn(defense, trained_digits_model)(twins, labels).numpy()
    assert np.abs(starts[0] - starts[1]).max() > 0.05            # two parts, two different draws
    again = _attack_fn(defense, trained_digits_model)(twins, labels).numpy()
    np.testing.assert_array_equal(starts, again)                # and still seeded


def test_fit_with_two_chains_trains_the_same_weights(digits, cnn_factory):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    weights = {}
    for chains in (1, 2):
        robust = kam.AdversarialModel(cnn_factory(seed=0),
                                      kam.defenses.PGD(EPS, steps=3, random_start=False, attack_chains=chains))
        robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
        history = robust.fit(x, y, batch_size=64, epochs=1, shuffle=False, verbose=0)
        weights[chains] = robust.model.get_weights()
        assert np.isfinite(history.history["loss"][-1])
    for w1, w2 in zip(weights[1], weights[2]):
        np.testing.assert_allclose(w2, w1, atol=1e-5)


def test_auto_is_two_chains_on_cpu_and_one_with_an_accelerator(monkeypatch):
    defense = kam.defenses.PGD(EPS)
    assert defense.attack_chains == "auto"
    monkeypatch.setattr(tf.config, "list_logical_devices", lambda *a: [tf.config.LogicalDevice("/CPU:0", "CPU")])
    assert defense.chains() == 2
    monkeypatch.setattr(tf.config, "list_logical_devices",
                        lambda *a: [tf.config.LogicalDevice("/CPU:0", "CPU"), tf.config.LogicalDevice("/GPU:0", "GPU")])
    assert defense.chains() == 1
    assert kam.defenses.PGD(EPS, attack_chains=3).chains() == 3

    class BatchCoupled(kam.defenses.PGD):     # a defense whose attack mixes samples opts out
        per_sample_attack = False

    assert BatchCoupled(EPS, attack_chains=3).chains() == 1


def test_attack_chains_is_saved_and_restored():
    config = kam.defenses.TRADES(EPS, attack_chains=3).get_config()
    assert config["attack_chains"] == 3
    assert kam.defenses.TRADES.from_config(config).attack_chains == 3


@pytest.mark.parametrize("bad", [0, -2, 1.5, "two", True, None])
def test_bad_attack_chains_is_refused(bad):
    with pytest.raises(ValueError, match="`attack_chains`.*(one of \\('auto',\\)|an integer >= 1)"):
        kam.defenses.PGD(EPS, attack_chains=bad)

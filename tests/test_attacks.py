import inspect

import numpy as np
import pytest
import tensorflow as tf

from keras_advmi import attacks
from keras_advmi.attacks.trades import kl_divergence


@pytest.fixture(scope="module")
def batch(digits):
    (x, y), _ = digits
    return x[:64], y[:64]


@pytest.mark.parametrize("norm,eps,step,tol", [(np.inf, 0.2, 0.02, 1e-5), (2, 1.5, 0.2, 1e-5)])
def test_pgd_matches_cleverhans(trained_digits_model, batch, norm, eps, step, tol):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    x, y = batch
    ours = attacks.pgd(trained_digits_model, x, y, epsilon=eps, step_size=step, steps=20, norm=norm, random_start=False)
    ref = projected_gradient_descent(trained_digits_model, x, eps, step, 20, norm, clip_min=0.0, clip_max=1.0,
                                     y=y, rand_init=False, sanity_checks=False).numpy()
    assert np.abs(ours - x).max() > 0.5 * (step if norm == np.inf else 0)  # the attack moved
    np.testing.assert_allclose(ours, ref, atol=tol)


def test_fgsm_matches_cleverhans(trained_digits_model, batch):
    from cleverhans.tf2.attacks.fast_gradient_method import fast_gradient_method

    x, y = batch
    ref = fast_gradient_method(trained_digits_model, x, 0.1, np.inf, clip_min=0.0, clip_max=1.0, y=y).numpy()
    np.testing.assert_allclose(attacks.fgsm(trained_digits_model, x, y, epsilon=0.1), ref, atol=1e-6)


def _accuracy(model, x, y):
    return float(np.mean(np.argmax(model.predict(x, verbose=0), -1) == y))


def test_pgd_respects_ball_and_box_and_is_seeded(trained_digits_model, batch):
    x, y = batch
    a = attacks.pgd(trained_digits_model, x, y, epsilon=0.15, step_size=0.03, steps=10, seed=7)
    b = attacks.pgd(trained_digits_model, x, y, epsilon=0.15, step_size=0.03, steps=10, seed=7)
    c = attacks.pgd(trained_digits_model, x, y, epsilon=0.15, step_size=0.03, steps=10, seed=8)
    np.testing.assert_array_equal(a, b)
    assert np.abs(a - c).max() > 0
    assert np.abs(a - x).max() <= 0.15 + 1e-6 and a.min() >= 0 and a.max() <= 1
    assert _accuracy(trained_digits_model, a, y) < _accuracy(trained_digits_model, x, y) - 0.3


def test_pgd_l2_ball(trained_digits_model, batch):
    x, y = batch
    a = attacks.pgd(trained_digits_model, x, y, epsilon=1.0, step_size=0.25, steps=10, norm=2, seed=0)
    norms = np.sqrt(((a - x) ** 2).reshape(len(x), -1).sum(1))
    assert norms.max() <= 1.0 + 1e-5 and a.min() >= 0 and a.max() <= 1


def test_restarts_keep_worst_case(trained_digits_model, batch):
    x, y = batch
    single = attacks.pgd(trained_digits_model, x, y, epsilon=0.08, step_size=0.02, steps=5, seed=0)
    multi = attacks.pgd(trained_digits_model, x, y, epsilon=0.08, step_size=0.02, steps=5, seed=0, restarts=4)
    assert _accuracy(trained_digits_model, multi, y) <= _accuracy(trained_digits_model, single, y)


def test_targeted_pgd_hits_target(trained_digits_model, batch):
    x, y = batch
    target = (y + 1) % 10
    adv = attacks.pgd(trained_digits_model, x, target, epsilon=0.3, step_size=0.03, steps=30, targeted=True, seed=0)
    hit = np.mean(np.argmax(trained_digits_model.predict(adv, verbose=0), -1) == target)
    assert hit > 0.8


def test_pgd_inside_tf_function(trained_digits_model, batch):
    x, y = batch

    @tf.function
    def attack(x, y):
        return attacks.pgd_graph(trained_digits_model, x, y, 0.1, 0.02, tf.constant(5), np.inf, False, True, 2, 3)

    out = attack(tf.constant(x), tf.constant(y))
    assert out.shape == x.shape and float(tf.reduce_max(tf.abs(out - x))) <= 0.1 + 1e-6


def test_trades_kl_increases_divergence(trained_digits_model, batch):
    x, _ = batch
    adv = attacks.trades_kl(trained_digits_model, x, epsilon=0.1, step_size=0.02, steps=10, seed=0)
    p = trained_digits_model(x)
    kl_adv = float(tf.reduce_mean(kl_divergence(p, trained_digits_model(adv))))
    kl_rand = float(tf.reduce_mean(kl_divergence(p, trained_digits_model(
        np.clip(x + np.random.default_rng(0).uniform(-0.1, 0.1, x.shape), 0, 1).astype(np.float32)))))
    assert kl_adv > 5 * kl_rand and np.abs(adv - x).max() <= 0.1 + 1e-6


@pytest.mark.parametrize("kwargs,match", [
    ({"epsilon": 1.5}, "`epsilon`"), ({"epsilon": -0.1}, "`epsilon`"), ({"step_size": 0}, "`step_size`"),
    ({"steps": -1}, "`steps`"), ({"norm": 1}, "`norm`"), ({"restarts": 0}, "`restarts`"),
])
def test_pgd_bad_arguments(trained_digits_model, batch, kwargs, match):
    x, y = batch
    args = {"epsilon": 0.1, "step_size": 0.01, "steps": 2, **kwargs}
    with pytest.raises(ValueError, match=match):
        attacks.pgd(trained_digits_model, x, y, **args)


def test_bad_data(trained_digits_model, batch):
    x, y = batch
    bad = x.copy()
    bad[0, 0, 0, 0] = np.nan
    with pytest.raises(ValueError, match="finite"):
        attacks.fgsm(trained_digits_model, bad, y, epsilon=0.1)
    with pytest.raises(ValueError, match="`y`.*labels"):
        attacks.fgsm(trained_digits_model, x, y[:10], epsilon=0.1)


def test_madry_step_size_and_step_size_none(trained_digits_model, batch):
    x, y = batch
    assert attacks.madry_step_size(0.3, 40) == 2.5 * 0.3 / 40 and attacks.madry_step_size(0.3, 0) == 0.3
    default = attacks.pgd(trained_digits_model, x, y, epsilon=0.1, step_size=None, steps=5, seed=0)
    explicit = attacks.pgd(trained_digits_model, x, y, epsilon=0.1, step_size=2.5 * 0.1 / 5, steps=5, seed=0)
    np.testing.assert_array_equal(default, explicit)


def test_step_size_defaults_to_madry_in_every_attack(trained_digits_model, batch):
    """No attack has a fixed default step: ``step_size`` left out is 2.5 * epsilon / steps."""
    x, y = batch
    np.testing.assert_array_equal(attacks.pgd(trained_digits_model, x, y, epsilon=0.1, steps=4, seed=0),
                                  attacks.pgd(trained_digits_model, x, y, epsilon=0.1, step_size=0.0625, steps=4, seed=0))
    np.testing.assert_array_equal(attacks.trades_kl(trained_digits_model, x, epsilon=0.1, steps=4, seed=0),
                                  attacks.trades_kl(trained_digits_model, x, epsilon=0.1, step_size=0.0625, steps=4,
                                                    seed=0))
    for attack in (attacks.pgd, attacks.trades_kl, attacks.targeted_universal_perturbation,
                   attacks.universal_perturbations):
        assert inspect.signature(attack).parameters["step_size"].default is None, attack.__name__


def test_keyword_only_budget_and_no_random_init(trained_digits_model, batch):
    x, y = batch
    with pytest.raises(TypeError):
        attacks.pgd(trained_digits_model, x, y, 0.1)
    with pytest.raises(TypeError, match="random_init"):
        attacks.pgd(trained_digits_model, x, y, epsilon=0.1, step_size=0.02, steps=3, random_init=False)
    with pytest.raises(TypeError, match="random_init"):
        attacks.pgd_graph(trained_digits_model, x, y, 0.1, 0.02, 3, random_init=False)


def test_attacks_refuse_0_255_images_with_fits_message(trained_digits_model, batch):
    """Every public attack checks eager images as ``AdversarialModel.fit`` does: the same ValueError text."""
    import keras_advmi as kam

    x, y = batch
    x255 = x * 255.0
    robust = kam.AdversarialModel(trained_digits_model, kam.defenses.PGD(epsilon=0.1, steps=1))
    robust.compile(optimizer="adam")
    with pytest.raises(ValueError, match="pixel values in \\[0, 1\\]") as fit_error:
        robust.fit(x255, y, epochs=1, verbose=0)
    calls = {"pgd": lambda: attacks.pgd(trained_digits_model, x255, y, epsilon=0.1, steps=2),
             "pgd (eager tensor)": lambda: attacks.pgd(trained_digits_model, tf.constant(x255), y, epsilon=0.1, steps=2),
             "fgsm": lambda: attacks.fgsm(trained_digits_model, x255, y, epsilon=0.1),
             "trades_kl": lambda: attacks.trades_kl(trained_digits_model, x255, epsilon=0.1, steps=2),
             "universal": lambda: attacks.universal_perturbations(trained_digits_model, x255, y, epsilon=0.1, steps=2),
             "fooling_rates": lambda: attacks.fooling_rates(trained_digits_model, x255, y,
                                                            np.zeros((1,) + x.shape[1:], np.float32))}
    for name, call in calls.items():
        with pytest.raises(ValueError) as attack_error:
            call()
        assert str(attack_error.value) == str(fit_error.value), name


def test_pgd_with_dlr_loss(trained_digits_model, batch):
    x, y = batch
    adv = attacks.pgd(trained_digits_model, x, y, epsilon=0.2, step_size=None, steps=10, seed=0,
                      loss_fn=attacks.dlr_loss)
    assert np.abs(adv - x).max() <= 0.2 + 1e-6
    assert _accuracy(trained_digits_model, adv, y) < _accuracy(trained_digits_model, x, y)
    with pytest.raises(ValueError, match="`loss_fn`"):
        attacks.pgd(trained_digits_model, x, y, epsilon=0.1, loss_fn="dlr")

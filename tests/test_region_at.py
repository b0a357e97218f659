"""RegionAT (RAT, 2020): delta state and refresh, examples, the digits fine-tuning claim, save/load, errors."""

import keras
import numpy as np
import pytest

import keras_advmi as kam

from keras_advmi.attacks.universal import universal_perturbations
from keras_advmi.defenses.region_at import RegionAT, RegionRefresh
from keras_advmi.models import AdversarialModel
from keras_advmi.region_finetune import fine_tune


def copy_model(model, cnn_factory):
    clone = cnn_factory()
    clone.set_weights(model.get_weights())
    return clone


def test_finetune_lowers_fooling_rate_and_raises_fgsm(trained_digits_model, digits, cnn_factory):
    """Done-when 2: with 10% of digits, fresh universal perturbations fool less and FGSM accuracy rises."""
    (x, y), (xt, yt) = digits
    model = copy_model(trained_digits_model, cnn_factory)
    defense = RegionAT(epsilon=0.2, data_fraction=0.1, seed=0)
    report = fine_tune(defense, model, x, y, epochs=10, batch_size=32, learning_rate=1e-3, eval_data=(xt, yt))
    before, after = report["before"], report["after"]
    assert report["n_subset"] == pytest.approx(0.1 * len(x), abs=6) and report["n_train"] == len(x)
    assert report["data_fraction"] == 0.1 and report["wall_time_s"] > 0
    # measured (seed 0): fooling 0.36 -> 0.16, FGSM 0.036 -> 0.22, clean 0.989 -> 0.976
    assert before["fooling_rate"] > 0.25
    assert after["fooling_rate"] < before["fooling_rate"] - 0.1
    assert after["fgsm"] > before["fgsm"] + 0.08
    assert after["clean"] > 0.93
    # the deltas were refreshed every epoch and are in the budget
    assert len(report["history"]["region_fooling_rate"]) == 10
    assert report["history"]["delta_linf"][-1] == pytest.approx(0.2)
    assert int(defense._state.refreshes.numpy()) == 10
    # the fine-tuning touched the model it was given, not the session fixture
    assert not np.allclose(model.get_weights()[0], trained_digits_model.get_weights()[0])


def test_deltas_are_non_trainable_state_and_refresh(trained_digits_model, digits, cnn_factory):
    (x, y), _ = digits
    model = copy_model(trained_digits_model, cnn_factory)
    defense = RegionAT(epsilon=0.15, seed=3, universal_steps=10)
    robust = AdversarialModel(model, defense)
    (layer,) = defense.sublayers()
    assert layer.deltas.shape == (10, 8, 8, 1) and not layer.trainable_weights
    assert all(w is not layer.deltas for w in robust.trainable_weights)
    assert np.all(defense.deltas == 0)
    deltas = defense.refresh_deltas(robust, x[:300], y[:300])
    np.testing.assert_array_equal(defense.deltas, deltas)
    assert np.abs(deltas).max() == pytest.approx(0.15)
    # first refresh uses seed 3: identical to a direct call
    direct = universal_perturbations(model, x[:300], y[:300], epsilon=0.15, steps=10, seed=3)
    np.testing.assert_array_equal(deltas, direct)


def test_adversarial_examples_use_a_delta_of_another_class(trained_digits_model, digits, cnn_factory):
    (x, y), _ = digits
    defense = RegionAT(epsilon=0.2, seed=0, universal_steps=5)
    model = copy_model(trained_digits_model, cnn_factory)
    AdversarialModel(model, defense)
    deltas = defense.refresh_deltas(model, x[:200], y[:200])
    xb, yb = x[:64], y[:64]
    x_adv = defense.adversarial_examples(model, xb, yb, seed=np.array([5, 6])).numpy()
    again = defense.adversarial_examples(model, xb, yb, seed=np.array([5, 6])).numpy()
    np.testing.assert_array_equal(x_adv, again)
    targets = []
    for xi, xa, yi in zip(xb, x_adv, yb):
        matches = [t for t in range(10) if np.allclose(np.clip(xi + deltas[t], 0, 1), xa, atol=1e-6)]
        assert matches and yi not in matches
        targets.append(matches[0])
    assert len(set(targets)) >= 5  # targets are drawn at random, not fixed


def test_without_callback_deltas_stay_zero_and_loss_is_visible(digits, cnn_factory):
    (x, y), _ = digits
    robust = AdversarialModel(cnn_factory(), RegionAT(epsilon=0.2, seed=0))
    robust.compile(optimizer="adam", metrics=["accuracy"])
    history = robust.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0)
    assert history.history["delta_linf"] == [0.0]
    assert history.history["region_loss"][0] == pytest.approx(history.history["natural_loss"][0], rel=1e-4)


def test_save_load_keeps_deltas(tmp_path, trained_digits_model, digits, cnn_factory):
    (x, y), (xt, yt) = digits
    defense = RegionAT(epsilon=0.2, data_fraction=0.5, refresh=2, seed=1, universal_steps=5)
    robust = AdversarialModel(copy_model(trained_digits_model, cnn_factory), defense)
    robust.compile(optimizer="adam", metrics=["accuracy"])
    robust.fit(x[:128], y[:128], epochs=1, batch_size=64, verbose=0, callbacks=[defense.refresh_callback(x[:200], y[:200])])
    path = str(tmp_path / "rat.keras")
    robust.save(path)
    loaded = keras.saving.load_model(path)
    assert isinstance(loaded.defense, RegionAT) and loaded.defense.get_config() == defense.get_config()
    np.testing.assert_array_equal(loaded.defense.deltas, defense.deltas)
    assert np.abs(loaded.defense.deltas).max() > 0


def test_select_subset_is_stratified_and_seeded(digits):
    (_, y), _ = digits
    defense = RegionAT(data_fraction=0.05, seed=0)
    idx = defense.select_subset(y)
    assert len(np.unique(y[idx])) == 10 and len(idx) == pytest.approx(0.05 * len(y), abs=6)
    np.testing.assert_array_equal(idx, RegionAT(data_fraction=0.05, seed=0).select_subset(y))
    assert not np.array_equal(idx, defense.select_subset(y, seed=1))
    assert len(RegionAT(data_fraction=1.0).select_subset(y)) == len(y)


@pytest.mark.parametrize("kwargs, name", [
    (dict(data_fraction=0.0), "data_fraction"), (dict(data_fraction=1.5), "data_fraction"),
    (dict(data_fraction=-0.1), "data_fraction"), (dict(refresh=0), "refresh"), (dict(refresh=1.5), "refresh"),
    (dict(epsilon=2.0), "epsilon"), (dict(boundary_fraction=0.0), "boundary_fraction"),
    (dict(universal_steps=0), "universal_steps"), (dict(universal_step_size=0.0), "universal_step_size"),
    (dict(eval_steps=0), "eval_steps")])
def test_bad_constructor_arguments(kwargs, name):
    with pytest.raises(ValueError, match=name):
        RegionAT(**kwargs)


def test_bad_finetune_and_usage(trained_digits_model, digits):
    (x, y), _ = digits
    defense = RegionAT(epsilon=0.2)
    with pytest.raises(RuntimeError, match="not built"):
        defense.adversarial_examples(trained_digits_model, x[:4], y[:4])
    with pytest.raises(ValueError, match="epochs"):
        fine_tune(defense, trained_digits_model, x, y, epochs=0)
    with pytest.raises(ValueError, match="y"):
        fine_tune(defense, trained_digits_model, x, y[:-1], epochs=1)
    with pytest.raises(ValueError, match="eval_data"):
        fine_tune(defense, trained_digits_model, x, y, epochs=1, eval_data=x[:10])
    with pytest.raises(ValueError, match="model"):
        fine_tune(defense, "not a model", x, y, epochs=1)
    with pytest.raises(ValueError, match="defense"):
        fine_tune(kam.defenses.PGD(epsilon=0.2), trained_digits_model, x, y, epochs=1)
    with pytest.raises(ValueError, match="defense"):
        RegionRefresh(object(), x, y)


def test_fine_tuning_is_a_function_above_the_defense():
    """The recipe wraps an AdversarialModel, so it is not a RegionAT method (defenses do not import models)."""
    assert not hasattr(RegionAT, "finetune") and callable(RegionAT.measure)

"""AdversarialModel keeps Keras' contracts: a .keras file loads compiled, with the optimizer's state, in a fresh
process, and ``fit`` continues there exactly where it stopped; ``fit`` before ``compile`` gives Keras' message;
callbacks monitoring ``val_adv_accuracy`` or a defense's loss need no ``mode``; the CLI's model.keras loads
compiled."""

import json
import os
import subprocess
import sys
import textwrap

import keras
import numpy as np
import pytest

import keras_advmi as kam

ENV = {**os.environ, "TF_CPP_MIN_LOG_LEVEL": "2"}
N, BATCH = 192, 64          # 3 steps per epoch
# Same graph, same CPU, same inputs: the split run repeats the uninterrupted one's float32 arithmetic (measured:
# equal to the last bit on 2 CPU cores); the tolerance only allows another kernel reduction order in the new process.
ATOL = 1e-6


def _defense(name):
    if name == "pgd":
        return kam.defenses.PGD(epsilon=0.2, steps=2, seed=3, attack_chains=1)
    # MIAT's three phases in 6 steps, fixed in steps (not epochs): base 1, estimator pretraining 1, then the
    # MI term ramped in over 2 steps; the run of epoch 2 continues in phase 2 with the estimators' Adam state.
    return kam.defenses.MIAT(epsilon=0.2, steps=2, seed=3, attack_chains=1,
                             estimators=kam.defenses.MIATEstimators(hsize=8, filters=(8, 8)),
                             phases=kam.defenses.MIATPhases(base_steps=1, pretrain_steps=1, alpha_warmup_steps=2),
                             pretraining=kam.defenses.MIATPretraining(attack_steps=2))


def _robust(name):
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(4, 3, activation="relu"),
                            keras.layers.Flatten(), keras.layers.Dense(10)])
    model = kam.AdversarialModel(net, _defense(name))
    model.compile(optimizer=keras.optimizers.Adam(3e-3), metrics=["accuracy"])
    return model


CONTINUE = textwrap.dedent("""
    import json, sys
    import numpy as np
    import keras
    from keras_advmi import AdversarialModel  # noqa: F401  (registers the classes a saved model refers to)

    path, data, out = sys.argv[1:]
    arrays = np.load(data)
    x, y = arrays["x"], arrays["y"]
    model = keras.models.load_model(path)
    report = {"class": type(model).__name__, "compiled": model.compiled,
              "defense": type(model.defense).__name__, "iterations": int(model.optimizer.iterations.numpy()),
              "evaluate": model.evaluate(x, y, batch_size=64, verbose=0, return_dict=True)}
    model.fit(x, y, epochs=1, batch_size=64, shuffle=False, verbose=0)
    report["iterations_after"] = int(model.optimizer.iterations.numpy())
    np.savez(out + ".npz", *model.model.get_weights())
    json.dump(report, open(out + ".json", "w"))
""")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["pgd", "miat"])
def test_saved_model_continues_in_a_fresh_process_like_an_uninterrupted_run(name, digits, tmp_path):
    """One epoch, save, load in a new Python process: there it is compiled, ``evaluate`` reports every metric,
    and one more epoch ends at the weights of an uninterrupted two-epoch ``fit``
    (Adam's step count and moments, the attack's step seeds and MIAT's phase state all restored)."""
    (x, y), _ = digits
    x, y = x[:N], y[:N]
    model = _robust(name)
    model.fit(x, y, epochs=1, batch_size=BATCH, shuffle=False, verbose=0)
    model.save(tmp_path / "m.keras")
    np.savez(tmp_path / "data.npz", x=x, y=y)
    script = tmp_path / "continue.py"
    script.write_text(CONTINUE)
    proc = subprocess.run([sys.executable, str(script), str(tmp_path / "m.keras"), str(tmp_path / "data.npz"),
                           str(tmp_path / "out")], capture_output=True, text=True, env=ENV, timeout=240, check=False)
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert "compile()` was not called" not in proc.stderr
    report = json.loads((tmp_path / "out.json").read_text())
    assert report["class"] == "AdversarialModel" and report["compiled"]
    assert report["defense"] == type(model.defense).__name__
    # The model's optimizer steps: PGD 3 per epoch; MIAT's model stays frozen in its pretraining step (2, then 3).
    steps = int(model.optimizer.iterations.numpy())
    assert steps == (3 if name == "pgd" else 2)
    assert report["iterations"] == steps and report["iterations_after"] == steps + 3
    logs = report["evaluate"]
    assert {"loss", "accuracy", "adv_accuracy"} <= set(logs) and set(model.defense.log_names) <= set(logs)
    assert all(np.isfinite(v) for v in logs.values()) and 0 <= logs["adv_accuracy"] <= 1, logs

    uninterrupted = _robust(name)
    uninterrupted.fit(x, y, epochs=2, batch_size=BATCH, shuffle=False, verbose=0)
    continued = np.load(tmp_path / "out.npz")
    expected = uninterrupted.model.get_weights()
    assert len(continued.files) == len(expected)
    for i, w in enumerate(expected):
        np.testing.assert_allclose(continued[f"arr_{i}"], w, rtol=0, atol=ATOL)
    # The second epoch moved the weights (the comparison is not between two copies of the saved ones).
    assert max(float(np.max(np.abs(a - b))) for a, b in zip(expected, model.model.get_weights())) > 1e-3


def test_fit_and_evaluate_before_compile_give_keras_message(digits):
    (x, y), _ = digits
    model = kam.AdversarialModel(keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(),
                                                   keras.layers.Dense(10)]), kam.defenses.PGD(epsilon=0.1, steps=1))
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before"):
        model.fit(x[:8], y[:8], verbose=0)
    with pytest.raises(ValueError, match=r"You must call `compile\(\)` before"):
        model.evaluate(x[:8], y[:8], verbose=0)
    assert model.get_compile_config() == {}


def test_compile_config_keeps_the_users_arguments(digits):
    """get_compile_config records what compile was given, without the adversarial metrics compile adds;
    compile_from_config compiles an uncompiled model with it (one ``adv_accuracy``, not two)."""
    model = _robust("pgd")
    model.compile(optimizer="sgd", metrics=["accuracy"], weighted_metrics=["accuracy"])
    config = model.get_compile_config()
    assert config["metrics"] == ["accuracy"] and config["weighted_metrics"] == ["accuracy"]
    assert config["loss"] is None and config["optimizer"]["class_name"] == "SGD"
    fresh = kam.AdversarialModel(keras.models.clone_model(model.model), kam.defenses.PGD(epsilon=0.1, steps=1))
    fresh.compile_from_config(config)
    assert fresh.compiled and isinstance(fresh.optimizer, keras.optimizers.SGD) and fresh.optimizer.built
    (x, y), _ = digits
    logs = fresh.evaluate(x[:32], y[:32], verbose=0, return_dict=True)
    assert set(logs) == {"loss", "accuracy", "weighted_accuracy", "adv_accuracy"}


@pytest.mark.timeout(300)
def test_monitor_callbacks_infer_the_direction_of_adversarial_metrics(digits, tmp_path):
    """TRADES trained on digits and validated on labels shifted by one: as it learns, val_adv_accuracy falls.
    Without ``mode``, EarlyStopping (patience 0) stops after the first fall, ReduceLROnPlateau halves the
    learning rate there, ModelCheckpoint(save_best_only) keeps only the first epoch ("max"); a loss-like
    log, TRADES' natural_loss, is minimized ("min")."""
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    keras.utils.set_random_seed(0)
    net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Flatten(), keras.layers.Dense(10)])
    model = kam.AdversarialModel(net, kam.defenses.TRADES(epsilon=0.05, steps=1, seed=0, attack_chains=1))
    model.compile(optimizer=keras.optimizers.Adam(0.02), metrics=["accuracy"])
    stop = keras.callbacks.EarlyStopping(monitor="val_adv_accuracy", patience=0)
    plateau = keras.callbacks.ReduceLROnPlateau(monitor="val_adv_accuracy", patience=0, factor=0.5)
    best = keras.callbacks.ModelCheckpoint(str(tmp_path / "e{epoch}.weights.h5"), monitor="val_adv_accuracy",
                                           save_best_only=True, save_weights_only=True)
    natural = keras.callbacks.EarlyStopping(monitor="val_natural_loss", patience=10)
    history = model.fit(x, y, epochs=6, batch_size=64, validation_data=(x, (y + 1) % 10), verbose=0,
                        callbacks=[natural, best, plateau, stop])
    adv = history.history["val_adv_accuracy"]
    assert len(adv) == 2 and adv[1] < adv[0], adv            # stopped right after the first fall
    assert stop.stopped_epoch == 1
    assert float(model.optimizer.learning_rate.numpy()) == pytest.approx(0.01)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["e1.weights.h5"]
    losses = history.history["val_natural_loss"]
    assert losses[0] != losses[1] and natural.best == min(losses)


def test_cli_model_keras_loads_compiled_and_evaluates(tmp_path, capsys, digits):
    """``keras-advmi train`` saves the compiled AdversarialModel: it loads with its defense and optimizer
    state (the step count of one epoch) and ``evaluate`` runs on it; ``keras-advmi evaluate`` reads it too."""
    from keras_advmi.cli import main

    out = tmp_path / "run"
    code = main(["train", "--dataset", "digits", "--steps", "2", "--epochs", "1", "--batch-size", "64",
                 "--eval-attacks", "clean", "--out", str(out)])
    assert code == 0, capsys.readouterr().err[-3000:]
    model = keras.models.load_model(out / "model.keras")
    assert isinstance(model, kam.AdversarialModel) and isinstance(model.defense, kam.defenses.PGD)
    (x, _), (xt, yt) = digits
    assert model.compiled and int(model.optimizer.iterations.numpy()) == -(-len(x) // 64)
    logs = model.evaluate(xt[:64], yt[:64], verbose=0, return_dict=True)
    assert set(logs) >= {"loss", "accuracy", "adv_accuracy"} and logs["accuracy"] > 0.3, logs
    assert main(["evaluate", str(out / "model.keras"), "--dataset", "digits", "--attacks", "clean",
                 "--n", "50"]) == 0

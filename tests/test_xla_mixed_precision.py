"""Every defense trains with ``jit_compile=True`` (XLA) and under the ``mixed_bfloat16`` / ``mixed_float16``
policies: 2 epochs of 4 steps each, compared with the float32 run without XLA.

The whole classifier is under the policy (no float32 output layer), the harder case: logits in bf16/fp16.
Tolerances (measured on 2 CPU cores, digits, SGD 0.05):
- epoch losses within 2% (relative) of float32/no-XLA (measured: at most 0.21%; MIAT 1.1%);
- the weights' distance to the float32 run's, over the distance float32 moved them from the initial weights:
  at most 0.25 (measured at most 0.094; 0 for the deterministic defenses under XLA: PGD, MART, SNS,
  RegionAT), MIAT at most 1.0 (measured 0.71: its DV scores over a 64-sample batch, in bf16);
- XLA changes the random draws (TRADES' start, FastAT's uniform start, MIAT): not equal to the bit, within
  the same tolerances.
"""

import numpy as np
import pytest

import keras

import keras_advmi as kam

CONFIGS = [("float32", True), ("mixed_bfloat16", False), ("mixed_float16", False)]


def make_defense(name):
    common = {"epsilon": 0.2, "steps": 3, "eval_steps": 3, "seed": 0, "random_start": False}
    return kam.defenses.REGISTRY[name](**{
        "pgd": common, "mart": common,
        "trades": {k: v for k, v in common.items() if k != "random_start"},   # TRADES' own start: x + 0.001 N(0, 1)
        "fast_at": {"epsilon": 0.2, "seed": 0},
        "miat": {**common, "alpha": 1.0, "estimators": kam.defenses.MIATEstimators(hsize=16),
                 "pretraining": kam.defenses.MIATPretraining(required=False, attack_steps=3)},
        "sns": {**common, "layers": ["conv1", "dense1"], "top_k": 3},
        "region_at": {"epsilon": 0.2, "seed": 0, "universal_steps": 3, "data_fraction": 0.25},
    }[name])


def flat(net):
    return np.concatenate([np.ravel(np.asarray(w, np.float32)) for w in net.get_weights()])


def train(name, x, y, policy, jit_compile):
    keras.mixed_precision.set_global_policy(policy)
    try:
        keras.utils.set_random_seed(0)
        net = keras.Sequential([keras.Input((8, 8, 1)), keras.layers.Conv2D(8, 3, activation="relu", name="conv1"),
                                keras.layers.Flatten(), keras.layers.Dense(32, activation="relu", name="dense1"),
                                keras.layers.Dense(10)])
        initial = flat(net)
        defense = make_defense(name)
        robust = kam.AdversarialModel(net, defense)
        robust.compile(optimizer=keras.optimizers.SGD(0.05), metrics=["accuracy"], jit_compile=jit_compile)
        if policy == "mixed_float16":
            assert isinstance(robust.optimizer, keras.optimizers.LossScaleOptimizer)
        callbacks = [defense.refresh_callback(x[:64], y[:64])] if name == "region_at" else []
        hist = robust.fit(x, y, epochs=2, batch_size=64, shuffle=False, verbose=0, callbacks=callbacks).history
        if policy != "float32":
            assert net.layers[0].compute_dtype == policy.split("_")[1]
        return np.asarray(hist["loss"]), flat(net), initial
    finally:
        keras.mixed_precision.set_global_policy("float32")


@pytest.mark.timeout(300)
@pytest.mark.parametrize("name", ["pgd", "trades", "mart", "fast_at", "sns", "region_at", "miat"])
def test_defense_trains_with_xla_and_mixed_precision(name, digits):
    (x, y), _ = digits
    x, y = x[:256], y[:256]
    base_loss, base_weights, initial = train(name, x, y, "float32", False)
    moved = np.linalg.norm(base_weights - initial)
    assert np.all(np.isfinite(base_loss)) and moved > 0
    weight_tolerance = 1.0 if name == "miat" else 0.25
    for policy, jit in CONFIGS:
        loss, weights, _ = train(name, x, y, policy, jit)
        assert np.all(np.isfinite(loss)) and np.all(np.isfinite(weights)), (policy, jit, loss)
        np.testing.assert_allclose(loss, base_loss, rtol=2e-2, err_msg=f"{policy}, jit_compile={jit}")
        distance = np.linalg.norm(weights - base_weights) / moved
        assert distance <= weight_tolerance, (policy, jit, distance)

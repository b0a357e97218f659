"""Training fingerprint: PGD-AT, TRADES and MIAT trained on digits with a fixed seed, every epoch's logged
figures and a digest of the final weights, written to JSON; ``--compare`` checks a run against a saved one.

A change meant to leave training alone (a refactoring) must leave these figures equal: run this script
before the change (``--out before.json``) and after it (``--compare before.json``). Op determinism is on,
so on one machine and one TensorFlow build two runs of the same code give identical numbers.

    python benchmarks/training_fingerprint.py --out fingerprint.json
    python benchmarks/training_fingerprint.py --compare fingerprint.json
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import time

import numpy as np
import tensorflow as tf
import keras

import keras_advmi as kam
from keras_advmi import data

EPSILON = 0.2
#: (name, defense factory, epochs): MIAT's 4 epochs run its three phases (1 base, 1 pretraining, 2 MIAT).
RUNS = (
    ("pgd", lambda: kam.defenses.PGD(epsilon=EPSILON, steps=5, seed=0), 3),
    ("trades", lambda: kam.defenses.TRADES(epsilon=EPSILON, steps=5, seed=0), 3),
    ("miat", lambda: kam.defenses.MIAT(epsilon=EPSILON, steps=5, seed=0, estimators=kam.defenses.MIATEstimators(hsize=32)), 4),
)


def _network(seed: int) -> keras.Model:
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((8, 8, 1)),
        keras.layers.Conv2D(16, 3, padding="same", activation="relu"),
        keras.layers.Flatten(),
        keras.layers.Dense(32, activation="relu"),
        keras.layers.Dense(10),
    ])


def fingerprint(name, make_defense, epochs, seed=0):
    """{'history': {metric: [per-epoch float]}, 'weights_sha256': hex} of one seeded training run."""
    (x, y), (xt, yt) = data.load("digits")
    net = _network(seed)
    model = kam.AdversarialModel(net, make_defense())
    model.compile(optimizer=keras.optimizers.Adam(2e-3), metrics=["accuracy"])
    start = time.perf_counter()
    history = model.fit(x, y, epochs=epochs, batch_size=64, validation_data=(xt[:200], yt[:200]),
                        shuffle=True, verbose=0).history
    digest = hashlib.sha256(b"".join(np.asarray(w).tobytes() for w in net.get_weights())).hexdigest()
    return {"history": {k: [float(v) for v in vs] for k, vs in sorted(history.items())},
            "weights_sha256": digest, "seconds": round(time.perf_counter() - start, 1)}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", help="write the fingerprint here")
    parser.add_argument("--compare", help="a fingerprint to compare with: exit 1 when any figure differs")
    args = parser.parse_args(argv)
    tf.config.experimental.enable_op_determinism()
    result = {name: fingerprint(name, make, epochs) for name, make, epochs in RUNS}
    for name, run in result.items():
        last = {k: round(v[-1], 4) for k, v in run["history"].items() if k in ("accuracy", "adv_accuracy",
                                                                              "val_accuracy", "val_adv_accuracy")}
        print(f"{name}: {last} weights {run['weights_sha256'][:12]} ({run['seconds']} s)")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=1)
    if args.compare:
        with open(args.compare) as f:
            saved = json.load(f)
        differ = [f"{name}.{key}: {saved[name]['history'].get(key)} != {run['history'].get(key)}"
                  for name, run in result.items()
                  for key in sorted(set(run["history"]) | set(saved[name]["history"]))
                  if run["history"].get(key) != saved[name]["history"].get(key)]
        differ += [f"{name}: final weights differ" for name, run in result.items()
                   if run["weights_sha256"] != saved[name]["weights_sha256"]]
        print("\n".join(differ) if differ else f"equal to {args.compare}: every logged figure and the final weights")
        return 1 if differ else 0
    return 0


if __name__ == "__main__":
    sys.exit(main())

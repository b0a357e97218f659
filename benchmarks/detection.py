"""Detectors side by side on MNIST: AUROC and TPR at 5% FPR against FGSM, PGD-40 and the adaptive attack,
for a normally trained (NT) and a PGD-adversarially-trained (AT) small CNN.

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/detection.py --n 1000 \
        --out benchmarks/out/detection

Protocol: detectors fitted on clean training images only (``--fit``), calibrated at 5% FPR on
held-out clean test images (``--calib`` images from index 5000, disjoint from the evaluated
``--n`` images at the start of the test set), evaluated with ``kam.detection.evaluate`` (positives:
adversarial examples that fool the model; negatives: correctly classified clean inputs). The
adaptive attack is PGD on CE - c * relu(score - threshold) through model and detector (100 steps).
Budgets are small (the machine is shared): a light CNN (two strided convs, dense 100), NT 2 epochs,
PGD-AT 10-step eps 0.3 with an epsilon ramp over the first epoch.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_advmi.detection as kd  # noqa: E402
from keras_advmi import data  # noqa: E402
from keras_advmi.defenses import PGD  # noqa: E402
from keras_advmi.models import AdversarialModel  # noqa: E402

EPSILON = 0.3


def light_cnn(seed=0):
    keras.utils.set_random_seed(seed)
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(16, 3, strides=2, padding="same", activation="relu", name="conv1"),
        keras.layers.Conv2D(32, 3, strides=2, padding="same", activation="relu", name="conv2"),
        keras.layers.Flatten(name="flatten"),
        keras.layers.Dense(100, activation="relu", name="dense1"),
        keras.layers.Dense(10, name="logits"),
    ], name="light_cnn")


def train(kind, x, y, args):
    model = light_cnn()
    t = time.time()
    if kind == "NT":
        model.compile(optimizer=keras.optimizers.Adam(1e-3),
                      loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
        model.fit(x, y, epochs=args.nt_epochs, batch_size=128, verbose=0)
    else:
        n = min(args.at_train, len(x))
        steps_per_epoch = -(-n // 128)
        robust = AdversarialModel(model, PGD(epsilon=EPSILON, steps=10, epsilon_warmup_steps=steps_per_epoch,
                                             eval_steps=10, seed=0))
        robust.compile(optimizer=keras.optimizers.Adam(1e-3))
        robust.fit(x[:n], y[:n], epochs=args.at_epochs, batch_size=128, verbose=0)
    return model, time.time() - t


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--n", type=int, default=1000, help="evaluated test images")
    p.add_argument("--calib", type=int, default=1000, help="held-out clean test images for calibration")
    p.add_argument("--fit", type=int, default=5000, help="clean training images the detectors are fitted on")
    p.add_argument("--nt-epochs", type=int, default=2)
    p.add_argument("--at-epochs", type=int, default=4)
    p.add_argument("--at-train", type=int, default=30000)
    p.add_argument("--adaptive-steps", type=int, default=100)
    p.add_argument("--models", nargs="+", default=["NT", "AT"])
    p.add_argument("--detectors", nargs="+", default=["mi", "mahalanobis", "feature_squeezing"])
    p.add_argument("--out", default="benchmarks/out/detection")
    args = p.parse_args()

    (x, y), (xt, yt) = data.load("mnist")
    x_eval, y_eval = xt[:args.n], yt[:args.n]
    x_cal = xt[5000:5000 + args.calib]
    x_fit, y_fit = x[:args.fit], y[:args.fit]
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    results = []
    attacks = ["fgsm", "pgd-40", f"adaptive-{args.adaptive_steps}"]
    for kind in args.models:
        model, secs = train(kind, x, y, args)
        acc = float(np.mean(np.argmax(model.predict(x_eval, verbose=0), -1) == y_eval))
        print(f"\n== {kind} model: trained in {secs:.0f} s, clean accuracy {100 * acc:.1f}% on {args.n} test images")
        for name in args.detectors:
            det = {"mi": lambda: kd.MIScoreDetector(),
                   "mahalanobis": lambda: kd.MahalanobisDetector(),
                   "feature_squeezing": lambda: kd.FeatureSqueezingDetector(bits=1, median=2)}[name]()
            t = time.time()
            det.fit(model, x_fit, y_fit).calibrate(x_cal, fpr=0.05)
            fit_s = time.time() - t
            try:
                report = kd.evaluate(det, model, x_eval, y_eval, attacks=attacks, epsilon=EPSILON, seed=0)
            except Exception as exc:  # noqa: BLE001 - report and go on with the other detectors
                print(f"\n{kind} / {name}: FAILED: {type(exc).__name__}: {exc}")
                continue
            print(f"\n{kind} / {report}\n(fit+calibrate {fit_s:.0f} s, evaluate {time.time() - t - fit_s:.0f} s, "
                  f"calibration FPR {100 * det.calibration['fpr_measured']:.1f}% on {det.calibration['n']})")
            for row in report.rows:
                results.append({"model": kind, "clean_accuracy": acc, "detector": name, **row})
            (out / "detection.json").write_text(json.dumps(results, indent=2))

    print("\nmodel detector            attack          AUROC  TPR@5%  FPR   attack-success  evasion")
    for r in results:
        print(f"{r['model']:<5} {r['detector']:<19} {r['attack']:<14} {r['auroc']:6.3f}  {100 * r['tpr']:5.1f}% "
              f"{100 * r['fpr']:4.1f}%  {100 * r['attack_success']:6.1f}%        {100 * r['evasion']:5.1f}%")


if __name__ == "__main__":
    main()

"""How linear is the loss around MNIST test images, for the models ``mnist_robust.py`` trained?

For each ``benchmarks/out/<name>/model.keras`` given, on the first ``--n`` MNIST test images at eps 0.3:
  * gradient alignment (``kam.analysis.gradient_alignment``, Andriushchenko & Flammarion 2020):
    mean cos of the input gradients at x and at a uniform point of the eps-ball;
  * the FGSM-to-PGD loss ratio: mean CE at FGSM's example over mean CE at PGD-40's (step 2.5 eps / 40,
    one start, seed 0). A single gradient step finds what 40 steps find when it is near 1.
docs/results.md compares PGD-AT and FastAT models of two networks with it.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/gradient_alignment.py mnist_pgd_s1 wong_fast_s0 ...
"""

from __future__ import annotations

import argparse
import os
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402
from keras_advmi import AdversarialModel  # noqa: E402,F401  (registers the classes a saved model.keras refers to)
from keras_advmi.attacks import fgsm, pgd  # noqa: E402

EPSILON = 0.3
OUT = Path(__file__).resolve().parent / "out"


def mean_cross_entropy(model, x, y):
    logits = model.predict(x, verbose=0, batch_size=250)
    return float(np.mean(keras.losses.sparse_categorical_crossentropy(y, logits, from_logits=True)))


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("models", nargs="+", help="run names under benchmarks/out/ (each with a model.keras)")
    p.add_argument("--n", type=int, default=1000, help="test images")
    args = p.parse_args(argv)
    (_, _), (x, y) = kam.data.load("mnist")
    x, y = x[:args.n], y[:args.n]
    print(f"{'model':34s} {'grad. alignment':>16s} {'CE FGSM':>8s} {'CE PGD-40':>10s} {'FGSM/PGD':>9s}")
    for name in args.models:
        model = keras.models.load_model(OUT / name / "model.keras")
        model = getattr(model, "model", model)           # an AdversarialModel's inner network
        alignment = kam.analysis.gradient_alignment(model, x, y, EPSILON, seed=0)["mean"]
        ce_fgsm = mean_cross_entropy(model, fgsm(model, x, y, epsilon=EPSILON), y)
        ce_pgd = mean_cross_entropy(model, pgd(model, x, y, epsilon=EPSILON, step_size=2.5 * EPSILON / 40,
                                               steps=40, seed=0), y)
        print(f"{name:34s} {alignment:16.3f} {ce_fgsm:8.3f} {ce_pgd:10.3f} {ce_fgsm / ce_pgd:9.2f}", flush=True)


if __name__ == "__main__":
    main()

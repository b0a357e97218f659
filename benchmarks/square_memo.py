"""ART's Square attack on a plain classifier vs on the memoised one ``evaluate_robustness`` gives it, side by side.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/square_memo.py --n 64 --iterations 500 --reps 2

ART's ``SquareAttack`` forwards, every iteration, all its inputs, their loss and the candidates; the original
algorithm forwards only the candidates. ``keras_advmi.evaluation`` hands Square a classifier whose ``predict``
is memoised per input row (``_MemoisedPredictions``), so only the new rows reach the model. On the first --n
MNIST test images at eps --epsilon, with --iterations Square iterations and the same NumPy seed, alternately:
  plain     ART's ``TensorFlowV2Classifier`` over a ``tf.function`` of the model (``art_classifier``);
  memoised  the same with the memoised ``predict`` (``_square_classifier``).
Prints each run's seconds and robust count, the rows the memoised run forwarded, and the median time ratio
plain / memoised. The two must find the same adversarial examples (same robust count).
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402
from keras_advmi.evaluation._art import _square_classifier, art_classifier  # noqa: E402


def square(classifier, x, y, epsilon, iterations, seed):
    """Square's adversarial examples for ``x`` and the seconds they took."""
    from art.attacks.evasion import SquareAttack

    attack = SquareAttack(classifier, norm=np.inf, eps=epsilon, max_iter=iterations, nb_restarts=1,
                          batch_size=128, verbose=False)
    np.random.seed(seed)
    t0 = time.perf_counter()
    x_adv = attack.generate(x=x, y=np.eye(10, dtype=np.float32)[y])
    return x_adv, time.perf_counter() - t0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="benchmarks/results/robust_recipe/robust_seed0/model.keras")
    p.add_argument("--n", type=int, default=64, help="first N MNIST test images")
    p.add_argument("--epsilon", type=float, default=0.3)
    p.add_argument("--iterations", type=int, default=500)
    p.add_argument("--reps", type=int, default=2)
    p.add_argument("--seed", type=int, default=0)
    args = p.parse_args(argv)

    model = keras.models.load_model(args.model, compile=False)
    (_, _), (xt, yt) = kam.data.load("mnist")
    x, y = xt[: args.n], yt[: args.n]
    base = art_classifier(model, x)
    seconds = {"plain": [], "memoised": []}
    robust = {}
    for rep in range(args.reps):
        for kind in ("plain", "memoised"):
            classifier = base if kind == "plain" else _square_classifier(base, x)
            x_adv, s = square(classifier, x, y, args.epsilon, args.iterations, args.seed)
            seconds[kind].append(s)
            robust[kind] = int((base.predict(x_adv).argmax(-1) == y).sum())
            forwarded = f", {classifier.predict.forwarded} rows forwarded" if kind == "memoised" else ""
            print(f"rep {rep} {kind:8s} {s:6.1f} s, robust {robust[kind]}/{args.n}{forwarded}", flush=True)
    ratio = statistics.median(seconds["plain"]) / statistics.median(seconds["memoised"])
    print(f"median plain / memoised: {ratio:.2f}x; robust plain {robust['plain']}, memoised {robust['memoised']}")
    if robust["plain"] != robust["memoised"]:
        raise SystemExit("the memoised classifier changed Square's result")


if __name__ == "__main__":
    main()

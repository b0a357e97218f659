"""ART's Auto-PGD and AutoAttack as ``evaluate_robustness`` runs them vs ART out of the box, side by side.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/art_attacks.py --n 200

One bench_cnn, PGD-AT trained on --train MNIST images for --epochs epochs (eps 0.3), then on the first
--n test images, for each attack (apgd-ce, apgd-dlr, autoattack), alternately:
  stock  ART's ``TensorFlowV2Classifier`` over the Keras model and ART's own losses
         (``loss_type="difference_logits_ratio"`` loops over the batch in Python);
  ours   ``keras_advmi.evaluation`` (the same ART attacks over a ``tf.function`` of the model, APGD-DLR
         with the vectorised ``DifferenceOfLogitsRatio``).
Both start from the same NumPy seed. Prints seconds, robust accuracy and the time ratio stock / ours.
"""

from __future__ import annotations

import argparse
import json
import os
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402
from keras_advmi import architectures  # noqa: E402
from keras_advmi.evaluation._art import run_art  # noqa: E402

EPS = 0.3


def stock(name, model, x, y, batch_size, seed):
    """The attacks as ART documents them: the Keras model itself, ART's built-in loss types."""
    from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent, SquareAttack
    from art.estimators.classification import TensorFlowV2Classifier

    classifier = TensorFlowV2Classifier(model=model, nb_classes=10, input_shape=x.shape[1:],
                                        loss_object=keras.losses.CategoricalCrossentropy(from_logits=True),
                                        clip_values=(0.0, 1.0))
    step = EPS / 4

    def apgd(loss_type, **kwargs):
        return AutoProjectedGradientDescent(classifier, norm=np.inf, eps=EPS, eps_step=step, max_iter=100,
                                            batch_size=batch_size, loss_type=loss_type, verbose=False, **kwargs)

    np.random.seed(seed)
    if name == "apgd-ce":
        attack = apgd("cross_entropy", nb_random_init=1)
    elif name == "apgd-dlr":
        attack = apgd("difference_logits_ratio", nb_random_init=1)
    else:
        attack = AutoAttack(classifier, norm=np.inf, eps=EPS, eps_step=step, batch_size=batch_size, attacks=[
            apgd("cross_entropy"), apgd("difference_logits_ratio"),
            SquareAttack(classifier, norm=np.inf, eps=EPS, max_iter=1000, nb_restarts=1, batch_size=batch_size,
                         verbose=False)])
    return attack.generate(x=x, y=np.eye(10, dtype=np.float32)[y]).astype(np.float32)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, default=200)
    parser.add_argument("--train", type=int, default=10000)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--attacks", nargs="+", default=["apgd-ce", "apgd-dlr", "autoattack"])
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--out", default=None, help="write the results as JSON here")
    args = parser.parse_args(argv)

    (x, y), (xt, yt) = kam.data.load("mnist")
    keras.utils.set_random_seed(0)
    robust = kam.AdversarialModel(architectures.bench_cnn(), kam.defenses.PGD(epsilon=EPS, steps=10, seed=0,
                                                                              epsilon_warmup_steps=40))
    robust.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    robust.fit(x[:args.train], y[:args.train], batch_size=128, epochs=args.epochs, verbose=0)
    model, xe, ye = robust.model, xt[:args.n], yt[:args.n]

    results = {}
    print(f"{'attack':11s} {'stock s':>8s} {'ours s':>8s} {'stock/ours':>10s} {'stock acc':>9s} {'ours acc':>9s}")
    for name in args.attacks:
        row = {}
        for kind, run in (("stock", stock), ("ours", run_art)):
            t = time.perf_counter()
            x_adv = run(name, model, xe, ye, EPS, args.batch_size, 0) if kind == "ours" else \
                run(name, model, xe, ye, args.batch_size, 0)
            seconds = time.perf_counter() - t
            accuracy = float(np.mean(np.argmax(model.predict(x_adv, verbose=0), -1) == ye))
            row[kind] = {"seconds": seconds, "accuracy": accuracy}
        row["ratio"] = row["stock"]["seconds"] / row["ours"]["seconds"]
        results[name] = row
        print(f"{name:11s} {row['stock']['seconds']:8.1f} {row['ours']['seconds']:8.1f} {row['ratio']:10.2f} "
              f"{row['stock']['accuracy']:9.3f} {row['ours']['accuracy']:9.3f}", flush=True)
    if args.out:
        with open(args.out, "w") as f:
            json.dump(results, f, indent=2)
    return results


if __name__ == "__main__":
    main()

"""Adversarial-training throughput, side by side in one run, on one model (default Madry's MNIST CNN) and batch size.

Measures images/s of: standard training (Keras fit); our PGD-10 AT (float32 with the default
``attack_chains``, the same with ``attack_chains=1``, the same compiled with XLA
(``jit_compile=True``), and with the training attack in bfloat16: ``attack_dtype='bfloat16'``) and
FastAT (AdversarialModel.fit); a hand-written cleverhans-PGD + GradientTape loop, eager and wrapped
in tf.function; ART's AdversarialTrainerMadryPGD. Rounds alternate between contenders (the machine
is noisy) and the median per contender is reported, with ratios.

    KERAS_ADVMI_DATA=../shared/data python benchmarks/train_throughput.py --batches 20 --rounds 3
    KERAS_ADVMI_DATA=../shared/data python benchmarks/train_throughput.py --arch bench_cnn --skip art_madry_pgd
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import numpy as np  # noqa: E402
import tensorflow as tf  # noqa: E402
import keras  # noqa: E402

import keras_advmi as kam  # noqa: E402
from keras_advmi import architectures  # noqa: E402

EPS, STEPS = 0.3, 10
STEP_SIZE = kam.attacks.madry_step_size(EPS, STEPS)
ARCH = "madry_cnn"  # --arch


def make_model():
    """A fresh model of the benchmark's architecture (every contender trains the same one)."""
    return architectures.build(ARCH, (28, 28, 1), 10)


def data(n):
    try:
        (x, y), _ = kam.data.load("mnist")
        return x[:n], y[:n]
    except Exception:  # no MNIST here: timing does not depend on pixel values
        rng = np.random.default_rng(0)
        return rng.random((n, 28, 28, 1), np.float32), rng.integers(0, 10, n)


def loss_fn():
    return keras.losses.SparseCategoricalCrossentropy(from_logits=True)


def dataset(x, y, batch):
    """In-memory tf.data pipeline: every contender reads the same tensors (NumPy arrays passed straight to
    fit were measured up to 1.8x slower here, from Keras' array adapter, which would blur the comparison).

    Fixed prefetch, autotuning off: with ``prefetch(AUTOTUNE)``, releasing the iterator that ``fit``
    drops at the end of each epoch stalled until a fixed deadline (a 1.8-2.3 s epoch ended at exactly
    2.545 s: 2 of 8 rounds in one process, 4 of 4 in another, ours more often than the hand-written
    loop's; apparently a wait for tf.data's autotuning thread), and 0 of 8 with autotuning off
    (measured 2026-11-26).
    """
    options = tf.data.Options()
    options.autotune.enabled = False
    return tf.data.Dataset.from_tensor_slices((x, y)).batch(batch).prefetch(2).with_options(options)


def standard(x, y, batch):
    model = make_model()
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss=loss_fn())
    data_ = dataset(x, y, batch)
    return lambda: model.fit(data_, epochs=1, verbose=0)


def ours(x, y, batch, defense=None, jit_compile="auto"):
    defense = defense or kam.defenses.PGD(epsilon=EPS, steps=STEPS, step_size=STEP_SIZE, seed=0)
    robust = kam.AdversarialModel(make_model(), defense)
    robust.compile(optimizer=keras.optimizers.Adam(1e-3), jit_compile=jit_compile)
    data_ = dataset(x, y, batch)
    return lambda: robust.fit(data_, epochs=1, verbose=0)


def cleverhans_loop(x, y, batch, compiled):
    from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

    model = make_model()
    opt = keras.optimizers.Adam(1e-3)
    ce = loss_fn()

    def step(xb, yb):
        x_adv = projected_gradient_descent(model, xb, EPS, STEP_SIZE, STEPS, np.inf, clip_min=0.0, clip_max=1.0,
                                           y=yb, rand_init=True, rand_minmax=EPS, sanity_checks=False)
        with tf.GradientTape() as tape:
            loss = ce(yb, model(x_adv, training=True))
        opt.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    if compiled:
        step = tf.function(step)
    xs, ys = tf.constant(x), tf.constant(y)

    def epoch():
        for s in range(0, len(x), batch):
            step(xs[s:s + batch], ys[s:s + batch])

    return epoch


def handwritten_loop(x, y, batch):
    """cleverhans' PGD (uniform start in the ball, sign-gradient steps, projection, clip to [0, 1]) and the
    weight update, written out in TensorFlow and compiled with tf.function: the hand-written loop without
    the cleverhans dependency (``benchmarks/gpu_check.sh`` needs only the package)."""
    model = make_model()
    opt = keras.optimizers.Adam(1e-3)
    ce = loss_fn()

    @tf.function
    def step(xb, yb):
        x_adv = tf.clip_by_value(xb + tf.random.uniform(tf.shape(xb), -EPS, EPS), 0.0, 1.0)
        for _ in range(STEPS):
            with tf.GradientTape() as tape:
                tape.watch(x_adv)
                loss = ce(yb, model(x_adv, training=False))
            x_adv = x_adv + STEP_SIZE * tf.sign(tape.gradient(loss, x_adv))
            x_adv = tf.clip_by_value(tf.clip_by_value(x_adv, xb - EPS, xb + EPS), 0.0, 1.0)
        with tf.GradientTape() as tape:
            loss = ce(yb, model(tf.stop_gradient(x_adv), training=True))
        opt.apply(tape.gradient(loss, model.trainable_weights), model.trainable_weights)

    xs, ys = tf.constant(x), tf.constant(y)

    def epoch():
        for s in range(0, len(x), batch):
            step(xs[s:s + batch], ys[s:s + batch])

    return epoch


def art_trainer(x, y, batch):
    from art.defences.trainer import AdversarialTrainerMadryPGD
    from art.estimators.classification import TensorFlowV2Classifier

    model = make_model()
    opt = keras.optimizers.Adam(1e-3)
    ce = keras.losses.CategoricalCrossentropy(from_logits=True)

    @tf.function
    def train_step(model_, images, labels):
        with tf.GradientTape() as tape:
            loss = ce(labels, model_(images, training=True))
        opt.apply(tape.gradient(loss, model_.trainable_weights), model_.trainable_weights)

    clf = TensorFlowV2Classifier(model=model, nb_classes=10, input_shape=(28, 28, 1), loss_object=ce,
                                 train_step=train_step, clip_values=(0.0, 1.0))
    trainer = AdversarialTrainerMadryPGD(clf, nb_epochs=1, batch_size=batch, eps=EPS, eps_step=STEP_SIZE,
                                         max_iter=STEPS, num_random_init=1)
    onehot = np.eye(10, dtype=np.float32)[y]
    return lambda: trainer.fit(x, onehot)


def alternate_rounds(runs, rounds):
    """One untimed warm-up call of each run (tracing, first-call costs), then ``rounds`` rounds that
    call every run in turn; returns {name: [seconds per round]}."""
    for run in runs.values():
        run()
    seconds = {name: [] for name in runs}
    for _ in range(rounds):
        for name, run in runs.items():
            t0 = time.perf_counter()
            run()
            seconds[name].append(time.perf_counter() - t0)
    return seconds


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--batch-size", type=int, default=128)
    p.add_argument("--batches", type=int, default=20, help="batches per timed epoch")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip", nargs="*", default=[], help="contenders to leave out")
    p.add_argument("--json", help="write results here")
    p.add_argument("--arch", default="madry_cnn", choices=sorted(architectures.PRESETS),
                   help="model every contender trains (keras_advmi.architectures)")
    args = p.parse_args()
    global ARCH
    ARCH = args.arch
    n = args.batch_size * args.batches
    x, y = data(n)
    factories = {
        "standard": lambda: standard(x, y, args.batch_size),
        "keras_advmi_pgd10": lambda: ours(x, y, args.batch_size),
        "keras_advmi_pgd10_one_chain": lambda: ours(x, y, args.batch_size, kam.defenses.PGD(
            epsilon=EPS, steps=STEPS, step_size=STEP_SIZE, seed=0, attack_chains=1)),
        "keras_advmi_pgd10_bf16_attack": lambda: ours(x, y, args.batch_size, kam.defenses.PGD(
            epsilon=EPS, steps=STEPS, step_size=STEP_SIZE, seed=0, attack_dtype="bfloat16")),
        # Keras' "auto" leaves XLA off on a CPU-only machine (and turns it on with a GPU); these force it
        "keras_advmi_pgd10_xla": lambda: ours(x, y, args.batch_size, jit_compile=True),
        "keras_advmi_pgd10_no_xla": lambda: ours(x, y, args.batch_size, jit_compile=False),
        "keras_advmi_fast_at": lambda: ours(x, y, args.batch_size, kam.defenses.FastAT(epsilon=EPS, seed=0)),
        "cleverhans_eager": lambda: cleverhans_loop(x, y, args.batch_size, compiled=False),
        "cleverhans_tf_function": lambda: cleverhans_loop(x, y, args.batch_size, compiled=True),
        "handwritten_tf_function": lambda: handwritten_loop(x, y, args.batch_size),
        "art_madry_pgd": lambda: art_trainer(x, y, args.batch_size),
    }
    runs = {name: f() for name, f in factories.items() if name not in args.skip}
    seconds = alternate_rounds(runs, args.rounds)
    ips = {name: n / statistics.median(s) for name, s in seconds.items()}
    print(f"images/s, {ARCH}, batch {args.batch_size}, {args.batches} batches x {args.rounds} rounds (median):")
    for name, v in ips.items():
        print(f"  {name:<24} {v:9.1f}")
    result = {"images_per_second": ips, "seconds": seconds, "batch_size": args.batch_size, "arch": ARCH}
    ours_ips = ips["keras_advmi_pgd10"]

    def ratios(name, label, key, others):
        """Print and record ips[name] / ips[other] for each of ``others`` that ran."""
        for other in others:
            if name in ips and other in ips:
                print(f"  {label} / {other:<28} {ips[name] / ips[other]:6.2f}x")
                result[f"{key}{other}"] = ips[name] / ips[other]

    loops = ("cleverhans_eager", "cleverhans_tf_function", "handwritten_tf_function")
    ratios("keras_advmi_pgd10", "ours", "ratio_vs_",
           ("keras_advmi_pgd10_one_chain", "keras_advmi_pgd10_xla", "keras_advmi_pgd10_no_xla", *loops,
            "art_madry_pgd"))
    # XLA on against XLA off, whatever "auto" chose for the default contender
    ratios("keras_advmi_pgd10_xla", "ours, XLA on", "xla_ratio_vs_", ("keras_advmi_pgd10_no_xla", *loops))
    # attack_chains=1: the attack as one chain of ops (the default where a GPU is visible)
    ratios("keras_advmi_pgd10_one_chain", "ours, attack_chains=1", "one_chain_ratio_vs_", loops)
    # the bf16 attack is a different computation: its own lines, never "ours"
    ratios("keras_advmi_pgd10_bf16_attack", "ours, bf16 attack", "bf16_attack_ratio_vs_", ("keras_advmi_pgd10", *loops))
    if "keras_advmi_fast_at" in ips:  # a FastAT recipe against PGD-AT as trained: mnist_robust.py budget
        ratio = ours_ips / ips["keras_advmi_fast_at"]
        print(f"  FastAT step time / PGD-10 step time = {ratio:.3f}")
        result["fast_at_time_over_pgd10"] = ratio
    if "standard" in ips:
        cost = ips["standard"] / ours_ips / (STEPS + 1)
        print(f"  PGD-10 step time / (11 x standard step time) = {cost:.2f}")
        result["pgd_step_over_11_standard"] = cost
    if args.json:
        with open(args.json, "w") as f:
            json.dump(result, f, indent=2)


if __name__ == "__main__":
    main()

"""What MutualInformationLogger adds to a PGD-AT epoch on MNIST (1,000 probe images).

    KERAS_ADVMI_DATA=../shared/data python benchmarks/mi_logger_overhead.py [--epochs-each 1]

bench_cnn, PGD-AT (eps 0.3, 10 steps), MNIST, batch 128, the default logger (KDE upper bound with
scale-aware noise, I(X;T) and I(T;Y) of every layer with weights, the online InfoNCE bound on I(T;Y),
clean and PGD-10 probe, information-plane image); beside it, in the same rounds, the same logger
without the neural bound (``neural=False``), so the neural part's share is read off one run.

On a shared machine the load changes between whole epochs (we saw 87 s and 184 s for the same epoch),
so the main measurement interleaves finely: --rounds times, a tenth of an epoch of training (47 steps)
then one logger call; epoch time = 10 x the slice time; overhead = logger time / epoch time, median
over rounds. With --full-epochs, whole epochs without and with the logger are also timed.
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import keras

import keras_advmi as kam
from keras_advmi.architectures import bench_cnn


class _Timer(keras.callbacks.Callback):
    def __init__(self):
        super().__init__()
        self.epochs = []

    def on_epoch_begin(self, epoch, logs=None):
        self._t = time.perf_counter()

    def on_epoch_end(self, epoch, logs=None):   # runs after the logger (it is the last callback)
        self.epochs.append(time.perf_counter() - self._t)


class _TimedLogger(kam.callbacks.MutualInformationLogger):
    def on_epoch_end(self, epoch, logs=None):
        t = time.perf_counter()
        super().on_epoch_end(epoch, logs)
        self.seconds = getattr(self, "seconds", []) + [time.perf_counter() - t]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--full-epochs", type=int, default=0, help="also time this many whole epochs each way")
    parser.add_argument("--probe", type=int, default=1000)
    args = parser.parse_args()
    (x, y), (xt, yt) = kam.data.load("mnist")
    keras.utils.set_random_seed(0)
    model = kam.AdversarialModel(bench_cnn(), kam.defenses.PGD(epsilon=0.3, steps=10, seed=0,
                                                              epsilon_warmup_steps=469))
    model.compile(optimizer=keras.optimizers.Adam(1e-3), metrics=["accuracy"])
    model.fit(x[:2048], y[:2048], epochs=1, batch_size=128, verbose=0)  # trace the step functions
    logdir = tempfile.mkdtemp()
    logger = _TimedLogger(xt[:args.probe], yt[:args.probe], log_dir=logdir)
    logger.set_model(model)
    logger.on_train_begin()
    kde_only = _TimedLogger(xt[:args.probe], yt[:args.probe], log_dir=tempfile.mkdtemp(), neural=False)
    kde_only.set_model(model)
    kde_only.on_train_begin()
    slice_n = 128 * 47                                   # 47 of the 469 steps of an MNIST epoch
    ratios, kde_ratios = [], []
    for r in range(args.rounds):
        start = (r * slice_n) % (len(x) - slice_n)
        t = time.perf_counter()
        model.fit(x[start:start + slice_n], y[start:start + slice_n], epochs=1, batch_size=128, verbose=0)
        epoch_estimate = (time.perf_counter() - t) * 469 / 47
        logger.on_epoch_end(r)
        kde_only.on_epoch_end(r)
        ratios.append(logger.seconds[-1] / epoch_estimate)
        kde_ratios.append(kde_only.seconds[-1] / epoch_estimate)
        print(f"round {r}: epoch ~{epoch_estimate:.1f} s, logger {logger.seconds[-1]:.1f} s "
              f"({100 * ratios[-1]:.1f}%), without the neural bound {kde_only.seconds[-1]:.1f} s "
              f"({100 * kde_ratios[-1]:.1f}%)", flush=True)
    print(f"\nlogger overhead per logged epoch: median {100 * float(np.median(ratios)):.1f}% of a PGD-AT epoch "
          f"(rounds: {', '.join(f'{100 * q:.1f}%' for q in ratios)}); without the neural bound: median "
          f"{100 * float(np.median(kde_ratios)):.1f}%; neural / KDE-only logger time: "
          f"{float(np.median(np.array(logger.seconds) / np.array(kde_only.seconds))):.2f}x")
    plain, logged = [], []
    for _ in range(args.full_epochs):
        for with_logger in (False, True):
            timer = _Timer()
            callbacks = ([logger] if with_logger else []) + [timer]
            model.fit(x, y, epochs=1, batch_size=128, verbose=0, callbacks=callbacks)
            (logged if with_logger else plain).append(timer.epochs[-1])
            print(f"epoch {'with' if with_logger else 'without'} logger: {timer.epochs[-1]:.1f} s", flush=True)
    if plain:
        base, with_log = float(np.median(plain)), float(np.median(logged))
        print(f"whole epochs: {base:.1f} s without the logger, {with_log:.1f} s with it (ratio {with_log / base:.3f})")
    print(f"layers {logger.layers}; last values: " +
          ", ".join(f"{k}={v[-1]:.3f}" for k, v in logger.history.items() if k.endswith("/clean") and "I_XT" in k))


if __name__ == "__main__":
    main()

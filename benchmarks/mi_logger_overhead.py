"""What MutualInformationLogger adds to a PGD-AT epoch on MNIST (1,000 probe images).

    KERAS_ADVMI_DATA=../shared/data python benchmarks/mi_logger_overhead.py [--epochs-each 1]

bench_cnn, PGD-AT (eps 0.3, 10 steps), full MNIST training set, batch 128. Epochs alternate between
no logger and the default logger (KDE upper bound, I(X;T) and I(T;Y) of every layer with weights,
clean and PGD-10 probe, information-plane image), in one process. Reports the epoch times, their
ratio, and the logger's own time per logged epoch divided by the epoch time without it.
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
    parser.add_argument("--epochs-each", type=int, default=1)
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
    plain, logged = [], []
    for _ in range(args.epochs_each):
        for with_logger in (False, True):
            timer = _Timer()
            callbacks = ([logger] if with_logger else []) + [timer]
            model.fit(x, y, epochs=1, batch_size=128, verbose=0, callbacks=callbacks)
            (logged if with_logger else plain).append(timer.epochs[-1])
            print(f"epoch {'with' if with_logger else 'without'} logger: {timer.epochs[-1]:.1f} s", flush=True)
    base, with_log = float(np.median(plain)), float(np.median(logged))
    own = float(np.median(logger.seconds))
    print(f"\nPGD-AT epoch on MNIST: {base:.1f} s without the logger, {with_log:.1f} s with it "
          f"(ratio {with_log / base:.3f}); the logger's own time {own:.1f} s = {100 * own / base:.1f}% of an epoch")
    print(f"layers {logger.layers}; last values: " +
          ", ".join(f"{k}={v[-1]:.3f}" for k, v in logger.history.items() if k.endswith("/clean") and "I_XT" in k))


if __name__ == "__main__":
    main()

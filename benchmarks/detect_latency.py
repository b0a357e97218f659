"""Latency of the exported ``detect`` signature vs ``serving_default`` on a batch of 64 (ratio per detector).

    KERAS_ADVMI_DATA=/work/shared/data nice -n 10 python benchmarks/detect_latency.py --reps 200

Each model is exported with each detector (``kam.export``), loaded back with ``tf.saved_model.load``
and both signatures are called in alternating blocks on the same 64 MNIST-shaped inputs (interleaved so that
load from other processes hits both alike); the table gives median (and minimum) milliseconds and
the ratio detect / serving_default. Weights are trained briefly (latency does not depend on their values).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

import keras  # noqa: E402
import tensorflow as tf  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import keras_advmi.detection as kd  # noqa: E402
from keras_advmi import architectures, data  # noqa: E402
from keras_advmi.export import export  # noqa: E402


def load_images():
    try:
        (x, y), (xt, _) = data.load("mnist")
    except Exception:  # noqa: BLE001 - no MNIST here: random images of the same shape
        rng = np.random.default_rng(0)
        x, y, xt = rng.uniform(size=(3000, 28, 28, 1)).astype("f4"), rng.integers(0, 10, 3000), None
        xt = x[:1000]
    return x[:3000], y[:3000], xt[:1000]


def timings_ms(fn, x, reps):
    times = []
    for _ in range(reps):
        t = time.perf_counter()
        fn(inputs=x)["class_ids"].numpy()
        times.append(time.perf_counter() - t)
    return [1e3 * t for t in times]


def main():
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--reps", type=int, default=200)
    p.add_argument("--batch", type=int, default=64)
    args = p.parse_args()
    from detection import light_cnn

    x, y, xt = load_images()
    batch = tf.constant(xt[:args.batch])
    models = {"light_cnn": light_cnn(), "small_cnn": architectures.small_cnn((28, 28, 1))}
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for mname, model in models.items():
            model.compile(optimizer="adam", loss=keras.losses.SparseCategoricalCrossentropy(from_logits=True))
            model.fit(x, y, epochs=1, batch_size=128, verbose=0)
            for dname, det in (("mi", kd.MIScoreDetector(epochs=1)), ("mahalanobis", kd.MahalanobisDetector()),
                               ("feature_squeezing", kd.FeatureSqueezingDetector(bits=1, median=2))):
                det.fit(model, x, y).calibrate(xt, fpr=0.05)
                path = export(model, Path(tmp) / f"{mname}_{dname}" / "1", detector=det)
                loaded = tf.saved_model.load(path)
                serve, detect = loaded.signatures["serving_default"], loaded.signatures["detect"]
                for _ in range(10):
                    serve(inputs=batch), detect(inputs=batch)
                t_serve, t_detect = [], []
                for _ in range(10):  # interleaved blocks
                    t_serve += timings_ms(serve, batch, args.reps // 10)
                    t_detect += timings_ms(detect, batch, args.reps // 10)
                s, d = float(np.median(t_serve)), float(np.median(t_detect))
                smin, dmin = min(t_serve), min(t_detect)
                rows.append((mname, dname, s, d, d / s, smin, dmin, dmin / smin))
                print(f"{mname:<10} {dname:<18} serving_default {s:7.2f} ms  detect {d:7.2f} ms  ratio {d / s:5.2f}"
                      f"  (min {smin:.2f} / {dmin:.2f} ms, ratio {dmin / smin:.2f})", flush=True)
    print(f"\nbatch {args.batch}, {args.reps} calls each, interleaved; median and minimum (the minimum is the "
          f"least disturbed by other processes on a shared machine)")
    print(f"{'model':<10} {'detector':<18} {'serve ms':>9} {'detect ms':>10} {'ratio':>6} {'min ratio':>10}")
    for m, dn, s, d, r, _, _, rmin in rows:
        print(f"{m:<10} {dn:<18} {s:9.2f} {d:10.2f} {r:6.2f} {rmin:10.2f}")


if __name__ == "__main__":
    main()

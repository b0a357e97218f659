"""Does pausing Python's cyclic GC around a REST predict parse pay?

Times ``codec.parse_predict`` (orjson parse, JSON type checks, NumPy conversion) of TF Serving
``instances`` bodies of MNIST images (28x28x1 float32 pixels in [0, 1]): a small body (4 images,
70 KB: under the inline threshold, parsed on the event loop) and a large one (570 images, 10 MB),
in a process that has imported TensorFlow and built a Keras model as the server has, so a full
collection walks what a serving process holds. Three ways per body, interleaved, medians of
``--repeats`` rounds of ``--loops`` parses each:

- ``gc on``: the collector left alone;
- ``gc.disable()``: the collector paused around each parse (process-wide while it runs);
- ``gc.freeze()``: the collector on, the objects alive before the model is built (TensorFlow's and
  Keras' own) moved to the permanent generation, as ``ModelServer.start()`` does before it loads its
  models; the model's objects stay collectable.

Each round builds the model afresh after the mode's set-up, so that in every mode the model's objects
are young and ordinary.

Prints the medians and the ratios (gc on / other; > 1 means the switch is faster).

    python benchmarks/serving_gc.py [--repeats 5] [--loops 200] [--out benchmarks/results/serving_gc.json]
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import statistics
import sys
import time

import numpy as np


def _body(n_images, seed=0):
    x = np.random.default_rng(seed).uniform(0, 1, (n_images, 28, 28, 1)).astype(np.float32)
    return json.dumps({"instances": x.tolist()}).encode()


def _time(fn, loops, mode):
    t0 = time.perf_counter()
    for _ in range(loops):
        if mode == "gc.disable()":
            gc.disable()
            try:
                fn()
            finally:
                gc.enable()
        else:
            fn()
    return (time.perf_counter() - t0) / loops


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--loops", type=int, default=200, help="parses of the small body per round (large: loops/100)")
    p.add_argument("--out", default=None)
    args = p.parse_args(argv)

    import keras
    import tensorflow as tf

    from keras_advmi.serving import codec

    def build_model():   # what a serving process holds besides its imports and the request
        return keras.Sequential([keras.Input((28, 28, 1)), keras.layers.Conv2D(32, 3), keras.layers.Flatten(),
                                 keras.layers.Dense(10)])

    spec = {"inputs": tf.TensorSpec((None, 28, 28, 1), tf.float32, name="inputs")}

    def specs_for(sig):
        return "serving_default", spec

    bodies = {"small": _body(4), "large": _body(570)}
    loops = {"small": args.loops, "large": max(2, args.loops // 100)}
    modes = ("gc on", "gc.disable()", "gc.freeze()")
    times = {(b, m): [] for b in bodies for m in modes}
    for _ in range(args.repeats):
        for b, body in bodies.items():
            for m in modes:
                gc.collect()
                if m == "gc.freeze()":
                    gc.freeze()
                model = build_model()
                times[(b, m)].append(_time(lambda: codec.parse_predict(body, specs_for, 100_000, 1 << 30),
                                           loops[b], m))
                del model
                if m == "gc.freeze()":
                    gc.unfreeze()
    t0 = time.perf_counter()
    gc.collect()                    # what ModelServer.start() does once, before gc.freeze()
    collect_ms = (time.perf_counter() - t0) * 1e3
    out = {"command": "python benchmarks/serving_gc.py" + (f" --out {args.out}" if args.out else ""),
           "hardware": f"{os.cpu_count()} CPU cores, Python {sys.version.split()[0]}", "repeats": args.repeats,
           "tracked_objects": len(gc.get_objects()), "full_collection_ms": round(collect_ms, 1), "rows": []}
    print(f"{out['tracked_objects']} tracked objects; one full collection {collect_ms:.1f} ms")
    for b, body in bodies.items():
        med = {m: statistics.median(times[(b, m)]) for m in modes}
        row = {"body": f"{b}, {len(body) / 1e6:.2f} MB", **{f"{m} ms": round(v * 1e3, 3) for m, v in med.items()},
               **{f"gc on / {m}": round(med["gc on"] / med[m], 2) for m in modes[1:]}}
        out["rows"].append(row)
        print(", ".join(f"{k} {v}" for k, v in row.items()))
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            json.dump(out, fh, indent=2)
    return out


if __name__ == "__main__":
    main()

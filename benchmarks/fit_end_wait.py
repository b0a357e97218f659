"""How long `fit` takes to return after its last batch: NumPy arrays against a tf.data pipeline.

Plain Keras on purpose (no keras-advmi import): standard training of Madry's MNIST CNN on random data,
one `fit(epochs=1)` per call, alternating the two inputs. For each call it prints when the last batch
ended (`on_train_batch_end`) and when `fit` returned; the difference is the wait that `fit` spends
releasing its dataset iterator. NumPy arrays go through Keras' own pipeline (`prefetch(AUTOTUNE)`);
the other input is a `tf.data.Dataset` with autotuning off and `prefetch(2)`. Neither is shuffled
(`shuffle=False`), so both feed the same batches.

    python benchmarks/fit_end_wait.py --batches 400 --calls 3
"""

from __future__ import annotations

import argparse
import statistics
import time


def madry_cnn(keras):
    return keras.Sequential([
        keras.Input((28, 28, 1)),
        keras.layers.Conv2D(32, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Conv2D(64, 5, padding="same", activation="relu"), keras.layers.MaxPooling2D(),
        keras.layers.Flatten(), keras.layers.Dense(1024, activation="relu"), keras.layers.Dense(10)])


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--batches", type=int, default=400, help="batches of 128 per fit call")
    parser.add_argument("--calls", type=int, default=3, help="fit calls per input")
    args = parser.parse_args(argv)

    import numpy as np
    import keras
    import tensorflow as tf

    keras.utils.set_random_seed(0)
    model = madry_cnn(keras)
    model.compile("adam", keras.losses.SparseCategoricalCrossentropy(from_logits=True))
    x = np.random.rand(128 * args.batches, 28, 28, 1).astype("float32")
    y = np.random.randint(0, 10, len(x))
    options = tf.data.Options()
    options.autotune.enabled = False
    inputs = {
        "numpy": lambda: {"x": x, "y": y, "batch_size": 128},
        "tf.data, autotune off": lambda: {
            "x": tf.data.Dataset.from_tensor_slices((x, y)).batch(128).prefetch(2).with_options(options)},
    }

    class LastBatch(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            self.at = time.perf_counter()

    model.fit(x[:256], y[:256], epochs=1, verbose=0)   # tracing
    waits = {name: [] for name in inputs}
    for _ in range(args.calls):
        for name, data in inputs.items():
            last = LastBatch()
            start = time.perf_counter()
            model.fit(**data(), epochs=1, verbose=0, shuffle=False, callbacks=[last])
            end = time.perf_counter()
            waits[name].append(end - last.at)
            print(f"{name:22s} last batch {last.at - start:6.2f} s  returned {end - start:6.2f} s  "
                  f"wait {end - last.at:5.2f} s", flush=True)
    for name, values in waits.items():   # the wait comes in some calls, not all: count them
        slow = [v for v in values if v > 0.1]
        print(f"{name:22s} {len(slow)} of {len(values)} calls waited > 0.1 s; longest {max(values):.2f} s, "
              f"median {statistics.median(values):.2f} s")


if __name__ == "__main__":
    main()

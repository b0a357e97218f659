"""The dynamic batcher keeps one open batch per (servable, signature), as TF Serving's shared batch
scheduler does: idle workers never split the arrivals of one batching window into smaller batches."""

import threading
import time

import numpy as np

from keras_advmi.serving import Batching
from keras_advmi.serving.batching import Batcher


class _Recorder:
    """A stand-in servable: records the rows of each model call, answers the inputs doubled."""

    name, version = "fake", 1

    def __init__(self):
        self.calls = []
        self.lock = threading.Lock()

    def run(self, signature, inputs):
        with self.lock:
            self.calls.append(len(inputs["x"]))
        return {"y": inputs["x"] * 2}


def test_one_open_batch_per_key_with_two_idle_workers():
    servable = _Recorder()
    batcher = Batcher(Batching(max_batch_size=64, batch_timeout_micros=300_000, max_enqueued_batches=4,
                               num_batch_threads=2))
    try:
        futures = []
        for i in range(10):                  # 10 one-row requests, 10 ms apart: one 300 ms window
            futures.append(batcher.submit(servable, "serving_default", {"x": np.full((1, 2), i, np.float32)}))
            time.sleep(0.01)
        outs = [f.result(timeout=10)["y"] for f in futures]
        assert servable.calls == [10]        # one model call; two idle workers used to split it (e.g. [1, 9])
        for i, y in enumerate(outs):
            np.testing.assert_array_equal(y, np.full((1, 2), 2 * i, np.float32))
        # a full batch closes early and the next one opens at once: 10 x 7 rows -> 63 + 7
        futures = [batcher.submit(servable, "serving_default", {"x": np.ones((7, 2), np.float32)})
                   for _ in range(10)]
        assert all(f.result(timeout=10)["y"].shape == (7, 2) for f in futures)
        assert sorted(servable.calls[1:]) == [7, 63]
    finally:
        batcher.close()

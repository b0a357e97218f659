"""Run a compiled attack over an array in fixed-size chunks (keeps memory flat, limits retracing)."""

from __future__ import annotations

import numpy as np


def map_batches(run, x, y, batch_size):
    """Apply ``run(chunk_index, x_chunk, y_chunk)`` over rows and concatenate (NumPy out)."""
    n = int(x.shape[0])
    if batch_size is None or n <= batch_size:
        return run(0, x, y).numpy()
    out = [run(i, x[start:start + batch_size], y[start:start + batch_size]).numpy()
           for i, start in enumerate(range(0, n, batch_size))]
    return np.concatenate(out, axis=0)

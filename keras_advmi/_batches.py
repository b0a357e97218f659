"""Batches of several epochs for the small ``fit``-trained helpers (MIAT's and the MI-score detector's critics)."""

from __future__ import annotations

import numpy as np
import keras


class PermutedBatches(keras.utils.PyDataset):
    """Full batches of ``arrays`` (equal first dimension) over ``epochs`` epochs, each epoch a fresh ``rng``
    permutation, the last partial batch dropped; ``fit`` it with ``steps_per_epoch=n_batches``.

    Batch ``i`` is batch ``i % n_batches`` of permutation ``i // n_batches``. The permutations are drawn up
    front, so a batch depends on its index only, not on when Keras reads it (Keras reads a batch to inspect
    the data and calls ``on_epoch_end`` once before the first epoch), and ``rng`` is left where ``epochs``
    permutations leave it.
    """

    def __init__(self, arrays: tuple[np.ndarray, ...], batch_size: int, epochs: int, rng: np.random.Generator):
        super().__init__()
        self.arrays, self.batch_size = tuple(arrays), batch_size
        n = len(self.arrays[0])
        self.n_batches = max(1, n // batch_size)
        self.orders = [rng.permutation(n) for _ in range(epochs)]

    def __len__(self):
        return self.n_batches * len(self.orders)

    def __getitem__(self, i):
        epoch, b = divmod(i, self.n_batches)
        idx = self.orders[epoch][b * self.batch_size:(b + 1) * self.batch_size]
        return tuple(a[idx] for a in self.arrays)

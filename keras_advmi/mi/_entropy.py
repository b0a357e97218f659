"""The Shannon entropy of a discrete sample's empirical distribution, shared by the binning and KDE modules."""

from __future__ import annotations

import numpy as np

__all__ = ["entropy_of_rows"]


def entropy_of_rows(codes: np.ndarray) -> float:
    """Shannon entropy (nats) of the empirical distribution of the rows of ``codes`` (N, d) int64.

    H = -sum_r p_r log p_r over the distinct rows r, p_r their frequencies; 0.0 for N = 0.
    Fixture: rows [[0], [0], [1], [2]] -> 1.039721 nats (p = 1/2, 1/4, 1/4).
    """
    if codes.shape[0] == 0:
        return 0.0
    # Hash rows to one integer per row through a void view: exact equality, O(N d) memory.
    rows = np.ascontiguousarray(codes).view(np.dtype((np.void, codes.dtype.itemsize * codes.shape[1])))
    _, counts = np.unique(rows, return_counts=True)
    p = counts / counts.sum()
    return float(-(p * np.log(p)).sum()) + 0.0   # + 0.0 turns -0.0 into 0.0

"""Binning estimate of I(X;T) and I(T;Y) ("Exploring adversarial examples and adversarial
robustness of convolutional neural networks by mutual information", 2022, arXiv 2207.05756; Shwartz-Ziv &
Tishby 2017).

Each unit's activation is discretised as T = floor(h / w) (bin width w; 0.5 in that paper). With every input x
distinct, T is a function of X, so

    I(X;T) = H(T)         and        I(T;Y) = H(T) - sum_c p(c) H(T | Y = c),

entropies of the empirical distribution of T's rows. Both are <= log N: probe with many samples.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from .._checks import check_labels, check_positive
from ._entropy import entropy_of_rows
from ._inputs import activations_2d, check_unit, in_unit

__all__ = ["binning_mi"]


def binning_mi(h: ArrayLike, y: ArrayLike, bin_width: float = 0.5, unit: str = "nats", *,
               name: str | None = None) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) by binning the activations ``h`` (N, ...) with labels ``y`` (N,).

    Args:
      h: activations, flattened per sample; N >= 2, finite.
      y: integer class labels (N,) (or one-hot).
      bin_width: w > 0 (0.5 in the 2022 MI paper).
      unit: 'nats' (default) or 'bits'.
    Returns:
      (I_XT, I_TY) floats. Fixture: h = [[.1,.2],[.3,.4],[.6,.1],[.9,.9],[1.2,.2],[1.4,.3]],
      y = [0,0,0,1,1,1], w = 0.5 -> (1.918296, 1.000000) bits.
    """
    with tf.name_scope(name or "binning_mi"):
        h64 = activations_2d(h)
        labels = check_labels("y", y, n=h64.shape[0])
        width = check_positive("bin_width", bin_width)
        check_unit(unit)
        codes = np.floor(h64 / width).astype(np.int64)
        h_t = entropy_of_rows(codes)
        n = len(labels)
        h_t_given_y = sum(np.sum(labels == c) / n * entropy_of_rows(codes[labels == c]) for c in np.unique(labels))
        return float(in_unit(h_t, unit)), float(in_unit(max(h_t - h_t_given_y, 0.0), unit))

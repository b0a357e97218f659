"""Kernel-density (KDE) bounds on the mutual information of a layer's activations.

As in "Exploring adversarial examples and adversarial robustness of convolutional neural networks by
mutual information" (2022, arXiv 2207.05756), after Kolchinsky & Tracey 2017, "Estimating mixture
entropy with pairwise distances", and Saxe et al. 2018, "On the information bottleneck theory of deep
learning": the activations h (N x d) are seen through additive Gaussian noise of variance
``noise_var`` (s2); with D_ij = ||h_i - h_j||^2,

    I_upper(X;T) = -(1/N) sum_i log( (1/N) sum_j exp(-D_ij / (2 s2)) )
    I_lower(X;T) = -(1/N) sum_i log( (1/N) sum_j exp(-D_ij / (8 s2)) )
    I(T;Y)       = I(X;T) on all N  -  sum_c p(c) I(X;T) within class c        (same bound)

Every value lies in [0, log N] nats: estimates saturate at log N, so probe with >= 1,000 samples.

Noise scale. The default of every function here is ``noise_var="relative"`` (below), as in
``MutualInformationLogger`` and ``analysis.information_plane``. The 2022 mutual-information paper above
and Saxe et al. 2018 (whose KDE information planes it compares with the binned ones of Shwartz-Ziv &
Tishby 2017, "Opening the black box of deep neural networks via information") use an absolute s2 = 0.1:
pass ``noise_var=0.1`` to reproduce their information-plane numbers. With an absolute s2 the value of
I(X;T) of a deterministic layer is set by the ratio of the pairwise distances to s2, not by the network:
activations of 1,000 distinct images lie far apart, every estimate sits at log N, and a function-preserving
rescale of a layer (ReLU kernel x10, next kernel x0.1) moves it arbitrarily (Saxe et al. 2018 show the
noise choice drives such results; Goldfeld et al. 2019, "Estimating information flow in deep neural
networks", tie the noise to the network). ``noise_var="relative"`` ties s2 to the layer's own spread
instead, by the median heuristic of kernel methods (Gretton et al. 2012, "A kernel two-sample test";
Garreau et al. 2017, "Large sample analysis of the median heuristic"):

    s2 = relative_noise * median_{i < j} ||h_i - h_j||^2          (``kde_noise_var``)

so the estimate is invariant to rescaling h, and the kernel exp(-D_ij / (2 s2)) = exp(-5 D_ij / median)
at the default relative_noise = 0.1 resolves the cluster structure of the layer: ~log(#clusters) for
tight classes, up to log N for points with no near neighbours, 0 for a collapsed layer.

Implementation: float64 log-sum-exp, rows in chunks, so memory is O(N x chunk) (never O(N^2 x d)).
Distances use ||a||^2 + ||b||^2 - 2 a.b on mean-centred data, clamped at 0 (the 2022 paper's un-centred float32
version of this identity can go negative); they are computed in float32 where the kernel is wide
compared with the squared norms (s2 >= 1% of the largest), as the relative noise always is, else in float64.
"""

from __future__ import annotations

import math

import numpy as np
import tensorflow as tf
from numpy.typing import ArrayLike

from .._checks import check_choice, check_labels, check_positive, check_positive_int, invalid
from ._entropy import entropy_of_rows
from ._inputs import activations_2d, in_unit

__all__ = ["kde_upper", "kde_lower", "kde_label_mi", "kde_mi", "kde_information_plane", "kde_noise_var", "log_n",
           "label_entropy", "check_noise_var", "RELATIVE_NOISE"]

_BOUND_SCALE = {"upper": 2.0, "lower": 8.0}   # D_ij / (scale * s2)
RELATIVE_NOISE = 0.1   #: default s2 / median squared pairwise distance of ``noise_var="relative"``
_MEDIAN_ROWS = 500     # the median is taken over the pairs of at most this many rows (a seeded subsample)


def _sq_distances(rows, sq_rows, h, sq):
    """||rows_i - h_j||^2 by the Gram identity ||a||^2 + ||b||^2 - 2 a.b (in h's dtype), clamped at 0."""
    return tf.maximum(sq_rows[:, None] + sq[None, :] - 2.0 * tf.matmul(rows, h, transpose_b=True), 0.0)


def _scaled_neg_distances(h, sq, start, stop, inv_scale):
    """-D_ij * inv_scale for rows start:stop against all rows, float64."""
    return -tf.cast(_sq_distances(h[start:stop], sq[start:stop], h, sq), tf.float64) * inv_scale


@tf.function(reduce_retracing=True)
def _mean_row_logmeanexp(h, inv_scale, chunk):
    """(1/N) sum_i log( (1/N) sum_j exp(-D_ij * inv_scale) ), float64, rows in chunks of ``chunk``."""
    n = tf.shape(h)[0]
    sq = tf.reduce_sum(h * h, axis=1)
    total = tf.constant(0.0, tf.float64)
    for start in tf.range(0, n, chunk):
        logits = _scaled_neg_distances(h, sq, start, tf.minimum(start + chunk, n), inv_scale)
        total += tf.reduce_sum(tf.reduce_logsumexp(logits, axis=1))
    n64 = tf.cast(n, tf.float64)
    return total / n64 - tf.math.log(n64)


@tf.function(reduce_retracing=True)
def _row_logmeanexp_with_classes(h, labels, inv_scale, chunk):
    """Per row i: log mean_j exp(-D_ij * inv_scale) over all j, and over the j of row i's class.

    One distance pass serves I(X;T) and every within-class term of I(T;Y). Returns two (N,) float64.
    """
    n = tf.shape(h)[0]
    sq = tf.reduce_sum(h * h, axis=1)
    counts = tf.cast(tf.gather(tf.math.bincount(labels), labels), tf.float64)      # N_c(i)
    all_rows = tf.TensorArray(tf.float64, size=0, dynamic_size=True, infer_shape=False)
    class_rows = tf.TensorArray(tf.float64, size=0, dynamic_size=True, infer_shape=False)
    for k in tf.range((n + chunk - 1) // chunk):
        start = k * chunk
        stop = tf.minimum(start + chunk, n)
        logits = _scaled_neg_distances(h, sq, start, stop, inv_scale)
        same = tf.equal(labels[start:stop, None], labels[None, :])
        all_rows = all_rows.write(k, tf.reduce_logsumexp(logits, axis=1))
        class_rows = class_rows.write(
            k, tf.reduce_logsumexp(tf.where(same, logits, tf.constant(-np.inf, tf.float64)), axis=1))
    n64 = tf.cast(n, tf.float64)
    return all_rows.concat() - tf.math.log(n64), class_rows.concat() - tf.math.log(counts)


def _median_sq_distance(h64: np.ndarray) -> float:
    """Median of ||h_i - h_j||^2 over pairs i < j (of a seeded subsample of ``_MEDIAN_ROWS`` rows when N is larger);
    the mean when more than half of the pairs coincide (median 0); 0 when every row is the same."""
    if len(h64) > _MEDIAN_ROWS:
        h64 = h64[np.sort(np.random.default_rng(0).choice(len(h64), _MEDIAN_ROWS, replace=False))]
    centred = tf.constant((h64 - h64.mean(axis=0, keepdims=True)).astype(np.float32))   # float32: for a median
    sq = tf.reduce_sum(centred * centred, axis=1)
    dist = _sq_distances(centred, sq, centred, sq).numpy()[np.triu_indices(len(h64), 1)].astype(np.float64)
    median = float(np.median(dist))
    return median if median > 0 else float(dist.mean())


def kde_noise_var(h: ArrayLike, relative_noise: float = RELATIVE_NOISE, *, name: str | None = None) -> float:
    """The scale-aware noise variance s2 = ``relative_noise`` * median_{i<j} ||h_i - h_j||^2 (module doc).

    Args:
      h: activations (N, ...), N >= 2, finite. relative_noise: > 0.
    Returns:
      s2 in the squared units of h; 0.0 when every row of h is the same (the layer carries no information).
    The median is taken over all pairs for N <= 500, else over the 124,750 pairs of 500 rows drawn with seed 0
    (a quarter of the cost of one distance pass at N = 1,000; the same rows at every scale, so the estimate
    stays scale-invariant);
    where over half of the pairs coincide (median 0) the mean squared distance is used.
    """
    with tf.name_scope(name or "kde_noise_var"):
        return check_positive("relative_noise", relative_noise) * _median_sq_distance(activations_2d(h))


def check_noise_var(noise_var) -> float | str:
    """``noise_var`` of the KDE functions and of their callers: 'relative' (returned as is) or an absolute
    s2, a finite number > 0 (returned as a float); a ValueError naming ``noise_var`` otherwise."""
    if isinstance(noise_var, str):
        if noise_var != "relative":
            raise invalid("noise_var", "'relative' or a number > 0 (absolute s2; 0.1 in the 2022 MI paper)",
                          noise_var)
        return noise_var
    return check_positive("noise_var", noise_var)


def _resolve_noise_var(h64: np.ndarray, noise_var, relative_noise) -> float:
    """s2 for ``noise_var`` = 'relative' (``kde_noise_var`` of h64) or a positive number (absolute, as in the
    2022 MI paper)."""
    if check_noise_var(noise_var) == "relative":
        return check_positive("relative_noise", relative_noise) * _median_sq_distance(h64)
    return float(noise_var)


def _gram_input(centred: np.ndarray, noise_var: float) -> tf.Tensor:
    """Centred activations for the distance pass: float32 (faster; docs/results.md) where the kernel is
    wide enough for its rounding not to matter (s2 >= 1% of the largest squared norm), float64 otherwise
    (narrow kernels, as the 2022 MI paper's absolute s2 on large activations)."""
    wide = noise_var >= 0.01 * float(np.max(np.einsum("ij,ij->i", centred, centred)))
    return tf.constant(centred.astype(np.float32) if wide else centred)


def _kde_nats(h64: np.ndarray, noise_var: float, bound: str, chunk: int) -> float:
    if h64.shape[0] < 2 or noise_var == 0.0:
        return 0.0  # one sample, or identical rows ('relative' s2 = 0): no information; I = log 1 = 0
    centred = h64 - h64.mean(axis=0, keepdims=True)
    inv_scale = 1.0 / (_BOUND_SCALE[bound] * noise_var)
    value = -float(_mean_row_logmeanexp(_gram_input(centred, noise_var), tf.constant(inv_scale, tf.float64),
                                        tf.constant(chunk, tf.int32)))
    # exact arithmetic gives [0, log N]; clamp rounding (the Gram identity leaves D_ii ~ 1e-16 ||h||^2, not 0)
    return min(max(value, 0.0), math.log(h64.shape[0])) + 0.0


def _check_bound(bound):
    return check_choice("bound", bound, tuple(_BOUND_SCALE))


def kde_mi(h: ArrayLike, noise_var: float | str = "relative", bound: str = "upper", *, unit: str = "nats",
           chunk: int = 512, relative_noise: float = RELATIVE_NOISE, name: str | None = None) -> float:
    """I(X;T) of activations ``h`` (N, ...) by the KDE ``bound`` ('upper' or 'lower'); see the module doc.

    Args:
      h: activations, shape (N, ...), flattened per sample; N >= 2, finite.
      noise_var: variance s2 of the Gaussian noise: 'relative' (default) for ``relative_noise`` times the median
        squared pairwise distance of h (scale-aware; module doc), or a number > 0 (absolute; 0.1 reproduces the
        2022 MI paper's and Saxe et al.'s information planes).
      bound: 'upper' (kernel width 2 s2) or 'lower' (8 s2).
      unit: 'nats' (default) or 'bits'.
      chunk: rows per block; peak memory ~ 3 * 8 bytes * N * chunk.
      relative_noise: s2 / median distance with ``noise_var='relative'``.
      name: the ``tf.name_scope`` of the ops (default 'kde_mi'), as in ``tfp.vi.mutual_information``.
    Returns:
      float in [0, log N].
    """
    with tf.name_scope(name or "kde_mi"):
        h64 = activations_2d(h)
        noise_var = _resolve_noise_var(h64, noise_var, relative_noise)
        chunk = check_positive_int("chunk", chunk)
        return in_unit(_kde_nats(h64, noise_var, _check_bound(bound), chunk), unit)


def kde_upper(h: ArrayLike, noise_var: float | str = "relative", *, unit: str = "nats", chunk: int = 512,
              relative_noise: float = RELATIVE_NOISE, name: str | None = None) -> float:
    """Upper KDE bound on I(X;T): -(1/N) sum_i log((1/N) sum_j exp(-||h_i - h_j||^2 / (2 s2))).

    ``noise_var``: 'relative' (default, scale-aware) or an absolute s2 (0.1 in the 2022 MI paper); see ``kde_mi``.
    Fixture: h = [[0,0],[1,0]], s2 = 0.1 (also the 'relative' s2 of these two points) -> 0.686432 nats.
    """
    return kde_mi(h, noise_var, "upper", unit=unit, chunk=chunk, relative_noise=relative_noise,
                  name=name or "kde_upper")


def kde_lower(h: ArrayLike, noise_var: float | str = "relative", *, unit: str = "nats", chunk: int = 512,
              relative_noise: float = RELATIVE_NOISE, name: str | None = None) -> float:
    """Lower KDE bound on I(X;T): as ``kde_upper`` with kernel width 8 s2 instead of 2 s2.

    Fixture: h = [[0,0],[1,0]], s2 = 0.1 (also their 'relative' s2) -> 0.441218 nats.
    """
    return kde_mi(h, noise_var, "lower", unit=unit, chunk=chunk, relative_noise=relative_noise,
                  name=name or "kde_lower")


def kde_label_mi(h: ArrayLike, y: ArrayLike, noise_var: float | str = "relative", bound: str = "upper", *,
                 unit: str = "nats", chunk: int = 512, relative_noise: float = RELATIVE_NOISE,
                 name: str | None = None) -> float:
    """I(T;Y) = I(X;T) on all N minus sum_c p(c) I(X;T | Y = c), both by the same KDE ``bound``.

    Args:
      h: activations (N, ...); y: integer labels (N,) (or one-hot).
    Returns:
      float in [0, H(Y)] (in ``unit``); clamped at 0 (the difference of two bounds can dip below).
    With ``noise_var='relative'`` one s2, from all N rows, serves both terms.
    Fixture: h = [[0,0],[0,1],[1,0],[1,1]], y = [0,0,1,1], s2 = 0.1 (also their 'relative' s2) -> upper 0.686432,
    lower 0.441218.
    """
    return kde_information_plane(h, y, noise_var, bound, unit=unit, chunk=chunk, relative_noise=relative_noise,
                                 name=name or "kde_label_mi")[1]


def kde_information_plane(h: ArrayLike, y: ArrayLike, noise_var: float | str = "relative", bound: str = "upper", *,
                          unit: str = "nats", chunk: int = 512, relative_noise: float = RELATIVE_NOISE,
                          name: str | None = None) -> tuple[float, float]:
    """(I(X;T), I(T;Y)) by one KDE ``bound`` in one pass: I(X;T) is the first term of I(T;Y).

    Costs ~(1 + 1/C) times one ``kde_mi`` for C balanced classes, instead of 2x for two calls.
    """
    with tf.name_scope(name or "kde_information_plane"):
        h64 = activations_2d(h)
        labels = check_labels("y", y, n=h64.shape[0])
        noise_var = _resolve_noise_var(h64, noise_var, relative_noise)
        bound = _check_bound(bound)
        chunk = check_positive_int("chunk", chunk)
        if noise_var == 0.0:   # identical rows: no information about X or Y
            return in_unit(0.0, unit), in_unit(0.0, unit)
        _, dense_labels = np.unique(labels, return_inverse=True)
        centred = h64 - h64.mean(axis=0, keepdims=True)
        row_all, row_class = _row_logmeanexp_with_classes(
            _gram_input(centred, noise_var), tf.constant(dense_labels.astype(np.int32)),
            tf.constant(1.0 / (_BOUND_SCALE[bound] * noise_var), tf.float64), tf.constant(chunk, tf.int32))
        total = min(max(-float(tf.reduce_mean(row_all)), 0.0), math.log(len(h64))) + 0.0
        within = -float(tf.reduce_mean(row_class))      # sum_c p(c) I(X;T | Y = c)
        return in_unit(total, unit), in_unit(max(total - within, 0.0) + 0.0, unit)


def log_n(n: int, unit: str = "nats", *, name: str | None = None) -> float:
    """The ceiling log N every I(X;T) estimate here saturates at (for plotting beside the curves)."""
    with tf.name_scope(name or "log_n"):
        return in_unit(math.log(check_positive_int("n", n)), unit)


def label_entropy(y: ArrayLike, unit: str = "nats", *, name: str | None = None) -> float:
    """H(Y) of the empirical label distribution of ``y`` (N,): the ceiling of every I(T;Y) estimate."""
    with tf.name_scope(name or "label_entropy"):
        labels = np.asarray(y.numpy() if hasattr(y, "numpy") else y)
        return in_unit(entropy_of_rows(check_labels("y", labels, n=len(labels))[:, None]), unit)

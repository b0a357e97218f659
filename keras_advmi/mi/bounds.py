"""Variational lower bounds on MI from a critic's score matrix.

``scores[i, j] = critic(x_i, y_j)``, shape (N, N): the diagonal holds the joint pairs (x_i, y_i),
the off-diagonal entries pairs from the product of marginals. All values in nats unless ``unit='bits'``.

    InfoNCE = mean_i [ S_ii - log mean_j exp(S_ij) ]              (<= log N; van den Oord et al. 2018)
    DV      = mean_i S_ii - log mean_{i != j} exp(S_ij)           (Donsker-Varadhan; MINE, Belghazi et al. 2018)
    NWJ     = mean_i S_ii - e^-1 mean_{i != j} exp(S_ij)          (Nguyen, Wainwright & Jordan 2010)
    JS      = mean_i [-softplus(-S_ii)] - mean_{i != j} softplus(S_ij)
              (f-GAN Jensen-Shannon score used by DIM, Hjelm et al. 2019: a training signal, not nats)

InfoNCE, NWJ and JS call ``tfp.vi.mutual_information`` (TFP's functions are the reference); DV is not
in TFP, so it is written here. Poole et al. 2019, "On variational bounds of mutual information",
compares them. All functions are differentiable and graph-safe (used as training losses), and each opens a
``tf.name_scope(name or <function name>)`` as TFP's do.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
from tensorflow.types.experimental import TensorLike

from .._checks import check_choice, invalid
from ._inputs import in_unit

__all__ = ["infonce", "dv", "nwj", "js", "dv_per_sample", "per_sample_bound", "BOUNDS", "DIAGONALS",
           "PER_SAMPLE_BOUNDS"]

_tfp_mi = tfp.vi.mutual_information


def _scores(scores, name="scores"):
    s = tf.convert_to_tensor(scores)
    if not s.dtype.is_floating:
        s = tf.cast(s, tf.float32)
    shape = s.shape
    if shape.rank is not None and (shape.rank != 2 or (shape[0] is not None and shape[1] is not None
                                                      and shape[0] != shape[1])):
        raise invalid(name, "a square score matrix (N, N) with joint pairs on the diagonal", f"shape {tuple(shape)}")
    if shape.rank == 2 and shape[0] is not None and shape[0] < 2:
        raise invalid(name, "a score matrix with N >= 2 (the bounds need off-diagonal pairs)", f"shape {tuple(shape)}")
    if tf.executing_eagerly() and not bool(tf.reduce_all(tf.math.is_finite(s))):
        raise invalid(name, "finite scores (no NaN or Inf)", "a matrix with non-finite entries")
    return s


def _tfp_bound(tfp_fn, scores, unit, name):
    """``tfp_fn(logu=scores)`` on checked scores, in ``unit``, under ``tf.name_scope(name)``."""
    with tf.name_scope(name):
        return in_unit(tfp_fn(logu=_scores(scores)), unit)


def _off_diagonal_mask(s):
    n = tf.shape(s)[0]
    return tf.logical_not(tf.eye(n, dtype=tf.bool))


def infonce(scores: TensorLike, unit: str = "nats", *, name: str | None = None) -> tf.Tensor:
    """InfoNCE bound, mean_i [S_ii - log mean_j exp(S_ij)] = ``tfp.vi.mutual_information.lower_bound_info_nce``.

    Fixtures: [[2,0],[0,2]] -> 0.566219; [[3,1,0],[0.5,2,-1],[0,1,1]] -> 0.674228.
    """
    return _tfp_bound(_tfp_mi.lower_bound_info_nce, scores, unit, name or "infonce")


def nwj(scores: TensorLike, unit: str = "nats", *, name: str | None = None) -> tf.Tensor:
    """NWJ bound, mean_i S_ii - e^-1 mean_{i!=j} exp(S_ij) = ``tfp.vi.mutual_information.lower_bound_nguyen_wainwright_jordan``.

    Fixtures: [[2,0],[0,2]] -> 1.632121; [[3,1,0],[0.5,2,-1],[0,1,1]] -> 1.420396.
    """
    return _tfp_bound(_tfp_mi.lower_bound_nguyen_wainwright_jordan, scores, unit, name or "nwj")


def js(scores: TensorLike, unit: str = "nats", *, name: str | None = None) -> tf.Tensor:
    """Jensen-Shannon (f-GAN/DIM) score = ``tfp.vi.mutual_information.lower_bound_jensen_shannon``.

    Fixtures: [[2,0],[0,2]] -> -0.820075; [[3,1,0],[0.5,2,-1],[0,1,1]] -> -1.046285.
    Not an MI value in nats; ``unit`` only rescales it for symmetry with the other bounds.
    """
    return _tfp_bound(_tfp_mi.lower_bound_jensen_shannon, scores, unit, name or "js")


def dv(scores: TensorLike, unit: str = "nats", *, name: str | None = None) -> tf.Tensor:
    """Donsker-Varadhan bound, mean_i S_ii - log mean_{i != j} exp(S_ij) (not in TFP).

    Fixtures: [[2,0],[0,2]] -> 2.000000; [[3,1,0],[0.5,2,-1],[0,1,1]] -> 1.545410.
    """
    with tf.name_scope(name or "dv"):
        s = _scores(scores)
        n = tf.cast(tf.shape(s)[0], s.dtype)
        joint = tf.reduce_mean(tf.linalg.diag_part(s))
        marginal = tf.boolean_mask(s, _off_diagonal_mask(s))
        log_mean_exp = tf.reduce_logsumexp(marginal) - tf.math.log(n * (n - 1.0))
        return in_unit(joint - log_mean_exp, unit)


def _per_sample_scores(scores, positives):
    """scores as (R, N, L) and the one-hot of each row's joint column, (R, N, 1); N = columns."""
    s = tf.convert_to_tensor(scores)
    if s.shape.rank == 2:
        s = s[:, :, None]
    if s.shape.rank != 3:
        raise invalid("scores", "a tensor of shape (N, N) or (N, N, L), or (R, N[, L]) with positives",
                      f"shape {tuple(s.shape)}")
    n = tf.shape(s)[1]
    if positives is None:
        positives = tf.range(tf.shape(s)[0])
    return s, tf.one_hot(positives, n, dtype=s.dtype)[:, :, None], n


def dv_per_sample(scores: TensorLike, diagonal: str = "exclude", positives: TensorLike | None = None, *,
                  name: str | None = None) -> tf.Tensor:
    """Per-sample DV terms of a score tensor, the MIAT estimator's output ("Improving Adversarial Robustness via Mutual
    Information Estimation", 2022).

    Args:
      scores: (N, N) or (N, N, L): ``scores[i, j, l]`` = critic(output_i, pattern_j at location l),
        joint pairs on i == j. Or (R, N[, L]) for R chosen rows, with ``positives``.
      diagonal: 'exclude' (correct DV: negatives are the N - 1 other samples) or 'zero' (parity with the
        official MIAT code, which zeroes the diagonal inside the log-sum-exp, i.e. adds an exp(0) term).
      positives: (R,) int, the joint column of each row when ``scores`` holds only some rows (row r
        scores output ``positives[r]`` against every pattern); default: rows 0..N-1, a square tensor.
    Returns:
      (R,): score_i = mean_l ( S_iil - log( (1/(N-1)) sum_{j != i} exp(S_ijl) ) ); higher = more MI.
    """
    check_choice("diagonal", diagonal, DIAGONALS)
    with tf.name_scope(name or "dv_per_sample"):
        s, eye, n = _per_sample_scores(scores, positives)
        joint = tf.reduce_sum(s * eye, axis=1)                           # (R, L): S_iil
        if diagonal == "exclude":
            is_joint = tf.broadcast_to(tf.cast(eye, tf.bool), tf.shape(s))
            negatives = tf.where(is_joint, tf.constant(-np.inf, s.dtype), s)
        else:
            negatives = s * (1.0 - eye)
        log_mean = tf.reduce_logsumexp(negatives, axis=1) - tf.math.log(tf.cast(n - 1, s.dtype))
        return tf.reduce_mean(joint - log_mean, axis=-1)


def per_sample_bound(scores: TensorLike, bound: str = "dv", diagonal: str = "exclude",
                     positives: TensorLike | None = None, *, name: str | None = None) -> tf.Tensor:
    """Per-sample terms of a bound on a score tensor (N, N) or (N, N, L), averaged over locations L.

    bound: 'dv' (:func:`dv_per_sample`), 'jsd' (-softplus(-S_iil) - mean_{j != i} softplus(S_ijl)) or
    'infonce' (S_iil - log mean_j exp(S_ijl)). Returns (N,): higher = more MI for sample i.
    ``positives`` as in :func:`dv_per_sample`: score only some rows, (R, N[, L]) -> (R,).
    The MIAT estimators' per-sample output (Hjelm et al. 2019, DIM; as in MIAT, 2022).
    """
    if bound == "dv":
        return dv_per_sample(scores, diagonal, positives, name=name or "per_sample_bound")
    check_choice("bound", bound, PER_SAMPLE_BOUNDS)
    with tf.name_scope(name or "per_sample_bound"):
        s, eye, n = _per_sample_scores(scores, positives)
        joint = tf.reduce_sum(s * eye, axis=1)                                   # (R, L)
        if bound == "infonce":
            terms = joint - (tf.reduce_logsumexp(s, axis=1) - tf.math.log(tf.cast(n, s.dtype)))
        else:  # jsd
            neg = tf.reduce_sum(tf.nn.softplus(s) * (1.0 - eye), axis=1) / tf.cast(n - 1, s.dtype)
            terms = -tf.nn.softplus(-joint) - neg
        return tf.reduce_mean(terms, axis=-1)


BOUNDS = {"infonce": infonce, "dv": dv, "nwj": nwj, "js": js}
PER_SAMPLE_BOUNDS = ("dv", "jsd", "infonce")
#: How ``dv_per_sample`` treats the joint pair among the negatives.
DIAGONALS = ("exclude", "zero")

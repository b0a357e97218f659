"""MIAT's per-sample MI scores on arrays, and the masked cosine and mean the MI term and the estimators'
objectives are built on ("Improving Adversarial Robustness via Mutual Information Estimation", ICML 2022).

With h the model, x natural, x~ = x_adv and n = x~ - x, the natural estimator scores v_n(x -> h(.)) and the
adversarial one v_a(n -> h(.)) (``miat_estimators.EstimatorPair.scores``). ``mi_scores`` is the public
per-sample API on arrays (``MIAT.mi_scores``).
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .._checks import check_images, check_int_at_least, invalid
from .._model import network_of

__all__ = ["masked_cos", "masked_mean", "mi_scores", "SCORE_KEYS"]

_EPS = 1e-8
#: The keys of ``mi_scores``, in the order of ``EstimatorPair.scores``.
SCORE_KEYS = ("mi_natural/clean", "mi_natural/adv", "mi_adversarial/clean", "mi_adversarial/adv")


def masked_cos(a, b, mask=None):
    """cos(a * mask, b * mask) over the batch axis (as torch.cosine_similarity(dim=0) of masked vectors);
    no mask: cos(a, b).

    The norms are sqrt(sum + 1e-12): with nothing selected the value is 0 and the gradient stays finite
    (tf.norm's gradient at 0 is NaN, and tf.where would pass that NaN on).
    """
    if mask is not None:
        a, b = a * mask, b * mask
    norm_a = tf.sqrt(tf.reduce_sum(a * a) + 1e-12)
    norm_b = tf.sqrt(tf.reduce_sum(b * b) + 1e-12)
    return tf.reduce_sum(a * b) / (norm_a * norm_b + _EPS)


def masked_mean(v, mask):
    """The mean of ``v`` over the samples where ``mask`` is 1 (0 when none is)."""
    return tf.reduce_sum(v * mask) / tf.maximum(tf.reduce_sum(mask), 1.0)


def mi_scores(pair, model, x: np.ndarray, x_adv: np.ndarray, batch_size: int = 256) -> dict:
    """Per-sample natural and adversarial MI of (x, x_adv) under the current model, with the estimators of
    ``pair`` (an ``EstimatorPair``, built here for ``model`` if it is not yet): the keys ``SCORE_KEYS``,
    each (N,) float32 numpy.

    Negatives come from the same batch of ``batch_size`` (>= 2; the last batch is merged into the previous
    one when smaller than 2).
    """
    net = network_of(model)
    pair.build(net)
    check_images("x", x)
    check_images("x_adv", x_adv)
    x, x_adv = np.asarray(x, np.float32), np.asarray(x_adv, np.float32)
    if x.shape != x_adv.shape or len(x) < 2:
        raise invalid("x_adv", f"an array of the same shape as x {x.shape}, with N >= 2", x_adv.shape)
    batch_size = check_int_at_least("batch_size", batch_size, 2)
    out = {k: [] for k in SCORE_KEYS}
    bounds = list(range(0, len(x), batch_size)) + [len(x)]
    if len(bounds) > 2 and bounds[-1] - bounds[-2] < 2:
        bounds.pop(-2)
    for start, stop in zip(bounds[:-1], bounds[1:]):
        values = pair.batch_scores(net, tf.constant(x[start:stop]), tf.constant(x_adv[start:stop]))
        for k, v in zip(SCORE_KEYS, values):
            out[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}

"""MIAT's per-sample MI scores: the four DIM scores of a batch and the masked cosine the MI term is built on.

With h the model, x natural, x~ = x_adv and n = x~ - x, the natural estimator scores v_n(x -> h(.)) and the
adversarial one v_a(n -> h(.)) (``layers.MIEstimator``). ``mi_scores`` is the public per-sample API on
arrays (``MIAT.mi_scores``); ``scores`` the graph function the loss and the pretraining use.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .._checks import check_images, check_int_at_least, invalid
from .._model import network_of

__all__ = ["masked_cos", "masked_mean", "scores", "mi_scores", "SCORE_KEYS"]

_EPS = 1e-8
#: The keys of ``mi_scores``, in the order of ``scores``.
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


def scores(natural, adversarial, x, x_adv, outputs_clean, outputs_adv, training=False, rows=None):
    """v_n(x -> h(x)), v_n(x -> h(x~)), v_a(n -> h(x)), v_a(n -> h(x~)), each (N,), or (R,) for ``rows``.

    natural, adversarial: the two ``MIEstimator`` layers. outputs_*: what the global encoders read, (N, classes)
    logits or (N, D) features of a layer."""
    x = tf.cast(x, tf.float32)
    pattern = tf.stop_gradient(tf.cast(x_adv, tf.float32) - x)
    outputs_clean, outputs_adv = tf.cast(outputs_clean, tf.float32), tf.cast(outputs_adv, tf.float32)
    local_n = natural.local_features(tf.stop_gradient(x), training=training)
    local_a = adversarial.local_features(pattern, training=training)
    return (natural.score_features(local_n, outputs_clean, training, rows),
            natural.score_features(local_n, outputs_adv, training, rows),
            adversarial.score_features(local_a, outputs_clean, training, rows),
            adversarial.score_features(local_a, outputs_adv, training, rows))


def mi_scores(defense, model, x: np.ndarray, x_adv: np.ndarray, batch_size: int = 256) -> dict:
    """Per-sample natural and adversarial MI of (x, x_adv) under the current model, with ``defense``'s
    estimators (``MIAT.mi_scores``: the keys ``SCORE_KEYS``, each (N,) float32 numpy).

    Negatives come from the same batch of ``batch_size`` (>= 2; the last batch is merged into the previous
    one when smaller than 2).
    """
    net = network_of(model)
    defense.build(net)
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
        values = defense._mi_batch(net, tf.constant(x[start:stop]), tf.constant(x_adv[start:stop]))
        for k, v in zip(SCORE_KEYS, values):
            out[k].append(v.numpy())
    return {k: np.concatenate(v) for k, v in out.items()}

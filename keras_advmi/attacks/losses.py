"""Per-sample attack losses ``loss_fn(y, logits) -> (N,)``: what ``pgd(..., loss_fn=...)`` ascends.

``cross_entropy`` is the default of every attack; ``dlr_loss`` is the Difference of Logits Ratio of
Croce & Hein, "Reliable evaluation of adversarial robustness with an ensemble of diverse parameter-free
attacks" (ICML 2020), invariant to a shift and a rescaling of the logits, so that a model whose
cross-entropy saturates still gives the attack a gradient.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf


def cross_entropy(y, logits):
    """Per-sample sparse softmax cross-entropy from logits, shape (N,)."""
    return tf.nn.sparse_softmax_cross_entropy_with_logits(labels=tf.cast(y, tf.int32), logits=logits)


def dlr_loss(y, logits):
    """Per-sample DLR loss ``-(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)``, shape (N,).

    ``z_pi1 >= z_pi2 >= z_pi3`` are the three largest logits (needs >= 3 classes). ``y`` is either int
    labels (N,) or one-hot (N, C) (as ART passes them). Values and gradients equal ART's
    ``DifferenceLogitsRatioTensorFlowV2`` (tests/test_robustness.py); use as
    ``kam.attacks.pgd(model, x, y, loss_fn=kam.attacks.dlr_loss)``.
    """
    logits = tf.cast(logits, tf.float32)
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 1:
        is_true = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits)[-1]) > 0.5
    else:
        is_true = tf.cast(y, tf.float32) > 0.5
    top3 = tf.math.top_k(logits, k=3).values
    z_y = tf.reduce_sum(tf.where(is_true, logits, 0.0), axis=-1)
    z_other = tf.reduce_max(tf.where(is_true, -np.inf, logits), axis=-1)
    return -(z_y - z_other) / (top3[:, 0] - top3[:, 2])

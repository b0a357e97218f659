"""Labels and per-sample losses of a training step, reduced the way Keras' own losses reduce them.

A defense returns a per-sample loss (N,); the model weights it with ``sample_weight``, averages it over
the batch (Keras' "sum_over_batch_size" reduction), adds the network's own ``losses`` (regularisers) and
divides by the number of replicas in sync, the ``tf.distribute`` scaling Keras applies to its losses, so
that the optimizer's sum of the replicas' gradients is the gradient of the global mean.
"""

from __future__ import annotations

import tensorflow as tf

__all__ = ["scale_loss_for_distribution", "sparse_labels", "unscale_loss_for_distribution", "weighted_mean"]


def _replicas():
    """The number of replicas the current ``tf.distribute`` strategy runs in sync (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss_for_distribution(loss):
    """``loss`` / replicas: each replica's share of the global mean, as Keras scales its own losses, so that the
    optimizer's sum of the replicas' gradients is the gradient of the global mean."""
    replicas = _replicas()
    return loss * tf.cast(1.0 / replicas, loss.dtype) if replicas > 1 else loss


def unscale_loss_for_distribution(loss):
    """The inverse of ``scale_loss_for_distribution``: the per-replica mean, for logging."""
    replicas = _replicas()
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def sparse_labels(y):
    """Integer class labels (N,) int64 from sparse (N,) / (N, 1) or one-hot (N, C) labels."""
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and (y.shape[-1] is None or y.shape[-1] > 1):
        return tf.argmax(y, axis=-1, output_type=tf.int64)
    return tf.cast(tf.reshape(y, [-1]), tf.int64)


def weighted_mean(per_sample, sample_weight, extra_losses=()):
    """sum_i w_i l_i / N (+ the ``extra_losses``, e.g. the network's regularisers), scaled for distribution.

    per_sample: (N,) loss; sample_weight: None or (N,) / (N, 1) weights; returns a float32 scalar.
    """
    per_sample = tf.cast(per_sample, tf.float32)
    if sample_weight is not None:
        per_sample = per_sample * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
    # Keras' "sum_over_batch_size" reduction, then the tf.distribute scaling Keras' own losses use.
    loss = tf.reduce_sum(per_sample) / tf.cast(tf.shape(per_sample)[0], tf.float32)
    if extra_losses:
        loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in extra_losses])
    return scale_loss_for_distribution(loss)

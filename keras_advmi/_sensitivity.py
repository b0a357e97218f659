"""Neuron sensitivity of one layer's channels to an adversarial pair, on tensors (Zhang et al.,
"Interpreting and Improving Adversarial Robustness of Deep Neural Networks with Neuron Sensitivity",
2019, arXiv 1909.06978).

For channel (neuron) m of a layer with activation map F^m, the sensitivity to a pair (x, x') is

    sigma(F^m, x, x') = (1 / dim(F^m)) * || F^m(x) - F^m(x') ||_1,

the mean absolute change over the channel's positions (dim = H*W for a conv map, 1 for a dense unit).
Example: F(x) = [1, 2, 3, 4], F(x') = [2, 2, 3, 2] -> 0.75.

A foundation shared by the SNS defense's loss (``defenses.sns``) and the measurement over a data set
(``analysis.neuron_sensitivity``).
"""

from __future__ import annotations

from numpy.typing import ArrayLike
import tensorflow as tf

from ._checks import invalid

__all__ = ["channel_sensitivity"]


def channel_sensitivity(features_clean: ArrayLike, features_adv: ArrayLike) -> tf.Tensor:
    """Per-sample, per-channel sigma on tensors: mean over all axes but the first (batch) and last (channel).

    Args:
      features_clean, features_adv: activations of one layer, shape (N, ..., C) (e.g. (N, H, W, C) or (N, C)).
    Returns:
      float32 (N, C): (1 / dim) * ||F^m(x_i) - F^m(x'_i)||_1 for each sample i and channel m. Graph-safe,
      differentiable (used by the SNS loss).
    """
    diff = tf.abs(tf.cast(features_clean, tf.float32) - tf.cast(features_adv, tf.float32))
    rank = diff.shape.rank
    if rank is None or rank < 2:
        raise invalid("features", "activations of rank >= 2 (N, ..., channels)", f"rank {rank}")
    if rank == 2:
        return diff
    return tf.reduce_mean(diff, axis=list(range(1, rank - 1)))

"""Gradient alignment: how linear the loss is around the data (Andriushchenko & Flammarion,
"Understanding and Improving Fast Adversarial Training", NeurIPS 2020).

    GA = E_{(x, y)} E_{eta ~ U([-eps, eps]^d)} cos( grad_x CE(f(x), y), grad_x CE(f(clip01(x + eta)), y) )

Single-step (FGSM) training relies on the loss being close to linear inside the eps-ball: then one
gradient step finds what PGD finds. When FGSM training overfits catastrophically, the gradients at
two points of the ball stop pointing the same way and GA falls (the paper measures it on CIFAR-10;
on MNIST, docs/results.md compares PGD-AT and FastAT models). GA = 1 where the gradient's
direction does not change inside the ball, as for a two-class linear model.

Samples whose gradient is exactly zero at either point (a saturated softmax in float32) have no
direction; they are left out of the mean and marked NaN per sample.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras
from numpy.typing import ArrayLike

from .._checks import check_labels, check_positive_int, check_seed
from ..attacks._common import check_budget, loss_gradient, seed_pair, uniform_ball_sample
from .._model import check_model_images, predict_logits
from ._common import check_network

__all__ = ["gradient_alignment"]


@tf.function(reduce_retracing=True)
def _cosines(model, x, y, epsilon, seed):
    """(N,) cos between the input gradients at x and at clip01(x + eta), eta ~ U(-eps, eps); NaN where
    either gradient is zero."""
    g_clean, _ = loss_gradient(model, x, y, False)
    x_noisy = tf.clip_by_value(x + uniform_ball_sample(x, epsilon, np.inf, seed), 0.0, 1.0)
    g_noisy, _ = loss_gradient(model, x_noisy, y, False)
    g_clean = tf.reshape(g_clean, [tf.shape(x)[0], -1])
    g_noisy = tf.reshape(g_noisy, [tf.shape(x)[0], -1])
    norms = tf.norm(g_clean, axis=1) * tf.norm(g_noisy, axis=1)
    dots = tf.reduce_sum(g_clean * g_noisy, axis=1)
    return tf.where(norms > 0, dots / tf.where(norms > 0, norms, 1.0), tf.fill(tf.shape(dots), np.nan))


def gradient_alignment(model: keras.Model, x: ArrayLike, y: ArrayLike, epsilon: float, seed: int = 0,
                       batch_size: int = 256) -> dict:
    """Mean cosine between the input gradients of the cross-entropy at x and at a uniform point of
    the L-inf ball around x (GA of Andriushchenko & Flammarion 2020).

    Args:
      model: a Keras model (or ``AdversarialModel``) returning logits.
      x: images (N, ...) in [0, 1], the model's input shape. y: labels (N,) int or (N, C) one-hot.
      epsilon: L-inf radius of the noise, pixel units in [0, 1].
      seed: int, the noise's seed (batch i draws stream i). batch_size: images per gradient call.

    Returns:
      dict: ``mean`` (float, over the samples with a defined cosine), ``per_sample`` (float32 (N,),
      NaN where a gradient is zero), ``n`` (int, samples in the mean).
    """
    model = check_network(model)
    x = check_model_images(model, x)
    num_classes = predict_logits(model, x[:1], 1).shape[-1]
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    check_budget(epsilon)
    batch_size = check_positive_int("batch_size", batch_size)
    seed = check_seed("seed", seed, allow_none=False)
    eps = tf.constant(epsilon, tf.float32)
    cosines = np.concatenate([
        _cosines(model, tf.constant(x[start:start + batch_size]), tf.constant(y[start:start + batch_size], tf.int64),
                 eps, seed_pair(seed, i)).numpy()
        for i, start in enumerate(range(0, len(x), batch_size))])
    defined = ~np.isnan(cosines)
    return {"mean": float(np.mean(cosines[defined])) if defined.any() else float("nan"),
            "per_sample": cosines.astype(np.float32), "n": int(defined.sum())}

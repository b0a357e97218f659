"""Fast gradient sign method (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", 2015)."""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from ._batching import map_batches
from ._common import check_budget, loss_gradient, prepare_inputs, steepest_step, unless_empty


def fgsm_graph(model, x, y, epsilon, targeted=False, norm=np.inf):
    """x' = clip01(x + eps * sign(grad_x CE(f(x), y))) on tensors; minus sign toward a target. Graph-safe."""

    def attack():
        grad, _ = loss_gradient(model, x, y, targeted)
        return tf.stop_gradient(tf.clip_by_value(x + tf.cast(epsilon, x.dtype) * steepest_step(grad, norm), 0.0, 1.0))

    return unless_empty(x, attack)


_fgsm_compiled = tf.function(fgsm_graph, reduce_retracing=True)


def fgsm(model, x, y=None, epsilon=0.3, targeted=False, batch_size=256):
    """One-step L-inf attack: x' = clip01(x + eps * sign(grad_x CE(f(x), y))).

    Args:
      model: Keras model or callable returning logits.
      x: images (N, ...) in [0, 1]. y: labels (N,) (targets when ``targeted``); ``None`` uses the
        model's predictions (avoids label leaking). epsilon: pixel units in [0, 1].
      targeted: step *down* the loss of the target label.
    Returns:
      x_adv of x's shape, float32.
    """
    check_budget(epsilon)
    if tf.is_tensor(x) and not tf.executing_eagerly():
        return fgsm_graph(model, tf.cast(x, tf.float32), y, epsilon, targeted)
    x, y = prepare_inputs(x, y, model)
    return map_batches(lambda i, xb, yb: _fgsm_compiled(model, xb, yb, tf.constant(epsilon, tf.float32),
                                                        bool(targeted)), x, y, batch_size)

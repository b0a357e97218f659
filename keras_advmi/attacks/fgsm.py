"""Fast gradient sign method (Goodfellow et al., "Explaining and Harnessing Adversarial Examples", 2015)."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from .._model import network_of
from ._batching import map_batches
from ._common import check_budget, check_loss_fn, loss_gradient, prepare_inputs, steepest_step, unless_empty


def fgsm_graph(model, x, y, epsilon, targeted=False, norm=np.inf, loss_fn=None):
    """x' = clip01(x + eps * sign(grad_x L(y, f(x)))) on tensors; minus sign toward a target. Graph-safe.

    ``loss_fn(y, logits) -> (N,)`` is L (``None``: cross-entropy).
    """

    def attack():
        grad, _ = loss_gradient(model, x, y, targeted, loss_fn)
        return tf.stop_gradient(tf.clip_by_value(x + tf.cast(epsilon, x.dtype) * steepest_step(grad, norm), 0.0, 1.0))

    return unless_empty(x, attack)


_fgsm_compiled = tf.function(fgsm_graph, reduce_retracing=True)


def fgsm(model, x, y=None, *, epsilon: float = 0.3, targeted: bool = False, batch_size: int = 256,
         loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None):
    """One-step L-inf attack: x' = clip01(x + eps * sign(grad_x L(y, f(x)))), L = cross-entropy by default.

    Args:
      model: Keras model, ``kam.AdversarialModel`` (its network is attacked) or callable returning logits.
      x: images (N, ...) in [0, 1] (eager input outside [0, 1], e.g. 0-255 pixels, is a ValueError).
        y: labels (N,) (targets when ``targeted``); ``None`` uses the
        model's predictions (avoids label leaking). epsilon: pixel units in [0, 1].
      targeted: step *down* the loss of the target label. batch_size: rows per compiled call.
      loss_fn: ``(y, logits) -> per-sample loss (N,)``; ``None`` = cross-entropy (e.g. ``kam.attacks.dlr_loss``).
    Returns:
      x_adv of x's shape, float32.
    """
    check_budget(epsilon)
    loss_fn = check_loss_fn(loss_fn)
    model = network_of(model)
    if tf.is_tensor(x) and not tf.executing_eagerly():
        return fgsm_graph(model, tf.cast(x, tf.float32), y, epsilon, targeted, np.inf, loss_fn)
    x, y = prepare_inputs(x, y, model)
    return map_batches(lambda i, xb, yb: _fgsm_compiled(model, xb, yb, tf.constant(epsilon, tf.float32),
                                                        bool(targeted), np.inf, loss_fn), x, y, batch_size)

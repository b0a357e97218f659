"""Pieces every attack shares: the step size, the loss gradient, seeds, projections, input checks.

All functions here take and return tensors and are safe inside ``tf.function``/XLA.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .._checks import (check_images, check_in_unit_interval, check_labels, check_nonnegative, check_nonnegative_int,
                       check_positive, invalid)
from .._model import logits_of
from .losses import cross_entropy

#: Smallest squared norm used when normalising L2 directions (as in cleverhans).
AVOID_ZERO_DIV = 1e-12


def madry_step_size(epsilon, steps):
    """Madry et al.'s PGD step, 2.5 * epsilon / steps ("Towards Deep Learning Models Resistant to Adversarial
    Attacks", 2018): enough for the iterates to reach the ball's boundary from any start; ``steps == 0`` gives
    ``epsilon``. Python numbers give a float, tensors a float32 tensor. ``step_size=None`` in every attack
    means this value.
    """
    if tf.is_tensor(epsilon) or tf.is_tensor(steps):
        eps, n = tf.cast(epsilon, tf.float32), tf.cast(steps, tf.float32)
        return tf.where(n > 0, 2.5 * eps / tf.maximum(n, 1.0), eps)
    steps = int(steps)
    return 2.5 * float(epsilon) / steps if steps > 0 else float(epsilon)


def loss_gradient(model, x, y, targeted, loss_fn=None):
    """Gradient of sum_i L(y_i, f(x_i)) w.r.t. x, negated when targeted (so ascent moves to the target).

    ``loss_fn(y, logits) -> (N,)`` is L; ``None`` means cross-entropy.
    Returns (gradient of x's shape and dtype, per-sample loss (N,)).
    """
    loss_fn = cross_entropy if loss_fn is None else loss_fn
    with tf.GradientTape() as tape:
        tape.watch(x)
        loss = loss_fn(y, logits_of(model, x))
        objective = tf.reduce_sum(-loss if targeted else loss)
    return tape.gradient(objective, x), loss


def unless_empty(x, attack):
    """``attack()`` for a non-empty batch, else x. The last per-replica batch under ``tf.distribute``
    can be empty, and TensorFlow's ReluGrad rejects empty inputs inside a gradient tape. One cond
    around the whole attack (not one per step, which is slower: docs/results.md)."""
    if x.shape[0] is not None:
        return attack() if x.shape[0] > 0 else x
    return tf.cond(tf.shape(x)[0] > 0, attack, lambda: tf.identity(x))


def _reduce_axes(x):
    return tf.range(1, tf.rank(x))


def steepest_step(grad, norm):
    """The unit-norm direction maximising <grad, d>: sign(grad) for L-inf, grad/||grad||_2 for L2."""
    if norm == np.inf:
        return tf.sign(grad)
    sq = tf.maximum(AVOID_ZERO_DIV, tf.reduce_sum(tf.square(grad), axis=_reduce_axes(grad), keepdims=True))
    return grad / tf.sqrt(sq)


def project(eta, epsilon, norm):
    """Project a perturbation onto the epsilon ball of the norm (per sample)."""
    if norm == np.inf:
        return tf.clip_by_value(eta, -epsilon, epsilon)
    sq = tf.maximum(AVOID_ZERO_DIV, tf.reduce_sum(tf.square(eta), axis=_reduce_axes(eta), keepdims=True))
    return eta * tf.minimum(tf.cast(1.0, eta.dtype), epsilon / tf.sqrt(sq))


def seed_pair(seed, stream=0):
    """A stateless-RNG seed of shape (2,) int64 from ``None`` (random), an int, or a (2,) tensor.

    ``stream`` is added to the second component so that restarts or chunks draw different noise.
    """
    if seed is None:
        base = tf.random.uniform([2], maxval=2**31 - 1, dtype=tf.int64)
    elif isinstance(seed, (int, np.integer)):
        base = tf.constant([int(seed), 0], dtype=tf.int64)
    else:
        base = tf.cast(tf.reshape(seed, [2]), tf.int64)
    return base + tf.constant([0, 1], tf.int64) * tf.cast(stream, tf.int64)


def uniform_ball_sample(x, epsilon, norm, seed):
    """A uniform sample of the epsilon ball around x (L-inf box or L2 ball), not yet clipped."""
    if norm == np.inf:
        return tf.random.stateless_uniform(tf.shape(x), seed, -1.0, 1.0, dtype=x.dtype) * epsilon
    direction = steepest_step(tf.random.stateless_normal(tf.shape(x), seed, dtype=x.dtype), 2)
    dims = tf.cast(tf.reduce_prod(tf.shape(x)[1:]), x.dtype)
    radius = tf.random.stateless_uniform(tf.concat([tf.shape(x)[:1], tf.ones_like(tf.shape(x)[1:])], 0),
                                         seed + tf.constant([0, 7919], tf.int64), dtype=x.dtype)
    return direction * epsilon * tf.pow(radius, 1.0 / dims)


def predicted_labels(model, x):
    """Labels the model predicts (used when y is None, to avoid label leaking)."""
    return tf.argmax(logits_of(model, x), axis=-1, output_type=tf.int64)


def prepare_inputs(x, y, model, *, name_y="y"):
    """Validate eager inputs and convert to tensors: x float32, y int64 (predictions when None)."""
    check_images("x", x)
    x = tf.convert_to_tensor(x, dtype=tf.float32) if not tf.is_tensor(x) else tf.cast(x, tf.float32)
    if y is None:
        y = predicted_labels(model, x)
    else:
        if not tf.is_tensor(y) or tf.executing_eagerly():
            n = int(x.shape[0]) if x.shape[0] is not None else None
            y = check_labels(name_y, y if not tf.is_tensor(y) else y.numpy(), n=n)
        y = tf.cast(y, tf.int64)
        if len(y.shape) == 2:
            y = tf.argmax(y, axis=-1, output_type=tf.int64)
    return x, y


def check_budget(epsilon, step_size=None, steps=None, norm=np.inf):
    """Validate the eager parts of an attack budget (a tensor passes unchecked; None skips an argument).

    epsilon: in [0, 1] for L-inf (pixel units), >= 0 for L2. step_size: > 0. steps: an integer >= 0.
    """
    if not tf.is_tensor(epsilon):
        (check_in_unit_interval if norm == np.inf else check_nonnegative)("epsilon", epsilon)
    if step_size is not None and not tf.is_tensor(step_size):
        check_positive("step_size", step_size)
    if steps is not None and not tf.is_tensor(steps):
        check_nonnegative_int("steps", steps)


def check_loss_fn(loss_fn):
    """``loss_fn`` as given when it is None (cross-entropy) or a callable, else a ValueError naming it."""
    if loss_fn is not None and not callable(loss_fn):
        raise invalid("loss_fn", "None (cross-entropy) or a callable (y, logits) -> per-sample loss (N,)", loss_fn)
    return loss_fn

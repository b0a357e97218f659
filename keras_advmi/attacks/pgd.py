"""Projected gradient descent (Madry et al., 2018), L-inf and L2, targeted, random start, restarts, any loss."""

from __future__ import annotations

from typing import Callable

import numpy as np
import tensorflow as tf

from .._checks import check_norm, check_positive_int
from .._model import logits_of, network_of
from ._batching import map_batches
from ._common import (check_budget, check_loss_fn, loss_gradient, madry_step_size, prepare_inputs, project,
                      seed_pair, steepest_step, uniform_ball_sample, unless_empty)
from .losses import cross_entropy


def pgd_step(model, x_natural, x, y, epsilon, step_size, norm, targeted, loss_fn=None):
    """One PGD iteration in cleverhans' order: clip01(x + a*d); x0 + Proj_eps(x - x0); clip01."""
    grad, _ = loss_gradient(model, x, y, targeted, loss_fn)
    x = tf.clip_by_value(x + step_size * steepest_step(grad, norm), 0.0, 1.0)
    x = x_natural + project(x - x_natural, epsilon, norm)
    return tf.clip_by_value(x, 0.0, 1.0)


def pgd_single(model, x, y, epsilon, step_size, steps, norm=np.inf, targeted=False, random_start=True, seed=None,
               loss_fn=None):
    """One PGD run on a batch of tensors (graph-safe; the loop is a ``tf.while_loop``).

    Args:
      model: Keras model or callable returning logits.
      x: float32 (N, ...) in [0, 1]. y: int (N,) true labels (target labels when ``targeted``).
      epsilon, step_size: scalars in pixel units (``step_size=None``: ``madry_step_size``). steps: Python
        int (loop unrolled at trace time) or int tensor (tf.while_loop).
      norm: ``np.inf`` or ``2``. random_start: begin at a uniform point of the ball.
      seed: ``None``, int, or (2,) int tensor for the random start. loss_fn: ``(y, logits) -> (N,)``,
        ``None`` = cross-entropy.
    Returns:
      x_adv float32 (N, ...), with gradients stopped.
    """
    if step_size is None:
        step_size = madry_step_size(epsilon, steps)
    epsilon = tf.cast(epsilon, x.dtype)
    step_size = tf.cast(step_size, x.dtype)
    x_adv = x
    if random_start:
        x_adv = tf.clip_by_value(x + uniform_ball_sample(x, epsilon, norm, seed_pair(seed)), 0.0, 1.0)
    if isinstance(steps, (int, np.integer)):
        # Unrolled: faster than tf.while_loop on CPU, which keeps Grappler/oneDNN from optimising the
        # loop body (docs/results.md).
        for _ in range(int(steps)):
            x_adv = pgd_step(model, x, x_adv, y, epsilon, step_size, norm, targeted, loss_fn)
    else:  # a tensor number of steps
        x_adv = tf.while_loop(lambda i, _: i < steps,
                              lambda i, xa: (i + 1, pgd_step(model, x, xa, y, epsilon, step_size, norm, targeted,
                                                             loss_fn)),
                              (tf.constant(0, tf.int32), x_adv), parallel_iterations=1)[1]
    return tf.stop_gradient(x_adv)


def worst_case(model, y, targeted, candidates, loss_fn=None):
    """Per sample, the candidate that succeeds (misclassified, or hits the target), else the highest loss."""
    loss_fn = cross_entropy if loss_fn is None else loss_fn
    best, best_score = None, None
    for cand in candidates:
        logits = logits_of(model, cand)
        loss = loss_fn(y, logits)
        hit = tf.equal(tf.argmax(logits, -1, output_type=tf.int64), tf.cast(y, tf.int64))
        success = hit if targeted else tf.logical_not(hit)
        score = tf.where(success, 1e9, 0.0) + (-loss if targeted else loss)
        if best is None:
            best, best_score = cand, score
        else:
            better = score > best_score
            mask = tf.reshape(better, [-1] + [1] * (len(cand.shape) - 1))
            best = tf.where(mask, cand, best)
            best_score = tf.where(better, score, best_score)
    return best


def pgd_graph(model, x, y, epsilon, step_size, steps, norm=np.inf, targeted=False, random_start=True,
              restarts=1, seed=None, loss_fn=None):
    """PGD with restarts on tensors; restart r uses seed stream r. Graph-safe.

    The arguments are ``pgd``'s (this is the primitive the defenses call inside ``train_step``);
    ``step_size=None`` is Madry's step, ``madry_step_size(epsilon, steps)``.
    """

    def attack():
        if restarts == 1:
            return pgd_single(model, x, y, epsilon, step_size, steps, norm, targeted, random_start, seed, loss_fn)
        candidates = [pgd_single(model, x, y, epsilon, step_size, steps, norm, targeted, random_start,
                                 seed_pair(seed, r) if seed is not None or r else seed, loss_fn)
                      for r in range(restarts)]
        return tf.stop_gradient(worst_case(model, y, targeted, candidates, loss_fn))

    return unless_empty(x, attack)


_pgd_compiled = tf.function(pgd_graph, reduce_retracing=True)


def pgd(model, x, y=None, *, epsilon: float = 0.3, step_size: float | None = None, steps: int = 40,
        norm: float = np.inf, targeted: bool = False, random_start: bool = True, restarts: int = 1,
        seed: int | None = None, batch_size: int = 256,
        loss_fn: Callable[[tf.Tensor, tf.Tensor], tf.Tensor] | None = None):
    """Projected gradient descent attack (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", ICLR 2018).

    x_0 = x + U(B_eps) (``random_start``), then ``steps`` times
    x_{t+1} = clip01(x + Proj_{B(x,eps)}(clip01(x_t + a * d_t) - x)), d_t = sign(g) (L-inf) or
    g/||g||_2 (L2), g = grad_x L(y, f(x_t)) (descent on L(target, .) when ``targeted``).
    With ``restarts`` > 1, keeps per sample the worst case (a success, else the highest loss).

    Args:
      model: a Keras model (called with ``training=False``), a ``kam.AdversarialModel`` (its network is
        attacked) or any callable returning logits.
      x: images (N, ...) float in [0, 1] (eager input outside [0, 1], e.g. 0-255 pixels, is a ValueError).
      y: true labels (N,), or target labels when ``targeted``. ``None`` uses the model's
        predictions, which avoids "label leaking" (Kurakin et al. 2017) when attacking training data.
      epsilon: radius of the ball, pixel units ([0, 1] for L-inf). step_size: a, pixel units; ``None`` (the
        default): Madry's 2.5 * epsilon / steps (``madry_step_size``), 0.01875 for the defaults.
      steps: iterations. norm: ``np.inf`` or ``2``. random_start: begin at a uniform point of the ball.
      restarts: independent runs (seeds ``(seed, r)``). seed: int for reproducible noise.
      batch_size: rows per compiled call when ``x`` is an array.
      loss_fn: the loss L ascended, ``(y, logits) -> per-sample loss (N,)``; ``None`` = cross-entropy,
        ``kam.attacks.dlr_loss`` = Croce & Hein's DLR. It also ranks the restarts.

    Returns:
      x_adv of x's shape, float32 (a NumPy array for array input, a tensor for tensor input).
    """
    norm = check_norm(norm)
    check_budget(epsilon, step_size, steps, norm)
    if step_size is None:
        step_size = madry_step_size(epsilon, steps)
    restarts = check_positive_int("restarts", restarts)
    loss_fn = check_loss_fn(loss_fn)
    model = network_of(model)
    if tf.is_tensor(x) and not tf.executing_eagerly():
        return pgd_graph(model, tf.cast(x, tf.float32), y, epsilon, step_size, steps, norm, targeted,
                         random_start, restarts, seed, loss_fn)
    x, y = prepare_inputs(x, y, model)

    def run(chunk_index, xb, yb):
        s = None if seed is None else seed_pair(seed, 1000 * chunk_index)
        return _pgd_compiled(model, xb, yb, tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32),
                             int(steps), norm, bool(targeted), bool(random_start), restarts, s, loss_fn)

    return map_batches(run, x, y, batch_size)

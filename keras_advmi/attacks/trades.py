"""TRADES inner maximisation (Zhang et al., "Theoretically Principled Trade-off between Robustness and
Accuracy", ICML 2019): x' = argmax_{||x'-x||_inf <= eps} KL(f(x) || f(x'))."""

from __future__ import annotations

import tensorflow as tf

from .._checks import check_images
from .._model import logits_of, network_of
from ._batching import map_batches
from ._common import check_budget, madry_step_size, project, seed_pair, unless_empty


def kl_divergence(logits_p, logits_q):
    """Per-sample KL(softmax(p) || softmax(q)) in nats, shape (N,)."""
    log_p = tf.nn.log_softmax(logits_p)
    log_q = tf.nn.log_softmax(logits_q)
    return tf.reduce_sum(tf.exp(log_p) * (log_p - log_q), axis=-1)


def trades_kl_graph(model, x, epsilon, step_size, steps, seed=None, logits_natural=None):
    """Graph-safe TRADES attack on tensors: start at x + 0.001 N(0, 1), L-inf sign ascent on the KL."""
    if step_size is None:
        step_size = madry_step_size(epsilon, steps)
    epsilon = tf.cast(epsilon, x.dtype)
    step_size = tf.cast(step_size, x.dtype)
    p_logits = tf.stop_gradient(logits_of(model, x) if logits_natural is None else logits_natural)
    x_adv = tf.clip_by_value(x + 0.001 * tf.random.stateless_normal(tf.shape(x), seed_pair(seed), dtype=x.dtype), 0.0, 1.0)

    def step(i, xa):
        with tf.GradientTape() as tape:
            tape.watch(xa)
            kl = tf.reduce_sum(kl_divergence(p_logits, logits_of(model, xa)))
        grad = tape.gradient(kl, xa)
        xa = x + project(xa + step_size * tf.sign(grad) - x, epsilon, float("inf"))
        return i + 1, tf.clip_by_value(xa, 0.0, 1.0)

    def attack():
        if isinstance(steps, int):  # unrolled: faster than tf.while_loop on CPU (see pgd.pgd_single)
            xa = x_adv
            for i in range(steps):
                xa = step(i, xa)[1]
            return xa
        return tf.while_loop(lambda i, _: i < steps, step, (tf.constant(0, tf.int32), x_adv), parallel_iterations=1)[1]

    return tf.stop_gradient(unless_empty(x, attack))


_trades_compiled = tf.function(trades_kl_graph, reduce_retracing=True)


def trades_kl(model, x, *, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10,
              seed: int | None = None, batch_size: int = 256):
    """TRADES' KL attack: maximise KL(f(x) || f(x')) over the L-inf ball (label-free).

    Args:
      model: Keras model, ``kam.AdversarialModel`` or callable returning logits.
      x: images (N, ...) in [0, 1] (eager input outside [0, 1], e.g. 0-255 pixels, is a ValueError).
      epsilon, step_size: pixel units (``step_size=None``, the default: Madry's 2.5 * epsilon / steps).
      steps: iterations. seed: int for the N(0, 0.001^2) start. batch_size: rows per compiled call.
    Returns:
      x_adv of x's shape, float32.
    """
    check_budget(epsilon, step_size, steps)
    if step_size is None:
        step_size = madry_step_size(epsilon, steps)
    model = network_of(model)
    if tf.is_tensor(x) and not tf.executing_eagerly():
        return trades_kl_graph(model, tf.cast(x, tf.float32), epsilon, step_size, steps, seed)
    check_images("x", x)
    x = tf.cast(tf.convert_to_tensor(x), tf.float32)

    def run(i, xb, _):
        s = seed_pair(0 if seed is None else seed, 1000 * i) if seed is not None else None
        return _trades_compiled(model, xb, tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32),
                                int(steps), s)

    return map_batches(run, x, x, batch_size)

"""Targeted universal adversarial perturbations near the decision boundary ("Improving adversarial
robustness of deep neural networks by using semantic information", 2020, arXiv 2008.07838) and their
fooling rate.

One image-agnostic delta_t per target class t, shared by every input:

    delta <- Proj_eps( delta - a * sign( grad_delta mean_i CE(f(clip01(x_i + delta)), t) ) )

over minibatches of inputs whose label != t. The paper leaves the selection of those inputs open; we keep the
``boundary_fraction`` of those inputs nearest the boundary to t, i.e. with the smallest logit margin
m_i = max_{k != t} z_k(x_i) - z_t(x_i), draw each step's minibatch from them with a seeded stateless
RNG, start from delta = 0 and take L-inf sign steps (as PGD). The fooling rate of delta_t is the
fraction of inputs with label != t that f classifies as t after clip01(x + delta_t).
"""

from __future__ import annotations

import numbers

import numpy as np
import tensorflow as tf

from .._checks import check_images, check_in_unit_interval, check_labels, check_positive_int, invalid
from .._model import logits_of, network_of, predict_logits
from ._common import check_budget, madry_step_size, seed_pair
from .losses import cross_entropy

__all__ = ["targeted_universal_perturbation", "universal_perturbations", "fooling_rate", "fooling_rates",
           "apply_perturbation", "universal_graph", "boundary_margin"]


def apply_perturbation(x, delta):
    """clip01(x + delta) on arrays or tensors (delta broadcasts over the batch)."""
    if tf.is_tensor(x) or tf.is_tensor(delta):
        return tf.clip_by_value(tf.cast(x, tf.float32) + tf.cast(delta, tf.float32), 0.0, 1.0)
    return np.clip(np.asarray(x, np.float32) + np.asarray(delta, np.float32), 0.0, 1.0)


def boundary_margin(logits, target):
    """m_i = max_{k != t} z_k - z_t, shape (N,): small (or negative) = near (or past) the boundary to t."""
    logits = tf.cast(logits, tf.float32)
    target_mask = tf.one_hot(target, tf.shape(logits)[-1]) > 0.5
    others = tf.where(target_mask, tf.constant(-np.inf, tf.float32), logits)
    z_t = tf.reduce_sum(tf.where(target_mask, logits, 0.0), axis=-1)
    return tf.reduce_max(others, axis=-1) - z_t


def universal_graph(model, x, target, epsilon, step_size, steps, batch_size, seed):
    """The compiled inner loop: one targeted universal delta for the inputs ``x`` (already selected).

    Args:
      model: Keras model or callable returning logits. x: float32 (M, ...) inputs with label != target.
      target: int scalar. epsilon, step_size: L-inf radius and step (pixel units). steps: iterations.
      batch_size: inputs per step, drawn with replacement by ``tf.random.stateless_uniform`` (all M
        inputs every step when M <= batch_size). seed: (2,) int64 stateless seed.
    Returns:
      delta float32 of shape x.shape[1:], in [-eps, eps]. Graph-safe (``tf.while_loop``).
    """
    epsilon = tf.cast(epsilon, tf.float32)
    step_size = tf.cast(step_size, tf.float32)
    m = tf.shape(x)[0]
    full = m <= batch_size
    labels = tf.fill([tf.minimum(m, batch_size)], tf.cast(target, tf.int32))

    def body(i, delta):
        idx = tf.random.stateless_uniform([tf.minimum(m, batch_size)], seed + tf.stack([tf.constant(0, tf.int64),
                                          tf.cast(i, tf.int64)]), 0, m, dtype=tf.int32)
        xb = tf.cond(full, lambda: x, lambda: tf.gather(x, idx))
        with tf.GradientTape() as tape:
            tape.watch(delta)
            loss = tf.reduce_mean(cross_entropy(labels, logits_of(model, tf.clip_by_value(xb + delta, 0.0, 1.0))))
        grad = tape.gradient(loss, delta)
        return i + 1, tf.clip_by_value(delta - step_size * tf.sign(grad), -epsilon, epsilon)

    delta0 = tf.zeros(tf.shape(x)[1:], tf.float32)
    _, delta = tf.while_loop(lambda i, _: i < steps, body, (tf.constant(0, tf.int32), delta0),
                             parallel_iterations=1)
    return tf.stop_gradient(delta)


_universal_compiled = tf.function(universal_graph, reduce_retracing=True)


def _check_target(target, num_classes, name="target"):
    if isinstance(target, bool) or not isinstance(target, numbers.Integral) or not 0 <= target < num_classes:
        raise invalid(name, f"a class index in [0, {num_classes - 1}] (the model has {num_classes} outputs)", target)
    return int(target)


def _prepare(model, x, y, batch_size, need_logits=True):
    check_images("x", x)
    x = np.asarray(x, dtype=np.float32)
    if len(x) == 0:
        raise invalid("x", "at least one input", "an empty array")
    batch_size = check_positive_int("batch_size", batch_size)
    logits = predict_logits(model, x, batch_size) if need_logits else predict_logits(model, x[:1], 1)
    num_classes = int(logits.shape[-1])
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    return x, y, logits, num_classes, batch_size


def _select(x, y, logits, target, boundary_fraction):
    """The ``boundary_fraction`` of inputs with label != target that have the smallest margin to target."""
    keep = np.flatnonzero(y != target)
    if keep.size == 0:
        raise invalid("y", f"at least one input whose label differs from target={target}", "all labels equal target")
    margin = boundary_margin(logits[keep], target).numpy()
    n = max(1, int(np.ceil(boundary_fraction * keep.size)))
    order = np.argsort(margin, kind="stable")[:n]
    return x[keep[order]]


def _check_budget(epsilon, steps, step_size, boundary_fraction):
    """(steps, step_size, boundary_fraction) checked, the step resolved (None: ``madry_step_size``)."""
    steps = check_positive_int("steps", steps)
    check_budget(epsilon, step_size, steps)
    if step_size is None:
        step_size = madry_step_size(epsilon, steps)
    boundary_fraction = check_in_unit_interval("boundary_fraction", boundary_fraction, open_low=True)
    return steps, float(step_size), boundary_fraction


def targeted_universal_perturbation(model, x, y, target: int, *, epsilon: float, steps: int = 40,
                                    step_size: float | None = None, boundary_fraction: float = 0.5,
                                    seed: int | None = None, batch_size: int = 256) -> np.ndarray:
    """One image-agnostic L-inf perturbation that pushes inputs toward class ``target`` (see the module
    docstring for the paper and for the input selection, our choice).

    Args:
      model: Keras model or callable returning logits (N, C).
      x: images (N, ...) float in [0, 1]. y: true labels (N,); inputs with y == target are ignored.
      target: the target class, an int in [0, C).
      epsilon: L-inf radius in pixel units, in [0, 1].
      steps: sign-gradient iterations. step_size: a, pixel units (``None``: ``madry_step_size``).
      boundary_fraction: in (0, 1], the share of the label != target inputs kept, those with the
        smallest logit margin max_{k != t} z_k - z_t (nearest the boundary to t).
      seed: int for the minibatch draws; the same seed gives the same delta.
      batch_size: inputs per step (and rows per forward pass when computing margins).
    Returns:
      delta, np.float32 of shape x.shape[1:], with |delta| <= epsilon; apply as clip01(x + delta)
      (``apply_perturbation``).
    """
    steps, step_size, boundary_fraction = _check_budget(epsilon, steps, step_size, boundary_fraction)
    model = network_of(model)
    x, y, logits, num_classes, batch_size = _prepare(model, x, y, batch_size)
    target = _check_target(target, num_classes)
    selected = _select(x, y, logits, target, boundary_fraction)
    delta = _universal_compiled(model, tf.convert_to_tensor(selected), tf.constant(target, tf.int32),
                                tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32),
                                tf.constant(steps, tf.int32), tf.constant(batch_size, tf.int32),
                                seed_pair(seed, stream=1000 * target))
    return delta.numpy()


def universal_perturbations(model, x, y, *, epsilon: float, targets=None, steps: int = 40,
                            step_size: float | None = None, boundary_fraction: float = 0.5, seed: int | None = None,
                            batch_size: int = 256) -> np.ndarray:
    """``targeted_universal_perturbation`` for each class in ``targets`` (default: all classes).

    Returns np.float32 (len(targets), ...) with row i the delta for ``targets[i]``; the logits of x are
    computed once. Target t uses seed stream 1000 * t, so row t equals the single-target call.
    """
    steps, step_size, boundary_fraction = _check_budget(epsilon, steps, step_size, boundary_fraction)
    model = network_of(model)
    x, y, logits, num_classes, batch_size = _prepare(model, x, y, batch_size)
    targets = list(range(num_classes)) if targets is None else [_check_target(t, num_classes, "targets")
                                                                 for t in np.atleast_1d(targets).tolist()]
    deltas = []
    for t in targets:
        selected = _select(x, y, logits, t, boundary_fraction)
        deltas.append(_universal_compiled(model, tf.convert_to_tensor(selected), tf.constant(t, tf.int32),
                                          tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32),
                                          tf.constant(steps, tf.int32), tf.constant(batch_size, tf.int32),
                                          seed_pair(seed, stream=1000 * t)).numpy())
    return np.stack(deltas).astype(np.float32)


def _check_delta(delta, x):
    delta = np.asarray(delta, dtype=np.float32)
    if delta.shape != x.shape[1:]:
        raise invalid("delta", f"one perturbation of the input shape {x.shape[1:]}", f"array of shape {delta.shape}")
    if not np.all(np.isfinite(delta)):
        raise invalid("delta", "finite values", "non-finite values")
    return delta


def fooling_rate(model, x, y, delta, target: int, *, batch_size: int = 256) -> float:
    """Fraction of inputs with label != ``target`` that ``model`` classifies as ``target`` on clip01(x + delta).

    Args: model, x (N, ...), y (N,) as in ``targeted_universal_perturbation``; delta of shape x.shape[1:].
    Returns: a float in [0, 1].
    """
    x, y, _, num_classes, batch_size = _prepare(model, x, y, batch_size, need_logits=False)
    target = _check_target(target, num_classes)
    delta = _check_delta(delta, x)
    keep = y != target
    if not keep.any():
        raise invalid("y", f"at least one input whose label differs from target={target}", "all labels equal target")
    preds = predict_logits(model, apply_perturbation(x[keep], delta), batch_size).argmax(-1)
    return float(np.mean(preds == target))


def fooling_rates(model, x, y, deltas, *, targets=None, batch_size: int = 256) -> np.ndarray:
    """Fooling rate of each row of ``deltas`` (T, ...) for ``targets`` (default 0..T-1); np.ndarray (T,)."""
    deltas = np.asarray(deltas, dtype=np.float32)
    targets = list(range(len(deltas))) if targets is None else np.atleast_1d(targets).tolist()
    if deltas.ndim < 2 or len(targets) != len(deltas):
        raise invalid("deltas", f"an array (T, ...) with one row per target ({len(targets)} targets)",
                      f"array of shape {deltas.shape}")
    x, y, _, num_classes, batch_size = _prepare(model, x, y, batch_size, need_logits=False)
    rates = []
    for delta, target in zip(deltas, targets):
        target = _check_target(target, num_classes, "targets")
        delta, keep = _check_delta(delta, x), y != target
        if not keep.any():
            raise invalid("y", f"at least one input whose label differs from target={target}", "all labels equal target")
        rates.append(np.mean(predict_logits(model, apply_perturbation(x[keep], delta), batch_size).argmax(-1) == target))
    return np.asarray(rates, dtype=np.float64)

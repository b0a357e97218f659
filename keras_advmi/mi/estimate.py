"""Fit a trainable critic to samples of (X, Y) and report a neural MI bound with its training curve."""

from __future__ import annotations

import dataclasses

import numpy as np
import tensorflow as tf
import keras
from numpy.typing import ArrayLike

from .._checks import check_choice, check_int_at_least, check_positive, check_positive_int, invalid
from ._inputs import check_unit, in_unit
from .critics import ConcatCritic, SeparableCritic
from .bounds import BOUNDS

__all__ = ["estimate", "MIEstimate"]


@dataclasses.dataclass
class MIEstimate:
    """Result of :func:`estimate`.

    Attributes:
      value: the bound averaged over ``eval_batches`` batches after training (in ``unit``).
      curve: (steps,) the training batch's bound at each step (in ``unit``).
      critic: the trained critic layer.
      bound, unit: what ``value`` is.
    """

    value: float
    curve: np.ndarray
    critic: keras.layers.Layer
    bound: str
    unit: str

    def __float__(self):
        return float(self.value)


def _critic(critic):
    if critic == "separable":
        return SeparableCritic()
    if critic == "concat":
        return ConcatCritic()
    if isinstance(critic, keras.layers.Layer):
        return critic
    raise invalid("critic", "'separable', 'concat' or a keras Layer mapping (x, y) to an (N, N) score matrix", critic)


def _samples(name, a):
    arr = np.asarray(a, dtype=np.float32)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim < 2 or arr.shape[0] < 2:
        raise invalid(name, "samples of shape (N, ...) with N >= 2", f"array of shape {arr.shape}")
    if not np.all(np.isfinite(arr)):
        raise invalid(name, "finite values (no NaN or Inf)", f"array with {int(np.sum(~np.isfinite(arr)))} non-finite values")
    return arr


class _BoundModel(keras.Model):
    """The critic trained by ``fit`` to maximise ``train_fn`` of its score matrix; records the reported
    bound of every training batch on device (``curve``) and averages it over ``evaluate``'s batches."""

    def __init__(self, critic: keras.layers.Layer, report_fn, train_fn, steps: int):
        super().__init__()
        self.critic, self.report_fn, self.train_fn = critic, report_fn, train_fn
        self.curve = tf.Variable(tf.zeros([steps]), trainable=False)
        self.step = tf.Variable(0, dtype=tf.int32, trainable=False)
        self.bound_tracker = keras.metrics.Mean(name="bound")

    def call(self, inputs, training=False):
        return self.critic(inputs, training=training)

    @property
    def metrics(self):
        return [self.bound_tracker]

    def train_step(self, data):
        xb, yb = data
        with tf.GradientTape() as tape:
            scores = self.critic((xb, yb), training=True)
            loss = -self.train_fn(scores)
        grads = tape.gradient(loss, self.critic.trainable_variables)
        self.optimizer.apply(grads, self.critic.trainable_variables)
        value = self.report_fn(scores)
        self.curve[self.step].assign(tf.cast(value, self.curve.dtype))
        self.step.assign_add(1)
        return {"bound": value}

    def test_step(self, data):
        self.bound_tracker.update_state(self.report_fn(self.critic(data)))
        return {"bound": self.bound_tracker.result()}


def _batches(xs: np.ndarray, ys: np.ndarray, idx: np.ndarray) -> tf.data.Dataset:
    """One (x, y) batch per row of ``idx`` (rows of sample indices), in that order."""
    xt, yt = tf.constant(xs), tf.constant(ys)
    return tf.data.Dataset.from_tensor_slices(idx).map(lambda i: (tf.gather(xt, i), tf.gather(yt, i)))


def estimate(x: ArrayLike, y: ArrayLike, critic: str | keras.layers.Layer = "separable", bound: str = "infonce",
             steps: int = 2000, *, batch_size: int = 512, learning_rate: float = 5e-4, train_bound: str | None = None,
             eval_batches: int = 20, seed: int = 0, unit: str = "nats", callbacks: list | None = None,
             verbose: int | str = 0, name: str | None = None) -> MIEstimate:
    """Train ``critic`` to maximise a variational bound on I(X;Y) from paired samples; return the bound.

    Args:
      x: (N, ...) samples of X; y: (N, ...) samples of Y, row i drawn jointly with x[i].
      critic: 'separable' (default), 'concat', or a Keras layer ``critic((x, y)) -> (B, B)`` scores.
      bound: reported bound, one of 'infonce' (default; <= log batch_size), 'dv', 'nwj', 'js'.
      steps: Adam steps on random batches of ``batch_size`` pairs.
      train_bound: bound maximised in training (default: ``bound``); e.g. train with 'infonce' (low
        variance) and report 'dv'.
      eval_batches: batches averaged for ``value`` after training.
      seed: seeds batch sampling and the critic's initialisation.
      unit: 'nats' (default) or 'bits'.
      callbacks, verbose: passed to ``fit``; the critic trains as a small ``keras.Model``, one epoch of
        ``steps`` batches.
      name: the ``tf.name_scope`` of the ops (default 'estimate'), as in ``tfp.vi.mutual_information``.
    Returns:
      :class:`MIEstimate` with ``value`` (float), ``curve`` (steps,) and the trained ``critic``.
    Reference: Poole et al. 2019; Belghazi et al. 2018 (MINE).
    """
    xs, ys = _samples("x", x), _samples("y", y)
    if len(xs) != len(ys):
        raise invalid("y", f"{len(xs)} samples, as many as x", f"{len(ys)} samples")
    check_choice("bound", bound, sorted(BOUNDS))
    train_bound = check_choice("train_bound", bound if train_bound is None else train_bound, sorted(BOUNDS))
    steps = check_positive_int("steps", steps)
    batch_size = min(check_int_at_least("batch_size", batch_size, 2), len(xs))
    learning_rate = check_positive("learning_rate", learning_rate)
    eval_batches = check_positive_int("eval_batches", eval_batches)
    check_unit(unit)

    rng = np.random.default_rng(seed)
    train_idx = np.stack([rng.choice(len(xs), batch_size, replace=False) for _ in range(steps)])
    eval_idx = np.stack([rng.choice(len(xs), batch_size, replace=False) for _ in range(eval_batches)])
    with tf.name_scope(name or "estimate"):
        keras.utils.set_random_seed(seed)
        layer = _critic(critic)
        layer((xs[:2], ys[:2]))  # build
        model = _BoundModel(layer, BOUNDS[bound], BOUNDS[train_bound], steps)
        model.compile(optimizer=keras.optimizers.Adam(learning_rate), jit_compile=False)
        model.fit(_batches(xs, ys, train_idx), epochs=1, shuffle=False, verbose=verbose, callbacks=callbacks)
        value = model.evaluate(_batches(xs, ys, eval_idx), verbose=0, return_dict=True)["bound"]
        curve = model.curve.numpy().astype(np.float64)
    return MIEstimate(value=in_unit(float(value), unit), curve=in_unit(curve, unit), critic=layer, bound=bound,
                      unit=unit)

def gaussian_mi(rho: float, dims: int) -> float:
    """Analytic I(X;Y) in nats of jointly Gaussian X, Y with correlation ``rho`` in each of ``dims`` dims:
    -(dims / 2) log(1 - rho^2)."""
    return -0.5 * dims * float(np.log1p(-rho * rho))


def correlated_gaussians(rho: float, dims: int, n: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """(x, y) samples, each (n, dims) float32, with corr(x_k, y_k) = rho and independent dims."""
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, dims))
    y = rho * x + np.sqrt(1.0 - rho * rho) * rng.standard_normal((n, dims))
    return x.astype(np.float32), y.astype(np.float32)

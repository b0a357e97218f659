"""A neural lower bound on I(T;Y) of a layer, trained online: a few critic steps per call, warm-started.

For a layer's activations T (N, d) and class labels Y, a bilinear critic f(t, y) = (phi(t) W + b) . (e_y V + c)
is trained to maximise InfoNCE (``tfp.vi.mutual_information.lower_bound_info_nce``; van den Oord et
al. 2018, "Representation learning with contrastive predictive coding"; Poole et al. 2019, "On
variational bounds of mutual information") on one half of the probe set, and the bound is reported on
the other half:

    I(T;Y) >= I(phi(T);Y) >= mean_i [ f(t_i, y_i) - log mean_j exp f(t_i, y_j) ]      (held-out rows)

phi(t) = (t R - mu) / sd is a fixed Gaussian random projection R (d x ``features``, 64 by default, seeded;
the identity when d <= ``features``) standardised with the mean and standard deviation of a reference set (the clean
probe of the same epoch). phi is a function of T, so the bound stays a lower bound on I(T;Y) (data
processing), and rescaling T leaves it unchanged. With a finite batch the bound is at most log N_eval,
far above H(Y) for N >= 100 and 10 classes, so it does not saturate where the KDE's I(X;T) would.
Unlike the KDE estimate (a bound for the layer seen through added noise) this one needs no noise model:
two estimators of different kinds of the same quantity, side by side.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tensorflow_probability as tfp
import keras

from .._checks import check_int_at_least, check_positive, check_positive_int, check_seed, invalid

__all__ = ["OnlineLabelMI", "Standardizer"]


class Standardizer:
    """phi(t) = (t R - mu) / sd: a seeded random projection to at most ``features`` dims, then per-feature
    standardisation with the statistics of ``reference`` (N, d). Features with sd 0 are only centred."""

    def __init__(self, reference: np.ndarray, features: int = 64, seed: int = 0):
        d = reference.shape[1]
        if d > features:
            rng = np.random.default_rng(seed)
            self.projection = (rng.standard_normal((d, features)) / np.sqrt(features)).astype(np.float32)
        else:
            self.projection = None
        z = self._project(reference)
        self.mean = z.mean(axis=0)
        sd = z.std(axis=0)
        self.sd = np.where(sd > 0, sd, 1.0).astype(np.float32)

    def _project(self, h):
        h = np.asarray(h, np.float32)
        return h @ self.projection if self.projection is not None else h

    def __call__(self, h) -> np.ndarray:
        return ((self._project(h) - self.mean) / self.sd).astype(np.float32)


class OnlineLabelMI:
    """A bank of K bilinear critics f_k(t, y) = (phi_k(t) W_k + b_k) . (e_y V_k + c_k), each giving an InfoNCE
    lower bound on I(T_k;Y) in nats (``tfp.vi.mutual_information.lower_bound_info_nce``).

    Each :meth:`update` takes K feature sets (one per layer and probe kind), trains every critic ``steps``
    full-batch Adam steps on the even rows and returns the K bounds on the odd rows; weights and optimizer
    state carry over between calls (warm start), so a few steps per epoch track a changing network. All K
    critics train in one compiled loop (one trace for the logger's lifetime), features zero-padded to
    ``features`` columns.

    Args:
      num_critics: K. num_classes: C; labels are integers in [0, C). features: the width phi is padded to.
      embed_dim: E, the rank of each critic. steps: Adam steps per call. learning_rate: Adam's.
      seed: initialisation (Glorot-uniform, numpy-seeded; Keras' global RNG is untouched).
    The critic is bilinear and the step count small because larger critics overfit the few probe rows
    (docs/results.md, the neural estimate); overfitting only lowers a held-out bound, never raises it.
    """

    def __init__(self, num_critics: int, num_classes: int, features: int = 64, embed_dim: int = 16,
                 steps: int = 50, learning_rate: float = 3e-3, seed: int = 0):
        self.num_critics = check_positive_int("num_critics", num_critics)
        self.num_classes = check_int_at_least("num_classes", num_classes, 2)
        self.features = check_positive_int("features", features)
        embed_dim = check_positive_int("embed_dim", embed_dim)
        self.steps = check_positive_int("steps", steps)
        learning_rate = check_positive("learning_rate", learning_rate)
        rng = np.random.default_rng(check_seed("seed", seed, allow_none=False))

        def glorot(fan_in):
            limit = np.sqrt(6.0 / (fan_in + embed_dim))
            return keras.Variable(rng.uniform(-limit, limit, (self.num_critics, fan_in, embed_dim)).astype(np.float32))

        def zeros():
            return keras.Variable(np.zeros((self.num_critics, 1, embed_dim), np.float32))

        self.variables = [glorot(self.features), zeros(), glorot(self.num_classes), zeros()]
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.optimizer.build(self.variables)
        self._train = tf.function(self._train_steps)

    def scores(self, x: tf.Tensor, onehot: tf.Tensor) -> tf.Tensor:
        """(K, N, N) critic scores of features x (K, N, F) against labels ``onehot`` (N, C)."""
        wx, bx, wy, by = self.variables
        gx = tf.einsum("knf,kfe->kne", x, wx) + bx
        gy = tf.einsum("nc,kce->kne", onehot, wy) + by
        return tf.matmul(gx, gy, transpose_b=True)

    def _bounds(self, x, onehot):
        return tfp.vi.mutual_information.lower_bound_info_nce(logu=self.scores(x, onehot))   # (K,)

    def _train_steps(self, x, onehot, steps):
        for _ in tf.range(steps):
            with tf.GradientTape() as tape:
                loss = -tf.reduce_sum(self._bounds(x, onehot))   # critics are independent: sum their losses
            self.optimizer.apply(tape.gradient(loss, self.variables), self.variables)

    def update(self, features: Sequence[np.ndarray], labels: np.ndarray) -> np.ndarray:
        """Train on the even rows, return the K bounds (nats) on the odd rows.

        Args:
          features: K arrays (N, k_i) with k_i <= ``features`` (e.g. ``Standardizer`` outputs).
          labels: (N,) integer classes, shared by the K feature sets.
        """
        if len(features) != self.num_critics:
            raise invalid("features", f"{self.num_critics} feature arrays, one per critic", len(features))
        widths = [np.shape(f)[1] for f in features]
        if max(widths) > self.features:
            raise invalid("features", f"arrays of at most {self.features} columns", widths)
        x = np.stack([np.pad(np.asarray(f, np.float32), ((0, 0), (0, self.features - f.shape[1])))
                      for f in features])
        onehot = np.eye(self.num_classes, dtype=np.float32)[np.asarray(labels, np.int64)]
        self._train(tf.constant(x[:, 0::2]), tf.constant(onehot[0::2]), tf.constant(self.steps))
        return self._bounds(tf.constant(x[:, 1::2]), tf.constant(onehot[1::2])).numpy().astype(np.float64)

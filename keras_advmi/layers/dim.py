"""DIM-style local/global encoders and the per-sample MI estimator MIAT uses ("Improving Adversarial
Robustness via Mutual Information Estimation", ICML 2022, arXiv 2207.12203; after Hjelm et al., "Learning
deep representations by mutual information estimation and maximization", 2019).

An estimator of I(pattern ; h(x')) has two parts:
- ``LocalEncoder`` L: a small conv net mapping an image-shaped pattern (N, H, W, C) to a feature map
  (N, H', W', hsize): two stride-2 4x4 convs with one pixel of zero padding (BatchNorm, ReLU), then a
  1x1 residual block with LayerNorm over channels (the official MIAT ``Estimator``, whose defaults are
  filters (64, 128)).
- ``GlobalEncoder`` G: the same 1x1 residual block on the logits h(x') (N, classes) -> (N, hsize).
``MIEstimator`` scores all pairs, u[i, j, l] = <G(h(x'_i)), L(pattern_j)_l>, and returns per-sample
bound terms (default DV): score_i = mean_l (u[i,i,l] - log((1/(N-1)) sum_{j != i} exp(u[i,j,l]))).
Negatives are the other samples of the batch, so scores depend on the batch (use batches >= 64).

Layer for layer as in the official PyTorch code (dwDavidxd/MIAT ``models/estimator.py``,
``models/discriminators.py``), held to it by ``benchmarks/miat_parity.py`` (docs/results.md, parity):
PyTorch's padding (``Conv2d(padding=1)``, not Keras' "same", which pads odd sizes asymmetrically) and
PyTorch's normalisation epsilons (1e-5 in BatchNorm and LayerNorm; Keras' defaults are 1e-3).
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .._checks import check_choice, check_positive_int, invalid
from ..mi.bounds import DIAGONALS, PER_SAMPLE_BOUNDS, per_sample_bound

__all__ = ["LocalEncoder", "GlobalEncoder", "MIEstimator"]

#: BatchNorm / LayerNorm epsilon of PyTorch (and of the official MIAT estimators).
TORCH_EPSILON = 1e-5


@keras.saving.register_keras_serializable(package="keras_advmi")
class ResidualBlock1x1(layers.Layer):
    """(1x1 conv | dense -> BN -> ReLU -> 1x1 conv | dense) + linear shortcut, then LayerNorm over features."""

    def __init__(self, units: int, conv: bool = True, **kwargs):
        super().__init__(**kwargs)
        self.units, self.conv = check_positive_int("units", units), bool(conv)
        make = (lambda bias: layers.Conv2D(units, 1, use_bias=bias)) if conv else \
            (lambda bias: layers.Dense(units, use_bias=bias))
        self.hidden, self.out, self.shortcut = make(False), make(True), make(False)
        self.bn = layers.BatchNormalization(momentum=0.9, epsilon=TORCH_EPSILON)
        self.norm = layers.LayerNormalization(epsilon=TORCH_EPSILON)

    def build(self, input_shape):
        shape = tuple(input_shape)
        self.hidden.build(shape)
        hidden_shape = self.hidden.compute_output_shape(shape)
        self.bn.build(hidden_shape)
        self.out.build(hidden_shape)
        self.shortcut.build(shape)
        self.norm.build(hidden_shape)

    def call(self, x, training=False):
        hidden = ops.relu(self.bn(self.hidden(x), training=training))
        return self.norm(self.out(hidden) + self.shortcut(x))

    def compute_output_shape(self, input_shape):
        return tuple(input_shape)[:-1] + (self.units,)

    def get_config(self):
        return {**super().get_config(), "units": self.units, "conv": self.conv}


@keras.saving.register_keras_serializable(package="keras_advmi")
class LocalEncoder(layers.Layer):
    """Pattern (N, H, W, C) -> local features (N, H', W', hsize), H' = floor(H/2)//2 (even H: H/4).

    Args: hsize: feature size (official: 2048 on CIFAR; 128 suits MNIST); filters: the two conv widths.
    """

    def __init__(self, hsize: int = 128, filters: tuple = (32, 64), **kwargs):
        super().__init__(**kwargs)
        self.hsize = check_positive_int("hsize", hsize)
        self.filters = tuple(check_positive_int("filters", f) for f in filters)
        # Conv2d(kernel 4, stride 2, padding 1): one zero pixel on every side, then a valid conv.
        self.convs = [layers.Conv2D(f, 4, strides=2, padding="valid", use_bias=False) for f in self.filters]
        self.bns = [layers.BatchNormalization(momentum=0.9, epsilon=TORCH_EPSILON)   # PyTorch's defaults
                    for _ in self.filters]
        self.block = ResidualBlock1x1(self.hsize, conv=True, name="block")

    def build(self, input_shape):
        if len(input_shape) != 4:
            raise invalid("input_shape", "image batches (N, H, W, C)", tuple(input_shape))
        shape = tuple(input_shape)
        self._pads = []
        for conv, bn in zip(self.convs, self.bns):
            # One pixel as PyTorch's padding=1; more only where a map is too small for a 4x4 kernel (< 2 pixels).
            pad = [max(1, -(-(4 - d) // 2)) if d is not None else 1 for d in shape[1:3]]
            self._pads.append(pad)
            shape = (shape[0],) + tuple(None if d is None else d + 2 * p for d, p in zip(shape[1:3], pad)) + (shape[3],)
            conv.build(shape)
            shape = conv.compute_output_shape(shape)
            bn.build(shape)
        self.block.build(shape)

    def call(self, pattern, training=False):
        h = pattern
        for conv, bn, (ph, pw) in zip(self.convs, self.bns, self._pads):
            h = ops.pad(h, [[0, 0], [ph, ph], [pw, pw], [0, 0]])
            h = ops.relu(bn(conv(h), training=training))
        return self.block(h, training=training)

    def get_config(self):
        return {**super().get_config(), "hsize": self.hsize, "filters": list(self.filters)}


@keras.saving.register_keras_serializable(package="keras_advmi")
class GlobalEncoder(layers.Layer):
    """Model output (N, classes) -> global feature (N, hsize) (the official ``MI1x1ConvNet``)."""

    def __init__(self, hsize: int = 128, **kwargs):
        super().__init__(**kwargs)
        self.hsize = check_positive_int("hsize", hsize)
        self.block = ResidualBlock1x1(self.hsize, conv=False, name="block")

    def build(self, input_shape):
        self.block.build(tuple(input_shape))

    def call(self, outputs, training=False):
        return self.block(ops.reshape(outputs, (ops.shape(outputs)[0], -1)), training=training)

    def get_config(self):
        return {**super().get_config(), "hsize": self.hsize}


@keras.saving.register_keras_serializable(package="keras_advmi")
class MIEstimator(layers.Layer):
    """Per-sample estimate of I(pattern ; output) with a local and a global encoder.

    Args:
      hsize: encoder feature size. filters: the local encoder's conv widths.
      bound: per-sample bound, 'dv' (official MIAT), 'jsd' or 'infonce'.
      diagonal: DV negatives, 'exclude' (correct) or 'zero' (official code's parity).
    Call: ``estimator(pattern, outputs, training)`` with pattern (N, H, W, C), outputs (N, classes) ->
    (N,) per-sample scores (higher = more MI).
    """

    def __init__(self, hsize: int = 128, filters: tuple = (32, 64), bound: str = "dv", diagonal: str = "exclude",
                 **kwargs):
        super().__init__(**kwargs)
        check_choice("bound", bound, PER_SAMPLE_BOUNDS)
        check_choice("diagonal", diagonal, DIAGONALS)
        self.hsize, self.filters, self.bound, self.diagonal = hsize, tuple(filters), bound, diagonal
        self.local_encoder = LocalEncoder(hsize, filters, name="local")
        self.global_encoder = GlobalEncoder(hsize, name="global")

    def build(self, pattern_shape, outputs_shape):
        self.local_encoder.build(pattern_shape)
        self.global_encoder.build(outputs_shape)
        #: 1.0 once ``MIAT.pretrain_estimators`` has trained this estimator (saved with the model).
        self.pretrained = self.add_weight(shape=(), initializer="zeros", trainable=False, name="pretrained",
                                          aggregation="only_first_replica")

    def local_features(self, pattern, training=False):
        """L(pattern) as (N, L, hsize): one row per feature-map location."""
        local = self.local_encoder(pattern, training=training)
        return ops.reshape(local, (ops.shape(local)[0], -1, self.hsize))

    def score_features(self, local, outputs, training=False, rows=None):
        """Per-sample bound terms (N,) from precomputed local features (N, L, hsize) and the outputs (N, C).

        rows: optional (R,) int indices: score only those samples, (R,), against all N samples' patterns
        as negatives; the same values as the full (N,) result at those rows, for R/N of the cost (the
        u tensor below is (R, N, L) instead of (N, N, L)).
        """
        glob = self.global_encoder(outputs, training=training)                  # (N, hsize)
        if rows is not None:
            glob = ops.take(glob, rows, axis=0)                                  # (R, hsize)
        scores = ops.einsum("ih,jlh->ijl", glob, local)                          # u[i, j, l]
        return per_sample_bound(scores, self.bound, self.diagonal, positives=rows)

    def call(self, pattern, outputs, training=False):
        return self.score_features(self.local_features(pattern, training), outputs, training)

    def get_config(self):
        return {**super().get_config(), "hsize": self.hsize, "filters": list(self.filters), "bound": self.bound,
                "diagonal": self.diagonal}

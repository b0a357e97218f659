"""Trainable critics f(x, y) -> score matrix for the neural MI bounds of ``keras_advmi.mi.bounds``.

They are part of the neural estimators (``estimate`` trains one); ``keras_advmi.layers`` re-exports them
beside the other layers of the package.

A critic takes a batch of pairs ``(x, y)`` (x: (N, ...), y: (N, ...), row i of each drawn jointly) and
returns ``scores`` (N, N) with ``scores[i, j] = f(x_i, y_j)``: the diagonal scores joint pairs, the rest
pairs from the product of marginals (Poole et al. 2019, "On variational bounds of mutual information").

- ``SeparableCritic``: f(x, y) = g(x) . h(y), two MLP embeddings; N forward passes, one matmul.
- ``ConcatCritic``: f(x, y) = MLP([x, y]) on all N^2 concatenated pairs; more expressive, N^2 passes.
"""

from __future__ import annotations

import keras
from keras import layers, ops

from .._checks import check_positive_int, invalid

__all__ = ["SeparableCritic", "ConcatCritic", "mlp"]


def _check_units(hidden_units):
    units = tuple(hidden_units)
    for u in units:
        check_positive_int("hidden_units", u)
    return units


def mlp(hidden_units: tuple, out_units: int, activation: str = "relu", name: str | None = None) -> keras.Sequential:
    """Dense stack: ``hidden_units`` with ``activation``, then a linear layer of ``out_units``."""
    stack = [layers.Dense(u, activation=activation) for u in hidden_units]
    stack.append(layers.Dense(out_units))
    return keras.Sequential(stack, name=name)


def _flat(t):
    return ops.reshape(t, (ops.shape(t)[0], -1))


@keras.saving.register_keras_serializable(package="keras_advmi")
class SeparableCritic(layers.Layer):
    """scores[i, j] = g(x_i) . h(y_j), g and h MLPs with ``hidden_units`` and an ``embed_dim`` output.

    Args:
      embed_dim: size of the two embeddings (positive int).
      hidden_units: hidden widths of each MLP.
      activation: hidden activation.
    Call: ``critic((x, y))`` with x (N, ...), y (N, ...) -> (N, N) float.
    """

    def __init__(self, embed_dim: int = 32, hidden_units: tuple = (256, 256), activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.embed_dim = check_positive_int("embed_dim", embed_dim)
        self.hidden_units = _check_units(hidden_units)
        self.activation = activation
        self.embed_x = mlp(self.hidden_units, self.embed_dim, activation, name="embed_x")
        self.embed_y = mlp(self.hidden_units, self.embed_dim, activation, name="embed_y")

    def build(self, input_shape):
        x_shape, y_shape = input_shape
        self.embed_x.build((None, _flat_dim(x_shape)))
        self.embed_y.build((None, _flat_dim(y_shape)))

    def call(self, inputs):
        x, y = _pair(inputs)
        return ops.matmul(self.embed_x(_flat(x)), ops.transpose(self.embed_y(_flat(y))))

    def get_config(self):
        return {**super().get_config(), "embed_dim": self.embed_dim, "hidden_units": list(self.hidden_units),
                "activation": self.activation}


@keras.saving.register_keras_serializable(package="keras_advmi")
class ConcatCritic(layers.Layer):
    """scores[i, j] = MLP([x_i, y_j]) over all N^2 pairs (memory O(N^2 (dx + dy))).

    Args:
      hidden_units: hidden widths of the MLP; activation: hidden activation.
    Call: ``critic((x, y))`` with x (N, ...), y (N, ...) -> (N, N) float.
    """

    def __init__(self, hidden_units: tuple = (256, 256), activation: str = "relu", **kwargs):
        super().__init__(**kwargs)
        self.hidden_units = _check_units(hidden_units)
        self.activation = activation
        self.score = mlp(self.hidden_units, 1, activation, name="score")

    def build(self, input_shape):
        x_shape, y_shape = input_shape
        self.score.build((None, _flat_dim(x_shape) + _flat_dim(y_shape)))

    def call(self, inputs):
        x, y = _pair(inputs)
        x, y = _flat(x), _flat(y)
        n = ops.shape(x)[0]
        x_tiled = ops.repeat(ops.expand_dims(x, 1), n, axis=1)          # (N, N, dx): x_i
        y_tiled = ops.repeat(ops.expand_dims(y, 0), n, axis=0)          # (N, N, dy): y_j
        pairs = ops.concatenate([x_tiled, y_tiled], axis=-1)
        flat = ops.reshape(pairs, (n * n, ops.shape(pairs)[-1]))
        return ops.reshape(self.score(flat), (n, n))

    def get_config(self):
        return {**super().get_config(), "hidden_units": list(self.hidden_units), "activation": self.activation}


def _pair(inputs):
    if not isinstance(inputs, (tuple, list)) or len(inputs) != 2:
        raise invalid("inputs", "a pair (x, y) of batches with the same N", type(inputs).__name__)
    return inputs


def _flat_dim(shape):
    dims = tuple(shape)[1:]
    if any(d is None for d in dims):
        raise invalid("input_shape", "fully known non-batch dimensions", tuple(shape))
    size = 1
    for d in dims:
        size *= int(d)
    return size

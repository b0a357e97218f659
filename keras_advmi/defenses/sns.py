"""Sensitive neuron stabilization, SNS, from "Interpreting and Improving Adversarial Robustness of Deep
Neural Networks with Neuron Sensitivity" (2019, arXiv 1909.06978).

    loss = CE(f(x_adv), y) + CE(f(x), y) + gamma * sum_l mean_{m in topk_l} sigma(F_l^m, x, x_adv)

with x_adv from PGD (as PGD-AT), sigma the neuron sensitivity (``keras_advmi._sensitivity``:
mean |F_l^m(x) - F_l^m(x_adv)| over the channel's positions) and topk_l the ``top_k`` most sensitive
channels of layer l on the current batch. The top-k sets are re-picked inside the compiled train step
every ``refresh`` training steps (a step counter and per-layer channel masks are non-trainable state
the defense owns, see ``sublayers()``); between re-picks the stored masks are used. The paper leaves
the choice of layers, k and the re-pick schedule open; here they are arguments, with defaults k = 10%
of a layer's channels, gamma = 1, refresh = 1.
"""

from __future__ import annotations

from collections.abc import Sequence

import tensorflow as tf
import keras

from .._checks import check_layer_names, check_nonnegative, check_positive_int
from .._model import resolve_layers, tap_model
from .._sensitivity import channel_sensitivity
from ..attacks._common import cross_entropy
from ._pgd_family import PGDDefense
from .base import DefenseLoss, serializable


class SensitiveChannelState(keras.layers.Layer):
    """Non-trainable SNS state: a training-step counter and one 0/1 channel mask per layer."""

    def __init__(self, channels: Sequence[int], **kwargs):
        super().__init__(**kwargs)
        self.channels = [int(c) for c in channels]
        self.counter = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64",
                                       name="counter", aggregation="only_first_replica")
        self.masks = [self.add_weight(shape=(c,), initializer="zeros", trainable=False, name=f"mask_{i}",
                                      aggregation="only_first_replica") for i, c in enumerate(self.channels)]
        self.built = True

    def get_config(self) -> dict:
        return {**super().get_config(), "channels": self.channels}


@serializable
class SNS(PGDDefense):
    """PGD-AT plus the sensitive-neuron stability term ("Interpreting and Improving Adversarial Robustness
    of Deep Neural Networks with Neuron Sensitivity", 2019).

    Args:
      epsilon, step_size, steps: the PGD inner attack, as ``PGDDefense``.
      layers: names of the layers to stabilise (list of str; required, checked against the model in
        ``build``: an unknown name raises ``ValueError`` listing the available ones).
      top_k: channels penalised per layer, an int >= 1 (clipped to the layer's channel count), or
        ``None`` for 10% of each layer's channels (at least 1).
      gamma: weight of the stability term (>= 0). refresh: re-pick the top-k channels every
        ``refresh`` training steps (int >= 1).
      **pgd_options: ``PGDDefense``'s norm, random_start and the ``Defense`` options.
    Logs ``natural_loss`` (CE on x), ``adversarial_loss`` (CE on x_adv) and ``sensitivity`` (the
    penalty sum_l mean_{topk_l} sigma, before gamma).
    """

    name = "sns"
    log_names = ("natural_loss", "adversarial_loss", "sensitivity")

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10,
                 layers: str | Sequence[str] | None = None, top_k: int | None = None, gamma: float = 1.0,
                 refresh: int = 1, **pgd_options):
        super().__init__(epsilon, step_size, steps, **pgd_options)
        self.layers = check_layer_names("layers", layers)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        self.gamma = check_nonnegative("gamma", gamma)
        self.refresh = check_positive_int("refresh", refresh)
        self._features = None
        self._state = None
        self._k = None

    # -- protocol -----------------------------------------------------------------------------------
    def build(self, model: keras.Model) -> None:
        """Create the feature sub-model (chosen layers + logits, shared weights) and the state."""
        resolve_layers(model, self.layers)
        self._features = tap_model(model, self.layers, include_logits=True)
        channels = [int(out.shape[-1]) for out in self._features.outputs[:-1]]
        self._k = [min(c, self.top_k) if self.top_k is not None else max(1, c // 10) for c in channels]
        if self._state is None or self._state.channels != channels:
            self._state = SensitiveChannelState(channels, name="sns_state")

    def sublayers(self) -> list[keras.layers.Layer]:
        return [self._state] if self._state is not None else []

    def _forward(self, x, training):
        outputs = self._features(x, training=training)
        return [tf.cast(o, tf.float32) for o in outputs[:-1]], tf.cast(outputs[-1], tf.float32)

    def loss(self, model, x, y, x_adv, training, step=None) -> DefenseLoss:
        if self._features is None:
            raise RuntimeError("SNS is not built: wrap a model with kam.AdversarialModel(model, defense) or call "
                               "defense.build(model) first.")
        feats_clean, logits_clean = self._forward(x, training)
        feats_adv, logits_adv = self._forward(x_adv, training)
        natural = cross_entropy(y, logits_clean)
        adversarial = cross_entropy(y, logits_adv)
        penalty = tf.zeros_like(natural)
        if training:
            counter = self._state.counter
            repick = tf.equal(tf.math.floormod(counter, self.refresh), 0)
        for i, (fc, fa) in enumerate(zip(feats_clean, feats_adv)):
            sens = channel_sensitivity(fc, fa)                        # (N, C_l), differentiable
            mask = self._state.masks[i]
            if training:
                batch_sens = tf.stop_gradient(tf.reduce_mean(sens, axis=0))
                top = tf.math.top_k(batch_sens, k=self._k[i]).indices
                fresh = tf.reduce_max(tf.one_hot(top, self._state.channels[i]), axis=0)
                mask = tf.where(repick, fresh, mask.value)
                self._state.masks[i].assign(mask)
            mask = tf.stop_gradient(mask.value if hasattr(mask, "value") else mask)
            penalty = penalty + tf.reduce_sum(sens * mask, axis=-1) / float(self._k[i])
        if training:
            self._state.counter.assign_add(1)
        per_sample = adversarial + natural + self.gamma * penalty
        logs = {"natural_loss": natural, "adversarial_loss": adversarial, "sensitivity": penalty}
        return DefenseLoss(per_sample, logs, logits_adv, logits_clean)

    def get_config(self) -> dict:
        return {**super().get_config(), "layers": list(self.layers), "top_k": self.top_k, "gamma": self.gamma,
                "refresh": self.refresh}

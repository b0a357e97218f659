"""MIAT's estimator pretraining (step 2 of "Improving Adversarial Robustness via Mutual Information
Estimation", ICML 2022): the attack that makes the estimators' training pairs, and ``EstimatorPretraining``,
a small ``keras.Model`` that trains the two estimators on a frozen classifier with ``fit``.

Each batch is attacked by the pretraining PGD (official: L2, 20 steps; seed (seed, step)), both pairs are
scored, and Adam minimises each estimator's official objective (``miat_estimators.pretrain_losses``); the
classifier is never updated. ``pretrain_estimators`` (``MIAT.pretrain_estimators``) feeds it the same batches
as the former hand-written loop: a fresh permutation per epoch from ``numpy.random.default_rng(seed)``, the
last partial batch dropped.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .._batches import PermutedBatches
from .._checks import (check_images, check_int_at_least, check_labels, check_norm, check_positive,
                       check_positive_int, invalid)
from .._model import network_of
from ..attacks._common import madry_step_size
from ..attacks.pgd import pgd_graph
from .miat_config import MIATPretraining, check_attack_epsilon
from .miat_estimators import pretrain_losses

__all__ = ["EstimatorPretraining", "pretrain_estimators", "pretraining_attack", "default_attack_epsilon",
           "HISTORY_KEYS"]

#: The per-epoch means ``pretrain_estimators`` returns.
HISTORY_KEYS = ("natural_loss", "adversarial_loss", "mi_natural_clean", "mi_natural_adv", "mi_adversarial_clean",
                "mi_adversarial_adv", "selected_fraction")


def default_attack_epsilon(epsilon: float, input_shape) -> float:
    """Default L2 budget of the pretraining attack: 0.3 * epsilon * sqrt(H * W * C) (``epsilon``: the
    defense's L-inf budget; ``MIAT.pretrain_attack_epsilon``)."""
    return 0.3 * epsilon * float(np.sqrt(np.prod([int(d) for d in input_shape])))


def pretraining_attack(config: MIATPretraining, epsilon: float, input_shape, norm=None, attack_epsilon=None,
                       steps=None) -> tuple:
    """(norm, epsilon, step size, steps) of the PGD that makes the estimators' training pairs.

    config: the defense's ``MIATPretraining``; epsilon: the defense's (L-inf) budget; input_shape: (H, W, C).
    norm, attack_epsilon, steps: overrides (None: the config's). With neither an override nor a configured
    budget for that norm: the defense's epsilon for L-inf, ``default_attack_epsilon`` for L2. The step size
    is Madry's 2.5 * epsilon / steps.
    """
    norm = config.norm if norm is None else check_norm(norm)
    steps = config.attack_steps if steps is None else check_positive_int("attack_steps", steps)
    eps = attack_epsilon if attack_epsilon is not None else (config.epsilon if norm == config.norm else None)
    if eps is None:
        eps = epsilon if norm == np.inf else default_attack_epsilon(epsilon, input_shape)
    eps = check_attack_epsilon("attack_epsilon", eps, norm)
    return norm, eps, madry_step_size(eps, steps), steps


class EstimatorPretraining(keras.Model):
    """Trains the estimators of ``pair`` (an ``EstimatorPair``) on the frozen classifier ``net`` with ``fit``.

    ``train_step``: x_adv = PGD(norm, epsilon, steps; seed (seed, optimizer step)) -> the four scores ->
    ``pretrain_losses`` -> Adam on each estimator's own objective. Logs the ``HISTORY_KEYS`` (on-device means).
    Only the estimators' variables are trained; ``net`` runs in inference mode.
    """

    def __init__(self, pair, net: keras.Model, attack: tuple, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        # Keras tracks net as a sublayer; only the estimators' variables reach the optimizer (train_step).
        self.parts = (pair, net)
        self.attack = attack            # (norm, epsilon, step_size, steps)
        self.seed = int(seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in HISTORY_KEYS}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=None):
        return self.parts[1](inputs, training=False)

    def train_step(self, data):
        pair, net = self.parts
        xb, yb = data
        norm, epsilon, step_size, steps = self.attack
        counter = tf.cast(self.optimizer.iterations, tf.int64)
        x_adv = pgd_graph(net, xb, yb, epsilon, step_size, steps, norm, False, True, 1,
                          tf.stack([tf.constant(self.seed, tf.int64), counter]))
        logits_clean = net(xb, training=False)
        logits_adv = net(x_adv, training=False)
        yb64 = tf.cast(yb, tf.int64)
        clean_ok = tf.cast(tf.equal(tf.argmax(logits_clean, -1), yb64), tf.float32)
        adv_ok = tf.cast(tf.equal(tf.argmax(logits_adv, -1), yb64), tf.float32)
        out_clean = pair.outputs(xb, logits_clean, False)
        out_adv = pair.outputs(x_adv, logits_adv, False)
        vars_n, vars_a = pair.natural.trainable_weights, pair.adversarial.trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            v_nn, v_na, v_an, v_aa = pair.scores(xb, x_adv, out_clean, out_adv, training=True)
            loss_n, loss_a = pretrain_losses(v_nn, v_na, v_an, v_aa, clean_ok, adv_ok)
        grads = tape.gradient(loss_n, vars_n) + tape.gradient(loss_a, vars_a)
        del tape
        self.optimizer.apply(grads, vars_n + vars_a)    # Adam is per variable: one optimizer for both
        values = {"natural_loss": loss_n, "adversarial_loss": loss_a,
                  "mi_natural_clean": tf.reduce_mean(v_nn), "mi_natural_adv": tf.reduce_mean(v_na),
                  "mi_adversarial_clean": tf.reduce_mean(v_an), "mi_adversarial_adv": tf.reduce_mean(v_aa),
                  "selected_fraction": tf.reduce_mean(clean_ok * (1.0 - adv_ok))}
        for k, v in values.items():
            self.trackers[k].update_state(v)
        return {k: t.result() for k, t in self.trackers.items()}


def pretrain_estimators(defense, model, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch_size: int = 128,
                        learning_rate: float | None = None, seed: int = 0, verbose: int = 1, attack_norm=None,
                        attack_epsilon: float | None = None, attack_steps: int | None = None) -> dict:
    """``MIAT.pretrain_estimators``: train the estimators of ``defense`` (a MIAT: its ``pretraining``,
    ``epsilon``, ``build`` and ``estimator_pair``) on the frozen ``model``; returns the per-epoch means
    {``HISTORY_KEYS``: [float, ...]} and marks the estimators pretrained (arguments: that method's)."""
    net = network_of(model)
    if not isinstance(net, keras.Model):
        raise invalid("model", "a keras.Model or kam.AdversarialModel", type(model).__name__)
    check_images("x", x)
    x = np.asarray(x, np.float32)
    y = check_labels("y", y, n=len(x), num_classes=int(net.outputs[0].shape[-1]))
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_int_at_least("batch_size", batch_size, 2)
    lr = check_positive("learning_rate", defense.pretraining.learning_rate if learning_rate is None else learning_rate)
    attack = pretraining_attack(defense.pretraining, defense.epsilon, x.shape[1:], attack_norm, attack_epsilon,
                                attack_steps)
    defense.build(net)
    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("MIAT.pretrain_estimators runs on one device: pretrain outside the multi-replica "
                         "strategy (same model and defense built without it), save, then load inside "
                         "`strategy.scope()` for the distributed MIAT fit.")
    trainer = EstimatorPretraining(defense.estimator_pair, net, attack, seed)
    trainer.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=False)
    batches = PermutedBatches((x, y), batch_size, epochs, np.random.default_rng(seed))
    history = trainer.fit(batches, epochs=epochs, steps_per_epoch=batches.n_batches, verbose=1 if verbose else 0,
                          shuffle=False).history
    defense.estimator_pair.mark_pretrained()
    return {k: [float(v) for v in history[k]] for k in HISTORY_KEYS}

"""MIAT's estimator pretraining (step 2 of "Improving Adversarial Robustness via Mutual Information
Estimation", ICML 2022): the official estimator objectives, and ``EstimatorPretraining``, a small
``keras.Model`` that trains the two estimators on a frozen classifier with ``fit``.

Each batch is attacked by the pretraining PGD (official: L2, 20 steps; seed (seed, step)), both pairs are
scored, and Adam minimises each estimator's objective; the classifier is never updated.
``pretrain_estimators`` (``MIAT.pretrain_estimators``) feeds it the same batches as the former hand-written
loop: a fresh permutation per epoch from ``numpy.random.default_rng(seed)``, the last partial batch dropped.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .._batches import PermutedBatches
from .._checks import check_fraction, check_images, check_int_at_least, check_labels, check_positive_int, invalid
from .._model import network_of
from ..attacks.pgd import pgd_graph
from .miat_scores import masked_cos, masked_mean

__all__ = ["pretrain_losses", "EstimatorPretraining", "pretrain_estimators"]

#: The per-epoch means ``pretrain_estimators`` returns.
HISTORY_KEYS = ("natural_loss", "adversarial_loss", "mi_natural_clean", "mi_natural_adv", "mi_adversarial_clean",
                "mi_adversarial_adv", "selected_fraction")


def pretrain_losses(v_nn, v_na, v_an, v_aa, clean_ok, adv_ok):
    """The official estimator objectives (train_MI_estimator.py), written on scores (= -their loss)."""
    right = clean_ok * adv_ok                   # natural sample correct, adversarial still correct
    wrong = clean_ok * (1.0 - adv_ok)           # natural correct, adversarial fooled
    n_clean = tf.maximum(tf.reduce_sum(clean_ok), 1.0)
    has = lambda m: tf.reduce_sum(m) > 0       # noqa: E731
    # natural estimator: high v_n on natural samples; v_n(x->h(x~)) tracks v_n(x->h(x)) when the attack
    # failed and decorrelates from it when it succeeded.
    nat_r = 5.0 * tf.abs(1.0 - masked_cos(v_nn, v_na, right)) - tf.reduce_sum(v_nn * right) / n_clean
    nat_w = 5.0 * tf.abs(masked_cos(v_nn, v_na, wrong)) - tf.reduce_sum(v_nn * wrong) / n_clean
    natural = tf.where(has(wrong), nat_w, 0.0) + 0.5 * tf.where(has(right), nat_r, 0.0)
    natural = tf.where(has(clean_ok), natural, -tf.reduce_mean(v_nn))
    # adversarial estimator: high v_a(n->h(x~)) where the attack succeeded, decorrelated from v_a(n->h(x));
    # where it failed, v_a(n->h(x~)) tracks v_a(n->h(x)) and is pushed down.
    adv_w = 5.0 * tf.abs(masked_cos(v_aa, v_an, wrong)) - masked_mean(v_aa, wrong)
    adv_r = 8.0 * tf.abs(1.0 - masked_cos(v_an, v_aa, right)) + 0.1 * masked_mean(v_aa, right)
    adversarial = tf.where(has(wrong), adv_w, 0.0) + 0.5 * tf.where(has(right), adv_r, 0.0)
    adversarial = tf.where(has(clean_ok), adversarial, -tf.reduce_mean(v_aa))
    return natural, adversarial


class EstimatorPretraining(keras.Model):
    """Trains ``defense``'s natural and adversarial estimators on the frozen classifier ``net`` with ``fit``.

    ``train_step``: x_adv = PGD(norm, epsilon, steps; seed (seed, optimizer step)) -> the four scores ->
    ``pretrain_losses`` -> Adam on each estimator's own objective. Logs the ``HISTORY_KEYS`` (on-device means).
    Only the estimators' variables are trained; ``net`` runs in inference mode.
    """

    def __init__(self, defense, net: keras.Model, attack: tuple, seed: int = 0, **kwargs):
        super().__init__(**kwargs)
        self._parts = (defense, net)        # a tuple: not tracked, so that net's weights are not this model's
        self.attack = attack                # (norm, epsilon, step_size, steps)
        self.seed = int(seed)
        self.trackers = {k: keras.metrics.Mean(name=k) for k in HISTORY_KEYS}

    @property
    def metrics(self):
        return list(self.trackers.values())

    def call(self, inputs, training=None):
        return self._parts[1](inputs, training=False)

    def train_step(self, data):
        defense, net = self._parts
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
        out_clean = defense._outputs(net, xb, logits_clean, False)
        out_adv = defense._outputs(net, x_adv, logits_adv, False)
        vars_n, vars_a = defense.natural.trainable_weights, defense.adversarial.trainable_weights
        with tf.GradientTape(persistent=True) as tape:
            v_nn, v_na, v_an, v_aa = defense._scores(xb, x_adv, out_clean, out_adv, training=True)
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
    """``MIAT.pretrain_estimators``: train ``defense``'s estimators on the frozen ``model``; returns the per-epoch
    means {``HISTORY_KEYS``: [float, ...]} and marks the estimators pretrained (arguments: that method's)."""
    net = network_of(model)
    if not isinstance(net, keras.Model):
        raise invalid("model", "a keras.Model or kam.AdversarialModel", type(model).__name__)
    check_images("x", x)
    x = np.asarray(x, np.float32)
    y = check_labels("y", y, n=len(x), num_classes=int(net.outputs[0].shape[-1]))
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_int_at_least("batch_size", batch_size, 2)
    lr = check_fraction("learning_rate", defense.pretrain_learning_rate if learning_rate is None else learning_rate,
                        0.0, float("inf"), low_open=True)
    attack = defense._pretrain_attack(x.shape[1:], attack_norm, attack_epsilon, attack_steps)
    defense.build(net)
    if tf.distribute.has_strategy() and tf.distribute.get_strategy().num_replicas_in_sync > 1:
        raise ValueError("MIAT.pretrain_estimators runs on one device: pretrain outside the multi-replica "
                         "strategy (same model and defense built without it), save, then load inside "
                         "`strategy.scope()` for the distributed MIAT fit.")
    trainer = EstimatorPretraining(defense, net, attack, seed)
    trainer.compile(optimizer=keras.optimizers.Adam(lr), jit_compile=False)
    batches = PermutedBatches((x, y), batch_size, epochs, np.random.default_rng(seed))
    history = trainer.fit(batches, epochs=epochs, steps_per_epoch=batches.n_batches, verbose=1 if verbose else 0,
                          shuffle=False).history
    defense.natural.pretrained.assign(1.0)
    defense.adversarial.pretrained.assign(1.0)
    return {k: [float(v) for v in history[k]] for k in HISTORY_KEYS}

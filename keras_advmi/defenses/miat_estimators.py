"""MIAT's two MI estimators, their per-sample scores and their official training objectives ("Improving
Adversarial Robustness via Mutual Information Estimation", Zhou et al., ICML 2022; official code
dwDavidxd/MIAT).

With h the model, x natural, x~ = x_adv and n = x~ - x the adversarial pattern, two estimators
(``layers.MIEstimator``, DIM-style, DV bound by default) give per-sample MI scores:

    v_n(x -> h(.))   natural MI,      I(x ; h(.))         (estimator "natural")
    v_a(n -> h(.))   adversarial MI,  I(n ; h(.))         (estimator "adversarial")

Adversarial examples have lower natural and higher adversarial MI than natural ones. ``EstimatorPair`` owns
both layers and what they read: the logits h(x), or the flattened output of an internal layer
(``MIATEstimators.layer``).

Negative MI values. The scores are per-sample Donsker-Varadhan *lower bounds* with a trained critic,
mean_l (u_ii - log mean_{j != i} exp u_ij): an estimate of I, not I itself, and below zero whenever the
critic scores sample i's own pair lower than the typical mismatched pair. That happens by design here:
the adversarial estimator is trained to give h(x)'s pairs with the pattern n *low* scores, and the
natural estimator to score fooled pairs x -> h(x~) low, so ``mi_adversarial/clean`` and
``mi_natural/adv`` are often negative (values on digits in docs/results.md), and an untrained
estimator gives values around 0 of either sign. Compare scores with each other (natural vs adversarial
pairs, one estimator, one batch size); their sign and absolute level carry no meaning of their own.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .._checks import invalid
from ..layers.dim import MIEstimator
from .miat_config import MIATEstimators
from .miat_scores import masked_cos, masked_mean

__all__ = ["EstimatorPair", "pretrain_losses"]


def pretrain_losses(v_nn, v_na, v_an, v_aa, clean_ok, adv_ok):
    """The official estimator objectives (train_MI_estimator.py), written on scores (= -their loss).

    v_*: the four (N,) scores of ``EstimatorPair.scores``; clean_ok, adv_ok: (N,) float 1/0, the model right
    on x and on x~. Returns the natural and the adversarial estimator's loss (scalars)."""
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


class EstimatorPair:
    """The natural and the adversarial ``MIEstimator`` of one MIAT defense, built for one model.

    ``build(model)`` creates them (and, for ``config.layer``, a feature model of that layer); ``outputs`` is
    what their global encoders read, ``scores`` the four per-sample scores of a batch. The estimators'
    variables are trained in ``fit``'s phase 1 (``objective_gradients``) and by
    ``MIAT.pretrain_estimators``, never by ``fit``'s optimizer.
    """

    def __init__(self, config: MIATEstimators):
        self.config = config
        self.natural = self.adversarial = None
        self.features = None          # keras.Model: the model's input -> the output of ``config.layer``
        self.input_shape = None       # (H, W, C) of the model's images

    @property
    def built(self) -> bool:
        return self.natural is not None

    def build(self, model: keras.Model):
        """Create both estimators for ``model`` (a functional/Sequential image model); a no-op once built."""
        if self.built:
            return
        if not model.inputs or len(model.inputs[0].shape) != 4:
            raise invalid("model", "a functional/Sequential image model with inputs (N, H, W, C)", type(model).__name__)
        layer = self.config.layer
        if layer is None:
            outputs_shape = (None, int(model.outputs[0].shape[-1]))
        else:
            names = [l.name for l in model.layers]
            if layer not in names:
                raise invalid("layer", f"None or the name of one of the model's layers {names}", layer)
            out = model.get_layer(layer).output
            self.features = keras.Model(model.inputs, out, name=f"miat_features_{layer}")
            outputs_shape = (None, int(np.prod([int(d) for d in out.shape[1:]])))
        self.input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        c = self.config
        self.natural = MIEstimator(c.hsize, c.filters, c.bound, c.diagonal, name="mi_natural_estimator")
        self.adversarial = MIEstimator(c.hsize, c.filters, c.bound, c.diagonal, name="mi_adversarial_estimator")
        for estimator in (self.natural, self.adversarial):
            estimator.build((None,) + self.input_shape, outputs_shape)

    def layers(self) -> list:
        return [self.natural, self.adversarial] if self.built else []

    def variables(self) -> list:
        """Both estimators' trainable variables, the natural one's first."""
        return self.natural.trainable_weights + self.adversarial.trainable_weights

    @property
    def pretrained(self) -> bool:
        """Whether both estimators carry the ``pretrained`` flag (saved with the model)."""
        return self.built and bool(self.natural.pretrained.numpy() > 0.5) and \
            bool(self.adversarial.pretrained.numpy() > 0.5)

    def mark_pretrained(self):
        self.natural.pretrained.assign(1.0)
        self.adversarial.pretrained.assign(1.0)

    def outputs(self, x, logits, training):
        """What the global encoders read: the logits, or the flattened output of ``layer`` (N, D)."""
        if self.features is None:
            return logits
        h = self.features(x, training=training)
        return tf.reshape(tf.cast(h, tf.float32), [tf.shape(h)[0], -1])

    def scores(self, x, x_adv, outputs_clean, outputs_adv, training=False, rows=None):
        """v_n(x -> h(x)), v_n(x -> h(x~)), v_a(n -> h(x)), v_a(n -> h(x~)), each (N,) float32, or (R,) for
        ``rows`` (R int indices: only those samples scored, all N still serve as negatives).

        outputs_*: what the global encoders read (``outputs``), (N, classes) logits or (N, D) features."""
        x = tf.cast(x, tf.float32)
        pattern = tf.stop_gradient(tf.cast(x_adv, tf.float32) - x)
        outputs_clean, outputs_adv = tf.cast(outputs_clean, tf.float32), tf.cast(outputs_adv, tf.float32)
        local_n = self.natural.local_features(tf.stop_gradient(x), training=training)
        local_a = self.adversarial.local_features(pattern, training=training)
        values = (self.natural.score_features(local_n, outputs_clean, training, rows),
                  self.natural.score_features(local_n, outputs_adv, training, rows),
                  self.adversarial.score_features(local_a, outputs_clean, training, rows),
                  self.adversarial.score_features(local_a, outputs_adv, training, rows))
        return tuple(tf.cast(v, tf.float32) for v in values)   # float32 under a mixed-precision policy too

    @tf.function(reduce_retracing=True)
    def batch_scores(self, net, x, x_adv):
        """``scores`` of one batch under the classifier ``net`` in inference mode (a compiled function)."""
        return self.scores(x, x_adv, self.outputs(x, net(x, training=False), False),
                           self.outputs(x_adv, net(x_adv, training=False), False))

    def objective_gradients(self, x, y, x_adv, logits_clean, logits_adv):
        """Inside ``fit``'s phase 1: the gradients of the official objectives (``pretrain_losses``) for
        ``variables()``, the model frozen (its logits and outputs are constants), and the two losses.
        Each replica's gradients are divided by the number of replicas (the optimizer sums them)."""
        variables = self.variables()
        logits_clean, logits_adv = tf.stop_gradient(logits_clean), tf.stop_gradient(logits_adv)
        out_clean = tf.stop_gradient(self.outputs(x, logits_clean, False))
        out_adv = tf.stop_gradient(self.outputs(x_adv, logits_adv, False))
        y64 = tf.cast(y, tf.int64)
        clean_ok = tf.cast(tf.equal(tf.argmax(logits_clean, -1), y64), tf.float32)
        adv_ok = tf.cast(tf.equal(tf.argmax(logits_adv, -1), y64), tf.float32)
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        with tf.GradientTape() as tape:
            scores = self.scores(x, x_adv, out_clean, out_adv, training=True)
            loss_n, loss_a = pretrain_losses(*scores, clean_ok, adv_ok)
            total = (loss_n + loss_a) / replicas
        grads = tape.gradient(total, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return grads, loss_n, loss_a

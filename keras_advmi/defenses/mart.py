"""MART (Wang et al., "Improving Adversarial Robustness Requires Revisiting Misclassified Examples", ICLR 2020).

loss = BCE(f(x_adv), y) + lambda * KL(f(x) || f(x_adv)) * (1 - p_y(x)),
BCE = -log p_y(x_adv) - log(1 - max_{k != y} p_k(x_adv)).
"""

from __future__ import annotations

import tensorflow as tf

from .._checks import check_nonnegative
from .._model import logits_of
from ..attacks.trades import kl_divergence
from ._pgd_family import PGDDefense
from .base import DefenseLoss, serializable

_TINY = 1e-12


@serializable
class MART(PGDDefense):
    """MART with ``lam`` = 6 (the weight of the KL term, >= 0) on PGD examples (``PGDDefense``'s arguments).
    Logs ``boosted_ce`` and ``weighted_kl``."""

    name = "mart"
    log_names = ("boosted_ce", "weighted_kl")

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, lam: float = 6.0,
                 **pgd_options):
        super().__init__(epsilon, step_size, steps, **pgd_options)
        self.lam = check_nonnegative("lam", lam)

    def loss(self, model, x, y, x_adv, training, step=None):
        logits_clean = logits_of(model, x, training=training)
        logits_adv = logits_of(model, x_adv, training=training)
        probs_adv = tf.nn.softmax(logits_adv)
        true_mask = tf.one_hot(tf.cast(y, tf.int32), tf.shape(logits_adv)[-1], dtype=probs_adv.dtype)
        p_true_adv = tf.reduce_sum(probs_adv * true_mask, axis=-1)
        p_other_max = tf.reduce_max(probs_adv - 2.0 * true_mask, axis=-1)  # excludes the true class
        boosted_ce = -tf.math.log(p_true_adv + _TINY) - tf.math.log(1.0 - p_other_max + _TINY)
        p_true_clean = tf.reduce_sum(tf.nn.softmax(logits_clean) * true_mask, axis=-1)
        weighted_kl = kl_divergence(logits_clean, logits_adv) * (1.0 - p_true_clean)
        per_sample = boosted_ce + self.lam * weighted_kl
        return DefenseLoss(per_sample, {"boosted_ce": boosted_ce, "weighted_kl": weighted_kl}, logits_adv, logits_clean)

    def get_config(self):
        return {**super().get_config(), "lam": self.lam}

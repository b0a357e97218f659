"""Fast adversarial training, FGSM with random start (Wong, Rice & Kolter, "Fast is better than free",
ICLR 2020): delta ~ U(-eps, eps); delta <- Proj_eps(delta + a * sign(grad)); a = 1.25 * eps.

Known failure: catastrophic overfitting (PGD accuracy collapses while FGSM accuracy rises). Validation
reports ``adv_accuracy`` (PGD) beside ``fgsm_accuracy`` so the failure is visible in the logs; the
``kam.callbacks.CatastrophicOverfittingMonitor`` callback flags it and can restore the best weights.
"""

import numpy as np
import tensorflow as tf

from ..attacks._common import logits_of, loss_gradient, random_start as ball_sample, seed_pair, unless_empty
from ..attacks.fgsm import fgsm_graph
from .base import Defense, DefenseLoss, adversarial_cross_entropy, serializable


@serializable
class FastAT(Defense):
    """FGSM-RS training. ``step_size`` defaults to 1.25 * epsilon (Wong et al.)."""

    name = "fast_at"
    evaluation_log_names = ("fgsm_accuracy",)

    def __init__(self, epsilon=0.3, step_size=None, eval_steps=10, **kwargs):
        kwargs.pop("steps", None)
        super().__init__(epsilon, step_size if step_size is not None else 1.25 * epsilon, 1,
                         eval_steps=eval_steps, **kwargs)

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        eps = self.current_epsilon(step)

        def attack():
            x_start = tf.clip_by_value(x + ball_sample(x, eps, np.inf, seed_pair(seed)), 0.0, 1.0)
            grad, _ = loss_gradient(model, x_start, y, False)
            step_size = self.step_size * eps / max(self.epsilon, 1e-12)
            delta = tf.clip_by_value(x_start - x + step_size * tf.sign(grad), -eps, eps)
            return tf.clip_by_value(x + delta, 0.0, 1.0)

        return tf.stop_gradient(unless_empty(x, attack))

    def loss(self, model, x, y, x_adv, training):
        per_sample, logits_adv = adversarial_cross_entropy(model, y, x_adv, training)
        return DefenseLoss(per_sample, {}, logits_adv)

    def evaluation_logs(self, model, x, y, seed=None):
        x_fgsm = fgsm_graph(model, x, y, self.epsilon)
        pred = tf.argmax(logits_of(model, x_fgsm), -1, output_type=tf.int64)
        return {"fgsm_accuracy": tf.cast(tf.equal(pred, tf.cast(y, tf.int64)), tf.float32)}

    def get_config(self):
        config = super().get_config()
        config.pop("steps")
        return config

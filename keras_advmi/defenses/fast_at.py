"""Single-step adversarial training.

FGSM-RS (Wong, Rice & Kolter, "Fast is better than free", ICLR 2020), the default:
    eta ~ U(-eps, eps);  delta = Proj_eps(eta + a * sign(grad_x CE(f(x + eta), y)));  a = 1.25 * eps.
N-FGSM (de Jorge et al., "Make Some Noise: Reliable and Efficient Single-Step Adversarial Training",
NeurIPS 2022): ``FastAT(eps, step_size=eps, noise=2.0, project=False)``:
    eta ~ U(-2 eps, 2 eps);  delta = eta + eps * sign(grad)   (no projection, ||delta||_inf <= 3 eps).
Both cost one input gradient per batch; the image is clipped to [0, 1] in either case.

Known failure: catastrophic overfitting (PGD accuracy collapses while FGSM accuracy rises). Validation
reports ``adv_accuracy`` (PGD) beside ``fgsm_accuracy`` so the failure is visible in the logs; the
``kam.callbacks.CatastrophicOverfittingMonitor`` callback flags it and can restore the best weights.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf

from .._checks import check_bool, check_nonnegative
from .._model import logits_of
from ..attacks._common import loss_gradient, seed_pair, uniform_ball_sample, unless_empty
from ..attacks.fgsm import fgsm_graph
from .base import Defense, DefenseLoss, adversarial_cross_entropy, serializable


@serializable
class FastAT(Defense):
    """FGSM-RS training (default) or N-FGSM (``noise=2.0, project=False, step_size=epsilon``).

    Args:
      epsilon: L-inf radius the model is evaluated at (pixel units).
      step_size: FGSM step, pixel units; default 1.25 * epsilon (Wong et al.). Under epsilon warm-up it
        shrinks with the ball (``Defense.warmup_scaled``).
      eval_steps: iterations of the evaluation PGD (default 10), as for every ``Defense``.
      noise: half-width of the uniform start, in multiples of epsilon (>= 0; 1 = FGSM-RS, 2 = N-FGSM).
      project: clip the perturbation to the epsilon ball after the step (FGSM-RS: True; N-FGSM: False).
      **defense_options: ``Defense``'s (epsilon_warmup_steps, seed, attack_dtype, attack_chains).
    The training attack is one step: there is no ``steps`` (nor ``norm``, ``random_start``) to set.
    """

    name = "fast_at"
    evaluation_log_names = ("fgsm_accuracy",)

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, eval_steps: int | None = None,
                 noise: float = 1.0, project: bool = True, **defense_options):
        super().__init__(epsilon, eval_steps=eval_steps, **defense_options)
        if step_size is None:
            step_size = 1.25 * epsilon
        self.step_size = self.check_step_size(step_size)
        self.noise = check_nonnegative("noise", noise)
        self.project = check_bool("project", project)

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        eps = self.current_epsilon(step)

        def attack():
            x_start = tf.clip_by_value(x + uniform_ball_sample(x, self.noise * eps, np.inf, seed_pair(seed)), 0.0, 1.0)
            grad, _ = loss_gradient(model, x_start, y, False)
            delta = x_start - x + self.warmup_scaled(self.step_size, eps) * tf.sign(grad)
            if self.project:
                delta = tf.clip_by_value(delta, -eps, eps)
            return tf.clip_by_value(x + delta, 0.0, 1.0)

        return tf.stop_gradient(unless_empty(x, attack))

    def loss(self, model, x, y, x_adv, training, step=None):
        per_sample, logits_adv = adversarial_cross_entropy(model, y, x_adv, training)
        return DefenseLoss(per_sample, {}, logits_adv)

    def evaluation_logs(self, model, x, y, seed=None):
        x_fgsm = fgsm_graph(model, x, y, self.epsilon)
        pred = tf.argmax(logits_of(model, x_fgsm), -1, output_type=tf.int64)
        return {"fgsm_accuracy": tf.cast(tf.equal(pred, tf.cast(y, tf.int64)), tf.float32)}

    def get_config(self):
        return {**super().get_config(), "step_size": self.step_size, "noise": self.noise, "project": self.project}

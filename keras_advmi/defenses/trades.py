"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019).

loss = CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv = argmax_{B_eps(x)} KL(f(x) || f(x')).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_nonnegative, check_norm, invalid
from .._model import logits_of
from ..attacks.losses import cross_entropy
from ..attacks.trades import kl_divergence, trades_kl_graph
from ._pgd_family import PGDDefense
from .base import DefenseLoss, serializable


@serializable
class TRADES(PGDDefense):
    """TRADES with ``beta`` = 6 (the paper's CIFAR/MNIST choice). Logs ``natural_loss`` and ``robust_kl``.

    Args:
      epsilon, step_size, steps: the KL attack's L-inf budget, step (None: Madry's 2.5 * eps / steps) and
        iterations, as ``PGDDefense``.
      beta: weight of the KL term (>= 0).
      norm: ``np.inf`` only (the paper's attack is L-inf).
      random_start: True only: the attack starts at x + 0.001 N(0, 1), as the paper's code (at x itself
        the KL's gradient is 0 and the sign step would not move).
      **defense_options: ``Defense``'s (eval_steps, epsilon_warmup_steps, seed, attack_dtype, attack_chains).
    """

    name = "trades"
    log_names = ("natural_loss", "robust_kl")

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, beta: float = 6.0,
                 norm=np.inf, random_start: bool = True, **defense_options):
        if check_norm(norm) != np.inf:
            raise invalid("norm", "np.inf (TRADES' attack is L-inf)", norm)
        if not check_bool("random_start", random_start):
            raise invalid("random_start", "True (TRADES' attack starts at x + 0.001 N(0, 1))", random_start)
        super().__init__(epsilon, step_size, steps, norm, random_start, **defense_options)
        self.beta = check_nonnegative("beta", beta)

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """x_adv = argmax over the current L-inf ball of KL(f(x) || f(x')) (``attacks.trades_kl_graph``)."""
        eps = self.current_epsilon(step)
        return trades_kl_graph(model, x, eps, self.warmup_scaled(self.step_size, eps), self.steps, seed)

    def loss(self, model, x, y, x_adv, training, step=None):
        logits_clean = logits_of(model, x, training=training)
        logits_adv = logits_of(model, x_adv, training=training)
        natural = cross_entropy(y, logits_clean)
        robust = kl_divergence(logits_clean, logits_adv)
        per_sample = natural + self.beta * robust
        logs = {"natural_loss": natural, "robust_kl": robust}
        return DefenseLoss(per_sample, logs, logits_adv, logits_clean)

    def get_config(self):
        return {**super().get_config(), "beta": self.beta}

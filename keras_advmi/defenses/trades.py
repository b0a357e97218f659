"""TRADES (Zhang et al., "Theoretically Principled Trade-off between Robustness and Accuracy", ICML 2019).

loss = CE(f(x), y) + beta * KL(f(x) || f(x_adv)), x_adv = argmax_{B_eps(x)} KL(f(x) || f(x')).
"""

from __future__ import annotations

import numpy as np

from .._checks import check_fraction
from .._model import logits_of
from ..attacks.losses import cross_entropy
from ..attacks.trades import kl_divergence, trades_kl_graph
from .base import Defense, DefenseLoss, serializable


@serializable
class TRADES(Defense):
    """TRADES with ``beta`` = 6 (the paper's CIFAR/MNIST choice). Logs ``natural_loss`` and ``robust_kl``."""

    name = "trades"
    log_names = ("natural_loss", "robust_kl")

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, beta: float = 6.0,
                 **kwargs):
        if kwargs.get("norm", np.inf) not in (np.inf, "inf"):
            raise ValueError("Received an invalid value for `norm`, expected np.inf (TRADES' attack is L-inf). "
                             f"Received: norm={kwargs['norm']!r}")
        super().__init__(epsilon, step_size, steps, **kwargs)
        self.beta = check_fraction("beta", beta, 0.0, float("inf"))

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        eps = self.current_epsilon(step)
        return trades_kl_graph(model, x, eps, self.step_size * eps / max(self.epsilon, 1e-12), self.steps, seed)

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

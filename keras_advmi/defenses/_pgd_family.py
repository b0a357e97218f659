"""``PGDDefense``: the base of the defenses whose training examples come from a multi-step, PGD-style inner
maximisation (PGD-AT, TRADES, MART, SNS), with the attack's budget and its validation in one place."""

from __future__ import annotations

import numpy as np

from .._checks import check_bool, check_nonnegative_int, check_norm
from ..attacks._common import madry_step_size
from ..attacks.pgd import pgd_graph
from .base import Defense

__all__ = ["PGDDefense"]


class PGDDefense(Defense):
    """A ``Defense`` trained on PGD examples (Madry et al., "Towards Deep Learning Models Resistant to
    Adversarial Attacks", 2018); subclasses write ``loss`` (and may replace the inner maximisation).

    Args:
      epsilon: L-inf (or L2) radius in pixel units.
      step_size: PGD step, pixel units (None: Madry's 2.5 * eps / steps, ``kam.attacks.madry_step_size``).
        Under epsilon warm-up it shrinks with the ball (``Defense.warmup_scaled``).
      steps: PGD iterations during training (>= 0).
      norm: ``np.inf`` or 2.
      random_start: begin each attack at a uniform point of the ball.
      **defense_options: ``Defense``'s ``eval_steps`` (default ``max(steps, 10)``), ``epsilon_warmup_steps``,
        ``seed``, ``attack_dtype``, ``attack_chains``.
    """

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, norm=np.inf,
                 random_start: bool = True, **defense_options):
        self.norm = check_norm(norm)   # before Defense.__init__: the norm sets epsilon's range
        self.steps = check_nonnegative_int("steps", steps)
        if defense_options.get("eval_steps") is None:
            defense_options["eval_steps"] = max(self.steps, 10)
        super().__init__(epsilon, **defense_options)
        if step_size is None:
            step_size = madry_step_size(self.epsilon, max(self.steps, 1))
        self.step_size = self.check_step_size(step_size)
        self.random_start = check_bool("random_start", random_start)

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """Training examples: PGD(steps) within the current epsilon; returns x_adv (stop_gradient)."""
        eps = self.current_epsilon(step)
        return pgd_graph(model, x, y, eps, self.warmup_scaled(self.step_size, eps), self.steps, norm=self.norm,
                         targeted=False, random_start=self.random_start, restarts=1, seed=seed)

    def get_config(self):
        config = super().get_config()
        return {"epsilon": config.pop("epsilon"), "step_size": self.step_size, "steps": self.steps,
                "norm": "inf" if self.norm == np.inf else 2, "random_start": self.random_start, **config}

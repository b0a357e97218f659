"""Attacks: pure, graph-compatible functions of (model, x, y, budget, seed).

Public: ``fgsm``, ``pgd``, ``trades_kl``, the targeted universal perturbations
(``targeted_universal_perturbation``, ``universal_perturbations``, ``fooling_rate(s)``,
``apply_perturbation``), the losses an attack can ascend (``cross_entropy``, ``dlr_loss``) and
``madry_step_size``. Arguments after ``y`` are keyword-only; ``step_size=None`` means
``madry_step_size(epsilon, steps)``. The ``*_graph`` variants take tensors (positional arguments) and
are what the defenses call inside ``train_step``.
"""

from ._common import madry_step_size
from .fgsm import fgsm, fgsm_graph
from .losses import cross_entropy, dlr_loss
from .pgd import pgd, pgd_graph
from .trades import kl_divergence, trades_kl, trades_kl_graph
from .universal import (apply_perturbation, boundary_margin, fooling_rate, fooling_rates,
                        targeted_universal_perturbation, universal_graph, universal_perturbations)

__all__ = ["fgsm", "pgd", "trades_kl", "targeted_universal_perturbation", "universal_perturbations", "fooling_rate",
           "fooling_rates", "apply_perturbation", "boundary_margin", "cross_entropy", "dlr_loss", "madry_step_size",
           "kl_divergence", "fgsm_graph", "pgd_graph", "trades_kl_graph", "universal_graph"]

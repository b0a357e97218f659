"""Attacks: pure, graph-compatible functions of (model, x, y, budget, seed).

Public: ``fgsm``, ``pgd``, ``trades_kl``. The ``*_graph`` variants take tensors and are what the
defenses call inside ``train_step``.
"""

from ._common import madry_step_size
from .fgsm import fgsm, fgsm_graph
from .pgd import pgd, pgd_graph
from .trades import kl_divergence, trades_kl, trades_kl_graph

__all__ = ["madry_step_size", "fgsm", "pgd", "trades_kl", "fgsm_graph", "pgd_graph", "trades_kl_graph", "kl_divergence"]

"""Defenses: each a small configuration class implementing the ``Defense`` protocol (base.py)."""

from .base import Defense, DefenseLoss
from .fast_at import FastAT
from .mart import MART
from .pgd_at import PGD
from .trades import TRADES

#: Name -> class, for the CLI and configs.
REGISTRY = {"pgd": PGD, "trades": TRADES, "mart": MART, "fast_at": FastAT, "fastat": FastAT}

__all__ = ["Defense", "DefenseLoss", "PGD", "TRADES", "MART", "FastAT", "REGISTRY"]

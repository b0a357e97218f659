"""Defenses: each a small configuration class implementing the ``Defense`` protocol (base.py)."""

from .base import Defense, DefenseLoss
from .fast_at import FastAT
from .mart import MART
from .miat import MIAT
from .pgd_at import PGD
from .region_at import RegionAT
from .sns import SNS
from .trades import TRADES

#: Name -> class, for the CLI and configs.
REGISTRY = {"pgd": PGD, "trades": TRADES, "mart": MART, "fast_at": FastAT, "region_at": RegionAT, "sns": SNS,
            "miat": MIAT}

__all__ = ["Defense", "DefenseLoss", "PGD", "TRADES", "MART", "MIAT", "FastAT", "RegionAT", "SNS", "REGISTRY"]

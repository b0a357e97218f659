"""Defenses: each a small configuration class implementing the ``Defense`` protocol (base.py); the defenses
trained on PGD-style examples share ``PGDDefense``."""

from ._pgd_family import PGDDefense
from .base import Defense, DefenseLoss
from .fast_at import FastAT
from .mart import MART
from .miat import MIAT
from .miat_config import MIATEstimators, MIATPhases, MIATPretraining
from .pgd_at import PGD
from .region_at import RegionAT
from .sns import SNS
from .trades import TRADES

#: Name -> class, for the CLI and configs (each class's ``name``).
REGISTRY = {cls.name: cls for cls in (PGD, TRADES, MART, FastAT, RegionAT, SNS, MIAT)}

__all__ = ["Defense", "DefenseLoss", "PGDDefense", "PGD", "TRADES", "MART", "MIAT", "MIATEstimators", "MIATPhases",
           "MIATPretraining", "FastAT", "RegionAT", "SNS", "REGISTRY"]

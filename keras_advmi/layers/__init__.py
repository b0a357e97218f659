"""Keras layers of keras-advmi: MI critics and DIM encoders (MIAT), input transforms (analysis).

The critics belong to the neural MI estimators and live in ``keras_advmi.mi.critics``; they are listed here
with the other layers. ``layers`` imports ``mi``, never the reverse.
"""

from ..mi.critics import ConcatCritic, SeparableCritic
from .dim import GlobalEncoder, LocalEncoder, MIEstimator
from .transforms import PatchShuffle, Saturation, patch_shuffle, saturate

__all__ = ["ConcatCritic", "GlobalEncoder", "LocalEncoder", "MIEstimator", "PatchShuffle", "Saturation",
           "SeparableCritic", "patch_shuffle", "saturate"]

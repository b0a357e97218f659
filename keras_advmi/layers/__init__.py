"""Keras layers of keras-advmi: MI critics and DIM encoders (MIAT), input transforms (analysis)."""

from .critics import ConcatCritic, SeparableCritic
from .dim import GlobalEncoder, LocalEncoder, MIEstimator
from .transforms import PatchShuffle, Saturation, patch_shuffle, saturate

__all__ = ["ConcatCritic", "GlobalEncoder", "LocalEncoder", "MIEstimator", "PatchShuffle", "Saturation",
           "SeparableCritic", "patch_shuffle", "saturate"]

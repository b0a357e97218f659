"""Keras layers of keras-advmi: MI critics and DIM encoders (MIAT), input transforms (analysis)."""

from .critics import ConcatCritic, SeparableCritic
from .dim import GlobalEncoder, LocalEncoder, MIEstimator

__all__ = ["ConcatCritic", "GlobalEncoder", "LocalEncoder", "MIEstimator", "SeparableCritic"]

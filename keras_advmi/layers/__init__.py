"""Keras layers of keras-advmi: MI critics and DIM encoders (MIAT), input transforms (analysis)."""

from .critics import ConcatCritic, SeparableCritic

__all__ = ["ConcatCritic", "SeparableCritic"]

"""Keras callbacks: catastrophic-overfitting monitor, neuron sensitivity and mutual-information loggers."""

from .neuron_sensitivity import NeuronSensitivityLogger
from .overfitting import CatastrophicOverfittingMonitor

__all__ = ["CatastrophicOverfittingMonitor", "NeuronSensitivityLogger"]

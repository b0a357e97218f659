"""Keras callbacks: catastrophic-overfitting monitor, neuron sensitivity and mutual-information loggers."""

from .mutual_information import MutualInformationLogger
from .neuron_sensitivity import NeuronSensitivityLogger
from .overfitting import CatastrophicOverfittingMonitor

__all__ = ["CatastrophicOverfittingMonitor", "MutualInformationLogger", "NeuronSensitivityLogger"]

"""Keras callbacks: collapse and catastrophic-overfitting monitors, neuron sensitivity and mutual-information loggers."""

from .collapse import CollapseMonitor, CollapseWarning
from .mutual_information import MutualInformationLogger
from .neuron_sensitivity import NeuronSensitivityLogger
from .overfitting import CatastrophicOverfittingMonitor

__all__ = ["CatastrophicOverfittingMonitor", "CollapseMonitor", "CollapseWarning", "MutualInformationLogger",
           "NeuronSensitivityLogger"]

"""Keras callbacks: collapse and catastrophic-overfitting monitors, neuron sensitivity and mutual-information
loggers, and a per-epoch wall-time log that survives resumed runs."""

from .collapse import CollapseMonitor, CollapseWarning
from .epoch_time import EpochTimeLog, resumed_epochs
from .mutual_information import MutualInformationLogger
from .neuron_sensitivity import NeuronSensitivityLogger
from .overfitting import CatastrophicOverfittingMonitor

__all__ = ["CatastrophicOverfittingMonitor", "CollapseMonitor", "CollapseWarning", "EpochTimeLog",
           "MutualInformationLogger", "NeuronSensitivityLogger", "resumed_epochs"]

"""Adversarial-input detectors (fit on clean data, calibrate a threshold, export as a Keras layer).

``MIScoreDetector`` (natural MI of (x, h(x)), after MIAT), ``MahalanobisDetector`` (Lee et al. 2018),
``FeatureSqueezingDetector`` (Xu et al. 2018); ``evaluate`` reports AUROC and TPR at the calibrated
false-positive rate against FGSM, PGD and an adaptive attack on model and detector together.
"""

from .base import Detector
from .evaluation import DetectionReport, adaptive_attack, evaluate
from .feature_squeezing import FeatureSqueezingDetector
from .mahalanobis import MahalanobisDetector
from .mi_score import MIScoreDetector

__all__ = ["Detector", "MIScoreDetector", "MahalanobisDetector", "FeatureSqueezingDetector", "evaluate",
           "adaptive_attack", "DetectionReport"]

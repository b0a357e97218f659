"""Why adversarial examples work and what adversarial training changes 
(the papers are cited in each module).

* ``information_plane``: (I(X;T), I(T;Y)) per layer for clean and adversarial inputs ("Exploring adversarial
  examples and adversarial robustness of convolutional neural networks by mutual information", 2022).
* ``texture_shape_probe``, ``saturate``, ``patch_shuffle``: accuracy under texture- and
  shape-removing transforms (the same 2022 paper).
* ``promotion_suppression``: logit- and neuron-level promotion/suppression, perturbation type
  ("Interpreting Adversarial Examples by Activation Promotion and Suppression", 2019).
* ``grad_cam``: class activation maps (Selvaraju et al. 2017), for x and x' (that paper's CAM link).
* ``universal_fragility``: fooling rate of a targeted universal perturbation per class
  ("Improving adversarial robustness of deep neural networks by using semantic information", 2020).
* ``neuron_sensitivity``: per-channel sensitivity to adversarial perturbations ("Interpreting and
  Improving Adversarial Robustness of Deep Neural Networks with Neuron Sensitivity", 2019).
* ``gradient_alignment``: cosine of input gradients at x and at a random point of the eps-ball, the
  local-linearity measure that falls when single-step training overfits (Andriushchenko & Flammarion 2020).
* ``analyze`` / ``write_report``: all of the above on several models, as an HTML report
  (``keras-advmi analyze``); ``plots`` draws the figures.
"""

from ..layers.transforms import PatchShuffle, Saturation, patch_shuffle, saturate
from .grad_cam import grad_cam, last_conv_layer
from .gradient_alignment import gradient_alignment
from .information_plane import information_plane
from .neuron_sensitivity import neuron_sensitivity, sensitivity_summary, top_k_channels
from .promotion_suppression import promotion_suppression, pse_ratio, pse_type
from .report import analyze, write_report
from .texture_shape import texture_shape_probe
from .universal_fragility import universal_fragility

__all__ = ["PatchShuffle", "Saturation", "analyze", "grad_cam", "gradient_alignment", "information_plane",
           "last_conv_layer", "neuron_sensitivity", "patch_shuffle", "promotion_suppression", "pse_ratio", "pse_type",
           "saturate", "sensitivity_summary", "texture_shape_probe", "top_k_channels", "universal_fragility",
           "write_report"]

"""Mutual-information estimators (nats by default; ``unit='bits'`` converts).

Nonparametric, on a layer's activations: ``kde_upper``, ``kde_lower`` (I(X;T)), ``kde_label_mi``
(I(T;Y)), ``binning_mi`` (both); ``kde_noise_var`` is the scale-aware noise (``noise_var="relative"``,
the default of every KDE function; ``noise_var=0.1`` is the absolute noise of the information-plane
papers).
``OnlineLabelMI`` trains critics for I(T;Y) a few steps at a time (the logger's neural estimate).
Neural bounds on a critic's score matrix: ``infonce``, ``dv``, ``nwj``, ``js``; ``estimate`` trains a
critic (``mi.critics``, re-exported by ``keras_advmi.layers``) as a small ``keras.Model`` with ``fit`` and
returns a bound. Each bound and estimator takes ``name=`` and opens ``tf.name_scope(name or <function
name>)``, as TFP's do.
Formulas and references: each module's docstring.
"""

from .binning import binning_mi
from .bounds import BOUNDS, PER_SAMPLE_BOUNDS, dv, dv_per_sample, infonce, js, nwj, per_sample_bound
from .estimate import MIEstimate, correlated_gaussians, estimate, gaussian_mi
from .online import OnlineLabelMI, Standardizer
from .kde import (RELATIVE_NOISE, kde_information_plane, kde_label_mi, kde_lower, kde_mi, kde_noise_var, kde_upper,
                  label_entropy, log_n)

__all__ = ["BOUNDS", "MIEstimate", "OnlineLabelMI", "Standardizer", "binning_mi", "correlated_gaussians", "dv", "dv_per_sample", "estimate",
           "gaussian_mi", "infonce", "kde_information_plane", "kde_noise_var", "js", "label_entropy", "RELATIVE_NOISE", "kde_label_mi", "kde_lower", "kde_mi", "kde_upper", "log_n", "nwj", "per_sample_bound", "PER_SAMPLE_BOUNDS"]

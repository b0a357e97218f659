"""Mahalanobis detector (Lee et al., "A Simple Unified Framework for Detecting Out-of-Distribution
Samples and Adversarial Attacks", NeurIPS 2018).

Fit on clean data, per feature layer l: features f_l(x) (conv maps are mean-pooled over space, as
in the paper), class means mu_{l,c} (classes from labels, else the model's predictions) and a tied
covariance Sigma_l = (1/N) sum_i (f_i - mu_{y_i})(f_i - mu_{y_i})^T (+ ``shrinkage`` * mean
variance * I, for a stable inverse). Per layer M_l(x) = min_c (f_l - mu_{l,c})^T Sigma_l^{-1} (f_l - mu_{l,c}),
computed as ||W^T f - W^T mu_c||^2 with Sigma^{-1} = W W^T (Cholesky).

    score(x) = sum_l M_l(x) / D_l            (higher = more adversarial; D_l = feature width)

The paper combines layers with a logistic regression fitted on adversarial (or OOD) examples; this
detector is fitted on clean data only, so it weights each layer by 1/D_l (E[M_l] ~ D_l on clean data
under the Gaussian model) instead. Also left out: the paper's input pre-processing (a small FGSM step
on M). ``layers="penultimate"`` gives the single-layer variant (the input of the last layer).
Default ``layers=None``: every layer with weights except the last (the feature ensemble).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_in_unit_interval, check_layer_names, invalid
from .base import Detector


@keras.saving.register_keras_serializable(package="keras_advmi")
class MahalanobisDetector(Detector):
    """Class-conditional Mahalanobis distance of layer features, summed over layers (Lee et al. 2018).

    Args:
      layers: None (every layer with weights except the last), ``"penultimate"`` (the input of the
        last layer), a layer name, or a list of layer names.
      shrinkage: ridge added to Sigma, as a fraction of its mean diagonal (default 1e-3).
      batch_size: rows per forward pass in ``fit``/``score``.
    """

    def __init__(self, layers: str | Sequence[str] | None = None, shrinkage: float = 1e-3, batch_size: int = 256,
                 **kwargs):
        super().__init__(batch_size=batch_size, **kwargs)
        self.feature_layers = check_layer_names("layers", layers, allow_none=True)   # "penultimate" is a name too
        self.shrinkage = check_in_unit_interval("shrinkage", shrinkage)
        self._pair_model = None

    def get_config(self):
        return {**super().get_config(), "layers": self.feature_layers, "shrinkage": self.shrinkage}

    def _feature_and_logits_model(self, model):
        if not isinstance(model, keras.Model) or not model.inputs:
            raise invalid("model", "a built functional or Sequential Keras model (features are read from its layers)",
                          type(model).__name__)
        names = [layer.name for layer in model.layers]
        if self.feature_layers is None:
            chosen = [layer for layer in model.layers[:-1] if layer.weights]
            if not chosen:
                raise invalid("model", "a model with at least one weighted layer before the logits", names)
            tensors = [layer.output for layer in chosen]
        else:
            tensors = []
            for name in self.feature_layers:
                if name == "penultimate":
                    tensors.append(model.layers[-1].input)
                elif name not in names:
                    raise invalid("layers", f"names among the model's layers {names} or 'penultimate'", name)
                else:
                    tensors.append(model.get_layer(name).output)
        pooled = [keras.layers.GlobalAveragePooling2D()(t) if len(t.shape) == 4
                  else keras.layers.Flatten()(t) if len(t.shape) > 2 else t for t in tensors]
        inputs = model.inputs[0] if len(model.inputs) == 1 else model.inputs
        return keras.Model(inputs, pooled + [model.outputs[0]], name="mahalanobis_features")

    def _features(self, x):
        out = self._pair_model(x, training=False)
        return [tf.cast(f, tf.float32) for f in out[:-1]], tf.cast(out[-1], tf.float32)

    def fit_state(self, model, x, y):
        self._pair_model = self._feature_and_logits_model(model)
        batches = [self._features(x[i:i + self.batch_size]) for i in range(0, len(x), self.batch_size)]
        logits = np.concatenate([np.asarray(b[1]) for b in batches])
        labels = y if y is not None else logits.argmax(-1)
        classes = int(logits.shape[-1])
        present = np.unique(labels)
        self.num_layers = len(batches[0][0])
        for k in range(self.num_layers):
            f = np.concatenate([np.asarray(b[0][k], np.float64) for b in batches])
            means = np.zeros((classes, f.shape[1]))
            for c in present:
                means[c] = f[labels == c].mean(axis=0)
            centered = f - means[labels]
            sigma = centered.T @ centered / len(f)
            sigma += self.shrinkage * max(np.trace(sigma) / len(sigma), 1e-12) * np.eye(len(sigma))
            precision = np.linalg.inv(sigma)
            w = np.linalg.cholesky((precision + precision.T) / 2)  # precision = W W^T
            means_w = means @ w
            if len(present) < classes:  # classes absent from the fitting data never win the min
                means_w[np.setdiff1d(np.arange(classes), present)] = 1e6
            self.add_fitted_constant(f"whitening_{k}", w)
            self.add_fitted_constant(f"whitened_means_{k}", means_w)

    def layer_scores(self, x: tf.Tensor) -> tuple[list[tf.Tensor], tf.Tensor]:
        """Per-layer min-class Mahalanobis distances [(N,) ...] and logits."""
        feats, logits = self._features(x)
        out = []
        for k, f in enumerate(feats):
            z = tf.matmul(f, getattr(self, f"whitening_{k}"))                            # (N, D)
            d2 = tf.reduce_sum(tf.square(z[:, None, :] - getattr(self, f"whitened_means_{k}")[None]), axis=-1)
            out.append(tf.reduce_min(d2, axis=-1) / float(f.shape[-1]))
        return out, logits

    def score_and_logits(self, x):
        per_layer, logits = self.layer_scores(x)
        return tf.add_n(per_layer), logits

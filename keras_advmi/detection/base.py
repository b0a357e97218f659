"""The detector protocol shared by every adversarial-input detector.

A detector is a ``keras.layers.Layer`` that maps a batch of images (N, ...) float32 in [0, 1] to an
adversarial score (N,) float32, higher = more adversarial, scikit-learn style:

    det = kam.detection.MahalanobisDetector().fit(model, x_train)   # clean data only
    det.calibrate(x_val, fpr=0.05)                                  # threshold at 5% false positives
    det.score(x)  -> (N,) NumPy;   det.detect(x) -> (N,) bool;   det(x) -> (N,) tensor (graph-safe)

The threshold is a non-trainable weight, so it lives in the exported graph (``kam.export`` puts
the layer behind the ``detect`` signature). ``score_and_logits(x)`` returns the score and the
model's logits from one forward pass; export uses it so ``detect`` costs about one model call.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_fraction, check_images, check_labels, check_positive_int, invalid
from .._model import check_network, input_shape_of

logger = logging.getLogger(__name__)


class Detector(keras.layers.Layer):
    """Base class: subclasses implement ``_fit(model, x, y)`` and ``score_and_logits(x)``.

    Attributes after ``fit``: ``model`` (the logits model), ``input_shape_`` (per-sample shape the
    detector was fitted on). After ``calibrate``: ``threshold`` (weight, scalar float32) and
    ``calibration`` (dict: target and measured FPR, number of samples, threshold).
    """

    def __init__(self, batch_size: int = 256, **kwargs):
        kwargs.setdefault("dtype", "float32")
        super().__init__(**kwargs)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.model = None
        self.input_shape_ = None
        self.calibration = None
        self._score_fn = None
        # +inf until calibrated: an uncalibrated detector flags nothing (and export refuses it).
        self.threshold = self.add_weight(shape=(), initializer=keras.initializers.Constant(np.inf),
                                         trainable=False, name="threshold", dtype="float32")

    # -- subclass hooks ------------------------------------------------------------------------
    def _fit(self, model, x, y):  # pragma: no cover - abstract
        raise NotImplementedError

    def score_and_logits(self, x: tf.Tensor) -> tuple[tf.Tensor, tf.Tensor]:  # pragma: no cover - abstract
        """(score (N,) float32, logits (N, classes) float32) from one pass; graph-safe."""
        raise NotImplementedError

    def score_and_view_logits(self, x: tf.Tensor) -> tuple[tf.Tensor, list[tf.Tensor]]:
        """(score (N,), [logits (N, classes) of each view the score compares]), view 0 being x itself.

        The adaptive attack's "consensus" objective pushes every view to the same wrong class. Default:
        the one view x (from ``score_and_logits``); feature squeezing adds its squeezed copies, all
        from the same batched pass that gives its score.
        """
        score, logits = self.score_and_logits(x)
        return score, [logits]

    # -- Keras layer ---------------------------------------------------------------------------
    def call(self, x):
        self._require_fitted("call")
        return self.score_and_logits(tf.cast(x, tf.float32))[0]

    def compute_output_shape(self, input_shape):
        return (input_shape[0],)

    def get_config(self):
        return {**super().get_config(), "batch_size": self.batch_size}

    # -- scikit-learn style API ------------------------------------------------------------------
    def fit(self, model: keras.Model, x_clean: np.ndarray, y: np.ndarray | None = None) -> Detector:
        """Fit on clean data only.

        Args:
          model: a logits Keras model or a ``kam.AdversarialModel`` (its ``.model`` is used).
          x_clean: clean images (N, ...) float32 in [0, 1], N >= 2.
          y: optional labels (N,); detectors that need classes use the model's predictions when None.
        Returns:
          self.
        """
        model = check_network(model)
        x = self._as_images("x_clean", x_clean, check_shape=False)
        if len(x) < 2:
            raise invalid("x_clean", "at least 2 clean images", f"{len(x)} images")
        model_shape = _model_input_shape(model)
        if model_shape is not None and tuple(model_shape) != tuple(x.shape[1:]):
            raise invalid("x_clean", f"images of the model's input shape {tuple(model_shape)}",
                          f"images of shape {tuple(x.shape[1:])}")
        if y is not None:
            y = check_labels("y", y, n=len(x))
        self.model = model
        self.input_shape_ = tuple(int(d) for d in x.shape[1:])
        self._score_fn = None
        self._fit(model, x, y)
        self.built = True
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Adversarial scores (N,) float32 NumPy (higher = more adversarial), computed in batches."""
        self._require_fitted("score")
        x = self._as_images("x", x)
        if self._score_fn is None:
            self._score_fn = tf.function(lambda xb: self.score_and_logits(xb)[0], reduce_retracing=True)
        out = []
        for i in range(0, len(x), self.batch_size):
            s = self._score_fn(tf.constant(x[i:i + self.batch_size])).numpy()
            if s.shape != (min(self.batch_size, len(x) - i),):
                raise RuntimeError(f"{type(self).__name__} returned scores of shape {s.shape} for a batch of "
                                   f"shape {x[i:i + self.batch_size].shape}; expected one score per image")
            out.append(s)
        return np.concatenate(out).astype(np.float32) if out else np.zeros((0,), np.float32)

    def calibrate(self, x_clean_val: np.ndarray, fpr: float = 0.05) -> Detector:
        """Set ``threshold`` so that a fraction ``fpr`` of held-out clean images score above it.

        threshold = the (1 - fpr) empirical quantile of the clean scores (higher interpolation), so
        the measured false-positive rate on ``x_clean_val`` is <= fpr. Use data the detector and the
        model were not fitted on, or the rate on new data will be higher than the target.

        Args:
          x_clean_val: clean images (N, ...), N >= 20 recommended (>= 1/fpr to resolve the quantile).
          fpr: target false-positive rate in (0, 1).
        Returns:
          self (``calibration`` holds the target and measured rates).
        """
        fpr = check_fraction("fpr", fpr, 0.0, 1.0, low_open=True)
        if fpr >= 1.0:
            raise invalid("fpr", "a number in (0, 1)", fpr)
        scores = self.score(x_clean_val)
        if len(scores) < 2:
            raise invalid("x_clean_val", "at least 2 clean images", f"{len(scores)} images")
        threshold = float(np.quantile(scores, 1.0 - fpr, method="higher"))
        self.threshold.assign(threshold)
        measured = float(np.mean(scores > threshold))
        self.calibration = {"fpr_target": fpr, "fpr_measured": measured, "n": int(len(scores)),
                            "threshold": threshold}
        if len(scores) < 1.0 / fpr:
            logger.warning("calibrating at fpr=%g on only %d images: the threshold is coarse", fpr, len(scores))
        return self

    def detect(self, x: np.ndarray) -> np.ndarray:
        """Boolean (N,): score > threshold."""
        self._require_calibrated("detect")
        return self.score(x) > float(self.threshold.numpy())

    @property
    def is_calibrated(self) -> bool:
        return self.calibration is not None and np.isfinite(float(self.threshold.numpy()))

    def describe(self) -> dict:
        """JSON-ready summary: class, config, fitted input shape, calibration."""
        config = {k: v for k, v in self.get_config().items() if k not in ("dtype", "trainable")}
        return {"class": type(self).__name__, "config": config, "input_shape": list(self.input_shape_ or []),
                "calibration": self.calibration}

    # -- helpers ---------------------------------------------------------------------------------
    def _state(self, name, value):
        """A fitted constant as a non-trainable weight (created once, re-assigned on a re-fit)."""
        value = np.asarray(value, np.float32)
        current = getattr(self, name, None)
        if isinstance(current, keras.Variable) and tuple(current.shape) == value.shape:
            current.assign(value)
            return current
        var = self.add_weight(shape=value.shape, initializer="zeros", trainable=False, name=name, dtype="float32")
        var.assign(value)
        setattr(self, name, var)
        return var

    def _require_fitted(self, what):
        if self.model is None:
            raise ValueError(f"{type(self).__name__}.{what}() needs a fitted detector: call "
                             f"fit(model, x_clean) first.")

    def _require_calibrated(self, what):
        self._require_fitted(what)
        if not self.is_calibrated:
            raise ValueError(f"{type(self).__name__}.{what}() needs a calibrated detector: call "
                             f"calibrate(x_clean_val, fpr=0.05) first.")

    def _as_images(self, name, x, check_shape=True):
        check_images(name, x)
        x = np.asarray(x, dtype=np.float32)
        if x.ndim < 2:
            raise invalid(name, "a batch of images (N, ...)", f"array of shape {x.shape}")
        if check_shape and self.input_shape_ is not None and tuple(x.shape[1:]) != self.input_shape_:
            raise invalid(name, f"images of shape (N, {', '.join(map(str, self.input_shape_))}) "
                                f"(the shape the detector was fitted on)", f"array of shape {x.shape}")
        return x


def _model_input_shape(model):
    """Per-sample input shape of a built Keras model, or None when unknown."""
    shape = input_shape_of(model)
    if shape is None or any(d is None for d in shape):
        return None
    return tuple(int(d) for d in shape)


def model_input_shape(model) -> tuple:
    return _model_input_shape(check_network(model))


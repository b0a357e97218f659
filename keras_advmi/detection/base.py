"""The detector protocol shared by every adversarial-input detector.

A detector is a ``keras.layers.Layer`` that maps a batch of images (N, ...) float32 in [0, 1] to an
adversarial score (N,) float32, higher = more adversarial, scikit-learn style:

    det = kam.detection.MahalanobisDetector().fit(model, x_train)   # clean data only
    det.calibrate(x_val, fpr=0.05)                                  # threshold at 5% false positives
    det.score(x)  -> (N,) NumPy;   det.detect(x) -> (N,) bool;   det(x) -> (N,) tensor (graph-safe)

The threshold is a non-trainable weight, so it lives in the exported graph (``kam.export`` puts
the layer behind the ``detect`` signature). ``score_and_logits(x)`` returns the score and the
model's logits from one forward pass; export uses it so ``detect`` costs about one model call.

A subclass overrides ``fit_state(model, x, y)`` (learns its fitted constants from checked clean data,
storing each with ``add_fitted_constant``; called by ``fit``) and ``score_and_logits(x)`` (graph-safe),
optionally ``score_and_view_logits(x)`` and ``get_config``; ``fit``, ``score``, ``calibrate``, ``detect`` and
``call`` are the base class's.
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_images, check_in_unit_interval, check_labels, check_positive_int, invalid
from .._model import check_network, input_shape_of

logger = logging.getLogger(__name__)


class Detector(keras.layers.Layer):
    """Base class: subclasses override ``fit_state(model, x, y)`` and ``score_and_logits(x)`` (the module
    docstring gives the protocol).

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
    def fit_state(self, model: keras.Model, x: np.ndarray, y: np.ndarray | None) -> None:  # pragma: no cover
        """Learn the detector's fitted constants (``add_fitted_constant``) from clean data; called by ``fit``.

        ``model``: the logits model; ``x``: float32 clean images (N, ...), N >= 2, of its input shape; ``y``:
        int64 labels (N,) or None. ``self.model`` and ``self.input_shape_`` are already set. Call ``fit``,
        not this, from outside the class.
        """
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
        self.require_fitted("call")
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
        x = self.check_input_images("x_clean", x_clean, check_shape=False)
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
        self.fit_state(model, x, y)
        self.built = True
        return self

    def score(self, x: np.ndarray) -> np.ndarray:
        """Adversarial scores (N,) float32 NumPy (higher = more adversarial), computed in batches."""
        self.require_fitted("score")
        x = self.check_input_images("x", x)
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
        fpr = check_in_unit_interval("fpr", fpr, open_low=True)
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
        self.require_calibrated("detect")
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
    def add_fitted_constant(self, name: str, value) -> keras.Variable:
        """Store ``value`` (an array) as the non-trainable float32 weight ``self.<name>`` (created on the first
        fit, re-assigned on a re-fit of the same shape), so that it is saved and exported with the layer."""
        value = np.asarray(value, np.float32)
        current = getattr(self, name, None)
        if isinstance(current, keras.Variable) and tuple(current.shape) == value.shape:
            current.assign(value)
            return current
        var = self.add_weight(shape=value.shape, initializer="zeros", trainable=False, name=name, dtype="float32")
        var.assign(value)
        setattr(self, name, var)
        return var

    def require_fitted(self, what: str) -> None:
        """Raise a ValueError naming ``what`` (the calling method) unless the detector is fitted."""
        if self.model is None:
            raise ValueError(f"{type(self).__name__}.{what}() needs a fitted detector: call "
                             f"fit(model, x_clean) first.")

    def require_calibrated(self, what: str) -> None:
        """Raise a ValueError naming ``what`` (the calling method) unless the detector is fitted and calibrated."""
        self.require_fitted(what)
        if not self.is_calibrated:
            raise ValueError(f"{type(self).__name__}.{what}() needs a calibrated detector: call "
                             f"calibrate(x_clean_val, fpr=0.05) first.")

    def check_input_images(self, name: str, x, check_shape: bool = True) -> np.ndarray:
        """``x`` as a float32 array (N, ...) in [0, 1] (``check_images``), of the per-sample shape the detector
        was fitted on when ``check_shape`` and it is fitted; each failure is a ValueError naming ``name``."""
        check_images(name, x)
        x = np.asarray(x, dtype=np.float32)
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


"""Metrics a model's steps record themselves, joined to Keras' compiled metrics so that callbacks see them.

``AdversarialModel`` logs ``loss`` (its ``loss_tracker``), ``adv_accuracy`` (accuracy on the adversarial
logits) and the defense's per-sample logs (``natural_loss``, ``mi_natural``, ...). Keras' monitor
callbacks (``EarlyStopping``, ``ReduceLROnPlateau``, ``ModelCheckpoint``) infer a monitored metric's
direction only from the compiled metrics, so ``adv_accuracy`` and the logs are compiled metrics too:
a ``Recorded`` metric ignores the compiled-metrics container's ``update_state`` (clean logits) and is
updated by the step through ``record``. ``RecordedMetricsMixin`` is the model side: the ``metrics``
order, the step's update and result, and the compile config without the recorded metrics.

The direction is Keras' private ``_direction`` attribute, set here and nowhere else (``LogMean``):
``MonitorCallback`` reads it from compiled metrics when ``mode`` is "auto", Keras' own metrics set it in
their constructors, and ``keras.metrics.Mean`` takes no direction argument.
"""

from __future__ import annotations

import warnings

import tensorflow as tf
import keras

from ._loss_reduction import unscale_loss_for_distribution

__all__ = ["AdversarialAccuracy", "LogMean", "Recorded", "RecordedMetricsMixin", "log_direction"]


class Recorded:
    """A metric that the model's step updates itself, through ``record``. It is also one of the compiled
    metrics (so that callbacks see its direction), and the compiled-metrics container calls ``update_state``
    with the clean logits at every step: that call does nothing."""

    def update_state(self, *args, **kwargs):
        return None

    def record(self, *args, **kwargs):
        """The metric's own ``update_state``."""
        return super().update_state(*args, **kwargs)


class AdversarialAccuracy(Recorded, keras.metrics.SparseCategoricalAccuracy):
    """``adv_accuracy``: sparse categorical accuracy on the adversarial logits (direction "up")."""


def log_direction(name: str) -> str | None:
    """The direction of the defense log ``name``: "up" for a name ending in ``accuracy``, "down" for a loss
    term (``*loss*``, ``*_kl``, ``*_ce``), None otherwise (a callback on it then asks for ``mode``, as for
    any metric without a direction)."""
    if name.endswith("accuracy"):
        return "up"
    if "loss" in name or name.endswith(("_kl", "_ce")):
        return "down"
    return None


class LogMean(Recorded, keras.metrics.Mean):
    """The mean of one of the defense's per-sample logs, with the direction ``log_direction(name)``.

    The direction is the ``_direction`` attribute that ``EarlyStopping``, ``ReduceLROnPlateau`` and
    ``ModelCheckpoint`` read (on compiled metrics) when ``mode`` is "auto"; Keras has no public way to set
    it on a ``Mean``. Without a direction the attribute is left unset (Keras tests ``hasattr``)."""

    def __init__(self, name: str, **kwargs):
        super().__init__(name=name, **kwargs)
        direction = log_direction(name)
        if direction is not None:
            self._direction = direction


class RecordedMetricsMixin:
    """The metric bookkeeping of a ``keras.Model`` whose steps record their own metrics; mixed in before
    ``keras.Model`` (``class AdversarialModel(RecordedMetricsMixin, keras.Model)``).

    The model sets, in its constructor, ``loss_tracker`` (a ``keras.metrics.Mean`` named "loss"),
    ``adv_accuracy_tracker`` (an ``AdversarialAccuracy``) and ``defense_log_trackers`` ({name: ``LogMean``}),
    and has a ``defense`` (named in ``compile``'s warning).
    """

    @property
    def metrics(self):
        """``loss``, the compiled metrics (on clean inputs), ``adv_accuracy``, the defense's logs, in that order.

        Keras' own loss tracker (a ``Mean`` named "loss" that ``compile`` creates and this model never
        updates) is left out: ``loss_tracker`` logs the defense's loss instead."""
        own = self._own_metrics()
        return own[:1] + self._compiled_metrics() + own[1:]

    def _own_metrics(self):
        if getattr(self, "defense_log_trackers", None) is None:     # during __init__
            return []
        return [self.loss_tracker, self.adv_accuracy_tracker, *self.defense_log_trackers.values()]

    def _compiled_metrics(self):
        """The metrics ``compile`` added (and those of sublayers), found among ``keras.Model.metrics``. The
        compiled-metrics container holds the own metrics too (``compile``); their results are the same objects'."""
        own = self._own_metrics()
        return [m for m in super().metrics if not any(m is o for o in own) and m.name != "loss"]

    def _update_metrics(self, y, logits_clean, out, loss, sample_weight, extra=None):
        """Loss tracker, compiled metrics on clean logits (none if ``logits_clean`` is None), adv_accuracy,
        defense logs (``out``: the step's ``DefenseLoss``; ``extra``: evaluation logs); returns the results."""
        self.loss_tracker.update_state(unscale_loss_for_distribution(loss), sample_weight=tf.shape(y)[0])
        if logits_clean is not None:
            self.compute_metrics(None, y, logits_clean, sample_weight=sample_weight)
        self.adv_accuracy_tracker.record(y, out.logits_adv, sample_weight=sample_weight)
        for name, value in {**out.logs, **(extra or {})}.items():
            weight = sample_weight
            if isinstance(value, tuple):         # (values, weights): a mean over a subset of the batch
                value, weight = value
                if sample_weight is not None:
                    weight = weight * tf.cast(tf.reshape(sample_weight, [-1]), weight.dtype)
            self.defense_log_trackers[name].record(value, sample_weight=weight)
        return self._metrics_result(with_compiled=logits_clean is not None)

    def _metrics_result(self, with_compiled=True):
        """``get_metrics_result``, optionally without the compiled metrics (not updated in this step)."""
        compiled = self._compiled_metrics()
        results = {}
        for metric in self.metrics:
            if with_compiled or not any(metric is c for c in compiled):
                value = metric.result()
                results.update(value if isinstance(value, dict) else {metric.name: value})
        return results

    def get_metrics_result(self):
        # With clean_train_metrics=False the compiled metrics stay unbuilt until the first validation,
        # and Keras' result() of an unbuilt compiled-metrics container raises; fit asks at every epoch end.
        return self._metrics_result(with_compiled=all(getattr(m, "built", True) for m in self._compiled_metrics()))

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """``keras.Model.compile``; a ``loss`` is not used (the defense defines the loss), so it is dropped
        with a warning.

        ``adv_accuracy`` and the defense's logs join the compiled (weighted) metrics: Keras' callbacks infer
        a monitored metric's direction from the compiled metrics only. They are updated by the steps, on
        the adversarial logits, not by the compiled-metrics container (``Recorded``); ``get_compile_config``
        records the arguments given here, without them.
        """
        if loss is not None:
            warnings.warn(f"{type(self).__name__}.compile: loss={getattr(loss, 'name', loss)!r} is ignored; the "
                          f"defense {type(self.defense).__name__} defines the training loss (cross-entropy from "
                          "logits, plus its own terms). Leave loss out.", UserWarning, stacklevel=2)
        self._user_weighted_metrics = weighted_metrics
        own = [m for m in self._own_metrics() if isinstance(m, Recorded)]
        # One output: Keras flattens a metrics dict keyed by the output name into a list all the same.
        weighted = list(keras.tree.flatten(weighted_metrics)) if weighted_metrics is not None else []
        super().compile(optimizer, None, loss_weights=loss_weights, metrics=metrics,
                        weighted_metrics=weighted + own, **kwargs)

    def get_compile_config(self):
        """``keras.Model.get_compile_config``: the arguments ``compile`` was given (optimizer, metrics, ...),
        without the own metrics ``compile`` adds; {} before ``compile``."""
        config = super().get_compile_config()
        if config:
            config["weighted_metrics"] = keras.saving.serialize_keras_object(self._user_weighted_metrics)
        return config

    def compile_from_config(self, config):
        """Compile with a ``get_compile_config`` (``keras.models.load_model`` calls this), then create the
        optimizer's variables, which ``load_model`` fills with the saved state (step count, moments)."""
        config = keras.saving.deserialize_keras_object(config)
        self.compile(**config)
        if self.built and self.optimizer is not None:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)

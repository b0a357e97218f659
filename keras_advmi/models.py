"""``AdversarialModel``: a ``keras.Model`` whose train/test steps delegate the objective to a Defense.

    robust = kam.AdversarialModel(model, defense=kam.defenses.PGD(epsilon=0.3))
    robust.compile(optimizer="adam", metrics=["accuracy"])
    robust.fit(x, y, validation_data=(xv, yv))   # history: loss, accuracy, adv_accuracy, val_adv_accuracy, ...

The wrapped model must output logits. The defense defines the training loss (cross-entropy from
logits, as in each paper), so ``compile`` takes no ``loss`` (one given is dropped with a warning);
compiled metrics are computed on clean inputs, ``adv_accuracy`` on adversarial ones.
``robust.export("models/robust/1")`` is ``kam.export(robust, ...)``: TF Serving's SavedModel.

Only public Keras APIs: the loss is logged by the model's own ``loss_tracker`` (a ``keras.metrics.Mean``
listed first in ``metrics``), the compiled metrics are found in ``keras.Model.metrics``, and the
``tf.distribute`` loss scaling is computed from the strategy's ``num_replicas_in_sync``.

Keras' contracts hold: ``robust.save("m.keras")`` then ``keras.models.load_model("m.keras")`` gives a compiled
model with the optimizer's state (``get_compile_config`` / ``compile_from_config``), so ``fit`` continues where it
stopped; ``adv_accuracy`` and the defense's loss-like logs are compiled metrics with a direction, so
``EarlyStopping`` / ``ReduceLROnPlateau`` / ``ModelCheckpoint`` on them need no ``mode``.
"""

from __future__ import annotations

import inspect
import logging
import warnings

import numpy as np
import tensorflow as tf
import keras

from . import _multiworker
from ._checks import check_bool, check_labels, invalid
from ._defense import Defense, apply_if
from ._model import check_model_images
from .export import export as _export
from .export._checks import check_input_signature, input_shape_of_export

logger = logging.getLogger(__name__)


def _replicas():
    """The number of replicas the current ``tf.distribute`` strategy runs in sync (1 without one)."""
    return tf.distribute.get_strategy().num_replicas_in_sync


def scale_loss_for_distribution(loss):
    """``loss`` / replicas: each replica's share of the global mean, as Keras scales its own losses, so that the
    optimizer's sum of the replicas' gradients is the gradient of the global mean."""
    replicas = _replicas()
    return loss * tf.cast(1.0 / replicas, loss.dtype) if replicas > 1 else loss


def unscale_loss_for_distribution(loss):
    """The inverse of ``scale_loss_for_distribution``: the per-replica mean, for logging."""
    replicas = _replicas()
    return loss * tf.cast(replicas, loss.dtype) if replicas > 1 else loss


def _sparse_labels(y):
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and (y.shape[-1] is None or y.shape[-1] > 1):
        return tf.argmax(y, axis=-1, output_type=tf.int64)
    return tf.cast(tf.reshape(y, [-1]), tf.int64)


def _takes_step(defense):
    """Whether ``defense.loss`` accepts ``step`` (the current protocol); warns when it does not."""
    parameters = inspect.signature(defense.loss).parameters
    if "step" in parameters or any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        return True
    warnings.warn(f"{type(defense).__name__}.loss(model, x, y, x_adv, training) takes no `step`: the Defense "
                  "protocol now passes the optimizer step, loss(model, x, y, x_adv, training, step=None); add the "
                  "argument (it is passed None outside training).", DeprecationWarning, stacklevel=3)
    return False


class _Recorded:
    """A metric that ``AdversarialModel`` updates itself, through ``record``. It is also one of the compiled
    metrics (so that callbacks see its direction), and the compiled-metrics container calls ``update_state``
    with the clean logits at every step: that call does nothing."""

    def update_state(self, *args, **kwargs):
        return None

    def record(self, *args, **kwargs):
        """The metric's own ``update_state``."""
        return super().update_state(*args, **kwargs)


class _AdversarialAccuracy(_Recorded, keras.metrics.SparseCategoricalAccuracy):
    """``adv_accuracy``: sparse categorical accuracy on the adversarial logits (direction "up")."""


class _LogMean(_Recorded, keras.metrics.Mean):
    """The mean of one of the defense's per-sample logs."""


def _log_tracker(name):
    """The ``Mean`` of the defense log ``name``, with the direction Keras' monitor callbacks read: "up" for a
    name ending in ``accuracy``, "down" for a loss term (``*loss*``, ``*_kl``, ``*_ce``), none otherwise (a
    callback on it then asks for ``mode``, as for any metric without a direction).

    The direction is the ``_direction`` attribute that Keras' own metrics set in their constructors and that
    ``EarlyStopping``, ``ReduceLROnPlateau`` and ``ModelCheckpoint`` read (on compiled metrics) when ``mode``
    is "auto"; ``keras.metrics.Mean`` takes no direction argument, so it is set here, in this one place.
    """
    tracker = _LogMean(name=name)
    if name.endswith("accuracy"):
        tracker._direction = "up"
    elif "loss" in name or name.endswith(("_kl", "_ce")):
        tracker._direction = "down"
    return tracker


@keras.saving.register_keras_serializable(package="keras_advmi")
class AdversarialModel(keras.Model):
    """Wrap ``model`` (logits out) so that ``fit`` trains it with ``defense``.

    Args:
      model: a built Keras model mapping images (N, H, W, C) in [0, 1] to logits (N, classes).
      defense: a ``kam.defenses.Defense`` (PGD, TRADES, MART, FastAT, ...).
      clean_train_metrics: compute the compiled metrics (e.g. ``accuracy``) on clean inputs during
        training too. That takes one more forward pass per batch, unless the defense made one anyway
        (TRADES, MART; its cost is in docs/results.md). ``False`` skips the pass; training then logs
        ``loss``, ``adv_accuracy`` and the defense's logs, and validation still reports every metric.

    ``train_step``: x_adv = defense.adversarial_examples(model, x, y) -> per-sample defense loss ->
    weighted mean -> ``optimizer.apply``. ``test_step``: clean metrics, ``adv_accuracy`` under the
    defense's evaluation attack (PGD at full epsilon) and the defense's logs, side by side.
    Works under ``tf.distribute`` strategies and with ``jit_compile``.
    """

    def __init__(self, model: keras.Model, defense: Defense, clean_train_metrics: bool = True, **kwargs):
        super().__init__(**kwargs)
        if not isinstance(model, keras.Model):
            raise invalid("model", "a keras.Model that outputs logits", type(model).__name__)
        if not isinstance(defense, Defense):
            raise invalid("defense", "a kam.defenses.Defense instance, e.g. kam.defenses.PGD(epsilon=0.3)", defense)
        if model.outputs is not None and len(model.outputs) != 1:
            raise invalid("model", "a model with a single logits output", f"{len(model.outputs)} outputs")
        self.clean_train_metrics = check_bool("clean_train_metrics", clean_train_metrics)
        self.model = model
        self.defense = defense
        defense.build(model)
        self.defense_layers = list(defense.sublayers())
        self._loss_takes_step = _takes_step(defense)
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.adv_accuracy_tracker = _AdversarialAccuracy(name="adv_accuracy")
        names = tuple(defense.log_names) + tuple(defense.evaluation_log_names)
        self.defense_log_trackers = {name: _log_tracker(name) for name in names}
        self._seed = defense.seed if defense.seed is not None else int(np.random.default_rng().integers(2**31 - 1))
        if model.built:
            self.built = True

    # -- Keras plumbing -----------------------------------------------------------------------------
    @property
    def trainable_weights(self):
        """The wrapped model's trainable weights, the ones ``fit``'s optimizer trains. A defense's own layers
        (MIAT's estimators) are trained by the defense with its own optimizer, so they are left out here
        (and out of the optimizer's state) even when their layers are trainable."""
        return self.model.trainable_weights if self.trainable else []

    @property
    def trainable_variables(self):
        return self.trainable_weights

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

    def call(self, inputs, training=None):
        return self.model(inputs, training=training)

    def build(self, input_shape):
        if not self.model.built:
            self.model.build(input_shape)
        self.built = True

    @property
    def num_classes(self):
        return int(self.model.outputs[0].shape[-1]) if self.model.outputs else None

    def _step_seed(self, stream):
        """Stateless seed (2,) distinct per optimizer step, replica and stream (train 0 / test 1)."""
        replica = tf.distribute.get_replica_context()
        replica_id = replica.replica_id_in_sync_group if replica is not None else 0
        step = tf.cast(self.optimizer.iterations, tf.int64) if self.optimizer is not None else tf.constant(0, tf.int64)
        return tf.stack([tf.constant(self._seed, tf.int64) + tf.cast(replica_id, tf.int64) * 7919,
                         step * 2 + stream])

    def _weighted_mean(self, per_sample, sample_weight):
        per_sample = tf.cast(per_sample, tf.float32)
        if sample_weight is not None:
            per_sample = per_sample * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        # Keras' "sum_over_batch_size" reduction, then the tf.distribute scaling Keras' own losses use.
        loss = tf.reduce_sum(per_sample) / tf.cast(tf.shape(per_sample)[0], tf.float32)
        if self.model.losses:
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses])
        return scale_loss_for_distribution(loss)

    def _update_metrics(self, y, logits_clean, out, loss, sample_weight, extra=None):
        """Loss tracker, compiled metrics on clean logits (none if ``logits_clean`` is None), adv_accuracy,
        defense logs; returns the results."""
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

    # -- steps --------------------------------------------------------------------------------------
    def _defense_loss(self, x, y, x_adv, training, step):
        """``defense.loss(model, x, y, x_adv, training=..., step=...)``; without ``step`` for a defense written
        before the protocol carried it (a ``DeprecationWarning`` at construction)."""
        if self._loss_takes_step:
            return self.defense.loss(self.model, x, y, x_adv, training=training, step=step)
        return self.defense.loss(self.model, x, y, x_adv, training=training)

    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        y = _sparse_labels(y)
        with self.defense.attack_precision(self.model):
            step = self.optimizer.iterations
            x_adv = self.defense.in_chains(
                lambda x_, y_, seed: self.defense.adversarial_examples(self.model, x_, y_, seed=seed, step=step),
                x, y, self._step_seed(0))
        weights = self.model.trainable_weights
        with tf.GradientTape() as tape:
            out = self._defense_loss(x, y, x_adv, training=True, step=step)
            loss = self._weighted_mean(out.per_sample, sample_weight)
            scaled = self.optimizer.scale_loss(loss)
        grads = tape.gradient(scaled, weights)
        if out.train_model is None:
            self.optimizer.apply(grads, weights)
        else:    # a phase in which the model is frozen (MIAT's estimator pretraining)
            apply_if(out.train_model, self.optimizer, grads, weights)
        for optimizer, defense_grads, variables, gate in out.updates:    # the defense's own training
            if gate is None:
                optimizer.apply(defense_grads, variables)
            else:
                apply_if(gate, optimizer, defense_grads, variables)
        logits_clean = None
        if self.clean_train_metrics:
            logits_clean = out.logits_clean if out.logits_clean is not None else self.model(x, training=False)
        results = self._update_metrics(y, logits_clean, out, loss, sample_weight)
        return _multiworker.logs_for_reduction(
            {k: v for k, v in results.items() if k not in self.defense.evaluation_log_names})

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        y = _sparse_labels(y)
        seed = self._step_seed(1)
        logits_clean = self.model(x, training=False)
        x_adv = self.defense.in_chains(
            lambda x_, y_, seed_: self.defense.evaluation_examples(self.model, x_, y_, seed=seed_), x, y, seed)
        out = self._defense_loss(x, y, x_adv, training=False, step=None)
        extra = self.defense.evaluation_logs(self.model, x, y, seed=seed)
        loss = self._weighted_mean(out.per_sample, sample_weight)
        return _multiworker.logs_for_reduction(self._update_metrics(y, logits_clean, out, loss, sample_weight, extra))

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Multi-worker hook, the one override of a private Keras method: Keras' own reduces a whole batch
        # across workers and fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); this worker's
        # first replica's batch is built on instead. keras_advmi/_multiworker.py explains; drop when fixed.
        batch = _multiworker.symbolic_build_batch(self.distribute_strategy, iterator)
        if batch is not None:
            iterator, data_batch = None, batch
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

    def compile(self, optimizer="rmsprop", loss=None, loss_weights=None, metrics=None, weighted_metrics=None,
                **kwargs):
        """``keras.Model.compile``; a ``loss`` is not used (the defense defines the loss), so it is dropped
        with a warning.

        ``adv_accuracy`` and the defense's logs join the compiled (weighted) metrics: Keras' callbacks infer
        a monitored metric's direction from the compiled metrics only. They are updated by the steps, on
        the adversarial logits, not by the compiled-metrics container (``_Recorded``); ``get_compile_config``
        records the arguments given here, without them.
        """
        if loss is not None:
            warnings.warn(f"AdversarialModel.compile: loss={getattr(loss, 'name', loss)!r} is ignored; the "
                          f"defense {type(self.defense).__name__} defines the training loss (cross-entropy from "
                          "logits, plus its own terms). Leave loss out.", UserWarning, stacklevel=2)
        self._user_weighted_metrics = weighted_metrics
        own = [m for m in self._own_metrics() if isinstance(m, _Recorded)]
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

    def export(self, filepath, format="tf_saved_model", verbose=None, input_signature=None, *, detector=None,
               metadata: dict | None = None, overwrite: bool = False, **kwargs):
        """``keras.Model.export`` with TF Serving's SavedModel: the arguments of Keras' method, in its order.

        ``format="tf_saved_model"`` writes ``kam.export(self, filepath, detector, metadata, overwrite)``: an
        atomic SavedModel directory at ``filepath`` (any directory; ``BASE/NAME/VERSION`` to serve it) with
        ``serving_default`` (probabilities, class ids), ``detect`` with a detector, and ``assets.extra/``
        (metadata, TF Serving warm-up requests); returns its path. ``input_signature`` may be None or one
        float32 spec of shape (None, *input_shape); ``verbose`` is accepted (the path is logged).
        ``"onnx"``, ``"openvino"``, ``"litert"`` and ``"torch"`` are Keras' formats: the wrapped logits
        network ``self.model`` is exported by ``keras.Model.export`` (``detector``/``metadata`` refused).
        """
        keras_formats = ("onnx", "openvino", "litert", "torch")
        if format in keras_formats:
            for name, value in (("detector", detector), ("metadata", metadata)):
                if value is not None:
                    raise invalid(name, f"None with format={format!r} (only the 'tf_saved_model' export "
                                        f"carries a detector and metadata)", type(value).__name__)
            return self.model.export(filepath, format=format, verbose=verbose, input_signature=input_signature,
                                     **kwargs)
        if format != "tf_saved_model":
            raise invalid("format", f"one of {['tf_saved_model', *keras_formats]}", format)
        if kwargs:
            raise TypeError(f"export() got unexpected keyword arguments {sorted(kwargs)} for "
                            f"format='tf_saved_model'")
        if verbose is not None and not isinstance(verbose, (bool, int)):
            raise invalid("verbose", "None or a bool", verbose)
        check_input_signature(input_signature, input_shape_of_export(self.model, self))
        return _export(self, filepath, detector=detector, metadata=metadata, overwrite=overwrite)

    # -- input checks for in-memory data ------------------------------------------------------------
    def _check_arrays(self, x, y, name_x="x", name_y="y"):
        """In-memory images and labels (a dataset or generator is left to Keras): ``check_model_images`` and
        ``check_labels``."""
        if isinstance(x, np.ndarray) or isinstance(x, (list, tuple)):
            arr = check_model_images(self.model, x, name_x)
            if y is not None:
                check_labels(name_y, y, n=len(arr), num_classes=self.num_classes)

    def _prebuild(self, x, y):
        """Create the optimizer's and the compiled metrics' variables before ``fit`` traces its step.

        Without a distribution strategy Keras creates them during the first trace of the train function, and
        a ``tf.function`` that creates variables is traced twice (costly for MIAT's large graph). Metrics are
        built on two samples and reset (fit resets them anyway).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        unbuilt = [m for m in self._compiled_metrics() if not getattr(m, "built", True)]
        if unbuilt and isinstance(x, np.ndarray) and y is not None and len(x):
            xb = tf.constant(np.asarray(x[:2], np.float32))
            self.compute_metrics(xb, _sparse_labels(np.asarray(y)[:2]), self.model(xb, training=False))
            for metric in self.metrics:
                metric.reset_state()

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
        if not self.compiled:   # Keras raises its own "You must call `compile()`" error
            return super().fit(x, y, *args, validation_data=validation_data, **kwargs)
        self.defense.check_ready(self.model)
        extra = list(self.defense.fit_callbacks())
        if extra:   # after the user's callbacks, so that BackupAndRestore has restored the state they read
            if len(args) > 3:   # callbacks passed positionally (batch_size, epochs, verbose, callbacks, ...)
                args = args[:3] + (list(args[3] or []) + extra,) + args[4:]
            else:
                kwargs["callbacks"] = list(kwargs.get("callbacks") or []) + extra
        self._check_arrays(x, y)
        if isinstance(validation_data, (tuple, list)) and len(validation_data) >= 2:
            self._check_arrays(validation_data[0], validation_data[1], "validation_data[0]", "validation_data[1]")
        self._prebuild(x, y)
        return super().fit(x, y, *args, validation_data=validation_data, **kwargs)

    def evaluate(self, x=None, y=None, *args, **kwargs):
        self._check_arrays(x, y)
        return super().evaluate(x, y, *args, **kwargs)

    # -- serialization ------------------------------------------------------------------------------
    def get_config(self):
        return {"name": self.name, "model": keras.saving.serialize_keras_object(self.model),
                "defense": keras.saving.serialize_keras_object(self.defense),
                "clean_train_metrics": self.clean_train_metrics}

    @classmethod
    def from_config(cls, config, custom_objects=None):
        model = keras.saving.deserialize_keras_object(config.pop("model"), custom_objects=custom_objects)
        defense = keras.saving.deserialize_keras_object(config.pop("defense"), custom_objects=custom_objects)
        return cls(model, defense, **config)

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
``EarlyStopping`` / ``ReduceLROnPlateau`` / ``ModelCheckpoint`` on them need no ``mode``
(``_recorded_metrics``: those metrics, their direction and the compile config). The defense's per-sample
loss is reduced as Keras' losses are (``_loss_reduction``).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import keras

from . import _multiworker
from ._checks import check_bool, check_labels, invalid
from ._defense import Defense, apply_if
from ._loss_reduction import sparse_labels, weighted_mean
from ._model import check_model_images
from ._recorded_metrics import AdversarialAccuracy, LogMean, RecordedMetricsMixin
from .export import export as _export
from .export._checks import check_input_signature, input_shape_of_export

logger = logging.getLogger(__name__)


@keras.saving.register_keras_serializable(package="keras_advmi")
class AdversarialModel(RecordedMetricsMixin, keras.Model):
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
        self.loss_tracker = keras.metrics.Mean(name="loss")
        self.adv_accuracy_tracker = AdversarialAccuracy(name="adv_accuracy")
        names = tuple(defense.log_names) + tuple(defense.evaluation_log_names)
        self.defense_log_trackers = {name: LogMean(name) for name in names}
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

    # -- steps --------------------------------------------------------------------------------------
    def train_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        y = sparse_labels(y)
        with self.defense.attack_precision(self.model):
            step = self.optimizer.iterations
            x_adv = self.defense.in_chains(
                lambda x_, y_, seed: self.defense.adversarial_examples(self.model, x_, y_, seed=seed, step=step),
                x, y, self._step_seed(0))
        weights = self.model.trainable_weights
        with tf.GradientTape() as tape:
            out = self.defense.loss(self.model, x, y, x_adv, training=True, step=step)
            loss = weighted_mean(out.per_sample, sample_weight, self.model.losses)
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
        logits_clean = self._clean_logits(out, x) if self.clean_train_metrics else None
        results = self._update_metrics(y, logits_clean, out, loss, sample_weight)
        return _multiworker.logs_for_reduction(
            {k: v for k, v in results.items() if k not in self.defense.evaluation_log_names})

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        y = sparse_labels(y)
        seed = self._step_seed(1)
        x_adv = self.defense.in_chains(
            lambda x_, y_, seed_: self.defense.evaluation_examples(self.model, x_, y_, seed=seed_), x, y, seed)
        out = self.defense.loss(self.model, x, y, x_adv, training=False, step=None)
        logits_clean = self._clean_logits(out, x)
        extra = self.defense.evaluation_logs(self.model, x, y, seed=seed)
        loss = weighted_mean(out.per_sample, sample_weight, self.model.losses)
        return _multiworker.logs_for_reduction(self._update_metrics(y, logits_clean, out, loss, sample_weight, extra))

    def _clean_logits(self, out, x):
        """The logits of x for the compiled metrics: those the defense computed anyway (``out.logits_clean``:
        TRADES, MART, MIAT, ...), else one inference-mode forward pass."""
        return out.logits_clean if out.logits_clean is not None else self.model(x, training=False)

    def _maybe_symbolic_build(self, iterator=None, data_batch=None):
        # Multi-worker hook, the one override of a private Keras method: Keras' own reduces a whole batch
        # across workers and fails under MultiWorkerMirroredStrategy (keras-team/keras#20585); this worker's
        # first replica's batch is built on instead. keras_advmi/_multiworker.py explains; drop when fixed.
        batch = _multiworker.symbolic_build_batch(self.distribute_strategy, iterator)
        if batch is not None:
            iterator, data_batch = None, batch
        return super()._maybe_symbolic_build(iterator=iterator, data_batch=data_batch)

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
            self.compute_metrics(xb, sparse_labels(np.asarray(y)[:2]), self.model(xb, training=False))
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

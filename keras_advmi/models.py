"""``AdversarialModel``: a ``keras.Model`` whose train/test steps delegate the objective to a Defense.

    robust = kam.AdversarialModel(model, defense=kam.defenses.PGD(epsilon=0.3))
    robust.compile(optimizer="adam", metrics=["accuracy"])
    robust.fit(x, y, validation_data=(xv, yv))   # history: loss, accuracy, adv_accuracy, val_adv_accuracy, ...

The wrapped model must output logits. The defense defines the training loss (cross-entropy from
logits, as in each paper), so ``compile`` takes no ``loss`` (one given is dropped with a warning);
compiled metrics are computed on clean inputs, ``adv_accuracy`` on adversarial ones.
``robust.export("models/robust/1")`` is ``kam.export(robust, ...)``: TF Serving's SavedModel.
"""

from __future__ import annotations

import logging
import warnings

import numpy as np
import tensorflow as tf
import keras

from ._checks import check_bool, check_images, check_labels, invalid
from .defenses.base import Defense, apply_if

logger = logging.getLogger(__name__)


def _sparse_labels(y):
    y = tf.convert_to_tensor(y)
    if y.shape.rank == 2 and (y.shape[-1] is None or y.shape[-1] > 1):
        return tf.argmax(y, axis=-1, output_type=tf.int64)
    return tf.cast(tf.reshape(y, [-1]), tf.int64)


@keras.saving.register_keras_serializable(package="keras_advmi")
class AdversarialModel(keras.Model):
    """Wrap ``model`` (logits out) so that ``fit`` trains it with ``defense``.

    Args:
      model: a built Keras model mapping images (N, H, W, C) in [0, 1] to logits (N, classes).
      defense: a ``kam.defenses.Defense`` (PGD, TRADES, MART, FastAT, ...).
      clean_train_metrics: compute the compiled metrics (e.g. ``accuracy``) on clean inputs during
        training too. That takes one more forward pass per batch, unless the defense made one anyway
        (TRADES, MART): measured on Madry's MNIST CNN, ~3% of a PGD-10 step and ~15% of a FastAT step.
        ``False`` skips the pass; training then logs ``loss``, ``adv_accuracy`` and the defense's logs,
        and validation still reports every metric.

    ``train_step``: x_adv = defense.adversarial_examples(model, x, y) -> per-sample defense loss ->
    weighted mean -> ``optimizer.apply``. ``test_step``: clean metrics, ``adv_accuracy`` under the
    defense's evaluation attack (PGD at full epsilon) and the defense's logs, side by side.
    Works under ``tf.distribute`` strategies and with ``jit_compile``.
    """

    def __init__(self, model, defense, clean_train_metrics=True, **kwargs):
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
        self.adv_accuracy_tracker = keras.metrics.SparseCategoricalAccuracy(name="adv_accuracy")
        names = tuple(defense.log_names) + tuple(defense.evaluation_log_names)
        self.defense_log_trackers = {name: keras.metrics.Mean(name=name) for name in names}
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

    def _weighted_mean(self, per_sample, sample_weight):
        per_sample = tf.cast(per_sample, tf.float32)
        if sample_weight is not None:
            per_sample = per_sample * tf.cast(tf.reshape(sample_weight, [-1]), tf.float32)
        # Keras' "sum_over_batch_size" reduction, then the tf.distribute scaling Keras' own losses use.
        loss = tf.reduce_sum(per_sample) / tf.cast(tf.shape(per_sample)[0], tf.float32)
        if self.model.losses:
            loss = loss + tf.add_n([tf.cast(l, tf.float32) for l in self.model.losses])
        return keras.src.losses.loss.scale_loss_for_distribution(loss)

    def _update_metrics(self, y, logits_clean, out, loss, sample_weight, extra=None):
        """Loss tracker, compiled metrics on clean logits (none if ``logits_clean`` is None), adv_accuracy,
        defense logs; returns the results."""
        self._loss_tracker.update_state(keras.src.losses.loss.unscale_loss_for_distribution(loss),
                                        sample_weight=tf.shape(y)[0])
        if logits_clean is not None:
            self.compute_metrics(None, y, logits_clean, sample_weight=sample_weight)
        self.adv_accuracy_tracker.update_state(y, out.logits_adv, sample_weight=sample_weight)
        for name, value in {**out.logs, **(extra or {})}.items():
            weight = sample_weight
            if isinstance(value, tuple):         # (values, weights): a mean over a subset of the batch
                value, weight = value
                if sample_weight is not None:
                    weight = weight * tf.cast(tf.reshape(sample_weight, [-1]), weight.dtype)
            self.defense_log_trackers[name].update_state(value, sample_weight=weight)
        return self._metrics_result(with_compiled=logits_clean is not None)

    def _metrics_result(self, with_compiled=True):
        """``get_metrics_result``, optionally without the compiled metrics (not updated in this step)."""
        results = {}
        for metric in self.metrics:
            if metric is not self._compile_metrics or with_compiled:
                value = metric.result()
                results.update(value if isinstance(value, dict) else {metric.name: value})
        return results

    def get_metrics_result(self):
        # With clean_train_metrics=False the compiled metrics stay unbuilt until the first validation,
        # and Keras' result() of an unbuilt CompileMetrics raises; fit asks for it at every epoch end.
        compiled = getattr(self, "_compile_metrics", None)
        return self._metrics_result(with_compiled=compiled is None or compiled.built)

    # -- steps --------------------------------------------------------------------------------------
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
            out = self.defense.loss(self.model, x, y, x_adv, training=True)
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
        return {k: v for k, v in results.items() if k not in self.defense.evaluation_log_names}

    def test_step(self, data):
        x, y, sample_weight = keras.utils.unpack_x_y_sample_weight(data)
        x = tf.cast(x, tf.float32)
        y = _sparse_labels(y)
        seed = self._step_seed(1)
        logits_clean = self.model(x, training=False)
        x_adv = self.defense.in_chains(
            lambda x_, y_, seed_: self.defense.evaluation_examples(self.model, x_, y_, seed=seed_), x, y, seed)
        out = self.defense.loss(self.model, x, y, x_adv, training=False)
        extra = self.defense.evaluation_logs(self.model, x, y, seed=seed)
        loss = self._weighted_mean(out.per_sample, sample_weight)
        return self._update_metrics(y, logits_clean, out, loss, sample_weight, extra)

    def compile(self, optimizer="rmsprop", loss=None, *args, **kwargs):
        """``keras.Model.compile``; a ``loss`` is not used (the defense defines the loss), so it is dropped
        with a warning."""
        if loss is not None:
            warnings.warn(f"AdversarialModel.compile: loss={getattr(loss, 'name', loss)!r} is ignored; the "
                          f"defense {type(self.defense).__name__} defines the training loss (cross-entropy from "
                          "logits, plus its own terms). Leave loss out.", UserWarning, stacklevel=2)
        super().compile(optimizer, None, *args, **kwargs)

    def export(self, filepath, detector=None, metadata=None, overwrite=False, format="tf_saved_model", verbose=None):
        """``kam.export(self, filepath, detector, metadata, overwrite)``: an atomic TF-Serving SavedModel at
        ``BASE/NAME/VERSION`` (``serving_default``, ``detect`` with a detector, metadata asset); returns its path.

        Replaces ``keras.Model.export``, which cannot trace this wrapper; ``format`` must be
        ``"tf_saved_model"`` (for other formats export ``robust.model``); ``verbose`` is accepted and unused.
        """
        if format != "tf_saved_model":
            raise invalid("format", "'tf_saved_model' (AdversarialModel.export writes TF Serving's SavedModel; "
                                    "for other formats call robust.model.export)", format)
        from .export import export

        return export(self, filepath, detector=detector, metadata=metadata, overwrite=overwrite)

    # -- input checks for in-memory data ------------------------------------------------------------
    def _check_arrays(self, x, y, name_x="x", name_y="y"):
        if isinstance(x, np.ndarray) or (isinstance(x, (list, tuple)) and not isinstance(x, tf.data.Dataset)):
            arr = np.asarray(x)
            check_images(name_x, arr)
            expected = tuple(self.model.inputs[0].shape[1:]) if self.model.inputs else None
            if expected is not None and tuple(arr.shape[1:]) != expected:
                raise invalid(name_x, f"inputs of shape (N, {', '.join(str(d) for d in expected)})",
                              f"array of shape {arr.shape}")
            if arr.size and (arr.min() < 0 or arr.max() > 1):
                raise invalid(name_x, "pixel values in [0, 1] (epsilon is in that scale)",
                              f"values in [{arr.min():.3g}, {arr.max():.3g}]")
            if y is not None:
                check_labels(name_y, y, n=len(arr), num_classes=self.num_classes)

    def _prebuild(self, x, y):
        """Create the optimizer's and the compiled metrics' variables before ``fit`` traces its step.

        Without a distribution strategy Keras creates them during the first trace of the train function, and
        a ``tf.function`` that creates variables is traced twice (measured: MIAT on digits, 2 traces, 90 s of
        a 117 s first epoch under load). Metrics are built on two samples and reset (fit resets them anyway).
        """
        if self.optimizer is not None and not self.optimizer.built:
            with self.distribute_strategy.scope():
                self.optimizer.build(self.trainable_variables)
        compiled = getattr(self, "_compile_metrics", None)
        if compiled is not None and not compiled.built and isinstance(x, np.ndarray) and y is not None and len(x):
            xb = tf.constant(np.asarray(x[:2], np.float32))
            self.compute_metrics(xb, _sparse_labels(np.asarray(y)[:2]), self.model(xb, training=False))
            for metric in self.metrics:
                metric.reset_state()

    def fit(self, x=None, y=None, *args, validation_data=None, **kwargs):
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

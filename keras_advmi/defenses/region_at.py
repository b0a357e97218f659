"""Region adversarial training, RAT (P3: "Improving adversarial robustness of DNNs by using semantic
information", arXiv 2008.07838) [U].

Fine-tune an existing model on a small subset (``data_fraction``, default 10%) with

    loss = CE(f(x), y) + CE(f(clip01(x + delta_t)), y),   t ~ U({0..C-1} \\ {y}) per sample and step,

where delta_t is the targeted universal perturbation of class t (``attacks.universal``) computed on
the subset against the current model and recomputed every ``refresh`` epochs. The per-class deltas
(C, H, W, channels) are non-trainable state owned by the defense (``sublayers()``), so they are saved
with the ``AdversarialModel``.

Refresh mechanism (a choice): the deltas depend on the training subset, which the Defense protocol
never sees (``train_step`` only gets batches), so a Keras callback recomputes them:
``robust.fit(xs, ys, callbacks=[defense.refresh_callback(xs, ys)])``. ``RegionAT.finetune`` wires it
for you. Without the callback the deltas stay zero and the loss is 2 x CE(f(x), y); the logged
``delta_linf`` (max |delta|) is then 0, which makes the omission visible in the history.
"""

from __future__ import annotations

import logging
import time

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_fraction, check_images, check_labels, check_positive_int, invalid
from ..attacks._common import cross_entropy, logits_of, seed_pair
from ..attacks.universal import fooling_rates, universal_perturbations
from .base import Defense, DefenseLoss, serializable

logger = logging.getLogger(__name__)


class RegionDeltas(keras.layers.Layer):
    """Holds the per-class universal perturbations (classes, *input_shape) as a non-trainable weight."""

    def __init__(self, input_shape, classes, **kwargs):
        super().__init__(**kwargs)
        self.delta_shape = (int(classes),) + tuple(int(d) for d in input_shape)
        self.deltas = self.add_weight(shape=self.delta_shape, initializer="zeros", trainable=False, name="deltas",
                                      aggregation="only_first_replica")
        self.refreshes = self.add_weight(shape=(), initializer="zeros", trainable=False, name="refreshes",
                                         dtype="int32", aggregation="only_first_replica")
        self.built = True

    def call(self, targets):
        return tf.gather(self.deltas, targets)

    def get_config(self):
        return {**super().get_config(), "input_shape": self.delta_shape[1:], "classes": self.delta_shape[0]}


class RegionRefresh(keras.callbacks.Callback):
    """Recompute a ``RegionAT``'s deltas on (x, y) at the start of training and every ``refresh`` epochs.

    Adds ``region_fooling_rate`` (mean over targets of the fresh deltas' fooling rate on x) to the
    epoch logs of refresh epochs.
    """

    def __init__(self, defense, x, y):
        super().__init__()
        if not isinstance(defense, RegionAT):
            raise invalid("defense", "a RegionAT instance", type(defense).__name__)
        check_images("x", x)
        self.defense, self.x = defense, np.asarray(x, np.float32)
        self.y = check_labels("y", y, n=len(self.x))
        self._first_epoch = None
        self._last_rate = None

    def _net(self):
        return getattr(self.model, "model", self.model)

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._last_rate = None
        if (epoch - self._first_epoch) % self.defense.refresh == 0:
            deltas = self.defense.refresh_deltas(self._net(), self.x, self.y)
            self._last_rate = float(np.mean(fooling_rates(self._net(), self.x, self.y, deltas)))
            logger.info("RegionAT: deltas refreshed at epoch %d, fooling rate on the subset %.3f", epoch + 1,
                        self._last_rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._last_rate is not None:
            logs["region_fooling_rate"] = self._last_rate


@serializable
class RegionAT(Defense):
    """RAT fine-tuning with per-class targeted universal perturbations (P3) [U].

    Args:
      epsilon: L-inf radius of the universal perturbations (and of the PGD evaluation attack).
      data_fraction: share of the training data ``finetune`` uses, in (0, 1] (P3: "a very small dataset").
      refresh: recompute the deltas every ``refresh`` epochs (int >= 1).
      universal_steps, universal_step_size, boundary_fraction, universal_batch_size: passed to
        ``attacks.universal_perturbations`` (step default 2.5 * eps / steps).
      seed: seeds the subset draw, the target draws and the universal perturbations.
      **kwargs: ``Defense`` arguments (``steps``/``step_size``/``eval_steps`` of the PGD used for
        ``adv_accuracy`` in validation).
    Logs ``natural_loss`` (CE on x), ``region_loss`` (CE on x + delta_t) and ``delta_linf``.
    """

    name = "region_at"
    log_names = ("natural_loss", "region_loss", "delta_linf")

    def __init__(self, epsilon=0.3, data_fraction=0.1, refresh=1, universal_steps=40, universal_step_size=None,
                 boundary_fraction=0.5, universal_batch_size=256, **kwargs):
        super().__init__(epsilon, **kwargs)
        self.data_fraction = check_fraction("data_fraction", data_fraction, low_open=True)
        self.refresh = check_positive_int("refresh", refresh)
        self.universal_steps = check_positive_int("universal_steps", universal_steps)
        if universal_step_size is not None:
            universal_step_size = check_fraction("universal_step_size", universal_step_size, 0.0, float("inf"),
                                                 low_open=True)
        self.universal_step_size = universal_step_size
        self.boundary_fraction = check_fraction("boundary_fraction", boundary_fraction, low_open=True)
        self.universal_batch_size = check_positive_int("universal_batch_size", universal_batch_size)
        self._state = None

    # -- protocol -----------------------------------------------------------------------------------
    def build(self, model):
        if not model.inputs or not model.outputs:
            raise invalid("model", "a built model with known input and output shapes", type(model).__name__)
        input_shape = tuple(model.inputs[0].shape[1:])
        classes = int(model.outputs[0].shape[-1])
        if None in input_shape:
            raise invalid("model", "a fixed input shape (the deltas have the input's shape)", input_shape)
        if classes < 2:
            raise invalid("model", "at least 2 output classes", classes)
        if self._state is None or self._state.delta_shape != (classes,) + input_shape:
            self._state = RegionDeltas(input_shape, classes, name="region_deltas")

    def sublayers(self):
        return [self._state] if self._state is not None else []

    @property
    def deltas(self):
        """The current per-class deltas as a NumPy array (classes, ...)."""
        self._require_built()
        return self._state.deltas.numpy()

    def _require_built(self):
        if self._state is None:
            raise RuntimeError("RegionAT is not built: wrap a model with kam.AdversarialModel(model, defense) "
                               "or call defense.build(model) first.")

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """x + delta_t with t drawn uniformly among the classes != y (seeded), clipped to [0, 1]."""
        self._require_built()
        classes = self._state.delta_shape[0]
        y = tf.cast(y, tf.int32)
        offset = tf.random.stateless_uniform(tf.shape(y), seed_pair(seed, stream=17), 1, classes, dtype=tf.int32)
        delta = tf.gather(self._state.deltas, tf.math.floormod(y + offset, classes))
        if self.epsilon_warmup_steps and step is not None:
            delta = delta * (self.current_epsilon(step) / max(self.epsilon, 1e-12))
        return tf.stop_gradient(tf.clip_by_value(x + delta, 0.0, 1.0))

    def loss(self, model, x, y, x_adv, training):
        logits_clean = logits_of(model, x, training=training)
        logits_adv = logits_of(model, x_adv, training=training)
        natural = cross_entropy(y, logits_clean)
        region = cross_entropy(y, logits_adv)
        delta_linf = tf.fill(tf.shape(natural), tf.reduce_max(tf.abs(self._state.deltas)))
        logs = {"natural_loss": natural, "region_loss": region, "delta_linf": delta_linf}
        return DefenseLoss(natural + region, logs, logits_adv, logits_clean)

    # -- refresh --------------------------------------------------------------------------------------
    def refresh_deltas(self, model, x, y):
        """Recompute every class's universal perturbation on (x, y) against ``model``; returns them (NumPy)."""
        self._require_built()
        model = getattr(model, "model", model) if getattr(model, "defense", None) is not None else model
        count = int(self._state.refreshes.numpy())
        seed = None if self.seed is None else self.seed + 7919 * count
        deltas = universal_perturbations(model, x, y, self.epsilon, steps=self.universal_steps,
                                         step_size=self.universal_step_size, boundary_fraction=self.boundary_fraction,
                                         seed=seed, batch_size=self.universal_batch_size)
        self._state.deltas.assign(deltas)
        self._state.refreshes.assign(count + 1)
        return deltas

    def refresh_callback(self, x, y):
        """The ``RegionRefresh`` callback to pass to ``AdversarialModel.fit`` (recomputes on (x, y))."""
        return RegionRefresh(self, x, y)

    def select_subset(self, y, seed=None):
        """Indices of a class-stratified random ``data_fraction`` of the labels y (at least 1 per class)."""
        y = check_labels("y", y)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        picked = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            n = max(1, int(round(self.data_fraction * members.size)))
            picked.append(rng.choice(members, size=n, replace=False))
        return np.sort(np.concatenate(picked))

    # -- one-call fine-tuning -------------------------------------------------------------------------
    def finetune(self, model, x, y, epochs=5, batch_size=64, learning_rate=1e-3, eval_data=None, eval_size=1000,
                 pgd_steps=20, verbose=0, callbacks=None):
        """Select the subset, fine-tune ``model`` in place with RAT, and report before/after robustness.

        Args:
          model: a Keras model with logits out (trained normally, typically); its weights are updated.
          x, y: the full training data; ``data_fraction`` of it (stratified, seeded) is used.
          epochs, batch_size, learning_rate: Adam fine-tuning budget.
          eval_data: (x_eval, y_eval) for the report; default ``eval_size`` training samples outside the subset.
          pgd_steps: steps of the PGD in the report (step 2.5 * eps / steps, random start).
          verbose, callbacks: passed to ``fit``.
        Returns:
          dict with ``data_fraction``, ``n_subset``, ``n_train``, ``subset_indices``, ``epochs``,
          ``wall_time_s`` (fit only, refreshes included), ``history``, and ``before``/``after``:
          {"clean", "fgsm", "pgd", "fooling_rate"} where the fooling rate is the mean over targets of
          fresh universal perturbations (computed on the subset against the model) applied to eval data.
        """
        from ..models import AdversarialModel

        if getattr(model, "defense", None) is not None:
            model = model.model
        if not isinstance(model, keras.Model):
            raise invalid("model", "a keras.Model that outputs logits", type(model).__name__)
        check_images("x", x)
        x = np.asarray(x, np.float32)
        y = check_labels("y", y, n=len(x))
        epochs = check_positive_int("epochs", epochs)
        batch_size = check_positive_int("batch_size", batch_size)
        learning_rate = check_fraction("learning_rate", learning_rate, 0.0, float("inf"), low_open=True)
        pgd_steps = check_positive_int("pgd_steps", pgd_steps)
        idx = self.select_subset(y)
        xs, ys = x[idx], y[idx]
        if eval_data is None:
            rest = np.setdiff1d(np.arange(len(x)), idx)
            rest = rest if rest.size else idx
            rng = np.random.default_rng(None if self.seed is None else self.seed + 1)
            pick = np.sort(rng.choice(rest, size=min(check_positive_int("eval_size", eval_size), rest.size),
                                      replace=False))
            xe, ye = x[pick], y[pick]
        else:
            if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2:
                raise invalid("eval_data", "a pair (x_eval, y_eval)", type(eval_data).__name__)
            check_images("eval_data[0]", eval_data[0])
            xe = np.asarray(eval_data[0], np.float32)
            ye = check_labels("eval_data[1]", eval_data[1], n=len(xe))

        before = self.measure(model, xs, ys, xe, ye, pgd_steps)
        robust = AdversarialModel(model, self)
        robust.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
        start = time.perf_counter()
        history = robust.fit(xs, ys, epochs=epochs, batch_size=batch_size, verbose=verbose,
                             callbacks=[self.refresh_callback(xs, ys)] + list(callbacks or []))
        wall = time.perf_counter() - start
        after = self.measure(model, xs, ys, xe, ye, pgd_steps)
        return {"data_fraction": self.data_fraction, "n_subset": int(len(idx)), "n_train": int(len(x)),
                "subset_indices": idx, "epochs": epochs, "wall_time_s": wall,
                "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
                "before": before, "after": after}

    def measure(self, model, x_universal, y_universal, x_eval, y_eval, pgd_steps=20):
        """{"clean", "fgsm", "pgd", "fooling_rate"} accuracies/rate of ``model`` on (x_eval, y_eval) at ``epsilon``.

        The fooling rate is the mean over target classes of fresh universal perturbations computed on
        (x_universal, y_universal) against ``model``.
        """
        from ..attacks import fgsm, pgd

        def accuracy(inputs):
            return float(np.mean(np.argmax(model.predict(inputs, batch_size=256, verbose=0), -1) == y_eval))

        eps = self.epsilon
        seed = 0 if self.seed is None else self.seed
        deltas = universal_perturbations(model, x_universal, y_universal, eps, steps=self.universal_steps,
                                         step_size=self.universal_step_size, boundary_fraction=self.boundary_fraction,
                                         seed=seed + 104729, batch_size=self.universal_batch_size)
        return {"clean": accuracy(x_eval), "fgsm": accuracy(fgsm(model, x_eval, y_eval, eps)),
                "pgd": accuracy(pgd(model, x_eval, y_eval, eps, 2.5 * eps / pgd_steps, pgd_steps, seed=seed)),
                "fooling_rate": float(np.mean(fooling_rates(model, x_eval, y_eval, deltas)))}

    def get_config(self):
        return {**super().get_config(), "data_fraction": self.data_fraction, "refresh": self.refresh,
                "universal_steps": self.universal_steps, "universal_step_size": self.universal_step_size,
                "boundary_fraction": self.boundary_fraction, "universal_batch_size": self.universal_batch_size}

"""Region adversarial training, RAT, from "Improving adversarial robustness of deep neural networks by
using semantic information" (2020, arXiv 2008.07838).

Fine-tune an existing model on a small subset (``data_fraction``, default 10%) with

    loss = CE(f(x), y) + CE(f(clip01(x + delta_t)), y),   t ~ U({0..C-1} \\ {y}) per sample and step,

where delta_t is the targeted universal perturbation of class t (``attacks.universal``) computed on
the subset against the current model and recomputed every ``refresh`` epochs. The per-class deltas
(C, H, W, channels) are non-trainable state owned by the defense (``sublayers()``), so they are saved
with the ``AdversarialModel``.

The paper leaves open how the subset is drawn, which inputs the deltas are fitted on and when they
are recomputed; here the subset is class-stratified and seeded, the deltas are fitted on the inputs
nearest the boundary (``boundary_fraction``), and they are recomputed every ``refresh`` epochs.

Refresh mechanism (a choice): the deltas depend on the training subset, which the Defense protocol
never sees (``train_step`` only gets batches), so a Keras callback (``RegionRefresh``, module
``region_refresh``) recomputes them: ``robust.fit(xs, ys, callbacks=[defense.refresh_callback(xs, ys)])``.
The fine-tuning recipe, ``keras_advmi.region_finetune.fine_tune``, wires it for you. Without the callback
the deltas stay zero and the loss is 2 x CE(f(x), y); the logged
``delta_linf`` (max |delta|) is then 0, which makes the omission visible in the history.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_in_unit_interval, check_labels, check_positive, check_positive_int, invalid
from .._model import logits_of, network_of, predict_logits
from ..attacks import fgsm, pgd
from ..attacks._common import cross_entropy, seed_pair
from ..attacks.universal import fooling_rates, universal_perturbations
from .base import Defense, DefenseLoss, serializable
from .region_refresh import RegionRefresh

__all__ = ["RegionAT", "RegionDeltas", "RegionRefresh", "region_robustness"]


class RegionDeltas(keras.layers.Layer):
    """Holds the per-class universal perturbations (classes, *input_shape) as a non-trainable weight."""

    def __init__(self, input_shape: Sequence[int], classes: int, **kwargs):
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


@serializable
class RegionAT(Defense):
    """RAT fine-tuning with per-class targeted universal perturbations ("Improving adversarial robustness of
    deep neural networks by using semantic information", 2020).

    Args:
      epsilon: L-inf radius of the universal perturbations (and of the PGD evaluation attack).
      data_fraction: share of the training data ``select_subset`` picks (``region_finetune.fine_tune``
        fine-tunes on it), in (0, 1] (the paper: "a very small dataset").
      refresh: recompute the deltas every ``refresh`` epochs (int >= 1).
      universal_steps, universal_step_size, boundary_fraction, universal_batch_size: passed to
        ``attacks.universal_perturbations`` (step default Madry's 2.5 * eps / steps, ``madry_step_size``).
      eval_steps: iterations of the PGD behind ``adv_accuracy`` in validation (default 10), as ``Defense``.
      seed: seeds the subset draw, the target draws and the universal perturbations.
      **defense_options: ``Defense``'s (epsilon_warmup_steps, attack_dtype, attack_chains).
    The training examples are x + delta_t: there is no PGD ``steps``/``step_size`` (nor ``norm``) to set.
    Logs ``natural_loss`` (CE on x), ``region_loss`` (CE on x + delta_t) and ``delta_linf``.
    """

    name = "region_at"
    log_names = ("natural_loss", "region_loss", "delta_linf")

    def __init__(self, epsilon: float = 0.3, data_fraction: float = 0.1, refresh: int = 1, universal_steps: int = 40,
                 universal_step_size: float | None = None, boundary_fraction: float = 0.5,
                 universal_batch_size: int = 256, **defense_options):
        super().__init__(epsilon, **defense_options)
        self.data_fraction = check_in_unit_interval("data_fraction", data_fraction, open_low=True)
        self.refresh = check_positive_int("refresh", refresh)
        self.universal_steps = check_positive_int("universal_steps", universal_steps)
        if universal_step_size is not None:
            universal_step_size = check_positive("universal_step_size", universal_step_size)
        self.universal_step_size = universal_step_size
        self.boundary_fraction = check_in_unit_interval("boundary_fraction", boundary_fraction, open_low=True)
        self.universal_batch_size = check_positive_int("universal_batch_size", universal_batch_size)
        self._state = None

    # -- protocol -----------------------------------------------------------------------------------
    def build(self, model: keras.Model) -> None:
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

    def sublayers(self) -> list[keras.layers.Layer]:
        return [self._state] if self._state is not None else []

    @property
    def deltas(self) -> np.ndarray:
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
            delta = delta * self.warmup_scaled(1.0, self.current_epsilon(step))   # one scalar ratio, one image op
        return tf.stop_gradient(tf.clip_by_value(x + delta, 0.0, 1.0))

    def loss(self, model, x, y, x_adv, training, step=None) -> DefenseLoss:
        logits_clean = logits_of(model, x, training=training)
        logits_adv = logits_of(model, x_adv, training=training)
        natural = cross_entropy(y, logits_clean)
        region = cross_entropy(y, logits_adv)
        delta_linf = tf.fill(tf.shape(natural), tf.reduce_max(tf.abs(self._state.deltas)))
        logs = {"natural_loss": natural, "region_loss": region, "delta_linf": delta_linf}
        return DefenseLoss(natural + region, logs, logits_adv, logits_clean)

    # -- refresh --------------------------------------------------------------------------------------
    def refresh_deltas(self, model: keras.Model, x: np.ndarray, y: np.ndarray) -> np.ndarray:
        """Recompute every class's universal perturbation on (x, y) against ``model``; returns them (NumPy)."""
        self._require_built()
        model = network_of(model)
        count = int(self._state.refreshes.numpy())
        seed = None if self.seed is None else self.seed + 7919 * count
        deltas = universal_perturbations(model, x, y, epsilon=self.epsilon, steps=self.universal_steps,
                                         step_size=self.universal_step_size, boundary_fraction=self.boundary_fraction,
                                         seed=seed, batch_size=self.universal_batch_size)
        self._state.deltas.assign(deltas)
        self._state.refreshes.assign(count + 1)
        return deltas

    def refresh_callback(self, x: np.ndarray, y: np.ndarray) -> RegionRefresh:
        """The ``RegionRefresh`` callback to pass to ``AdversarialModel.fit`` (recomputes on (x, y))."""
        return RegionRefresh(self, x, y)

    def select_subset(self, y: np.ndarray, seed: int | None = None) -> np.ndarray:
        """Indices of a class-stratified random ``data_fraction`` of the labels y (at least 1 per class)."""
        y = check_labels("y", y)
        rng = np.random.default_rng(self.seed if seed is None else seed)
        picked = []
        for c in np.unique(y):
            members = np.flatnonzero(y == c)
            n = max(1, int(round(self.data_fraction * members.size)))
            picked.append(rng.choice(members, size=n, replace=False))
        return np.sort(np.concatenate(picked))

    # -- robustness report ----------------------------------------------------------------------------
    def measure(self, model: keras.Model, x_universal: np.ndarray, y_universal: np.ndarray, x_eval: np.ndarray,
                y_eval: np.ndarray, pgd_steps: int = 20) -> dict[str, float]:
        """``region_robustness(self, ...)``: {"clean", "fgsm", "pgd", "fooling_rate"} of ``model`` on
        (x_eval, y_eval) at ``epsilon`` (the fooling rate of fresh universal perturbations computed on
        (x_universal, y_universal))."""
        return region_robustness(self, model, x_universal, y_universal, x_eval, y_eval, pgd_steps)

    def get_config(self) -> dict:
        return {**super().get_config(), "data_fraction": self.data_fraction, "refresh": self.refresh,
                "universal_steps": self.universal_steps, "universal_step_size": self.universal_step_size,
                "boundary_fraction": self.boundary_fraction, "universal_batch_size": self.universal_batch_size}


def region_robustness(defense: RegionAT, model: keras.Model, x_universal: np.ndarray, y_universal: np.ndarray,
                      x_eval: np.ndarray, y_eval: np.ndarray, pgd_steps: int = 20) -> dict[str, float]:
    """{"clean", "fgsm", "pgd", "fooling_rate"} accuracies/rate of ``model`` on (x_eval, y_eval) at
    ``defense.epsilon``: what the paper reports before and after fine-tuning.

    PGD: ``pgd_steps`` iterations of Madry's step 2.5 * eps / pgd_steps with a random start. The fooling
    rate is the mean over target classes of fresh universal perturbations computed on
    (x_universal, y_universal) against ``model`` with ``defense``'s universal-perturbation settings.
    """
    model = network_of(model)

    def accuracy(inputs):
        return float(np.mean(np.argmax(predict_logits(model, inputs, 256), -1) == y_eval))

    eps = defense.epsilon
    seed = 0 if defense.seed is None else defense.seed
    deltas = universal_perturbations(model, x_universal, y_universal, epsilon=eps, steps=defense.universal_steps,
                                     step_size=defense.universal_step_size,
                                     boundary_fraction=defense.boundary_fraction, seed=seed + 104729,
                                     batch_size=defense.universal_batch_size)
    x_pgd = pgd(model, x_eval, y_eval, epsilon=eps, steps=pgd_steps, seed=seed)   # Madry's step
    return {"clean": accuracy(x_eval), "fgsm": accuracy(fgsm(model, x_eval, y_eval, epsilon=eps)),
            "pgd": accuracy(x_pgd),
            "fooling_rate": float(np.mean(fooling_rates(model, x_eval, y_eval, deltas=deltas)))}

"""MIAT's training objective ("Improving Adversarial Robustness via Mutual Information Estimation", Zhou et al.,
ICML 2022): the base defense's loss plus the MI term of the phase (``miat_schedule``).

With S the selected samples (default: clean-correct and adversarially wrong, argmax of the logits; cosines
taken across the batch over S), v_n / v_a the natural / adversarial estimator and n = x~ - x:

    MI term = |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))| + |1 - cos(v_a(n -> h(x~)), v_a(n -> h(x)))|
                                                                       variant="both",    weight alpha
    MI term = |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))| - lam * mean_S v_n(x -> h(x~))
                                                                       variant="natural", weight 1

and the per-sample loss is base_loss(x, x~, y) + w * MI term, w ramped in over phase 2 (0 before it).
"""

from __future__ import annotations

import tensorflow as tf

from .._checks import check_choice, check_nonnegative
from .._model import logits_of
from .base import DefenseLoss
from .miat_scores import masked_cos

__all__ = ["MIATObjective", "SELECTIONS", "VARIANTS"]

SELECTIONS = ("clean_correct_adv_wrong", "all")
VARIANTS = ("both", "natural")


def _fill(value, n):
    return tf.fill([n], tf.cast(value, tf.float32))


class MIATObjective:
    """MIAT's per-sample loss on a batch, a ``DefenseLoss`` (``MIAT.loss``).

    Args:
      base: the base defense (PGD, TRADES or MART), whose loss and logits it extends.
      pair: the ``EstimatorPair`` that scores the batch (trained in phase 1, frozen in phase 2).
      alpha: weight of the MI term (>= 0; the paper: 5). lam: natural-MI weight of variant 'natural' (the
        paper: 0.1). variant: 'both' or 'natural'. selection: 'clean_correct_adv_wrong' (the paper) or 'all'.

    Logs (per step, means over the epoch): the base's logs; ``miat_phase``; ``mi_weight`` (w); in phase 2
    ``mi_natural`` (v_n(x -> h(x~))) and ``mi_adversarial`` (v_a(n -> h(x~))), means over the selected
    samples, and ``mi_loss`` (the MI term before w); in phase 1 ``estimator_natural_loss`` and
    ``estimator_adversarial_loss``; ``selected_fraction`` always. Evaluation computes the MI logs in every
    phase, with the full weight.
    """

    def __init__(self, base, pair, alpha: float = 5.0, lam: float = 0.1, variant: str = "both",
                 selection: str = "clean_correct_adv_wrong"):
        self.base, self.pair = base, pair
        self.alpha = check_nonnegative("alpha", alpha)
        self.lam = check_nonnegative("lam", lam)
        self.variant = check_choice("variant", variant, VARIANTS)
        self.selection = check_choice("selection", selection, SELECTIONS)

    def select(self, y, logits_clean, logits_adv):
        """S as an (N,) 0/1 mask: clean-correct and adversarially wrong samples (argmax), or all of them."""
        if self.selection == "all":
            return tf.ones_like(logits_adv[:, 0])
        y = tf.cast(y, tf.int64)
        correct = tf.equal(tf.argmax(logits_clean, axis=-1), y)
        fooled = tf.not_equal(tf.argmax(logits_adv, axis=-1), y)
        return tf.cast(correct & fooled, logits_adv.dtype)

    @property
    def full_weight(self) -> float:
        """The MI term's weight once ramped in: alpha (variant 'both'), 1 (variant 'natural', as officially)."""
        return self.alpha if self.variant == "both" else 1.0

    def _base_parts(self, model, x, y, x_adv, training):
        out = self.base.loss(model, x, y, x_adv, training)
        logits_clean = out.logits_clean if out.logits_clean is not None else logits_of(model, x, training=training)
        return tf.cast(out.per_sample, tf.float32), out.logs, out.logits_adv, logits_clean

    def _mi_term(self, x, x_adv, logits_clean, logits_adv, mask, training):
        """The MI term (scalar, before its weight) and v_n(x -> h(x~)), v_a(n -> h(x~)) as (N,), zeros outside
        the selection. Only the selected rows of the (N, N, L) score tensors are computed (all N samples
        still serve as negatives): the same loss at a fraction of the cost."""
        batch = tf.shape(logits_adv)[0]
        rows = None if self.selection == "all" else tf.where(mask > 0)[:, 0]
        n_rows = batch if rows is None else tf.shape(rows)[0]
        pair = self.pair
        out_clean, out_adv = pair.outputs(x, logits_clean, training), pair.outputs(x_adv, logits_adv, training)
        # The DV scores need >= 2 samples (negatives); a per-replica batch can hold 0 or 1 at an epoch's end.
        v_nn, v_na, v_an, v_aa = tf.cond(
            batch >= 2, lambda: pair.scores(x, x_adv, out_clean, out_adv, rows=rows),
            lambda: tuple(tf.zeros([n_rows], tf.float32) for _ in range(4)))
        natural_term = tf.abs(1.0 - masked_cos(v_nn, v_na))        # every scored row is selected
        if self.variant == "both":
            mi_term = natural_term + tf.abs(1.0 - masked_cos(v_aa, v_an))
        else:
            mi_term = natural_term - self.lam * tf.reduce_sum(v_na) / tf.maximum(tf.cast(n_rows, tf.float32), 1.0)
        mi_term = tf.where(n_rows > 0, mi_term, 0.0)
        full = (lambda v: v) if rows is None else (lambda v: tf.scatter_nd(rows[:, None], v, [batch]))
        return mi_term, full(v_na), full(v_aa)

    def _phase_terms(self, state, phase, into_miat, x, y, x_adv, logits_clean, logits_adv, mi):
        """In training: the phase's MI term (phase 2), its weight, the estimators' update (phase 1), and the
        step counted; returns (mi_term, v_na, v_aa, weight, loss_n, loss_a, updates, train_model, in_miat,
        in_pretraining)."""
        is_pretraining, is_miat = tf.equal(phase, 1), tf.equal(phase, 2)
        zeros = tf.zeros([tf.shape(logits_adv)[0]], tf.float32)
        mi_term, v_na, v_aa = tf.cond(is_miat, mi, lambda: (tf.constant(0.0), zeros, zeros))
        weight = tf.where(is_miat, state.mi_weight(into_miat, self.full_weight), 0.0)
        variables = self.pair.variables()
        grads, loss_n, loss_a = tf.cond(
            is_pretraining, lambda: self.pair.objective_gradients(x, y, x_adv, logits_clean, logits_adv),
            lambda: ([tf.zeros_like(v) for v in variables], tf.constant(0.0), tf.constant(0.0)))
        with tf.control_dependencies([mi_term, loss_n]):
            state.step.assign_add(1)
        updates = ((state.optimizer, grads, variables, is_pretraining),)
        return (mi_term, v_na, v_aa, weight, loss_n, loss_a, updates, tf.logical_not(is_pretraining),
                tf.cast(is_miat, tf.float32), tf.cast(is_pretraining, tf.float32))

    def __call__(self, state, model, x, y, x_adv, training):
        """The base loss plus the phase's MI part (``Defense.loss``). The phase is read from MIAT's own count of
        training steps (``schedule['step']``), not from ``step``: in the pretraining phase the model's optimizer
        takes no step, so its count does not advance there. Evaluation: the full MI term in every phase."""
        phase, into_miat = state.phase()
        if training:
            # Phase 1 freezes the model: its forward passes run in inference mode, and no gradient flows.
            def frozen():
                per_sample, logs, logits_adv, logits_clean = self._base_parts(model, x, y, x_adv, False)
                return tf.stop_gradient(per_sample), logs, tf.stop_gradient(logits_adv), tf.stop_gradient(logits_clean)

            per_sample, logs, logits_adv, logits_clean = tf.cond(
                tf.equal(phase, 1), frozen, lambda: self._base_parts(model, x, y, x_adv, True))
        else:
            per_sample, logs, logits_adv, logits_clean = self._base_parts(model, x, y, x_adv, False)
        batch = tf.shape(logits_adv)[0]
        mask = tf.cast(tf.stop_gradient(self.select(y, logits_clean, logits_adv)), tf.float32)

        def mi():
            return self._mi_term(x, x_adv, logits_clean, logits_adv, mask, training)

        if training:
            mi_term, v_na, v_aa, weight, loss_n, loss_a, updates, train_model, in_miat, in_pretraining = \
                self._phase_terms(state, phase, into_miat, x, y, x_adv, logits_clean, logits_adv, mi)
        else:
            (mi_term, v_na, v_aa), weight = mi(), tf.constant(self.full_weight)
            loss_n = loss_a = tf.constant(0.0)
            updates, train_model, in_miat, in_pretraining = (), None, tf.constant(1.0), tf.constant(0.0)
        logs = {**logs, "mi_natural": (v_na, mask * in_miat), "mi_adversarial": (v_aa, mask * in_miat),
                "mi_loss": (_fill(mi_term, batch), _fill(in_miat, batch)), "selected_fraction": mask,
                "mi_weight": _fill(weight, batch), "miat_phase": _fill(phase, batch),
                "estimator_natural_loss": (_fill(loss_n, batch), _fill(in_pretraining, batch)),
                "estimator_adversarial_loss": (_fill(loss_a, batch), _fill(in_pretraining, batch))}
        return DefenseLoss(per_sample + weight * mi_term, logs, logits_adv, logits_clean, train_model, updates)


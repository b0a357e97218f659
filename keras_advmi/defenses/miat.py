"""MIAT / NAMID: mutual-information adversarial training (Zhou et al., "Improving Adversarial Robustness via
Mutual Information Estimation", ICML 2022, arXiv 2207.12203; official code dwDavidxd/MIAT).

With h the model, x natural, x~ = x_adv and n = x~ - x the adversarial pattern, two estimators give
per-sample MI scores (``layers.MIEstimator``, DIM-style, DV bound by default):

    v_n(x -> h(.))   natural MI,      I(x ; h(.))         (estimator "natural")
    v_a(n -> h(.))   adversarial MI,  I(n ; h(.))         (estimator "adversarial")

Adversarial examples have lower natural and higher adversarial MI than natural ones. With S the
selected samples (default: clean-correct and adversarially wrong; cosines taken across the batch
over S), the target model minimises, estimators frozen,

    base_loss(x, x~, y) + alpha * ( |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))|
                                  + |1 - cos(v_a(n -> h(x~)), v_a(n -> h(x)))| )        variant="both"
    base_loss(x, x~, y) + |1 - cos(v_n(x -> h(x)), v_n(x -> h(x~)))| - lam * mean_S v_n(x -> h(x~))
                                                                                         variant="natural"

(alpha = 5, lam = 0.1; the official code applies no alpha in the natural-only variant). The base is
PGD-AT (CE on x~), TRADES or MART, whose adversarial examples are used. ``fit`` runs the paper's whole procedure
from an untrained model (``miat_schedule``): base adversarial training, estimator pretraining on the frozen
model, then the MI term ramped in; ``pretrain_estimators`` runs step 2 by hand for the explicit protocol.
Deviations from the official code (dwDavidxd/MIAT; the parity check is on the results page): selection uses
argmax of the logits (the official code takes a softmax over the batch axis first), and DV excludes the
positive pair from its negatives (``diagonal="zero"`` restores the official behaviour).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_fraction, check_norm, check_positive_int, invalid
from .._model import logits_of, network_of
from ..attacks._common import madry_step_size, seed_pair
from ..attacks.pgd import pgd_graph
from ..layers.dim import MIEstimator
from .base import Defense, DefenseLoss, serializable
from .mart import MART
from .miat_pretrain import pretrain_estimators, pretrain_losses
from .miat_schedule import MIATSchedule, MIATState, _length, resolve
from .miat_scores import masked_cos as _masked_cos, mi_scores, scores
from .pgd_at import PGD
from .trades import TRADES

__all__ = ["MIAT"]

log = logging.getLogger(__name__)

BASES = {"pgd": PGD, "trades": TRADES, "mart": MART}
SELECTIONS = ("clean_correct_adv_wrong", "all")
VARIANTS = ("both", "natural")
ESTIMATORS = ("dv", "jsd", "infonce")


def _fill(value, n):
    return tf.fill([n], tf.cast(value, tf.float32))


@serializable
class MIAT(Defense):
    """Mutual-information adversarial training on top of PGD-AT, TRADES or MART (Zhou et al., ICML 2022).

    ``AdversarialModel(model, MIAT(...)).fit(x, y, epochs=E)`` runs the paper's procedure itself, from an
    untrained model, in three phases of the same ``fit`` (``miat_phase`` in the logs: 0, 1, 2):

    0. base: the base defense alone for ``base_epochs`` (or ``base_steps``);
    1. estimator pretraining for ``pretrain_epochs`` (or ``pretrain_steps``): the model frozen (no update,
       inference mode), the natural and adversarial estimators trained on it with the official objectives
       (``_pretrain_losses``), on pairs from the pretraining attack (official: L2 PGD-20), Adam at
       ``pretrain_learning_rate``;
    2. MIAT: base loss + w * MI term, estimators frozen, w ramped from 0 to alpha over
       ``alpha_warmup_epochs`` (or ``alpha_warmup_steps``).

    Lengths "auto" (the default) take 25% / 10% / 25% of the run, in whole epochs (at least one each)
    when it has 4 epochs or more (12 epochs: 3 base, 1 pretraining, 8 MIAT of which 3 ramp); base and
    pretraining are skipped when the estimators are already pretrained (``pretrain_estimators``, the paper's
    explicit three-step protocol). The lengths are fixed in steps when the first ``fit`` starts and, with
    the step count, the estimators and their optimizer, are saved with the model: a run resumed by
    ``keras.callbacks.BackupAndRestore`` continues in its phase. Works under ``tf.distribute`` (the
    estimator update is all-reduced like the model's).

    Args:
      epsilon, step_size, steps: the base defense's attack (L-inf, training).
      base: 'pgd' | 'trades' | 'mart'. base_options: extra arguments of the base (e.g. {'beta': 6.0}).
      alpha: weight of the MI term (>= 0; the paper: 5). lam: natural-MI weight of variant 'natural' (the paper: 0.1).
      estimator: per-sample bound of the estimators, 'dv' (official), 'jsd' or 'infonce'.
      selection: 'clean_correct_adv_wrong' (the paper) or 'all'.
      variant: 'both' (natural and adversarial estimators, the paper's main loss) or 'natural'.
      hsize, filters: estimator encoder sizes (official CIFAR: 2048, (64, 128); ~128 suits MNIST).
      diagonal: DV negatives, 'exclude' (correct DV) or 'zero' (official code's parity).
      layer: None (the estimators read the model's logits, the paper's main setting) or the name of a layer of
        the model whose output (flattened) they read instead (the official ``--is_internal`` option).
      base_epochs / base_steps, pretrain_epochs / pretrain_steps, alpha_warmup_epochs / alpha_warmup_steps:
        the phase lengths, 'auto' or a number of epochs (fractions allowed), or an int of steps (then the
        epochs argument stays 'auto'). 0 skips a phase. Without a ramp the MI term enters at full weight
        right after pretraining, where the estimators score the selected samples' natural and
        adversarial outputs as uncorrelated (cos ~ 0, the term ~ 2 alpha): that collapsed bench_cnn on
        MNIST within 20 Adam steps (docs/results.md, MIAT), hence the default ramp: the paper leaves a
        ramp open; we ramp over 25% of the run (on digits a 10% ramp lost more PGD accuracy; docs/results.md).
      pretrain_learning_rate: Adam of the estimators in phase 1 (and the default of ``pretrain_estimators``).
      pretrain_norm, pretrain_epsilon, pretrain_attack_steps: the attack that makes phase 1's pairs (official:
        L2, 20 steps; epsilon None: ``pretrain_attack_epsilon``; see ``pretrain_estimators``).
      require_pretrained: refuse to ``fit`` with no pretraining phase (``pretrain_epochs=0``) while the
        estimators are untrained (the MI term of untrained estimators is noise).
      norm, random_start, eval_steps, epsilon_warmup_steps, seed: as for every Defense.

    Logs (per step, means over the epoch): the base's logs; ``miat_phase``; ``mi_weight`` (w); in phase 2
    ``mi_natural`` (v_n(x -> h(x~))) and ``mi_adversarial`` (v_a(n -> h(x~))), means over the selected
    samples, and ``mi_loss`` (the MI term before w); in phase 1 ``estimator_natural_loss`` and
    ``estimator_adversarial_loss``; ``selected_fraction`` always. In phase 1 ``adv_accuracy`` is on the
    pretraining attack's pairs. Validation computes the MI logs in every phase.

    Negative MI values. The scores are per-sample Donsker-Varadhan *lower bounds* with a trained critic,
    mean_l (u_ii - log mean_{j != i} exp u_ij): an estimate of I, not I itself, and below zero whenever the
    critic scores sample i's own pair lower than the typical mismatched pair. That happens by design here:
    the adversarial estimator is trained to give h(x)'s pairs with the pattern n *low* scores, and the
    natural estimator to score fooled pairs x -> h(x~) low, so ``mi_adversarial/clean`` and
    ``mi_natural/adv`` are often negative (values on digits in docs/results.md), and an untrained
    estimator gives values around 0 of either sign. Compare scores with each other (natural vs adversarial
    pairs, one estimator, one batch size); their sign and absolute level carry no meaning of their own.
    """

    name = "miat"

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, base: str = "pgd",
                 alpha: float = 5.0, lam: float = 0.1, estimator: str = "dv",
                 selection: str = "clean_correct_adv_wrong", variant: str = "both", hsize: int = 128,
                 filters: tuple = (32, 64), diagonal: str = "exclude", require_pretrained: bool = True,
                 base_options: dict | None = None, alpha_warmup_steps: int | None = None, layer: str | None = None,
                 base_epochs: float | str = "auto", base_steps: int | None = None,
                 pretrain_epochs: float | str = "auto", pretrain_steps: int | None = None,
                 alpha_warmup_epochs: float | str = "auto", pretrain_learning_rate: float = 3e-3, pretrain_norm=2,
                 pretrain_epsilon: float | None = None, pretrain_attack_steps: int = 20, **kwargs):
        if base not in BASES:
            raise invalid("base", f"one of {sorted(BASES)}", base)
        if estimator not in ESTIMATORS:
            raise invalid("estimator", f"one of {ESTIMATORS} (official: 'dv')", estimator)
        if selection not in SELECTIONS:
            raise invalid("selection", f"one of {SELECTIONS}", selection)
        if variant not in VARIANTS:
            raise invalid("variant", f"one of {VARIANTS}", variant)
        if diagonal not in ("exclude", "zero"):
            raise invalid("diagonal", "'exclude' or 'zero'", diagonal)
        if base_options is not None and not isinstance(base_options, dict):
            raise invalid("base_options", "a dict of the base defense's arguments or None", base_options)
        if layer is not None and not isinstance(layer, str):
            raise invalid("layer", "None (the logits) or the name of a layer of the model", layer)
        super().__init__(epsilon, step_size, steps, **kwargs)
        self.alpha = check_fraction("alpha", alpha, 0.0, float("inf"))
        self.lam = check_fraction("lam", lam, 0.0, float("inf"))
        self.base_name, self.estimator, self.selection, self.variant = base, estimator, selection, variant
        self.hsize = check_positive_int("hsize", hsize)
        self.filters = tuple(check_positive_int("filters", f) for f in filters)
        self.diagonal = diagonal
        self.layer = layer
        self.require_pretrained = bool(require_pretrained)
        self._lengths = (_length("base_epochs", base_epochs, "base_steps", base_steps),
                         _length("pretrain_epochs", pretrain_epochs, "pretrain_steps", pretrain_steps),
                         _length("alpha_warmup_epochs", alpha_warmup_epochs, "alpha_warmup_steps", alpha_warmup_steps))
        (self.base_epochs, self.base_steps), (self.pretrain_epochs, self.pretrain_steps), \
            (self.alpha_warmup_epochs, self.alpha_warmup_steps) = self._lengths
        self.pretrain_learning_rate = check_fraction("pretrain_learning_rate", pretrain_learning_rate, 0.0,
                                                     float("inf"), low_open=True)
        self.pretrain_norm = check_norm(pretrain_norm)
        if pretrain_epsilon is not None:
            pretrain_epsilon = check_fraction("pretrain_epsilon", pretrain_epsilon, 0.0,
                                              1.0 if self.pretrain_norm == np.inf else float("inf"), low_open=True)
        self.pretrain_epsilon = pretrain_epsilon
        self.pretrain_attack_steps = check_positive_int("pretrain_attack_steps", pretrain_attack_steps)
        self.base_options = dict(base_options or {})
        self.base = BASES[base](epsilon, self.step_size, steps, **self.base_options, **kwargs)
        self.log_names = tuple(self.base.log_names) + (
            "mi_natural", "mi_adversarial", "mi_loss", "selected_fraction", "mi_weight", "miat_phase",
            "estimator_natural_loss", "estimator_adversarial_loss")
        self.natural = self.adversarial = self._state = self._features = None

    # -- estimators and state -----------------------------------------------------------------------
    def build(self, model):
        if self.natural is not None:
            return
        if not model.inputs or len(model.inputs[0].shape) != 4:
            raise invalid("model", "a functional/Sequential image model with inputs (N, H, W, C)", type(model).__name__)
        if self.layer is None:
            outputs_shape = (None, int(model.outputs[0].shape[-1]))
        else:
            names = [l.name for l in model.layers]
            if self.layer not in names:
                raise invalid("layer", f"None or the name of one of the model's layers {names}", self.layer)
            out = model.get_layer(self.layer).output
            self._features = keras.Model(model.inputs, out, name=f"miat_features_{self.layer}")
            outputs_shape = (None, int(np.prod([int(d) for d in out.shape[1:]])))
        self._input_shape = tuple(int(d) for d in model.inputs[0].shape[1:])
        pattern_shape = (None,) + self._input_shape
        self.natural = MIEstimator(self.hsize, self.filters, self.estimator, self.diagonal, name="mi_natural_estimator")
        self.adversarial = MIEstimator(self.hsize, self.filters, self.estimator, self.diagonal,
                                       name="mi_adversarial_estimator")
        for estimator in (self.natural, self.adversarial):
            estimator.build(pattern_shape, outputs_shape)
        self._state = MIATState(self.pretrain_learning_rate,
                                tuple(s or 0 for _, s in self._lengths), name="miat_state")
        self._state.optimizer.build(self.estimator_variables())

    def estimator_variables(self):
        """The estimators' trainable variables (trained in phase 1 and by ``pretrain_estimators``, never by
        fit's optimizer: ``AdversarialModel.trainable_weights`` is the model's)."""
        return self.natural.trainable_weights + self.adversarial.trainable_weights

    def sublayers(self):
        return [self.natural, self.adversarial, self._state] if self.natural is not None else []

    @property
    def pretrained(self):
        """Whether the estimators are trained: by ``pretrain_estimators``, or by a finished phase 1 of fit."""
        if self.natural is None:
            return False
        flags = bool(self.natural.pretrained.numpy() > 0.5) and bool(self.adversarial.pretrained.numpy() > 0.5)
        return flags or self._pretraining_done()

    def _pretraining_done(self):
        resolved, base, pretrain, _ = (int(v) for v in self._state.schedule.numpy())
        return bool(resolved) and pretrain > 0 and int(self._state.step.numpy()) >= base + pretrain

    def mark_pretrained(self):
        """Set the estimators' ``pretrained`` flags when fit's phase 1 is over (``MIATSchedule``, eagerly: an
        assignment inside the replicas' graph would need a cross-replica sync in a ``tf.cond``)."""
        if self.natural is not None and self._pretraining_done():
            self.natural.pretrained.assign(1.0)
            self.adversarial.pretrained.assign(1.0)

    @property
    def schedule(self):
        """The phase lengths in steps, {'base', 'pretrain', 'ramp'}, and the steps taken, {'step'};
        'resolved' is False until a ``fit`` (or ``resolve_schedule``) has fixed the lengths."""
        resolved, base, pretrain, ramp = (int(v) for v in self._state.schedule.numpy())
        return {"resolved": bool(resolved), "base": base, "pretrain": pretrain, "ramp": ramp,
                "step": int(self._state.step.numpy())}

    def check_ready(self, model):
        self.build(network_of(model))
        no_pretraining = self.pretrain_steps == 0 or self.pretrain_epochs == 0
        if self.require_pretrained and no_pretraining and not self.pretrained and not self.schedule["resolved"]:
            raise ValueError("MIAT's MI estimators are not pretrained and `pretrain_epochs`/`pretrain_steps` is 0: "
                             "let fit pretrain them (pretrain_epochs='auto' or > 0), or call "
                             "`model.defense.pretrain_estimators(model, x, y, epochs=...)` on an adversarially "
                             "trained model first (the paper's procedure), or pass MIAT(require_pretrained=False).")

    def fit_callbacks(self):
        return [MIATSchedule(self)]

    def resolve_schedule(self, epochs, steps_per_epoch):
        """Fix the phase lengths in steps for a run of ``epochs`` x ``steps_per_epoch`` (``fit`` calls this at
        its start; a custom training loop calls it once). A state already fixed (resumed or continued run)
        is kept. Raises ValueError when base + pretraining leave no MIAT step. Returns ``schedule``."""
        if self.schedule["resolved"]:
            return self.schedule
        fresh = self.schedule["step"] == 0
        base, pretrain, ramp = resolve(self._lengths, epochs, steps_per_epoch, self.pretrained and fresh)
        if self.require_pretrained and pretrain == 0 and not self.pretrained:
            self.check_ready(None)
        self._state.schedule.assign(np.array([1, base, pretrain, ramp], np.int64))
        log.info("MIAT schedule: %d base steps, %d estimator-pretraining steps, MI weight ramped over %d steps",
                 base, pretrain, ramp)
        return self.schedule

    def _phase(self):
        """(phase, steps into phase 2) at the current step: phase 0 base, 1 pretraining, 2 MIAT (int64)."""
        step, schedule = self._state.step, self._state.schedule
        base, pretrain = tf.maximum(schedule[1], 0), tf.maximum(schedule[2], 0)
        phase = tf.where(step < base, tf.constant(0, tf.int64),
                         tf.where(step < base + pretrain, tf.constant(1, tf.int64), tf.constant(2, tf.int64)))
        return phase, step - base - pretrain

    def _mi_weight(self, into_miat):
        weight = self.alpha if self.variant == "both" else 1.0
        ramp = tf.cast(self._state.schedule[3], tf.float32)
        fraction = tf.where(ramp > 0, tf.minimum(1.0, tf.cast(into_miat + 1, tf.float32) / tf.maximum(ramp, 1.0)), 1.0)
        return weight * tf.clip_by_value(fraction, 0.0, 1.0)

    def _outputs(self, model, x, logits, training):
        """What the global encoders read: the logits, or the flattened output of ``layer`` (N, D)."""
        if self._features is None:
            return logits
        h = self._features(x, training=training)
        return tf.reshape(tf.cast(h, tf.float32), [tf.shape(h)[0], -1])

    # -- training examples ----------------------------------------------------------------------------
    def _pretrain_attack(self, input_shape=None, norm=None, epsilon=None, steps=None):
        """(norm, epsilon, step, steps) of the attack that makes the estimators' training pairs (None: config)."""
        norm = self.pretrain_norm if norm is None else check_norm(norm)
        steps = self.pretrain_attack_steps if steps is None else check_positive_int("attack_steps", steps)
        eps = epsilon if epsilon is not None else (self.pretrain_epsilon if norm == self.pretrain_norm else None)
        if eps is None:
            eps = self.epsilon if norm == np.inf else self.pretrain_attack_epsilon(input_shape or self._input_shape)
        eps = check_fraction("attack_epsilon", eps, 0.0, 1.0 if norm == np.inf else float("inf"), low_open=True)
        return norm, eps, madry_step_size(eps, steps), steps

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """Phase 0/2: the base's training examples. Phase 1: the pretraining attack's pairs (official: L2)."""
        self.build(network_of(model))
        norm, eps, step_size, steps = self._pretrain_attack()
        phase, _ = self._phase()

        def pretraining_pairs():
            s = None if seed is None else seed_pair(seed) + tf.stack([tf.constant(104729, tf.int64),
                                                                     2 * self._state.step])
            # steps as a tensor: a tf.while_loop, not 20 unrolled copies of the model in fit's graph.
            return pgd_graph(model, x, y, eps, step_size, tf.constant(steps), norm, False, True, 1, s)

        return tf.cond(tf.equal(phase, 1), pretraining_pairs,
                       lambda: self.base.adversarial_examples(model, x, y, seed=seed, step=step))

    def evaluation_examples(self, model, x, y, seed=None):
        return self.base.evaluation_examples(model, x, y, seed=seed)

    def _select(self, y, logits_clean, logits_adv):
        if self.selection == "all":
            return tf.ones_like(logits_adv[:, 0])
        y = tf.cast(y, tf.int64)
        correct = tf.equal(tf.argmax(logits_clean, axis=-1), y)
        fooled = tf.not_equal(tf.argmax(logits_adv, axis=-1), y)
        return tf.cast(correct & fooled, logits_adv.dtype)

    def _scores(self, x, x_adv, outputs_clean, outputs_adv, training=False, rows=None):
        """v_n(x -> h(x)), v_n(x -> h(x~)), v_a(n -> h(x)), v_a(n -> h(x~)), each (N,), or (R,) for ``rows``
        (``miat_scores.scores`` with this defense's estimators)."""
        values = scores(self.natural, self.adversarial, x, x_adv, outputs_clean, outputs_adv, training, rows)
        return tuple(tf.cast(v, tf.float32) for v in values)   # float32 under a mixed-precision policy too

    # -- training loss ----------------------------------------------------------------------------
    def _base_parts(self, model, x, y, x_adv, training):
        out = self.base.loss(model, x, y, x_adv, training)
        logits_clean = out.logits_clean if out.logits_clean is not None else logits_of(model, x, training=training)
        return tf.cast(out.per_sample, tf.float32), out.logs, out.logits_adv, logits_clean

    def _mi_term(self, model, x, y, x_adv, logits_clean, logits_adv, mask, training):
        """The MI term (scalar, before its weight) and v_n(x -> h(x~)), v_a(n -> h(x~)) as (N,), zeros outside
        the selection. Only the selected rows of the (N, N, L) score tensors are computed (all N samples
        still serve as negatives): the same loss at a fraction of the cost."""
        batch = tf.shape(logits_adv)[0]
        rows = None if self.selection == "all" else tf.where(mask > 0)[:, 0]
        n_rows = batch if rows is None else tf.shape(rows)[0]
        out_clean = self._outputs(model, x, logits_clean, training)
        out_adv = self._outputs(model, x_adv, logits_adv, training)
        # The DV scores need >= 2 samples (negatives); a per-replica batch can hold 0 or 1 at an epoch's end.
        v_nn, v_na, v_an, v_aa = tf.cond(
            batch >= 2, lambda: self._scores(x, x_adv, out_clean, out_adv, rows=rows),
            lambda: tuple(tf.zeros([n_rows], tf.float32) for _ in range(4)))
        natural_term = tf.abs(1.0 - _masked_cos(v_nn, v_na))        # every scored row is selected
        if self.variant == "both":
            mi_term = natural_term + tf.abs(1.0 - _masked_cos(v_aa, v_an))
        else:
            mi_term = natural_term - self.lam * tf.reduce_sum(v_na) / tf.maximum(tf.cast(n_rows, tf.float32), 1.0)
        mi_term = tf.where(n_rows > 0, mi_term, 0.0)
        full = (lambda v: v) if rows is None else (lambda v: tf.scatter_nd(rows[:, None], v, [batch]))
        return mi_term, full(v_na), full(v_aa)

    def _estimator_step(self, model, x, y, x_adv, logits_clean, logits_adv):
        """Phase 1: gradients of the official estimator objectives (the model frozen) and the two losses."""
        variables = self.estimator_variables()
        logits_clean, logits_adv = tf.stop_gradient(logits_clean), tf.stop_gradient(logits_adv)
        out_clean = tf.stop_gradient(self._outputs(model, x, logits_clean, False))
        out_adv = tf.stop_gradient(self._outputs(model, x_adv, logits_adv, False))
        y64 = tf.cast(y, tf.int64)
        clean_ok = tf.cast(tf.equal(tf.argmax(logits_clean, -1), y64), tf.float32)
        adv_ok = tf.cast(tf.equal(tf.argmax(logits_adv, -1), y64), tf.float32)
        replicas = float(tf.distribute.get_strategy().num_replicas_in_sync)
        with tf.GradientTape() as tape:
            scores = self._scores(x, x_adv, out_clean, out_adv, training=True)
            loss_n, loss_a = self._pretrain_losses(*scores, clean_ok, adv_ok)
            total = (loss_n + loss_a) / replicas    # the optimizer sums the replicas' gradients
        grads = tape.gradient(total, variables)
        grads = [tf.zeros_like(v) if g is None else tf.convert_to_tensor(g) for g, v in zip(grads, variables)]
        return grads, loss_n, loss_a

    def loss(self, model, x, y, x_adv, training, step=None):
        """The base loss plus the phase's MI part (``Defense.loss``). The phase is read from MIAT's own count of
        training steps (``schedule['step']``), not from ``step``: in the pretraining phase the model's optimizer
        takes no step, so its count does not advance there."""
        self.build(network_of(model))   # a no-op once built (AdversarialModel builds it at construction)
        phase, into_miat = self._phase()
        is_pretraining, is_miat = tf.equal(phase, 1), tf.equal(phase, 2)
        if training:
            # Phase 1 freezes the model: its forward passes run in inference mode, and no gradient flows.
            def frozen():
                per_sample, logs, logits_adv, logits_clean = self._base_parts(model, x, y, x_adv, False)
                return tf.stop_gradient(per_sample), logs, tf.stop_gradient(logits_adv), tf.stop_gradient(logits_clean)

            per_sample, logs, logits_adv, logits_clean = tf.cond(
                is_pretraining, frozen, lambda: self._base_parts(model, x, y, x_adv, True))
        else:
            per_sample, logs, logits_adv, logits_clean = self._base_parts(model, x, y, x_adv, False)
        batch = tf.shape(logits_adv)[0]
        mask = tf.cast(tf.stop_gradient(self._select(y, logits_clean, logits_adv)), tf.float32)
        zeros = tf.zeros([batch], tf.float32)

        def mi():
            return self._mi_term(model, x, y, x_adv, logits_clean, logits_adv, mask, training)

        if training:
            mi_term, v_na, v_aa = tf.cond(is_miat, mi, lambda: (tf.constant(0.0), zeros, zeros))
            weight = tf.where(is_miat, self._mi_weight(into_miat), 0.0)
            variables = self.estimator_variables()
            grads_n_a = tf.cond(is_pretraining,
                                lambda: self._estimator_step(model, x, y, x_adv, logits_clean, logits_adv),
                                lambda: ([tf.zeros_like(v) for v in variables], tf.constant(0.0), tf.constant(0.0)))
            grads, loss_n, loss_a = grads_n_a
            with tf.control_dependencies([mi_term, loss_n]):
                self._state.step.assign_add(1)
            updates = ((self._state.optimizer, grads, variables, is_pretraining),)
            train_model = tf.logical_not(is_pretraining)
            in_miat, in_pretraining = tf.cast(is_miat, tf.float32), tf.cast(is_pretraining, tf.float32)
        else:   # evaluation: the full MI term in every phase, nothing trained
            mi_term, v_na, v_aa = mi()
            weight = tf.constant(self.alpha if self.variant == "both" else 1.0)
            loss_n = loss_a = tf.constant(0.0)
            updates, train_model = (), None
            in_miat, in_pretraining = tf.constant(1.0), tf.constant(0.0)
        per_sample = per_sample + weight * mi_term
        logs = {**logs, "mi_natural": (v_na, mask * in_miat), "mi_adversarial": (v_aa, mask * in_miat),
                "mi_loss": (_fill(mi_term, batch), _fill(in_miat, batch)), "selected_fraction": mask,
                "mi_weight": _fill(weight, batch), "miat_phase": _fill(phase, batch),
                "estimator_natural_loss": (_fill(loss_n, batch), _fill(in_pretraining, batch)),
                "estimator_adversarial_loss": (_fill(loss_a, batch), _fill(in_pretraining, batch))}
        return DefenseLoss(per_sample, logs, logits_adv, logits_clean, train_model, updates)

    # -- per-sample MI ------------------------------------------------------------------------------
    def mi_scores(self, model, x: np.ndarray, x_adv: np.ndarray, batch_size: int = 256) -> dict:
        """Per-sample natural and adversarial MI of (x, x_adv) under the current model.

        Returns {'mi_natural/clean': v_n(x -> h(x)), 'mi_natural/adv': v_n(x -> h(x~)),
        'mi_adversarial/clean': v_a(n -> h(x)), 'mi_adversarial/adv': v_a(n -> h(x~))}, each (N,) float32
        numpy. Negatives come from the same batch of ``batch_size`` (>= 2; the last batch is merged
        into the previous one when smaller than 2).
        """
        return mi_scores(self, model, x, x_adv, batch_size)

    @tf.function(reduce_retracing=True)
    def _mi_batch(self, net, x, x_adv):
        return self._scores(x, x_adv, self._outputs(net, x, net(x, training=False), False),
                            self._outputs(net, x_adv, net(x_adv, training=False), False))

    # -- estimator pretraining --------------------------------------------------------------------
    def _pretrain_losses(self, v_nn, v_na, v_an, v_aa, clean_ok, adv_ok):
        """The official estimator objectives (``miat_pretrain.pretrain_losses``)."""
        return pretrain_losses(v_nn, v_na, v_an, v_aa, clean_ok, adv_ok)

    def pretrain_attack_epsilon(self, input_shape):
        """Default L2 budget of the pretraining attack: 0.3 * epsilon * sqrt(H * W * C).

        The official estimators are trained on L2 PGD examples (eps 0.5 on CIFAR-10, i.e. 0.29 of the L2
        norm of a full 8/255 sign perturbation); this keeps that ratio for other image sizes and budgets
        (MNIST eps 0.3: 2.5; digits eps 0.2: 0.48).
        """
        return 0.3 * self.epsilon * float(np.sqrt(np.prod([int(d) for d in input_shape])))

    def pretrain_estimators(self, model, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch_size: int = 128,
                            learning_rate: float | None = None, seed: int = 0, verbose: int = 1, attack_norm=None,
                            attack_epsilon: float | None = None, attack_steps: int | None = None) -> dict:
        """Train the natural and adversarial estimators on the frozen ``model`` (the paper's step 2).

        Args:
          model: the AdversarialModel (or its logits model), ideally already adversarially trained.
          x, y: training images (N, H, W, C) in [0, 1] and integer labels.
          epochs, batch_size, learning_rate: Adam on both estimators (official: 25 epochs, batch 400, lr 1e-2;
            on digits lr 1e-2 or 10 epochs left the natural estimator untrained for one seed of two, lr 3e-3
            and 20 epochs gave the paper's ordering for both). learning_rate None: ``pretrain_learning_rate``.
          attack_norm, attack_epsilon, attack_steps: the PGD that makes the training pairs (None: the defense's
            ``pretrain_norm``, ``pretrain_epsilon``, ``pretrain_attack_steps``). Official: L2, 20 steps
            (default epsilon: ``pretrain_attack_epsilon``); ``attack_norm=np.inf`` with
            ``attack_epsilon=None`` uses the defense's own epsilon. The adversarial-MI ordering of the paper
            (higher I(n; h(x~)) than I(n; h(x))) appears with L2 patterns; with L-inf sign patterns
            h(x) can carry more information about n than h(x~) (docs/results.md, MIAT).
          verbose: 1 shows fit's progress bar (the pretraining is ``miat_pretrain.EstimatorPretraining``, a
            ``keras.Model`` trained with ``fit``).
        Returns:
          {'natural_loss', 'adversarial_loss', 'mi_natural_clean', 'mi_natural_adv', 'mi_adversarial_clean',
          'mi_adversarial_adv', 'selected_fraction'}: per-epoch means. Marks the estimators pretrained.
        """
        return pretrain_estimators(self, model, x, y, epochs, batch_size, learning_rate, seed, verbose, attack_norm,
                                   attack_epsilon, attack_steps)

    # -- serialization ----------------------------------------------------------------------------
    def get_config(self):
        return {**super().get_config(), "base": self.base_name, "alpha": self.alpha, "lam": self.lam,
                "estimator": self.estimator, "selection": self.selection, "variant": self.variant,
                "hsize": self.hsize, "filters": list(self.filters), "diagonal": self.diagonal,
                "require_pretrained": self.require_pretrained, "base_options": self.base_options,
                "layer": self.layer, "base_epochs": self.base_epochs, "base_steps": self.base_steps,
                "pretrain_epochs": self.pretrain_epochs, "pretrain_steps": self.pretrain_steps,
                "alpha_warmup_epochs": self.alpha_warmup_epochs, "alpha_warmup_steps": self.alpha_warmup_steps,
                "pretrain_learning_rate": self.pretrain_learning_rate,
                "pretrain_norm": "inf" if self.pretrain_norm == np.inf else self.pretrain_norm,
                "pretrain_epsilon": self.pretrain_epsilon, "pretrain_attack_steps": self.pretrain_attack_steps}

"""MIAT / NAMID: mutual-information adversarial training (Zhou et al., "Improving Adversarial Robustness via
Mutual Information Estimation", ICML 2022, arXiv 2207.12203; official code dwDavidxd/MIAT).

With h the model, x natural, x~ = x_adv and n = x~ - x the adversarial pattern, two estimators give
per-sample MI scores (``miat_estimators``: ``layers.MIEstimator``, DIM-style, DV bound by default):

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
model (``miat_pretrain``), then the MI term ramped in; ``pretrain_estimators`` runs step 2 by hand for the
explicit protocol. Deviations from the official code (dwDavidxd/MIAT; the parity check is on the results
page): selection uses argmax of the logits (the official code takes a softmax over the batch axis first), and
DV excludes the positive pair from its negatives (``MIATEstimators(diagonal="zero")`` restores the official
behaviour).
"""

from __future__ import annotations

import logging

import numpy as np
import tensorflow as tf

from .._checks import check_choice, invalid
from .._model import network_of
from ..attacks._common import seed_pair
from ..attacks.pgd import pgd_graph
from .base import Defense, serializable
from .mart import MART
from .miat_config import MIATEstimators, MIATPhases, MIATPretraining
from .miat_estimators import EstimatorPair
from .miat_loss import MIATObjective
from .miat_pretrain import default_attack_epsilon, pretrain_estimators, pretraining_attack
from .miat_schedule import MIATSchedule, MIATState, resolve
from .miat_scores import mi_scores
from .pgd_at import PGD
from .trades import TRADES

__all__ = ["MIAT"]

log = logging.getLogger(__name__)

BASES = {"pgd": PGD, "trades": TRADES, "mart": MART}
#: The ``Defense`` options MIAT takes through ``**kwargs`` (MIAT's own and its base's), and the base attack's.
DEFENSE_OPTIONS = ("eval_steps", "epsilon_warmup_steps", "seed", "attack_dtype", "attack_chains")
BASE_ATTACK_OPTIONS = ("norm", "random_start")
#: The configuration objects: argument -> class.
CONFIGS = {"estimators": MIATEstimators, "phases": MIATPhases, "pretraining": MIATPretraining}


@serializable
class MIAT(Defense):
    """Mutual-information adversarial training on top of PGD-AT, TRADES or MART (Zhou et al., ICML 2022).

    ``AdversarialModel(model, MIAT(...)).fit(x, y, epochs=E)`` runs the paper's procedure itself, from an
    untrained model, in three phases of the same ``fit`` (``miat_phase`` in the logs: 0 base, 1 estimator
    pretraining, 2 MIAT; ``miat_schedule``). Works under ``tf.distribute`` (the estimator update is
    all-reduced like the model's).

    Args:
      epsilon, step_size, steps: the base defense's attack (L-inf, training).
      base: 'pgd' | 'trades' | 'mart'. base_options: extra arguments of the base (e.g. {'beta': 6.0}).
      alpha: weight of the MI term (>= 0; the paper: 5). lam: natural-MI weight of variant 'natural' (the paper: 0.1).
      variant: 'both' (natural and adversarial estimators, the paper's main loss) or 'natural'.
      selection: 'clean_correct_adv_wrong' (the paper) or 'all'.
      estimators: a ``MIATEstimators`` (bound, sizes, layer read), None for its defaults.
      phases: a ``MIATPhases`` (lengths of fit's phases), None for 'auto' lengths.
      pretraining: a ``MIATPretraining`` (the estimators' Adam and attack), None for the official setup.
      **kwargs: the base attack's ``norm``, ``random_start`` and the ``Defense`` options (``eval_steps``,
        ``epsilon_warmup_steps``, ``seed``, ``attack_dtype``, ``attack_chains``).

    Logs: the base's, the phase, the MI weight, the MI scores and term, the estimators' losses and the
    selected fraction (``miat_loss.MIATObjective``). In phase 1 ``adv_accuracy`` is on the pretraining
    attack's pairs.
    """

    name = "miat"
    mi_score_names = ("mi_natural", "mi_adversarial")

    def __init__(self, epsilon: float = 0.3, step_size: float | None = None, steps: int = 10, base: str = "pgd",
                 alpha: float = 5.0, lam: float = 0.1, variant: str = "both",
                 selection: str = "clean_correct_adv_wrong", estimators: MIATEstimators | None = None,
                 phases: MIATPhases | None = None, pretraining: MIATPretraining | None = None,
                 base_options: dict | None = None, **kwargs):
        unknown = sorted(set(kwargs) - set(DEFENSE_OPTIONS) - set(BASE_ATTACK_OPTIONS))
        if unknown:
            raise TypeError(f"MIAT() got an unexpected keyword argument {unknown[0]!r} (the estimators', phases' "
                            "and pretraining's options are MIATEstimators, MIATPhases and MIATPretraining)")
        self.base_name = check_choice("base", base, tuple(BASES))
        self.estimators, self.phases, self.pretraining = (
            _config(name, value) for name, value in zip(CONFIGS, (estimators, phases, pretraining)))
        if base_options is not None and not isinstance(base_options, dict):
            raise invalid("base_options", "a dict of the base defense's arguments or None", base_options)
        self.base_options = dict(base_options or {})
        self.base = BASES[base](epsilon, step_size, steps, **self.base_options, **kwargs)
        self.norm = self.base.norm      # before Defense.__init__: the norm sets epsilon's range
        options = {k: v for k, v in kwargs.items() if k in DEFENSE_OPTIONS}
        super().__init__(epsilon, **{**options, "eval_steps": self.base.eval_steps})
        self.log_names = tuple(self.base.log_names) + (
            "mi_natural", "mi_adversarial", "mi_loss", "selected_fraction", "mi_weight", "miat_phase",
            "estimator_natural_loss", "estimator_adversarial_loss")
        self.estimator_pair = EstimatorPair(self.estimators)
        self.objective = MIATObjective(self.base, self.estimator_pair, alpha, lam, variant, selection)
        #: The training state (``MIATState``: step count, phase lengths, the estimators' optimizer), once built.
        self.state = None

    # The MI term's settings, held by the objective.
    alpha = property(lambda self: self.objective.alpha, doc="Weight of the MI term (variant 'both').")
    lam = property(lambda self: self.objective.lam, doc="Natural-MI weight of variant 'natural'.")
    variant = property(lambda self: self.objective.variant, doc="'both' or 'natural'.")
    selection = property(lambda self: self.objective.selection, doc="'clean_correct_adv_wrong' or 'all'.")

    # -- parts ------------------------------------------------------------------------------------
    def build(self, model):
        if self.state is not None:
            return
        self.estimator_pair.build(model)
        self.state = MIATState(self.pretraining.learning_rate,
                               tuple(s or 0 for _, s in self.phases.lengths), name="miat_state")
        self.state.optimizer.build(self.estimator_variables())

    natural = property(lambda self: self.estimator_pair.natural,
                       doc="The natural estimator v_n (a ``layers.MIEstimator``), None before ``build``.")
    adversarial = property(lambda self: self.estimator_pair.adversarial,
                           doc="The adversarial estimator v_a (a ``layers.MIEstimator``), None before ``build``.")

    def estimator_variables(self):
        """The estimators' trainable variables (trained in phase 1 and by ``pretrain_estimators``, never by
        fit's optimizer: ``AdversarialModel.trainable_weights`` is the model's)."""
        return self.estimator_pair.variables()

    def sublayers(self):
        return self.estimator_pair.layers() + [self.state] if self.state is not None else []

    # -- schedule ---------------------------------------------------------------------------------
    @property
    def pretrained(self):
        """Whether the estimators are trained: by ``pretrain_estimators``, or by a finished phase 1 of fit."""
        return self.state is not None and (self.estimator_pair.pretrained or self.state.pretraining_done())

    def mark_pretrained(self):
        """Set the estimators' ``pretrained`` flags when fit's phase 1 is over (``MIATSchedule``, eagerly: an
        assignment inside the replicas' graph would need a cross-replica sync in a ``tf.cond``)."""
        if self.state is not None and self.state.pretraining_done():
            self.estimator_pair.mark_pretrained()

    @property
    def schedule(self):
        """The phase lengths in steps, {'base', 'pretrain', 'ramp'}, and the steps taken, {'step'};
        'resolved' is False until a ``fit`` (or ``resolve_schedule``) has fixed the lengths."""
        return self.state.summary()

    def check_ready(self, model):
        self.build(network_of(model))
        if (self.pretraining.required and self.phases.skips_pretraining and not self.pretrained
                and not self.schedule["resolved"]):
            raise ValueError("MIAT's MI estimators are not pretrained and `pretrain_epochs`/`pretrain_steps` is 0: "
                             "let fit pretrain them (pretrain_epochs='auto' or > 0), or call "
                             "`model.defense.pretrain_estimators(model, x, y, epochs=...)` on an adversarially "
                             "trained model first (the paper's procedure), or pass "
                             "MIAT(pretraining=MIATPretraining(required=False)).")

    def fit_callbacks(self):
        return [MIATSchedule(self)]

    def resolve_schedule(self, epochs, steps_per_epoch):
        """Fix the phase lengths in steps for a run of ``epochs`` x ``steps_per_epoch`` (``fit`` calls this at
        its start; a custom training loop calls it once). A state already fixed (resumed or continued run)
        is kept. Raises ValueError when base + pretraining leave no MIAT step. Returns ``schedule``."""
        if self.schedule["resolved"]:
            return self.schedule
        fresh = self.schedule["step"] == 0
        base, pretrain, ramp = resolve(self.phases.lengths, epochs, steps_per_epoch, self.pretrained and fresh)
        if self.pretraining.required and pretrain == 0 and not self.pretrained:
            self.check_ready(None)
        self.state.fix(base, pretrain, ramp)
        log.info("MIAT schedule: %d base steps, %d estimator-pretraining steps, MI weight ramped over %d steps",
                 base, pretrain, ramp)
        return self.schedule

    # -- training examples ------------------------------------------------------------------------
    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """Phase 0/2: the base's training examples. Phase 1: the pretraining attack's pairs (official: L2)."""
        self.build(network_of(model))
        norm, eps, step_size, steps = pretraining_attack(self.pretraining, self.epsilon,
                                                         self.estimator_pair.input_shape)
        phase, _ = self.state.phase()

        def pretraining_pairs():
            s = None if seed is None else seed_pair(seed) + tf.stack([tf.constant(104729, tf.int64),
                                                                     2 * self.state.step])
            # steps as a tensor: a tf.while_loop, not 20 unrolled copies of the model in fit's graph.
            return pgd_graph(model, x, y, eps, step_size, tf.constant(steps), norm, False, True, 1, s)

        return tf.cond(tf.equal(phase, 1), pretraining_pairs,
                       lambda: self.base.adversarial_examples(model, x, y, seed=seed, step=step))

    def evaluation_examples(self, model, x, y, seed=None):
        return self.base.evaluation_examples(model, x, y, seed=seed)

    # -- training loss ----------------------------------------------------------------------------
    def loss(self, model, x, y, x_adv, training, step=None):
        """The base loss plus the phase's MI part (``Defense.loss``; ``miat_loss.MIATObjective``). The phase is
        read from MIAT's own count of training steps (``schedule['step']``), not from ``step``."""
        self.build(network_of(model))   # a no-op once built (AdversarialModel builds it at construction)
        return self.objective(self.state, model, x, y, x_adv, training)

    # -- per-sample MI and estimator pretraining --------------------------------------------------
    def mi_scores(self, model, x: np.ndarray, x_adv: np.ndarray, batch_size: int = 256) -> dict:
        """Per-sample natural and adversarial MI of (x, x_adv) under the current model.

        Returns {'mi_natural/clean': v_n(x -> h(x)), 'mi_natural/adv': v_n(x -> h(x~)),
        'mi_adversarial/clean': v_a(n -> h(x)), 'mi_adversarial/adv': v_a(n -> h(x~))}, each (N,) float32
        numpy. Negatives come from the same batch of ``batch_size`` (>= 2; the last batch is merged
        into the previous one when smaller than 2).
        """
        self.build(network_of(model))
        return mi_scores(self.estimator_pair, model, x, x_adv, batch_size)

    def pretrain_attack_epsilon(self, input_shape):
        """Default L2 budget of the pretraining attack: 0.3 * epsilon * sqrt(H * W * C).

        The official estimators are trained on L2 PGD examples (eps 0.5 on CIFAR-10, i.e. 0.29 of the L2
        norm of a full 8/255 sign perturbation); this keeps that ratio for other image sizes and budgets
        (MNIST eps 0.3: 2.5; digits eps 0.2: 0.48).
        """
        return default_attack_epsilon(self.epsilon, input_shape)

    def pretrain_estimators(self, model, x: np.ndarray, y: np.ndarray, epochs: int = 20, batch_size: int = 128,
                            learning_rate: float | None = None, seed: int = 0, verbose: int = 1, attack_norm=None,
                            attack_epsilon: float | None = None, attack_steps: int | None = None) -> dict:
        """Train the natural and adversarial estimators on the frozen ``model`` (the paper's step 2).

        Args:
          model: the AdversarialModel (or its logits model), ideally already adversarially trained.
          x, y: training images (N, H, W, C) in [0, 1] and integer labels.
          epochs, batch_size, learning_rate: Adam on both estimators (official: 25 epochs, batch 400, lr 1e-2;
            on digits lr 1e-2 or 10 epochs left the natural estimator untrained for one seed of two, lr 3e-3
            and 20 epochs gave the paper's ordering for both). learning_rate None: ``pretraining.learning_rate``.
          attack_norm, attack_epsilon, attack_steps: the PGD that makes the training pairs (None: ``pretraining``'s
            norm, epsilon, attack_steps). Official: L2, 20 steps (default epsilon: ``pretrain_attack_epsilon``);
            ``attack_norm=np.inf`` with ``attack_epsilon=None`` uses the defense's own epsilon. The
            adversarial-MI ordering of the paper (higher I(n; h(x~)) than I(n; h(x))) appears with L2 patterns;
            with L-inf sign patterns h(x) can carry more information about n than h(x~) (docs/results.md, MIAT).
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
        base = self.base.get_config()
        return {**super().get_config(), **{k: base[k] for k in ("step_size", "steps", "norm", "random_start")},
                "base": self.base_name, "alpha": self.alpha, "lam": self.lam, "variant": self.variant,
                "selection": self.selection, **{name: getattr(self, name).get_config() for name in CONFIGS},
                "base_options": self.base_options}

    @classmethod
    def from_config(cls, config):
        config = dict(config)
        for name, kind in CONFIGS.items():
            if isinstance(config.get(name), dict):
                config[name] = kind.from_config(config[name])
        return cls(**config)


def _config(name, value):
    """A configuration argument: None (the defaults) or an instance of ``CONFIGS[name]``."""
    kind = CONFIGS[name]
    if value is None:
        return kind()
    if not isinstance(value, kind):
        raise invalid(name, f"None or a kam.defenses.{kind.__name__}", value)
    return value

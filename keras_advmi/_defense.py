"""The Defense protocol: a defense turns a batch into a loss; Keras keeps the optimizer, metrics and loop.

``AdversarialModel`` calls, inside its compiled ``train_step``, with ``step`` the optimizer step
(``optimizer.iterations``, the variable: read in the graph, it is the current step at every run):
  with defense.attack_precision(model):
      x_adv = defense.in_chains(lambda x_, y_, seed: defense.adversarial_examples(model, x_, y_, seed, step),
                                x, y, seed)          # one call per sub-batch (``attack_chains``)
  out = defense.loss(model, x, y, x_adv, training=True, step=step)      # a ``DefenseLoss``
and reduces ``out.per_sample`` with the sample weights; ``test_step`` passes ``training=False, step=None``.
(``loss`` returns a per-sample vector rather than a scalar so that
``sample_weight`` and ``tf.distribute`` loss scaling stay the model's job and are done once, in one place.)

This module lives outside the ``defenses`` package (``defenses.base`` re-exports it) so that ``models``,
which needs only the protocol, does not load every defense.
"""

from __future__ import annotations

from typing import NamedTuple

import numpy as np
import tensorflow as tf
import keras

from ._checks import (check_choice, check_in_unit_interval, check_nonnegative, check_nonnegative_int,
                      check_positive, check_positive_int, check_seed)
from ._model import logits_of
from .attacks._common import madry_step_size, seed_pair
from .attacks._precision import check_attack_dtype, compute_dtype
from .attacks.losses import cross_entropy
from .attacks.pgd import pgd_graph

__all__ = ["Defense", "DefenseLoss", "adversarial_cross_entropy", "apply_if", "serializable"]


class DefenseLoss(NamedTuple):
    """What ``Defense.loss`` returns.

    per_sample: (N,) float32 loss before sample weighting.
    logs: {name: (N,) per-sample values} averaged into metrics (e.g. ``natural_loss``), or
      {name: ((N,) values, (N,) weights)} for a mean over a subset (e.g. MIAT's ``mi_natural`` over
      the samples its MI term selects).
    logits_adv: (N, C) logits on x_adv (for ``adv_accuracy``).
    logits_clean: (N, C) logits on x when the defense computed them anyway, else None.
    train_model: None (the model's gradients are applied every step) or a scalar bool tensor: apply
      them this step (False: the model stays frozen, e.g. while MIAT pretrains its estimators).
    updates: the defense's own training, applied after the model's: ((optimizer, grads, variables,
      gate), ...) with gate None (always) or a scalar bool tensor (e.g. MIAT's estimators).
    """

    per_sample: tf.Tensor
    logs: dict
    logits_adv: tf.Tensor
    logits_clean: tf.Tensor | None = None
    train_model: tf.Tensor | None = None
    updates: tuple = ()


class Defense:
    """The protocol every defense implements: training examples, a per-sample loss, an evaluation attack.

    Subclasses set ``name`` and implement ``adversarial_examples`` and ``loss``; everything else has a
    default. A defense built on a PGD-style inner maximisation (Madry et al., "Towards Deep Learning Models
    Resistant to Adversarial Attacks", 2018) subclasses ``defenses.PGDDefense``, which adds the attack's
    ``step_size``, ``steps``, ``norm`` and ``random_start``.

    Args (taken by every defense):
      epsilon: the threat model's budget, the L-inf radius in pixel units (in [0, 1]; any radius >= 0
        where the defense has an L2 ``norm``): the ball of the training examples and of the evaluation PGD.
      eval_steps: PGD iterations (Madry's step 2.5 * eps / eval_steps, random start) of the evaluation
        attack behind ``adv_accuracy`` in ``evaluate``/validation (default 10; ``PGDDefense``:
        ``max(steps, 10)``).
      epsilon_warmup_steps: ramp epsilon linearly from 0 over this many optimizer steps (0 = off);
        helps MNIST PGD-AT escape the initial plateau.
      seed: base seed of the attack noise; step and replica make each batch's noise distinct.
      attack_dtype: None (float32) or 'bfloat16': the compute dtype of the *training* attack's passes
        (``attacks._precision``); the variables, x_adv, the loss and weight gradients and every
        evaluation attack stay float32. Faster where bf16 units exist (docs/results.md).
      attack_chains: 'auto' or a positive int: the batch is cut into this many sub-batches, each attacked
        by its own chain of ops in the same graph (``in_chains``), so a CPU's cores can run small ops of
        two chains at once. The result is the same attack (it is per sample; only the random-start draws
        differ). 'auto' is 2 where no GPU or TPU is visible and 1 otherwise (the speed-up on CPU cores is
        in docs/results.md).
    """

    name = "defense"
    #: Names of the scalars ``loss`` reports in ``logs`` (a metric each in ``fit``'s history).
    log_names: tuple = ()
    #: Names of the per-sample quantities ``evaluation_logs`` reports (validation metrics).
    evaluation_log_names: tuple = ()
    #: Names of the per-sample MI scores ``mi_scores`` returns (without the ``/clean``, ``/adv`` suffix).
    mi_score_names: tuple = ()
    #: Whether ``adversarial_examples`` treats samples independently (so sub-batches may be attacked apart).
    per_sample_attack: bool = True
    #: The threat model's norm: L-inf unless the defense takes a ``norm`` argument (``PGDDefense``).
    norm = np.inf

    def __init__(self, epsilon: float = 0.3, *, eval_steps: int | None = None, epsilon_warmup_steps: int = 0,
                 seed: int | None = None, attack_dtype: str | None = None, attack_chains: int | str = "auto"):
        if self.norm == np.inf:
            self.epsilon = check_in_unit_interval("epsilon", epsilon)
        else:
            self.epsilon = check_nonnegative("epsilon", epsilon)
        self.eval_steps = check_positive_int("eval_steps", 10 if eval_steps is None else eval_steps)
        self.epsilon_warmup_steps = check_nonnegative_int("epsilon_warmup_steps", epsilon_warmup_steps)
        self.seed = check_seed("seed", seed)
        self.attack_dtype = check_attack_dtype(attack_dtype)
        if isinstance(attack_chains, str):
            self.attack_chains = check_choice("attack_chains", attack_chains, ("auto",))
        else:
            self.attack_chains = check_positive_int("attack_chains", attack_chains)

    # -- protocol -----------------------------------------------------------------------------
    def build(self, model):
        """Create own variables/sub-models once, given the target model. Default: nothing."""

    def sublayers(self):
        """Keras layers the defense owns (saved and loaded with the AdversarialModel)."""
        return []

    def check_ready(self, model):
        """Raise a ``ValueError`` if ``fit`` cannot start yet (e.g. MIAT before its estimators are pretrained)."""

    def fit_callbacks(self):
        """Callbacks ``AdversarialModel.fit`` adds after the user's (e.g. MIAT's phase schedule). Default: none."""
        return []

    def attack_precision(self, model):
        """Context for tracing the training attack: ``model`` computes in ``attack_dtype`` inside it."""
        return compute_dtype(model, self.attack_dtype)

    def chains(self):
        """The number of sub-batches ``in_chains`` cuts a batch into (``attack_chains`` resolved)."""
        if not self.per_sample_attack:
            return 1
        if self.attack_chains == "auto":
            accelerators = [d for d in tf.config.list_logical_devices() if d.device_type in ("GPU", "TPU")]
            return 1 if accelerators else 2
        return self.attack_chains

    def in_chains(self, attack, x, y, seed=None):
        """``attack(x_part, y_part, seed_part)`` on ``chains()`` contiguous sub-batches, concatenated.

        x: (N, ...) float32, y: (N,) labels, seed: None or the (2,) int64 step seed (each part gets its own).
        The parts are independent chains in one graph: TensorFlow's inter-op threads run them side by
        side, which keeps both CPU cores busy on ops too small to split well by themselves. Parts
        differ in size by at most one sample, and an empty part (N < chains) is passed through.
        """
        chains = self.chains()
        if chains == 1:
            return attack(x, y, seed)
        n = tf.shape(x, out_type=tf.int64)[0]
        sizes = tf.stack([(n * (i + 1)) // chains - (n * i) // chains for i in range(chains)])
        parts = zip(tf.split(x, sizes, num=chains), tf.split(y, sizes, num=chains))
        base = None if seed is None else seed_pair(seed)
        return tf.concat([attack(xp, yp, None if base is None else base + tf.constant([1_000_003 * i, 0], tf.int64))
                          for i, (xp, yp) in enumerate(parts)], axis=0)

    def current_epsilon(self, step=None):
        """Epsilon at optimizer step ``step`` under the linear warm-up (a float32 tensor)."""
        eps = tf.constant(self.epsilon, tf.float32)
        if self.epsilon_warmup_steps and step is not None:
            ramp = tf.minimum(1.0, tf.cast(step + 1, tf.float32) / float(self.epsilon_warmup_steps))
            eps = eps * ramp
        return eps

    def check_step_size(self, step_size) -> float:
        """A training attack's step in pixel units: > 0, or >= 0 when ``epsilon`` is 0 (a zero budget has a
        zero step); the ValueError names ``step_size``."""
        return (check_positive if self.epsilon > 0 else check_nonnegative)("step_size", step_size)

    def warmup_scaled(self, value, eps):
        """``value``, set for the full ``epsilon`` (a step size, a perturbation), at the current radius ``eps``
        (``current_epsilon(step)``): value * eps / epsilon, so a step shrinks with the ball during warm-up."""
        return value * eps / max(self.epsilon, 1e-12)

    def adversarial_examples(self, model, x, y, seed=None, step=None):
        """Training examples x_adv (N, ...) float32 in [0, 1], gradients stopped, within ``current_epsilon(step)``.

        ``seed``: None or the (2,) int64 step seed; ``step``: the optimizer step (a scalar int tensor) or None."""
        raise NotImplementedError

    def evaluation_examples(self, model, x, y, seed=None):
        """Examples for ``adv_accuracy`` in evaluate/validation: PGD(eval_steps) at the full epsilon with
        Madry's step 2.5 * eps / eval_steps and a random start (independent of the training attack, which
        for FastAT is a single 1.25 * eps step and would make a weak multi-step attack)."""
        return pgd_graph(model, x, y, self.epsilon, madry_step_size(self.epsilon, self.eval_steps), self.eval_steps,
                         norm=self.norm, targeted=False, random_start=True, restarts=1, seed=seed)

    def loss(self, model, x, y, x_adv, training, step=None) -> DefenseLoss:
        """The per-sample training objective on the batch and its adversarial examples, a ``DefenseLoss``.

        ``step``: the optimizer step in training (the one ``adversarial_examples`` gets; a scalar int
        tensor), None in evaluation and when a custom loop passes none."""
        raise NotImplementedError

    def evaluation_logs(self, model, x, y, seed=None):
        """Extra per-sample quantities for evaluate/validation, {name: (N,) tensor}. Default: none."""
        return {}

    def mi_scores(self, model, x, x_adv, batch_size=256) -> dict:
        """Per-sample mutual-information scores the defense computes with its own estimators, for loggers.

        x, x_adv: (N, ...) arrays in [0, 1]; batch_size: rows per forward pass. Returns
        {'<name>/clean': (N,) array, '<name>/adv': (N,) array} for each name in ``mi_score_names``
        (MIAT: its estimators' MI between input and representation). Default: none, {}.
        """
        return {}

    # -- serialization --------------------------------------------------------------------------
    def get_config(self):
        """The constructor's arguments, JSON-serializable; ``from_config`` rebuilds the defense from them."""
        return {"epsilon": self.epsilon, "eval_steps": self.eval_steps,
                "epsilon_warmup_steps": self.epsilon_warmup_steps, "seed": self.seed,
                "attack_dtype": self.attack_dtype, "attack_chains": self.attack_chains}

    @classmethod
    def from_config(cls, config):
        return cls(**config)

    def __repr__(self):
        args = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({args})"


def adversarial_cross_entropy(model, y, x_adv, training):
    """CE(f(x_adv), y) per sample, and the logits."""
    logits = logits_of(model, x_adv, training=training)
    return cross_entropy(y, logits), logits


def apply_if(gate, optimizer, grads, variables):
    """``optimizer.apply(grads, variables)`` when the scalar bool tensor ``gate`` is true, else nothing.

    Graph-safe under ``tf.distribute``: an optimizer's ``apply`` calls ``merge_call``, which a ``tf.cond``
    in replica context must not contain, so the condition is taken in cross-replica context and the
    update re-enters the replicas (the pattern of Keras' ``LossScaleOptimizer``). ``gate`` must have the
    same value on every replica (it is read from the first). With no strategy this is a plain ``tf.cond``.
    """
    def cross_replica(distribution, gate, grads):
        first = distribution.experimental_local_results(gate)[0]

        def update():
            distribution.extended.call_for_each_replica(lambda g: optimizer.apply(g, variables), args=(grads,))
            return tf.constant(True)

        tf.cond(first, update, lambda: tf.constant(False))

    tf.distribute.get_replica_context().merge_call(cross_replica, args=(gate, list(grads)))


def serializable(cls):
    """Register a Defense subclass with Keras' serialization under the package name."""
    return keras.saving.register_keras_serializable(package="keras_advmi")(cls)

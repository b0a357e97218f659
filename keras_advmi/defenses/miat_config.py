"""MIAT's configuration beyond the MI term's weights: the estimators, the phase lengths of ``fit`` and the
estimator pretraining ("Improving Adversarial Robustness via Mutual Information Estimation", Zhou et al.,
ICML 2022).

Three small frozen objects, each validated in its constructor (every error names the argument), with
``get_config`` / ``from_config`` so that ``MIAT.get_config`` nests them and a ``.keras`` file rebuilds them:

    MIATEstimators(bound, hsize, filters, diagonal, layer)            the two DIM estimators
    MIATPhases(base_*, pretrain_*, alpha_warmup_*)                     phase lengths in epochs or steps
    MIATPretraining(learning_rate, norm, epsilon, attack_steps, required)   how the estimators are trained
"""

from __future__ import annotations

import dataclasses
import numbers

import numpy as np

from .._checks import (check_bool, check_choice, check_in_unit_interval, check_nonnegative_int, check_norm,
                       check_positive, check_positive_int, invalid)
from ..mi.bounds import DIAGONALS as MI_DIAGONALS, PER_SAMPLE_BOUNDS

__all__ = ["MIATEstimators", "MIATPhases", "MIATPretraining", "phase_length", "check_attack_epsilon", "BOUNDS",
           "DIAGONALS", "PHASE_NAMES"]

#: Per-sample bounds of the estimators ('dv': Donsker-Varadhan, the official code's) and DV's negatives
#: ('exclude', the correct DV, or 'zero', the official code's, for parity): the MI package's own lists.
BOUNDS, DIAGONALS = PER_SAMPLE_BOUNDS, MI_DIAGONALS


class _Config:
    """get_config / from_config of a frozen dataclass whose fields are its constructor's arguments."""

    def get_config(self) -> dict:
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}

    @classmethod
    def from_config(cls, config: dict):
        return cls(**config)

    def _set(self, name, value):
        object.__setattr__(self, name, value)    # a frozen dataclass normalises its fields once, here


@dataclasses.dataclass(frozen=True)
class MIATEstimators(_Config):
    """The natural and the adversarial estimator (``layers.MIEstimator``, DIM-style).

    Args:
      bound: per-sample bound, 'dv' (official), 'jsd' or 'infonce'.
      hsize, filters: encoder sizes (official CIFAR: 2048, (64, 128); ~128 suits MNIST).
      diagonal: DV negatives, 'exclude' (correct DV) or 'zero' (the official code's parity).
      layer: None (the estimators read the model's logits, the paper's main setting) or the name of a layer
        of the model whose output (flattened) they read instead (the official ``--is_internal`` option).
    """

    bound: str = "dv"
    hsize: int = 128
    filters: tuple = (32, 64)
    diagonal: str = "exclude"
    layer: str | None = None

    def __post_init__(self):
        check_choice("bound", self.bound, BOUNDS)
        self._set("hsize", check_positive_int("hsize", self.hsize))
        if isinstance(self.filters, (str, bytes)) or not isinstance(self.filters, (tuple, list)):
            raise invalid("filters", "a tuple of positive integers (the local encoder's conv widths)", self.filters)
        self._set("filters", tuple(check_positive_int("filters", f) for f in self.filters))
        check_choice("diagonal", self.diagonal, DIAGONALS)
        if self.layer is not None and not isinstance(self.layer, str):
            raise invalid("layer", "None (the logits) or the name of a layer of the model", self.layer)

    def get_config(self) -> dict:
        return {**super().get_config(), "filters": list(self.filters)}


def phase_length(name_epochs: str, epochs, name_steps: str, steps):
    """One phase length, given as epochs ("auto" or a number >= 0) or as steps (an int >= 0, or None):
    ("auto", steps) when steps are given, else (epochs as float or "auto", None)."""
    if steps is not None:
        steps = check_nonnegative_int(name_steps, steps)
        if epochs != "auto":
            raise invalid(name_epochs, f"'auto' when `{name_steps}` is given (one unit per phase)", epochs)
        return "auto", steps
    if epochs == "auto":
        return "auto", None
    if isinstance(epochs, bool) or not isinstance(epochs, numbers.Real) or not epochs >= 0:
        raise invalid(name_epochs, "'auto' or a number of epochs >= 0", epochs)
    return float(epochs), None


#: The argument names of the phases, (epochs, steps) for base, pretraining and the alpha ramp.
PHASE_NAMES = (("base_epochs", "base_steps"), ("pretrain_epochs", "pretrain_steps"),
               ("alpha_warmup_epochs", "alpha_warmup_steps"))


@dataclasses.dataclass(frozen=True)
class MIATPhases(_Config):
    """The lengths of ``fit``'s three phases (``miat_schedule``): base adversarial training, estimator
    pretraining, and the ramp of the MI weight from 0 to alpha.

    Each is 'auto' (the default: 25% / 10% / 25% of the run), a number of epochs (fractions allowed), or an int
    of steps (then the epochs argument stays 'auto'); 0 skips a phase. Without a ramp the MI term enters at
    full weight right after pretraining, where the estimators score the selected samples' natural and
    adversarial outputs as uncorrelated (cos ~ 0, the term ~ 2 alpha): that collapsed bench_cnn on MNIST
    within 20 Adam steps (docs/results.md, MIAT), hence the default ramp: the paper leaves a ramp open; we
    ramp over 25% of the run (on digits a 10% ramp lost more PGD accuracy; docs/results.md).
    """

    base_epochs: float | str = "auto"
    base_steps: int | None = None
    pretrain_epochs: float | str = "auto"
    pretrain_steps: int | None = None
    alpha_warmup_epochs: float | str = "auto"
    alpha_warmup_steps: int | None = None

    def __post_init__(self):
        for name_epochs, name_steps in PHASE_NAMES:
            epochs, steps = phase_length(name_epochs, getattr(self, name_epochs), name_steps,
                                         getattr(self, name_steps))
            self._set(name_epochs, epochs)
            self._set(name_steps, steps)

    @property
    def lengths(self) -> tuple:
        """((base_epochs, base_steps), (pretrain_epochs, pretrain_steps), (alpha_warmup_epochs,
        alpha_warmup_steps)), as ``phase_length`` returns them."""
        return tuple((getattr(self, e), getattr(self, s)) for e, s in PHASE_NAMES)

    @property
    def skips_pretraining(self) -> bool:
        """Whether the pretraining phase is set to 0 (epochs or steps)."""
        return self.pretrain_steps == 0 or self.pretrain_epochs == 0


def check_attack_epsilon(name: str, value, norm) -> float:
    """An attack budget > 0: at most 1 for L-inf (pixel units), any finite value for L2."""
    return check_in_unit_interval(name, value, open_low=True) if norm == np.inf else check_positive(name, value)


@dataclasses.dataclass(frozen=True)
class MIATPretraining(_Config):
    """How the estimators are trained: in ``fit``'s phase 1 and by ``MIAT.pretrain_estimators``.

    Args:
      learning_rate: Adam of the estimators (> 0).
      norm, epsilon, attack_steps: the PGD that makes the estimators' training pairs (official: L2, 20 steps;
        epsilon None: ``MIAT.pretrain_attack_epsilon``).
      required: refuse to ``fit`` with no pretraining phase (``pretrain_epochs=0``) while the estimators are
        untrained (the MI term of untrained estimators is noise).
    """

    learning_rate: float = 3e-3
    norm: float | int | str = 2
    epsilon: float | None = None
    attack_steps: int = 20
    required: bool = True

    def __post_init__(self):
        self._set("learning_rate", check_positive("learning_rate", self.learning_rate))
        self._set("norm", check_norm(self.norm))
        if self.epsilon is not None:
            self._set("epsilon", check_attack_epsilon("epsilon", self.epsilon, self.norm))
        self._set("attack_steps", check_positive_int("attack_steps", self.attack_steps))
        self._set("required", check_bool("required", self.required))

    def get_config(self) -> dict:
        return {**super().get_config(), "norm": "inf" if self.norm == np.inf else self.norm}


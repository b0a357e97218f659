"""What a ``keras-advmi train`` run builds from a defense name and its options: the defense, each given exactly
the arguments it takes, and the callbacks that defense needs during ``fit``.

The rules that need no TensorFlow (the defense names, the default epsilon warm-up, which defense takes a step
size or a robust-term weight) are in ``keras_advmi.recipes``; the command line reads them before TensorFlow
loads, this module after.
"""

from __future__ import annotations

from dataclasses import dataclass

import keras

from ._checks import check_choice, invalid
from .callbacks import CatastrophicOverfittingMonitor
from .defenses import MART, MIAT, PGD, SNS, TRADES, FastAT, MIATPhases, RegionAT
from .recipes import DEFENSE_NAMES, ROBUST_WEIGHT, STEP_SIZE_DEFENSES

__all__ = ["DefenseOptions", "build_defense", "defense_callbacks", "sns_layers"]


@dataclass(frozen=True)
class DefenseOptions:
    """The options of a run's defense; each defense reads the ones it has.

    Attributes:
      epsilon: L-inf training budget (pixel scale, in [0, 1]).
      steps: attack steps of the iterative defenses (FastAT's attack is one step; RegionAT's universal
        perturbations have their own).
      step_size: attack step for ``recipes.STEP_SIZE_DEFENSES`` (None: the defense's default, e.g. Madry's
        2.5 * epsilon / steps); any other defense refuses one.
      seed: the defense's random seed.
      attack_dtype: compute dtype of the training attack's passes ("float32", "bfloat16"; None: the model's).
      epsilon_warmup_steps: optimizer steps over which the training epsilon ramps from 0 (0 = none).
      beta: the weight of the robust term of ``recipes.ROBUST_WEIGHT``'s defenses (TRADES' beta, MART's
        lambda; None: the defense's default).
      miat_base, miat_alpha: MIAT's base defense and the weight of its MI term.
      miat_base_epochs, miat_pretrain_epochs, miat_alpha_warmup_epochs: MIAT's phase lengths in epochs
        (``MIATPhases``; "auto": its fractions of the run).
    """

    epsilon: float
    steps: int = 10
    step_size: float | None = None
    seed: int | None = None
    attack_dtype: str | None = None
    epsilon_warmup_steps: int = 0
    beta: float | None = None
    miat_base: str = "pgd"
    miat_alpha: float = 5.0
    miat_base_epochs: float | str = "auto"
    miat_pretrain_epochs: float | str = "auto"
    miat_alpha_warmup_epochs: float | str = "auto"


def sns_layers(model: keras.Model) -> list[str]:
    """The layers SNS stabilises in a run: the names of every ``Conv2D`` layer of ``model``, in order."""
    return [layer.name for layer in model.layers if isinstance(layer, keras.layers.Conv2D)]


def _common(o):
    """The arguments every defense takes."""
    return {"epsilon": o.epsilon, "seed": o.seed, "attack_dtype": o.attack_dtype,
            "epsilon_warmup_steps": o.epsilon_warmup_steps}


def _iterative(o):
    """The arguments of a defense with a PGD-style training attack."""
    return {**_common(o), "step_size": o.step_size, "steps": o.steps}


def _robust_weight(name, o):
    return {} if o.beta is None else {ROBUST_WEIGHT[name]: o.beta}


def _pgd(model, o):
    return PGD(**_iterative(o))


def _trades(model, o):
    return TRADES(**_iterative(o), **_robust_weight("trades", o))


def _mart(model, o):
    return MART(**_iterative(o), **_robust_weight("mart", o))


def _sns(model, o):
    return SNS(**_iterative(o), layers=sns_layers(model))


def _miat(model, o):
    phases = MIATPhases(base_epochs=o.miat_base_epochs, pretrain_epochs=o.miat_pretrain_epochs,
                        alpha_warmup_epochs=o.miat_alpha_warmup_epochs)
    return MIAT(**_iterative(o), base=o.miat_base, alpha=o.miat_alpha, phases=phases)


def _fast_at(model, o):
    return FastAT(**_common(o), step_size=o.step_size)


def _region_at(model, o):
    return RegionAT(**_common(o))


#: ``--defense`` name -> builder(model, options): the arguments each defense takes, spelled out.
BUILDERS = {"pgd": _pgd, "trades": _trades, "mart": _mart, "sns": _sns, "miat": _miat, "fast_at": _fast_at,
            "region_at": _region_at}


def build_defense(name: str, model: keras.Model, options: DefenseOptions):
    """The defense ``name`` (a ``recipes.DEFENSE_NAMES`` name; "none": None) for training ``model``.

    SNS stabilises ``sns_layers(model)``; ``options.beta`` is TRADES' beta or MART's lambda. Raises a
    ``ValueError`` for an unknown name, a step size for a defense without one, or a beta for a defense
    without a robust-term weight.
    """
    check_choice("defense", name, DEFENSE_NAMES)
    if name == "none":
        return None
    if options.step_size is not None and name not in STEP_SIZE_DEFENSES:
        raise invalid("step_size", f"None: {name} has no attack step size (only {', '.join(STEP_SIZE_DEFENSES)})",
                      options.step_size)
    if options.beta is not None and name not in ROBUST_WEIGHT:
        raise invalid("beta", f"None: {name} has no robust-term weight (only {', '.join(ROBUST_WEIGHT)})",
                      options.beta)
    return BUILDERS[name](model, options)


def defense_callbacks(defense, x, y) -> list[keras.callbacks.Callback]:
    """The callbacks ``defense`` needs in a run on the training images ``x`` (N, H, W, C) and labels ``y`` (N,):
    RegionAT's refresh of its universal perturbations on (x, y) (without it they stay 0); FastAT's catastrophic
    overfitting check, PGD against FGSM accuracy on the validation data ("Fast is better than free: revisiting
    adversarial training", Wong et al. 2020). Empty for the others and for None."""
    if isinstance(defense, RegionAT):
        return [defense.refresh_callback(x, y)]
    if isinstance(defense, FastAT):
        return [CatastrophicOverfittingMonitor()]
    return []

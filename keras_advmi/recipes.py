"""Training recipes: the named sets of ``keras-advmi train`` switches (``--recipe NAME``) and the rules a run
applies to the switches left out (the defense names, the default epsilon warm-up, which defense takes
``--step-size`` and ``--beta``).

This module imports no TensorFlow: ``keras-advmi train --help`` reads it. ``keras_advmi.training`` builds the
defense and the callbacks of a run from these names.

A recipe fills in every switch it names that the command line leaves out; a switch given on the command line
wins. ``keras-advmi train`` prints the recipe's switches at start. The figures each recipe gives, with the
command, wall time and seed, are in docs/results.md ("Robust accuracy, per dataset").

Both recipes are PGD-AT ("Towards deep learning models resistant to adversarial attacks", Madry et al. 2018)
on TRADES' SmallCNN (``architectures.trades_cnn``, "Theoretically principled trade-off between robustness and
accuracy", Zhang et al. 2019), for MNIST at its epsilon 0.3, and differ in epochs: ``fast`` fits 30 minutes of
training on 2 CPU cores, ``robust`` 3 hours. On another dataset they run unchanged, with a warning that they were
tuned on MNIST.
"""

from __future__ import annotations

from dataclasses import dataclass, field

#: ``--defense`` names: ``none`` (standard training), then ``sorted(keras_advmi.defenses.REGISTRY)``, spelled
#: out so that the parser builds without TensorFlow; a test keeps the two equal.
DEFENSE_NAMES = ("none", "fast_at", "mart", "miat", "pgd", "region_at", "sns", "trades")
#: The defenses whose training attack takes a step size (``--step-size``): all but RegionAT, whose universal
#: perturbations have their own step.
STEP_SIZE_DEFENSES = ("fast_at", "mart", "miat", "pgd", "sns", "trades")
#: The defenses whose training attack is iterative (``--steps``): FastAT's is one step, RegionAT's universal
#: perturbations have their own.
STEPS_DEFENSES = ("mart", "miat", "pgd", "sns", "trades")
#: ``--beta``, the weight of the robust term: the argument it sets on each defense that has one (TRADES' beta,
#: MART's lambda).
ROBUST_WEIGHT = {"trades": "beta", "mart": "lam"}

#: The default epsilon warm-up: these defenses, at a training epsilon >= WARMUP_EPSILON, ramp epsilon
#: over min(WARMUP_EPOCHS, epochs / 2) epochs (PGD-AT at MNIST's 0.3 from step 0 stays at chance: the plateau
#: of "Towards deep learning models resistant to adversarial attacks", Madry et al. 2018). MIAT runs its own
#: phases.
WARMUP_DEFENSES = ("pgd", "trades", "mart", "fast_at", "region_at", "sns")
WARMUP_EPSILON = 0.25
WARMUP_EPOCHS = 2.0


def default_warmup_epochs(defense: str, epsilon: float, epochs: float) -> float:
    """The default epsilon warm-up, in epochs, of a run of ``defense`` (a ``DEFENSE_NAMES`` name) at the
    training ``epsilon`` (L-inf, pixel scale) for ``epochs`` epochs: min(WARMUP_EPOCHS, epochs / 2) for
    ``WARMUP_DEFENSES`` at epsilon >= WARMUP_EPSILON, else 0."""
    if defense in WARMUP_DEFENSES and epsilon >= WARMUP_EPSILON:
        return min(WARMUP_EPOCHS, epochs / 2)
    return 0.0


@dataclass(frozen=True)
class Recipe:
    """A named set of ``keras-advmi train`` switches.

    Attributes:
      name: the ``--recipe`` value.
      summary: one line on what it is for (its budget on 2 CPU cores).
      switches: ``{argparse dest: value}``, e.g. ``{"defense": "pgd", "epochs": 8}``.
      dataset: the dataset it was tuned on.
    """

    name: str
    summary: str
    switches: dict = field(default_factory=dict)
    dataset: str = "mnist"

    def command_line(self) -> str:
        """The switches as they would be typed: ``--arch madry_cnn --defense pgd ...``."""
        return " ".join(_flag(dest, value) for dest, value in self.switches.items())


def _flag(dest, value):
    flag = "--" + dest.replace("_", "-")
    if value is True:
        return flag
    if value is False:
        return "--no-" + dest.replace("_", "-")
    return f"{flag} {value:g}" if isinstance(value, float) else f"{flag} {value}"


#: The switches both recipes share: PGD-10 at Madry's step 2.5 eps / 10 computed in bfloat16
#: (1.7x faster steps, the same robust accuracy within tenths: docs/results.md), batch 128, Adam on the
#: one-cycle rate (peak 2e-3), epsilon ramped over 2 epochs, validation on the last 1,000 test images.
_COMMON = {"steps": 10, "attack_dtype": "bfloat16", "batch_size": 128,
           "lr": 2e-3, "lr_schedule": "onecycle", "epsilon_warmup_epochs": 2.0, "val_images": 1000}

RECIPES = {
    "fast": Recipe(
        "fast", "the best robust model within 30 minutes of training on 2 CPU cores: PGD-AT on TRADES' SmallCNN, "
                "8 epochs (840 s; AutoAttack 92.8% on 1,000 MNIST test images, seed 0)",
        {"defense": "pgd", "epochs": 8, "arch": "trades_cnn", **_COMMON}),
    "robust": Recipe(
        "robust", "the most robust model within 3 hours of training on 2 CPU cores: the fast recipe for 40 epochs "
                  "(7,800 s for seed 0; AutoAttack 92.7% on 1,000 MNIST test images, no better than fast; standard "
                  "AutoAttack 91.7% on 2,000: docs/results.md)",
        {"defense": "pgd", "epochs": 40, "arch": "trades_cnn", **_COMMON}),
}

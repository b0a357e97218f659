"""``evaluate_robustness``: one table of accuracy under attacks and budgets, with a gradient-masking check.

Attack names:
  ``clean``; ``fgsm``; ``pgd-K`` (ours, L-inf, K steps, ``kam.attacks.madry_step_size``, random start, ``restarts``);
  ``pgd-l2-K`` (ours, L2); ``cleverhans-pgd-K`` (cleverhans' tf2 PGD, a second implementation);
  ``apgd-ce`` / ``apgd-dlr`` (ART's Auto-PGD) and ``autoattack`` (ART's AutoAttack: APGD-CE, APGD-DLR
  and Square with 1,000 queries; needs the ``autoattack`` extra: ``pip install keras-advmi[autoattack]``);
  ``autoattack-standard`` (nearer Croce & Hein's standard version, "Reliable evaluation of adversarial
  robustness with an ensemble of diverse parameter-free attacks", 2020: APGD-CE and APGD-DLR, one random
  start each, untargeted and then targeted at each of the other classes, then Square with 5,000 queries; ART
  has no FAB). In both AutoAttacks Square runs on predictions memoised per input row, so that each input it
  queries reaches the model once, as in the original algorithm (ART's Square forwards its inputs again each
  iteration).

Gradient masking (Athalye et al., "Obfuscated Gradients Give a False Sense of Security", 2018; Carlini et al.,
"On Evaluating Adversarial Robustness", 2019): robust accuracy must fall monotonically as epsilon grows, and an
iterative attack must not be weaker than a single step; the report flags violations as
``suspected_gradient_masking``.

Modules: ``_report`` (``RobustnessReport``), ``_art`` (ART adapters and the vectorised DLR loss), ``_masking``
(the gradient-masking checks), ``_driver`` (``evaluate_robustness``).
"""

from ._art import DifferenceOfLogitsRatio
from ._driver import ATTACK_FAMILIES, evaluate_robustness
from ._report import RobustnessReport

__all__ = ["ATTACK_FAMILIES", "DifferenceOfLogitsRatio", "RobustnessReport", "evaluate_robustness"]

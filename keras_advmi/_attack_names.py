"""Attack names as ``evaluate_robustness`` and ``kam.detection.evaluate`` take them, parsed in one place.

``clean``, ``fgsm``, ``pgd-K`` (L-inf, K steps), ``pgd-l2-K`` (L2), ``cleverhans-pgd-K``, ``apgd-ce``,
``apgd-dlr``, ``autoattack``, ``autoattack-standard``, ``adaptive`` / ``adaptive-K`` (the detection-aware attack).
"""

from __future__ import annotations

import re
from typing import NamedTuple

import numpy as np

_NAME_RE = re.compile(r"^(?:(clean|fgsm|apgd-ce|apgd-dlr|autoattack-standard|autoattack)|(pgd|pgd-l2|cleverhans-pgd)-(\d+)"
                      r"|(adaptive)(?:-(\d+))?)$")


class AttackName(NamedTuple):
    """A parsed attack name: ``family`` (the name without its step count), ``steps`` (None when the name
    has none) and ``norm`` (2 for ``pgd-l2``, else ``np.inf``)."""

    name: str
    family: str
    steps: int | None
    norm: float


def parse_attack_name(name, families=None) -> AttackName | None:
    """``name`` parsed, or None when it is not an attack name or its family is not among ``families``."""
    match = _NAME_RE.match(name) if isinstance(name, str) else None
    if match is None:
        return None
    family = match.group(1) or match.group(2) or match.group(4)
    digits = match.group(3) or match.group(5)
    if families is not None and family not in families:
        return None
    return AttackName(name, family, int(digits) if digits else None, 2 if family == "pgd-l2" else np.inf)

"""Gradient-masking checks on a robustness table (Athalye et al., "Obfuscated Gradients Give a False Sense of
Security", 2018; Carlini et al., "On Evaluating Adversarial Robustness", 2019): robust accuracy must fall
monotonically as epsilon grows, and an iterative attack must not be weaker than a single step."""

from __future__ import annotations

from .._attack_names import parse_attack_name


def masking_warnings(rows, n):
    """The gradient-masking warnings (list of str) of a table's ``rows`` ({attack, epsilon, accuracy} dicts) on
    ``n`` samples: accuracy must not rise with epsilon per attack, and an iterative attack must be no weaker
    than FGSM at the same epsilon; one sample (1/n) of slack."""
    warnings = []
    tolerance = 1.0 / max(n, 1)  # one sample of slack for random starts
    by_attack = {}
    for r in rows:
        if r["attack"] != "clean":
            by_attack.setdefault(r["attack"], []).append((r["epsilon"], r["accuracy"]))
    for attack, cells in by_attack.items():
        cells.sort()
        for (e0, a0), (e1, a1) in zip(cells, cells[1:]):
            if a1 > a0 + tolerance:
                warnings.append(f"{attack}: accuracy rises from {a0:.4f} at eps={e0:g} to {a1:.4f} at eps={e1:g} "
                                "(non-monotonic in epsilon: suspected gradient masking)")
    fgsm = dict(by_attack.get("fgsm", []))
    for attack, cells in by_attack.items():
        spec = parse_attack_name(attack)
        if spec is not None and spec.family in ("pgd", "apgd-ce", "apgd-dlr", "autoattack", "cleverhans-pgd"):
            for eps, acc in cells:
                if eps in fgsm and acc > fgsm[eps] + tolerance:
                    warnings.append(f"{attack} ({acc:.4f}) is weaker than FGSM ({fgsm[eps]:.4f}) at eps={eps:g}: "
                                    "suspected gradient masking")
    return warnings

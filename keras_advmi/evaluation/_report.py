"""``RobustnessReport``: the rows and warnings ``evaluate_robustness`` returns, as a table, JSON or CSV."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field


@dataclass
class RobustnessReport:
    """Rows of ``{"attack", "epsilon", "accuracy", "n"}`` plus the masking checks.

    ``report["pgd-40"][0.3]`` is the accuracy of that cell; ``str(report)`` is a table. ``collapse``
    names the evidence when the model's clean predictions look collapsed (``kam.callbacks.collapse``),
    else None.
    """

    rows: list = field(default_factory=list)
    warnings: list = field(default_factory=list)
    collapse: str | None = None

    @classmethod
    def from_dict(cls, d: dict) -> RobustnessReport:
        """The report ``to_dict`` (or ``robustness.json``) wrote."""
        return cls(list(d["rows"]), list(d.get("warnings", [])), d.get("collapse"))

    @property
    def suspected_gradient_masking(self) -> bool:
        return bool(self.warnings)

    def __getitem__(self, attack: str) -> dict:
        cells = {r["epsilon"]: r["accuracy"] for r in self.rows if r["attack"] == attack}
        if not cells:
            raise KeyError(attack)
        return cells

    def attacks(self) -> list:
        return list(dict.fromkeys(r["attack"] for r in self.rows))

    def to_dict(self) -> dict:
        return {"rows": self.rows, "warnings": self.warnings,
                "suspected_gradient_masking": self.suspected_gradient_masking, "collapse": self.collapse}

    def to_json(self, path: str | None = None) -> str:
        text = json.dumps(self.to_dict(), indent=2)
        if path:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path: str | None = None) -> str:
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["attack", "epsilon", "accuracy", "n"])
        writer.writeheader()
        writer.writerows(self.rows)
        if path:
            with open(path, "w") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def __str__(self) -> str:
        epsilons = sorted({r["epsilon"] for r in self.rows if r["attack"] != "clean"})
        head = f"{'attack':<20}" + "".join(f"{'eps=' + format(e, '.4g'):>12}" for e in epsilons)
        lines = [head, "-" * len(head)]
        for attack in self.attacks():
            cells = self[attack]
            if attack == "clean":
                lines.append(f"{'clean':<20}" + f"{100 * next(iter(cells.values())):>11.2f}%")
                continue
            lines.append(f"{attack:<20}" + "".join(
                f"{100 * cells[e]:>11.2f}%" if e in cells else f"{'':>12}" for e in epsilons))
        lines += [f"WARNING: {w}" for w in self.warnings]
        if self.collapse:
            lines.append(f"WARNING: {self.collapse}")
        return "\n".join(lines)

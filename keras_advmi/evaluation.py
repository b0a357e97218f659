"""``evaluate_robustness``: one table of accuracy under attacks and budgets, with a gradient-masking check.

Attack names:
  ``clean``; ``fgsm``; ``pgd-K`` (ours, L-inf, K steps, ``kam.attacks.madry_step_size``, random start, ``restarts``);
  ``pgd-l2-K`` (ours, L2); ``cleverhans-pgd-K`` (cleverhans' tf2 PGD, a second implementation);
  ``apgd-ce`` / ``apgd-dlr`` (ART's Auto-PGD) and ``autoattack`` (ART's AutoAttack: APGD-CE, APGD-DLR
  and Square by default; needs the ``autoattack`` extra: ``pip install keras-advmi[autoattack]``).

Gradient masking (Athalye et al. 2018; Carlini et al. 2019 "On Evaluating Adversarial Robustness"):
robust accuracy must fall monotonically as epsilon grows, and an iterative attack must not be weaker
than a single step; the report flags violations as ``suspected_gradient_masking``.
"""

from __future__ import annotations

import csv
import io
import json
import logging
import sys
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import keras
from tqdm.auto import tqdm

from . import attacks
from ._attack_names import parse_attack_name
from ._checks import check_images, check_labels, check_positive_int, invalid
from ._model import network_of, predict_logits
from .attacks.losses import dlr_loss
from .callbacks.collapse import warn_if_collapsed

logger = logging.getLogger(__name__)

#: The attack families ``evaluate_robustness`` runs (names parsed by ``_attack_names.parse_attack_name``).
ATTACK_FAMILIES = ("clean", "fgsm", "pgd", "pgd-l2", "cleverhans-pgd", "apgd-ce", "apgd-dlr", "autoattack")


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
    def from_dict(cls, d):
        """The report ``to_dict`` (or ``robustness.json``) wrote."""
        return cls(list(d["rows"]), list(d.get("warnings", [])), d.get("collapse"))

    @property
    def suspected_gradient_masking(self) -> bool:
        return bool(self.warnings)

    def __getitem__(self, attack):
        cells = {r["epsilon"]: r["accuracy"] for r in self.rows if r["attack"] == attack}
        if not cells:
            raise KeyError(attack)
        return cells

    def attacks(self):
        return list(dict.fromkeys(r["attack"] for r in self.rows))

    def to_dict(self):
        return {"rows": self.rows, "warnings": self.warnings,
                "suspected_gradient_masking": self.suspected_gradient_masking, "collapse": self.collapse}

    def to_json(self, path=None):
        text = json.dumps(self.to_dict(), indent=2)
        if path:
            with open(path, "w") as f:
                f.write(text)
        return text

    def to_csv(self, path=None):
        buf = io.StringIO()
        writer = csv.DictWriter(buf, fieldnames=["attack", "epsilon", "accuracy", "n"])
        writer.writeheader()
        writer.writerows(self.rows)
        if path:
            with open(path, "w") as f:
                f.write(buf.getvalue())
        return buf.getvalue()

    def __str__(self):
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


def _predict(model, x, batch_size):
    return predict_logits(model, x, batch_size).argmax(-1)


class DifferenceOfLogitsRatio:
    """Croce & Hein's (2020) DLR loss, vectorised, for ART's Auto-PGD.

    ``dlr(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` per sample, ``z_pi1 >= z_pi2 >= z_pi3`` the
    sorted logits; ``y_true`` one-hot ``(N, C)``, ``y_pred`` logits ``(N, C)``: ``kam.attacks.dlr_loss``
    with ART's reduction. The values and gradients are those of ART's ``DifferenceLogitsRatioTensorFlowV2``
    (tested), without its Python loop over the batch (docs/benchmarks.md). ``reduction`` is the attribute ART sets before each call
    (``"none"`` per sample, ``"sum"``, anything else the mean).
    """

    def __init__(self):
        self.reduction = "mean"

    def __call__(self, y_true, y_pred, *args, **kwargs):
        dlr = dlr_loss(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        if self.reduction == "none":
            return dlr
        return tf.reduce_sum(dlr) if self.reduction == "sum" else tf.reduce_mean(dlr)


def _art_classifier(model, x, loss_object=None):
    """ART's ``TensorFlowV2Classifier`` over a ``tf.function`` of the model.

    ART calls the model eagerly for every gradient; compiling it removes Keras' per-layer Python
    overhead, which dominated Auto-PGD on small models. ``model`` may already be such a function
    (``classifier.model``), so that classifiers with different losses share one trace.
    """
    from art.estimators.classification import TensorFlowV2Classifier  # optional extra: imported where used

    n_classes = int(np.asarray(model(x[:1])).shape[-1])
    if isinstance(model, tf.types.experimental.PolymorphicFunction):
        logits = model
    else:
        @tf.function(reduce_retracing=True)
        def logits(inputs, training=False):
            return model(inputs, training=False)

    return TensorFlowV2Classifier(model=logits, nb_classes=n_classes, input_shape=x.shape[1:],
                                  loss_object=loss_object or keras.losses.CategoricalCrossentropy(from_logits=True),
                                  clip_values=(0.0, 1.0))


def _art_attack(name, model, x, epsilon, batch_size):
    """ART's attack ``name`` at ``epsilon`` and its classifier's class count (``x`` gives the input shape)."""
    try:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent  # optional extra
    except ImportError as exc:  # pragma: no cover - depends on the optional extra
        raise ImportError(f"attack {name!r} needs ART: pip install 'keras-advmi[autoattack]' ({exc})") from exc
    classifier = _art_classifier(model, x)
    step = max(epsilon / 4, 1e-4)

    def apgd(loss, **kwargs):
        # DLR: ART's algorithm on a classifier whose loss is the vectorised DLR (loss_type=None = "use it").
        if loss == "dlr":
            return AutoProjectedGradientDescent(_art_classifier(classifier.model, x, DifferenceOfLogitsRatio()),
                                                norm=np.inf, eps=epsilon, eps_step=step, max_iter=100,
                                                batch_size=batch_size, loss_type=None, verbose=False, **kwargs)
        return AutoProjectedGradientDescent(classifier, norm=np.inf, eps=epsilon, eps_step=step, max_iter=100,
                                            batch_size=batch_size, loss_type="cross_entropy", verbose=False,
                                            **kwargs)

    if name in ("apgd-ce", "apgd-dlr"):
        return apgd("ce" if name == "apgd-ce" else "dlr", nb_random_init=1), classifier.nb_classes
    from art.attacks.evasion import SquareAttack  # optional extra: imported where used

    attacks = [apgd("ce"), apgd("dlr"),
               SquareAttack(classifier, norm=np.inf, eps=epsilon, max_iter=1000, nb_restarts=1,
                            batch_size=batch_size, verbose=False)]
    return (AutoAttack(classifier, norm=np.inf, eps=epsilon, eps_step=step, attacks=attacks, batch_size=batch_size),
            classifier.nb_classes)


def _run_art(name, model, x, y, epsilon, batch_size, seed):
    attack, classes = _art_attack(name, model, x, epsilon, batch_size)
    np.random.seed(seed)
    return attack.generate(x=x, y=np.eye(classes, dtype=np.float32)[y]).astype(np.float32)


def _attack_fn(name, model, x, epsilon, batch_size, restarts, seed):
    """``run(chunk_index, x_chunk, y_chunk) -> x_adv`` for attack ``name``. PGD's noise of chunk i is the
    noise ``attacks.pgd`` gives chunk i of the whole array (its seeds ``(seed, 1000 i)``)."""
    spec = parse_attack_name(name)
    if spec.family == "fgsm":
        return lambda i, xb, yb: attacks.fgsm(model, xb, yb, epsilon=epsilon, batch_size=batch_size)
    if spec.family in ("pgd", "pgd-l2"):
        k, norm = spec.steps, spec.norm

        def run(i, xb, yb):
            chunk_seed = None if seed is None else tf.constant([int(seed), 1000 * i], tf.int64)
            return attacks.pgd(model, xb, yb, epsilon=epsilon, step_size=None, steps=k, norm=norm, restarts=restarts,
                               seed=chunk_seed, batch_size=batch_size)
        return run
    if spec.family == "cleverhans-pgd":
        # optional extra: imported where used
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

        k = spec.steps
        return lambda i, xb, yb: projected_gradient_descent(
            model, xb, epsilon, attacks.madry_step_size(epsilon, k), k, np.inf, clip_min=0.0, clip_max=1.0, y=yb, rand_init=True,
            sanity_checks=False).numpy()
    attack, classes = _art_attack(name, model, x, epsilon, batch_size)
    np.random.seed(seed)
    eye = np.eye(classes, dtype=np.float32)
    return lambda i, xb, yb: attack.generate(x=xb, y=eye[yb]).astype(np.float32)


def _progress_enabled(progress):
    """``progress`` as a bool; ``None`` = on when stderr is a terminal."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    if not isinstance(progress, (bool, np.bool_)):
        raise invalid("progress", "True, False or None (on when stderr is a terminal)", progress)
    return bool(progress)


def _masking_warnings(rows, n):
    """Non-increasing accuracy over epsilon per attack; iterative attacks no weaker than FGSM."""
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


def evaluate_robustness(model, x, y, attacks=("clean", "fgsm", "pgd-20"), epsilons=(0.3,), batch_size=256,
                        restarts=1, seed=0, progress=None):
    """Accuracy of ``model`` on (x, y) under each attack at each epsilon (L-inf unless the name says L2).

    Args:
      model: a Keras model or ``kam.AdversarialModel`` (its logits model is attacked), or a callable
        returning logits.
      x: images (N, ...) float32 in [0, 1]. y: int labels (N,).
      attacks: names (module docstring). epsilons: budgets in pixel units.
      restarts: PGD restarts (worst case per sample kept). seed: attack noise seed.
      progress: a tqdm bar per attack that advances per batch; ``None`` (default) shows it when stderr
        is a terminal.

    Returns:
      ``RobustnessReport`` (rows, warnings; ``str()`` is a table; ``to_json``/``to_csv``). When the clean
      predictions look collapsed (near chance, or one class for > 90% of x) it warns with a
      ``kam.callbacks.CollapseWarning`` and sets ``report.collapse``.
    """
    if isinstance(attacks, str):
        attacks = [attacks]
    bad = [a for a in attacks if parse_attack_name(str(a), ATTACK_FAMILIES) is None]
    if bad:
        raise invalid("attacks", "names among clean, fgsm, pgd-K, pgd-l2-K, cleverhans-pgd-K, apgd-ce, apgd-dlr, "
                                 "autoattack", bad)
    epsilons = [float(e) for e in np.atleast_1d(epsilons)]
    if not epsilons or any((not np.isfinite(e)) or e < 0 for e in epsilons):
        raise invalid("epsilons", "one or more finite numbers >= 0", epsilons)
    batch_size = check_positive_int("batch_size", batch_size)
    restarts = check_positive_int("restarts", restarts)
    check_images("x", x)
    x = np.asarray(x, dtype=np.float32)
    model = network_of(model)
    y = check_labels("y", y, n=len(x))

    progress = _progress_enabled(progress)
    jobs = [(a, None) for a in attacks if a == "clean"] + [(a, e) for a in attacks if a != "clean" for e in epsilons]
    for attack, eps in jobs:
        if attack != "clean" and parse_attack_name(attack).norm != 2 and eps > 1:
            raise invalid("epsilons", "L-inf budgets in [0, 1]", eps)
    rows, clean_pred = [], None
    for attack, eps in jobs:
        clean = attack == "clean" or eps == 0
        run = None if clean else _attack_fn(attack, model, x, eps, batch_size, restarts, seed)
        bar = tqdm(total=len(x), desc=attack if eps is None else f"{attack} eps={eps:g}", unit="img") \
            if progress else None
        predictions = []
        for i, start in enumerate(range(0, len(x), batch_size)):   # one bar step per batch
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            predictions.append(_predict(model, xb if clean else run(i, xb, yb), batch_size))
            if bar is not None:
                bar.update(len(xb))
        predictions = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
        accuracy = float(np.mean(predictions == y))
        if bar is not None:
            bar.set_postfix(accuracy=f"{accuracy:.4f}")
            bar.close()
        if attack == "clean":
            clean_pred = predictions
        rows.append({"attack": attack, "epsilon": 0.0 if eps is None else eps, "accuracy": accuracy, "n": len(x)})
        logger.info("%s eps=%s accuracy=%.4f", attack, eps, accuracy)
    if clean_pred is None:
        clean_pred = _predict(model, x, batch_size)
    classes = int(predict_logits(model, x[:1], 1).shape[-1])
    collapse = warn_if_collapsed("evaluate_robustness", clean_pred, y, classes)
    return RobustnessReport(rows, _masking_warnings(rows, len(x)), collapse)

"""``evaluate_robustness``: one table of accuracy under attacks and budgets, with a gradient-masking check.

Attack names:
  ``clean``; ``fgsm``; ``pgd-K`` (ours, L-inf, K steps, step 2.5*eps/K, random start, ``restarts``);
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
import re
from dataclasses import dataclass, field

import numpy as np

from ._checks import check_images, check_labels, check_positive_int, invalid

logger = logging.getLogger(__name__)

_ATTACK_RE = re.compile(r"^(clean|fgsm|pgd-(\d+)|pgd-l2-(\d+)|cleverhans-pgd-(\d+)|apgd-ce|apgd-dlr|autoattack)$")


@dataclass
class RobustnessReport:
    """Rows of ``{"attack", "epsilon", "accuracy", "n"}`` plus the masking checks.

    ``report["pgd-40"][0.3]`` is the accuracy of that cell; ``str(report)`` is a table.
    """

    rows: list = field(default_factory=list)
    warnings: list = field(default_factory=list)

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
                "suspected_gradient_masking": self.suspected_gradient_masking}

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
        return "\n".join(lines)


def _logits_model(model):
    """The logits model inside an AdversarialModel, else the model itself."""
    inner = getattr(model, "model", None)
    return inner if inner is not None and callable(inner) else model


def _predict(model, x, batch_size):
    import tensorflow as tf

    out = []
    for start in range(0, len(x), batch_size):
        out.append(np.asarray(tf.argmax(model(x[start:start + batch_size], training=False)
                                        if hasattr(model, "layers") else model(x[start:start + batch_size]), -1)))
    return np.concatenate(out)


class DifferenceOfLogitsRatio:
    """Croce & Hein's (2020) DLR loss, vectorised, for ART's Auto-PGD.

    ``dlr(z, y) = -(z_y - max_{i != y} z_i) / (z_pi1 - z_pi3)`` per sample, ``z_pi1 >= z_pi2 >= z_pi3`` the
    sorted logits; ``y_true`` one-hot ``(N, C)``, ``y_pred`` logits ``(N, C)``. The values and gradients are
    those of ART's ``DifferenceLogitsRatioTensorFlowV2`` (tested), whose Python loop over the batch made
    APGD-DLR 2.9x slower than APGD-CE (200 MNIST images, ``benchmarks/art_attacks.py``); with this loss
    the two take the same time. ``reduction`` is the attribute ART sets before each call
    (``"none"`` per sample, ``"sum"``, anything else the mean).
    """

    def __init__(self):
        self.reduction = "mean"

    def __call__(self, y_true, y_pred, *args, **kwargs):
        import tensorflow as tf

        dlr = _dlr_per_sample(tf.convert_to_tensor(y_true), tf.convert_to_tensor(y_pred))
        if self.reduction == "none":
            return dlr
        return tf.reduce_sum(dlr) if self.reduction == "sum" else tf.reduce_mean(dlr)


def _dlr_per_sample(y_true, y_pred):
    import tensorflow as tf

    y_pred = tf.cast(y_pred, tf.float32)
    is_true = tf.cast(y_true, tf.float32) > 0.5
    top3 = tf.math.top_k(y_pred, k=3).values
    z_y = tf.reduce_sum(tf.where(is_true, y_pred, 0.0), axis=-1)
    z_other = tf.reduce_max(tf.where(is_true, -np.inf, y_pred), axis=-1)
    return -(z_y - z_other) / (top3[:, 0] - top3[:, 2])


def _art_classifier(model, x, loss_object=None):
    """ART's ``TensorFlowV2Classifier`` over a ``tf.function`` of the model.

    ART calls the model eagerly for every gradient; compiling it removes Keras' per-layer Python
    overhead, which dominated Auto-PGD on small models. ``model`` may already be such a function
    (``classifier.model``), so that classifiers with different losses share one trace.
    """
    import tensorflow as tf
    import keras
    from art.estimators.classification import TensorFlowV2Classifier

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


def _run_art(name, model, x, y, epsilon, batch_size, seed):
    try:
        from art.attacks.evasion import AutoAttack, AutoProjectedGradientDescent
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

    np.random.seed(seed)
    if name in ("apgd-ce", "apgd-dlr"):
        attack = apgd("ce" if name == "apgd-ce" else "dlr", nb_random_init=1)
    else:
        from art.attacks.evasion import SquareAttack

        attacks = [apgd("ce"), apgd("dlr"),
                   SquareAttack(classifier, norm=np.inf, eps=epsilon, max_iter=1000, nb_restarts=1,
                                batch_size=batch_size, verbose=False)]
        attack = AutoAttack(classifier, norm=np.inf, eps=epsilon, eps_step=step, attacks=attacks,
                            batch_size=batch_size)
    y_onehot = np.eye(classifier.nb_classes, dtype=np.float32)[y]
    return attack.generate(x=x, y=y_onehot).astype(np.float32)


def _adversarial(name, model, x, y, epsilon, batch_size, restarts, seed):
    from . import attacks

    match = _ATTACK_RE.match(name)
    if name == "fgsm":
        return attacks.fgsm(model, x, y, epsilon, batch_size=batch_size)
    if match.group(2):
        k = int(match.group(2))
        return attacks.pgd(model, x, y, epsilon, 2.5 * epsilon / k, k, restarts=restarts, seed=seed,
                           batch_size=batch_size)
    if match.group(3):
        k = int(match.group(3))
        return attacks.pgd(model, x, y, epsilon, 2.5 * epsilon / k, k, norm=2, restarts=restarts, seed=seed,
                           batch_size=batch_size)
    if match.group(4):
        from cleverhans.tf2.attacks.projected_gradient_descent import projected_gradient_descent

        k = int(match.group(4))
        out = [projected_gradient_descent(model, x[s:s + batch_size], epsilon, 2.5 * epsilon / k, k, np.inf,
                                          clip_min=0.0, clip_max=1.0, y=y[s:s + batch_size], rand_init=True,
                                          sanity_checks=False).numpy() for s in range(0, len(x), batch_size)]
        return np.concatenate(out)
    return _run_art(name, model, x, y, epsilon, batch_size, seed)


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
        if attack.startswith(("pgd-", "apgd", "autoattack", "cleverhans-pgd")) and not attack.startswith("pgd-l2"):
            for eps, acc in cells:
                if eps in fgsm and acc > fgsm[eps] + tolerance:
                    warnings.append(f"{attack} ({acc:.4f}) is weaker than FGSM ({fgsm[eps]:.4f}) at eps={eps:g}: "
                                    "suspected gradient masking")
    return warnings


def evaluate_robustness(model, x, y, attacks=("clean", "fgsm", "pgd-20"), epsilons=(0.3,), batch_size=256,
                        restarts=1, seed=0, progress=False):
    """Accuracy of ``model`` on (x, y) under each attack at each epsilon (L-inf unless the name says L2).

    Args:
      model: a Keras model or ``kam.AdversarialModel`` (its logits model is attacked), or a callable
        returning logits.
      x: images (N, ...) float32 in [0, 1]. y: int labels (N,).
      attacks: names (module docstring). epsilons: budgets in pixel units.
      restarts: PGD restarts (worst case per sample kept). seed: attack noise seed.
      progress: show a tqdm bar (CLIs pass True).

    Returns:
      ``RobustnessReport`` (rows, warnings; ``str()`` is a table; ``to_json``/``to_csv``).
    """
    if isinstance(attacks, str):
        attacks = [attacks]
    bad = [a for a in attacks if not _ATTACK_RE.match(str(a))]
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
    model = _logits_model(model)
    y = check_labels("y", y, n=len(x))

    rows = []
    jobs = [(a, None) for a in attacks if a == "clean"] + [(a, e) for a in attacks if a != "clean" for e in epsilons]
    iterator = jobs
    if progress:
        from tqdm.auto import tqdm

        iterator = tqdm(jobs, desc="robustness", unit="attack")
    for attack, eps in iterator:
        if attack == "clean" or eps == 0:
            x_eval = x
        else:
            if attack not in ("pgd-l2",) and not attack.startswith("pgd-l2") and eps > 1:
                raise invalid("epsilons", "L-inf budgets in [0, 1]", eps)
            x_eval = _adversarial(attack, model, x, y, eps, batch_size, restarts, seed)
        accuracy = float(np.mean(_predict(model, x_eval, batch_size) == y))
        rows.append({"attack": attack, "epsilon": 0.0 if eps is None else eps, "accuracy": accuracy, "n": len(x)})
        logger.info("%s eps=%s accuracy=%.4f", attack, eps, accuracy)
    return RobustnessReport(rows, _masking_warnings(rows, len(x)))

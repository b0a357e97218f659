"""``evaluate_robustness``: runs each attack at each budget batch by batch and builds the ``RobustnessReport``
(attack names: ``keras_advmi.evaluation``'s docstring)."""

from __future__ import annotations

import logging
import sys
from collections.abc import Sequence

import numpy as np
import tensorflow as tf
import tqdm.auto   # the bar class is looked up at call time, so that a notebook or a test can swap it

from .. import attacks
from .._attack_names import parse_attack_name
from .._checks import (check_bool, check_images, check_in_unit_interval, check_labels, check_nonnegative,
                       check_positive_int, invalid)
from .._model import network_of, predict_logits
from ..callbacks.collapse import warn_if_collapsed
from ._art import art_attack
from ._masking import masking_warnings
from ._report import RobustnessReport

logger = logging.getLogger(__name__)

#: The attack families ``evaluate_robustness`` runs (names parsed by ``_attack_names.parse_attack_name``).
ATTACK_FAMILIES = ("clean", "fgsm", "pgd", "pgd-l2", "cleverhans-pgd", "apgd-ce", "apgd-dlr", "autoattack",
                   "autoattack-standard")


def _predict(model, x, batch_size):
    return predict_logits(model, x, batch_size).argmax(-1)


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
            model, xb, epsilon, attacks.madry_step_size(epsilon, k), k, np.inf, clip_min=0.0, clip_max=1.0, y=yb,
            rand_init=True, sanity_checks=False).numpy()
    attack, classes = art_attack(name, model, x, epsilon, batch_size)
    np.random.seed(seed)
    eye = np.eye(classes, dtype=np.float32)
    return lambda i, xb, yb: attack.generate(x=xb, y=eye[yb]).astype(np.float32)


def _progress_enabled(progress):
    """``progress`` as a bool; ``None`` = on when stderr is a terminal."""
    if progress is None:
        isatty = getattr(sys.stderr, "isatty", None)
        return bool(isatty and isatty())
    return check_bool("progress", progress)


def evaluate_robustness(model, x: np.ndarray, y: np.ndarray,
                        attacks: str | Sequence[str] = ("clean", "fgsm", "pgd-20"), epsilons: float | Sequence[float] = (0.3,), batch_size: int = 256, restarts: int = 1,
                        seed: int | None = 0, progress: bool | None = None) -> RobustnessReport:
    """Accuracy of ``model`` on (x, y) under each attack at each epsilon (L-inf unless the name says L2).

    Args:
      model: a Keras model or ``kam.AdversarialModel`` (its logits model is attacked), or a callable
        returning logits.
      x: images (N, ...) float32 in [0, 1]. y: int labels (N,).
      attacks: names (``keras_advmi.evaluation``'s docstring). epsilons: budgets in pixel units.
      restarts: PGD restarts (worst case per sample kept). seed: attack noise seed.
      progress: a tqdm bar per attack that advances per batch; ``None`` (default) shows it when stderr
        is a terminal.

    Returns:
      ``RobustnessReport`` (rows, warnings; ``str()`` is a table; ``to_json``/``to_csv``). When the clean
      predictions look collapsed (near chance, or one class for > 90% of x) it warns with a
      ``kam.callbacks.CollapseWarning`` and sets ``report.collapse``.
    """
    jobs = _jobs(attacks, epsilons)
    batch_size = check_positive_int("batch_size", batch_size)
    restarts = check_positive_int("restarts", restarts)
    check_images("x", x)
    x = np.asarray(x, dtype=np.float32)
    model = network_of(model)
    y = check_labels("y", y, n=len(x))
    progress = _progress_enabled(progress)
    rows, clean_pred = [], None
    for attack, eps in jobs:
        predictions = _attacked_predictions(attack, eps, model, x, y, batch_size, restarts, seed, progress)
        if attack == "clean":
            clean_pred = predictions
        accuracy = float(np.mean(predictions == y))
        rows.append({"attack": attack, "epsilon": 0.0 if eps is None else eps, "accuracy": accuracy, "n": len(x)})
        logger.info("%s eps=%s accuracy=%.4f", attack, eps, accuracy)
    if clean_pred is None:
        clean_pred = _predict(model, x, batch_size)
    classes = int(predict_logits(model, x[:1], 1).shape[-1])
    collapse = warn_if_collapsed("evaluate_robustness", clean_pred, y, classes)
    return RobustnessReport(rows, masking_warnings(rows, len(x)), collapse)


def _jobs(attacks, epsilons):
    """The ``(attack, epsilon)`` pairs to run, checked: ``clean`` once (epsilon None), then every other attack
    at every epsilon (>= 0; in [0, 1] for the L-inf attacks)."""
    if isinstance(attacks, str):
        attacks = [attacks]
    bad = [a for a in attacks if parse_attack_name(str(a), ATTACK_FAMILIES) is None]
    if bad:
        raise invalid("attacks", "names among clean, fgsm, pgd-K, pgd-l2-K, cleverhans-pgd-K, apgd-ce, apgd-dlr, "
                                 "autoattack, autoattack-standard", bad)
    epsilons = [check_nonnegative("epsilons", e) for e in np.atleast_1d(epsilons)]
    if not epsilons:
        raise invalid("epsilons", "one or more finite numbers >= 0", epsilons)
    jobs = [(a, None) for a in attacks if a == "clean"] + [(a, e) for a in attacks if a != "clean" for e in epsilons]
    for attack, eps in jobs:
        if attack != "clean" and parse_attack_name(attack).norm != 2:
            check_in_unit_interval("epsilons", eps)
    return jobs


def _attacked_predictions(attack, eps, model, x, y, batch_size, restarts, seed, progress):
    """Predicted classes (N,) on ``attack``'s examples at ``eps`` (on x itself for ``clean`` or eps 0), batch
    by batch, with a tqdm bar (one step per batch, the accuracy at the end) when ``progress``."""
    clean = attack == "clean" or eps == 0
    run = None if clean else _attack_fn(attack, model, x, eps, batch_size, restarts, seed)
    bar = tqdm.auto.tqdm(total=len(x), desc=attack if eps is None else f"{attack} eps={eps:g}", unit="img") \
        if progress else None
    predictions = []
    for i, start in enumerate(range(0, len(x), batch_size)):
        xb, yb = x[start:start + batch_size], y[start:start + batch_size]
        predictions.append(_predict(model, xb if clean else run(i, xb, yb), batch_size))
        if bar is not None:
            bar.update(len(xb))
    predictions = np.concatenate(predictions) if predictions else np.zeros(0, np.int64)
    if bar is not None:
        bar.set_postfix(accuracy=f"{float(np.mean(predictions == y)):.4f}")
        bar.close()
    return predictions

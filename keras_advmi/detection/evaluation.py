"""Honest detector evaluation: AUROC and TPR at the calibrated FPR, against non-adaptive and adaptive attacks.

For each attack, positives are the adversarial examples that fool the model (on inputs the model
classifies correctly when clean), negatives are the correctly classified clean inputs. AUROC is
scikit-learn's ``roc_auc_score`` over their scores; TPR and FPR use the detector's calibrated
threshold (``score > threshold`` flags). ``evasion`` is the end-to-end number that matters: the
fraction of correctly classified inputs the attack turns into a misclassified *and* unflagged input.

The adaptive attack (Carlini & Wagner 2017, "Adversarial Examples Are Not Easily Detected"; Tramer
et al. 2020, "On Adaptive Attacks to Adversarial Example Defenses") attacks model and detector
together with L-inf PGD on four objectives and keeps, per sample, the best result:

    joint:     J(x') = CE(f(x'), y) - c * relu(score(x') - threshold)
    selective: J(x') = CE(f(x'), y) until misclassified, then -c * relu(score(x') - threshold)
    ce:        J(x') = CE(f(x'), y)  (plain PGD: the adaptive result is never weaker than it)
    consensus: J(x') = -sum_v CE(f(v(x')), t) - c * relu(score(x') - threshold), over the views v the
               detector compares (``Detector.score_and_view_logits``: x and, for feature squeezing, its squeezed
               copies), toward t = the clean input's most likely wrong class; every view agreeing on
               t with confidence is how He et al. (2017) bypass feature squeezing

(the joint form keeps driving the loss up, which suits detectors that flag low-confidence inputs;
the selective form, after Tramer et al., stops the loss term from fighting the detector term once
the label has flipped),
keeping per sample the best iterate: misclassified and unflagged, else misclassified with the
lowest score, else the lowest score. Gradients flow through the detector's own
graph (feature squeezing's rounding uses a straight-through estimator, i.e. BPDA).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import tensorflow as tf
import keras
from sklearn.metrics import roc_auc_score

from .._checks import check_choice, check_labels, check_nonnegative, check_positive_int, invalid
from .._model import check_network, logits_of, predict_logits
from ..attacks import fgsm, madry_step_size, pgd
from ..attacks._common import check_budget, seed_pair, uniform_ball_sample
from ..attacks.losses import cross_entropy
from .._attack_names import parse_attack_name
from .base import Detector

logger = logging.getLogger(__name__)

OBJECTIVES = ("selective", "joint", "ce", "consensus")
#: The attack families ``evaluate`` runs (names parsed by ``keras_advmi._attack_names.parse_attack_name``).
ATTACK_FAMILIES = ("fgsm", "pgd", "adaptive")


@dataclass
class DetectionReport:
    """Rows ``{attack, n_clean, n_adv, attack_success, auroc, tpr, fpr, evasion}``; ``report["pgd-40"]`` is a row."""

    detector: str = ""
    threshold: float = float("nan")
    fpr_target: float = float("nan")
    rows: list = field(default_factory=list)

    def __getitem__(self, attack):
        for row in self.rows:
            if row["attack"] == attack:
                return row
        raise KeyError(attack)

    def to_dict(self) -> dict:
        return {"detector": self.detector, "threshold": self.threshold, "fpr_target": self.fpr_target,
                "rows": self.rows}

    def __str__(self):
        head = (f"{'attack':<14}{'success':>9}{'n_adv':>7}{'AUROC':>8}"
                f"{'TPR@' + format(100 * self.fpr_target, '.0f') + '%':>9}{'FPR':>7}{'evasion':>9}")
        lines = [f"{self.detector} (threshold {self.threshold:.4g})", head, "-" * len(head)]
        for r in self.rows:
            lines.append(f"{r['attack']:<14}{100 * r['attack_success']:>8.1f}%{r['n_adv']:>7d}{r['auroc']:>8.3f}"
                         f"{100 * r['tpr']:>8.1f}%{100 * r['fpr']:>6.1f}%{100 * r['evasion']:>8.1f}%")
        return "\n".join(lines)


def _most_likely_wrong_class(logits, y):
    """argmax over classes != y of the logits, (N,) int64."""
    masked = tf.where(tf.one_hot(y, tf.shape(logits)[-1], on_value=True, off_value=False),
                      tf.fill(tf.shape(logits), -np.inf), logits)
    return tf.argmax(masked, -1, output_type=tf.int64)


def _consensus_loss(view_logits, target):
    """sum over the detector's views of CE(f(view), target), per sample (N,)."""
    return tf.add_n([cross_entropy(target, logits) for logits in view_logits])


def _adaptive_graph(detector, x, y, epsilon, step_size, steps, c, threshold, seed, mode):
    x_adv = tf.clip_by_value(x + uniform_ball_sample(x, epsilon, np.inf, seed), 0.0, 1.0)
    target = _most_likely_wrong_class(logits_of(detector.model, x), y) if mode == "consensus" else None

    def evaluate_point(xa):
        with tf.GradientTape() as tape:
            tape.watch(xa)
            score, view_logits = detector.score_and_view_logits(xa)
            logits = view_logits[0]
            wrong = tf.not_equal(tf.argmax(logits, -1, output_type=tf.int64), y)
            ce = cross_entropy(y, logits)
            penalty = c * tf.nn.relu(score - threshold)
            if mode == "selective":
                objective = tf.reduce_sum(tf.where(wrong, -penalty, ce))
            elif mode == "joint":
                objective = tf.reduce_sum(ce - penalty)
            elif mode == "consensus":
                objective = -tf.reduce_sum(_consensus_loss(view_logits, target) + penalty)
            else:
                objective = tf.reduce_sum(ce)
        grad = tape.gradient(objective, xa)
        category = tf.where(wrong, tf.where(score <= threshold, 2, 1), 0)
        return grad, score, category

    def better(cat, s, best_cat, best_s):
        return tf.logical_or(cat > best_cat, tf.logical_and(cat == best_cat, s < best_s))

    def body(i, xa, best_x, best_cat, best_s):
        grad, s, cat = evaluate_point(xa)
        take = better(cat, s, best_cat, best_s)
        mask = tf.reshape(take, [-1] + [1] * (len(x.shape) - 1))
        best_x = tf.where(mask, xa, best_x)
        best_cat = tf.where(take, cat, best_cat)
        best_s = tf.where(take, s, best_s)
        xa = tf.clip_by_value(xa + step_size * tf.sign(grad), 0.0, 1.0)
        xa = tf.clip_by_value(x + tf.clip_by_value(xa - x, -epsilon, epsilon), 0.0, 1.0)
        return i + 1, xa, best_x, best_cat, best_s

    n = tf.shape(x)[0]
    init = (tf.constant(0), x_adv, x_adv, tf.fill([n], -1), tf.fill([n], np.float32(np.inf)))
    _, xa, best_x, best_cat, best_s = tf.while_loop(lambda i, *_: i < steps, body, init, parallel_iterations=1)
    _, s, cat = evaluate_point(xa)  # the final iterate competes too
    take = better(cat, s, best_cat, best_s)
    best_x = tf.where(tf.reshape(take, [-1] + [1] * (len(x.shape) - 1)), xa, best_x)
    return tf.stop_gradient(best_x), tf.where(take, cat, best_cat), tf.where(take, s, best_s)


def adaptive_attack(detector: Detector, x: np.ndarray, y: np.ndarray, epsilon: float = 0.3,
                    step_size: float | None = None, steps: int = 100, c: float = 1.0, seed: int | None = 0,
                    batch_size: int = 256,
                    objectives: Sequence[str] = ("selective", "joint", "ce", "consensus")) -> np.ndarray:
    """L-inf PGD against model and detector together (see the module docstring).

    Args:
      detector: a fitted, calibrated ``Detector`` (its ``model`` is attacked).
      x: images (N, ...) in [0, 1]. y: true labels (N,).
      epsilon: L-inf radius (pixels). step_size: ``None``: ``kam.attacks.madry_step_size``. steps: iterations.
      c: weight of the detector term relu(score - threshold). seed: random-start seed.
      objectives: which of "selective", "joint", "ce" and "consensus" to run; per sample the best
        result is kept.
    Returns:
      x_adv (N, ...) float32 NumPy.
    """
    if not isinstance(detector, Detector):
        raise invalid("detector", "a kam.detection detector", type(detector).__name__)
    detector.require_calibrated("adaptive_attack")
    steps = check_positive_int("steps", steps)
    batch_size = check_positive_int("batch_size", batch_size)
    step_size = madry_step_size(epsilon, steps) if step_size is None else step_size
    check_budget(epsilon, step_size, steps)
    c = check_nonnegative("c", c)
    x = detector.check_input_images("x", x)
    y = check_labels("y", y, n=len(x))
    if isinstance(objectives, str):
        objectives = [objectives]
    if not objectives:
        raise invalid("objectives", f"a non-empty list among {', '.join(map(repr, OBJECTIVES))}", objectives)
    for objective in objectives:
        check_choice("objectives", objective, OBJECTIVES)
    threshold = tf.constant(float(detector.threshold.numpy()), tf.float32)
    run = tf.function(_adaptive_graph, reduce_retracing=True)
    out = []
    for k, i in enumerate(range(0, len(x), batch_size)):
        best = None
        for objective in objectives:
            xa, cat, s = (t.numpy() for t in run(
                detector, tf.constant(x[i:i + batch_size]), tf.constant(y[i:i + batch_size], tf.int64),
                tf.constant(epsilon, tf.float32), tf.constant(step_size, tf.float32), tf.constant(steps),
                tf.constant(float(c), tf.float32), threshold, seed_pair(seed, 1000 * k), objective))
            if best is None:
                best = [xa, cat, s]
            else:
                take = (cat > best[1]) | ((cat == best[1]) & (s < best[2]))
                best = [np.where(take.reshape((-1,) + (1,) * (xa.ndim - 1)), xa, best[0]),
                        np.where(take, cat, best[1]), np.where(take, s, best[2])]
        out.append(best[0])
    return np.concatenate(out)


def _predict(model, x, batch_size):
    return predict_logits(model, x, batch_size).argmax(-1)


def _attack(name, detector, model, x, y, epsilon, adaptive_c, seed, batch_size):
    spec = parse_attack_name(name, ATTACK_FAMILIES)
    if spec.family == "fgsm":
        return fgsm(model, x, y, epsilon=epsilon, batch_size=batch_size)
    if spec.family == "pgd":
        return pgd(model, x, y, epsilon=epsilon, step_size=None, steps=spec.steps, seed=seed,
                   batch_size=batch_size)
    k = spec.steps or 100
    return adaptive_attack(detector, x, y, epsilon=epsilon, steps=k, c=adaptive_c, seed=seed, batch_size=batch_size)


def evaluate(detector: Detector, model: keras.Model, x_clean: np.ndarray, y: np.ndarray | None = None,
             attacks: str | Sequence[str] = ("fgsm", "pgd-40", "adaptive"), epsilon: float = 0.3,
             adaptive_c: float = 1.0, seed: int | None = 0, batch_size: int = 256) -> DetectionReport:
    """AUROC and TPR at the calibrated FPR of ``detector`` per attack (``fgsm``, ``pgd-K``, ``adaptive[-K]``).

    Args:
      detector: fitted and calibrated (``calibrate`` on held-out clean data, not ``x_clean``'s rows
        used for fitting). model: the model the detector guards (a logits model or AdversarialModel).
      x_clean: clean test images (N, ...) in [0, 1]. y: labels (N,), None = the model's predictions.
      attacks: names; ``pgd-K`` is L-inf PGD, K steps of 2.5*eps/K with random start; ``adaptive-K``
        (default K = 100) is the adaptive attack on model and detector (all four objectives).
      epsilon: L-inf radius (pixels). adaptive_c: detector-term weight of the adaptive attack.
      seed: attack seed. batch_size: rows per compiled call.
    Returns:
      ``DetectionReport``; ``str(report)`` is a table.
    """
    if not isinstance(detector, Detector):
        raise invalid("detector", "a kam.detection detector (MIScoreDetector, MahalanobisDetector, ...)",
                      type(detector).__name__)
    detector.require_calibrated("evaluate")
    model = check_network(model)
    if detector.model is not model:
        logger.warning("evaluate: the detector was fitted on another model object than `model`")
    if isinstance(attacks, str):
        attacks = [attacks]
    for name in attacks:
        if parse_attack_name(name, ATTACK_FAMILIES) is None:
            raise invalid("attacks", "names among fgsm, pgd-K, adaptive, adaptive-K", name)
    check_budget(epsilon)
    x = detector.check_input_images("x_clean", x_clean)
    pred = _predict(model, x, batch_size)
    y = pred if y is None else check_labels("y", y, n=len(x))
    correct = pred == y
    threshold = float(detector.threshold.numpy())
    s_clean = detector.score(x)[correct]
    report = DetectionReport(type(detector).__name__, threshold, detector.calibration["fpr_target"])

    for name in attacks:
        x_adv = _attack(name, detector, model, x[correct], y[correct], epsilon, adaptive_c, seed, batch_size)
        fooled = _predict(model, x_adv, batch_size) != y[correct]
        s_adv = detector.score(x_adv)
        pos = s_adv[fooled]
        labels = np.r_[np.zeros(len(s_clean)), np.ones(len(pos))]
        auroc = float(roc_auc_score(labels, np.r_[s_clean, pos])) if len(pos) and len(s_clean) else float("nan")
        report.rows.append({
            "attack": name, "epsilon": float(epsilon), "n_clean": int(len(s_clean)), "n_adv": int(len(pos)),
            "attack_success": float(np.mean(fooled)) if len(fooled) else 0.0, "auroc": auroc,
            "tpr": float(np.mean(pos > threshold)) if len(pos) else float("nan"),
            "fpr": float(np.mean(s_clean > threshold)) if len(s_clean) else float("nan"),
            "evasion": float(np.mean(fooled & (s_adv <= threshold))) if len(fooled) else 0.0})
    return report

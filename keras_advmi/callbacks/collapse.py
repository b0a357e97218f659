"""Collapse check: a model stuck at chance, or predicting one class for almost every input.

Adversarial training at a large budget from the first step (PGD-AT at MNIST's eps 0.3) can leave the
model at chance for whole epochs: a near-constant classifier, whose clean, FGSM and PGD accuracies are
all the share of its one class. Such a model is not robust, it has learnt nothing. ``collapse_evidence``
is the check; ``CollapseMonitor`` runs it at each epoch end of ``fit``, ``kam.evaluate_robustness`` and
``kam.analysis.analyze`` run it on their clean predictions. Each warns with a ``CollapseWarning``.
"""

from __future__ import annotations

import math
import warnings

import numpy as np
import keras

from .._checks import check_in_range, check_in_unit_interval, invalid
from .._model import network_of, predict_logits

__all__ = ["CollapseMonitor", "CollapseWarning", "collapse_evidence", "warn_if_collapsed"]

ADVICE = ("try an epsilon warm-up (Defense(epsilon_warmup_steps=2 * steps_per_epoch), CLI "
          "--epsilon-warmup-epochs 2), a smaller epsilon or a lower learning rate")


class CollapseWarning(UserWarning):
    """The model is at chance accuracy or predicts one class for almost every input."""


def collapse_evidence(predictions: np.ndarray, y: np.ndarray | None = None, num_classes: int | None = None,
                      max_class_share: float = 0.9, chance_factor: float = 1.5) -> str | None:
    """A sentence naming the evidence of collapse, or ``None`` when the model is not collapsed.

    Collapsed: one class is predicted for more than ``max_class_share`` of the inputs, or the accuracy
    on ``y`` is at most ``chance_factor / num_classes`` (near chance). With ``y=None`` only the first
    check runs.

    Args:
      predictions: predicted class ids (N,) (argmax of the logits).
      y: true labels (N,) or None. num_classes: classes of the model (default: from the labels).
    """
    predictions = np.asarray(predictions).reshape(-1)
    if predictions.size == 0:
        return None
    max_class_share = check_in_unit_interval("max_class_share", max_class_share, open_low=True)
    chance_factor = check_in_range("chance_factor", chance_factor, 1.0, math.inf)   # 1 = exactly chance
    counts = np.bincount(predictions.astype(np.int64))
    top = int(np.argmax(counts))
    share = counts[top] / predictions.size
    if num_classes is None:
        num_classes = int(max(counts.size, 0 if y is None else int(np.max(y)) + 1))
    parts = []
    accuracy = None if y is None else float(np.mean(predictions == np.asarray(y).reshape(-1)))
    near_chance = accuracy is not None and num_classes > 1 and accuracy <= chance_factor / num_classes
    if near_chance:
        parts.append(f"clean accuracy {100 * accuracy:.1f}% is near chance (1/{num_classes} = "
                     f"{100 / num_classes:.1f}%)")
    if share > max_class_share:
        parts.append(f"class {top} is predicted for {100 * share:.1f}% of {predictions.size} inputs")
    if not parts:
        return None
    return "; ".join(parts)


def warn_if_collapsed(where: str, predictions: np.ndarray, y: np.ndarray | None = None,
                      num_classes: int | None = None, stacklevel: int = 3) -> str | None:
    """``warnings.warn`` a ``CollapseWarning`` (evidence and advice) if collapsed; returns the message or None."""
    evidence = collapse_evidence(predictions, y, num_classes)
    if evidence is None:
        return None
    message = (f"{where}: the model looks collapsed: {evidence}. Its accuracies under attack mean nothing; "
               f"{ADVICE}.")
    warnings.warn(message, CollapseWarning, stacklevel=stacklevel)
    return message


class CollapseMonitor(keras.callbacks.Callback):
    """Warn at the end of an epoch in which the model looks collapsed (``collapse_evidence``).

    Args:
      x_check, y_check: a small fixed set (e.g. 1,000 validation images) whose clean predictions are
        checked. ``None`` reads ``val_accuracy`` (else ``accuracy``) from the logs, the chance check only.
      max_class_share: flag when one class gets more than this share of the predictions (0.9).
      chance_factor: flag when accuracy <= chance_factor / classes (1.5).
      batch_size: prediction batch size.

    Keeps the flagged epochs (0-based) in ``collapsed_epochs`` and writes ``collapsed: 1.0`` to the logs of
    a flagged epoch only, so progress bars and ``History`` carry no constant 0 in a healthy run (in
    ``History``, ``collapsed`` then has one entry per flagged epoch, not per epoch). It only warns;
    training goes on (a warm-up can recover).
    """

    def __init__(self, x_check: np.ndarray | None = None, y_check: np.ndarray | None = None,
                 max_class_share: float = 0.9, chance_factor: float = 1.5, batch_size: int = 256):
        super().__init__()
        if (x_check is None) != (y_check is None):
            raise invalid("y_check", "given together with x_check (both or neither)",
                          "None" if y_check is None else "labels without x_check")
        self.x_check = None if x_check is None else np.asarray(x_check, np.float32)
        self.y_check = None if y_check is None else np.asarray(y_check).reshape(-1)
        if self.x_check is not None and len(self.x_check) != len(self.y_check):
            raise invalid("y_check", f"{len(self.x_check)} labels (one per x_check image)", len(self.y_check))
        self.max_class_share = check_in_unit_interval("max_class_share", max_class_share, open_low=True)
        self.chance_factor = check_in_range("chance_factor", chance_factor, 1.0, math.inf)   # 1 = exactly chance
        self.batch_size = batch_size
        self.collapsed_epochs = []

    def _num_classes(self, net):
        outputs = getattr(net, "outputs", None)
        return int(outputs[0].shape[-1]) if outputs else None

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        net = network_of(self.model)
        classes = self._num_classes(net)
        if self.x_check is not None:
            pred = np.argmax(predict_logits(net, self.x_check, self.batch_size), axis=-1)
            evidence = collapse_evidence(pred, self.y_check, classes, self.max_class_share, self.chance_factor)
        else:
            accuracy = logs.get("val_accuracy", logs.get("accuracy"))
            evidence = None
            if accuracy is not None and classes and float(accuracy) <= self.chance_factor / classes:
                evidence = (f"accuracy {100 * float(accuracy):.1f}% is near chance (1/{classes} = "
                            f"{100 / classes:.1f}%)")
        if evidence is not None:
            logs["collapsed"] = 1.0
            self.collapsed_epochs.append(epoch)
            warnings.warn(f"epoch {epoch + 1}: the model looks collapsed: {evidence}; {ADVICE}.",
                          CollapseWarning, stacklevel=2)

"""Catastrophic-overfitting monitor for fast adversarial training (Wong et al. 2020, Sec. 5).

FGSM-based training can suddenly lose all robustness to PGD while accuracy against FGSM rises. At
each epoch end this callback measures PGD and FGSM accuracy on a fixed check set (or reads
``val_adv_accuracy``/``val_fgsm_accuracy`` when no check set is given), writes them to ``logs``
(``co_pgd_accuracy``, ``co_fgsm_accuracy``, ``catastrophic_overfitting`` 0/1), and, like Wong et al.'s
early stopping, can restore the weights of the most PGD-robust epoch and stop.

Two signatures are flagged: a *drop* (PGD accuracy falls ``drop`` below its best while FGSM accuracy
stays ``drop`` above it; restores and stops) and a *gap* (FGSM accuracy exceeds PGD accuracy by more
than ``gap``, which also catches a run that overfits before it was ever robust; warns only, as there
is no more robust epoch to go back to and such runs can recover).
"""

from __future__ import annotations

import logging

import numpy as np
import keras

from .._checks import check_in_unit_interval, check_positive_int
from .._model import network_of, predict_logits
from ..attacks import fgsm, madry_step_size, pgd

logger = logging.getLogger(__name__)


class CatastrophicOverfittingMonitor(keras.callbacks.Callback):
    """Flag (and optionally stop at) catastrophic overfitting.

    Args:
      x_check, y_check: a small fixed training subset (e.g. 512 images); ``None`` reads validation logs.
      epsilon: attack budget (default: the model's defense epsilon). pgd_steps: steps of the PGD check.
      drop: flag when PGD accuracy falls more than ``drop`` (absolute) below its best while FGSM
        accuracy stays at least ``drop`` above it; this restores/stops.
      gap: flag (warning only) when FGSM accuracy exceeds PGD accuracy by more than ``gap`` (absolute;
        a robust model's FGSM-PGD gap is a few points); ``None`` disables.
      restore_best_weights, stop_training: Wong et al.'s early stopping (on a drop). With an optimizer
        that averages the weights (``use_ema``), the averages of the best epoch are restored too, so the
        model ``fit`` leaves behind is that epoch's average.
    """

    def __init__(self, x_check: np.ndarray | None = None, y_check: np.ndarray | None = None,
                 epsilon: float | None = None, pgd_steps: int = 10, drop: float = 0.2, gap: float | None = 0.5,
                 restore_best_weights: bool = True, stop_training: bool = True, seed: int = 0):
        super().__init__()
        self.x_check, self.y_check = x_check, y_check
        self.epsilon = None if epsilon is None else check_in_unit_interval("epsilon", epsilon)
        self.pgd_steps = check_positive_int("pgd_steps", pgd_steps)
        self.drop = check_in_unit_interval("drop", drop)
        self.gap = None if gap is None else check_in_unit_interval("gap", gap)
        self.restore_best_weights, self.stop_training = restore_best_weights, stop_training
        self.seed = seed
        self.best_pgd, self.best_state, self.detected_epoch = -1.0, None, None
        self.gap_epochs = []

    def _measure(self, logs):
        if self.x_check is None:
            return logs.get("val_adv_accuracy"), logs.get("val_fgsm_accuracy")
        net = network_of(self.model)
        eps = self.epsilon if self.epsilon is not None else self.model.defense.epsilon
        y = np.asarray(self.y_check)

        def acc(x):
            return float(np.mean(np.argmax(predict_logits(net, x, 256), -1) == y))

        x_pgd = pgd(net, self.x_check, y, epsilon=eps, step_size=madry_step_size(eps, self.pgd_steps),
                    steps=self.pgd_steps, seed=self.seed)
        return acc(x_pgd), acc(fgsm(net, self.x_check, y, epsilon=eps))

    def on_epoch_end(self, epoch, logs=None):
        logs = logs if logs is not None else {}
        pgd_acc, fgsm_acc = self._measure(logs)
        if pgd_acc is None:
            return
        logs["co_pgd_accuracy"] = pgd_acc
        if fgsm_acc is not None:
            logs["co_fgsm_accuracy"] = fgsm_acc
        collapsed = pgd_acc < self.best_pgd - self.drop and (fgsm_acc is None or fgsm_acc >= pgd_acc + self.drop)
        gapped = self.gap is not None and fgsm_acc is not None and fgsm_acc - pgd_acc > self.gap
        logs["catastrophic_overfitting"] = float(collapsed or gapped)
        if gapped and not collapsed:
            self.gap_epochs.append(epoch)
            logger.warning("catastrophic-overfitting signature at epoch %d: FGSM accuracy %.3f vs PGD %.3f "
                           "(gap > %.2f); no more robust epoch to restore, training goes on", epoch + 1, fgsm_acc,
                           pgd_acc, self.gap)
        if collapsed and self.detected_epoch is None:
            self.detected_epoch = epoch
            logger.warning("catastrophic overfitting at epoch %d: PGD accuracy %.3f (best %.3f), FGSM %.3f",
                           epoch + 1, pgd_acc, self.best_pgd, fgsm_acc if fgsm_acc is not None else float("nan"))
            if self.restore_best_weights and self.best_state is not None:
                self._restore(self.best_state)
            if self.stop_training:
                self.model.stop_training = True
        elif pgd_acc > self.best_pgd:
            self.best_pgd = pgd_acc
            if self.restore_best_weights:
                self.best_state = self._snapshot()

    def _weight_averages(self):
        """The optimizer's moving averages of the weights (Keras ``use_ema``), else ``[]``."""
        return weight_averages(getattr(self.model, "optimizer", None))

    def _snapshot(self):
        # With use_ema, Keras writes the averages into the model when fit ends, so a restore of the
        # weights alone would be undone: keep the averages of the best epoch too.
        return self.model.get_weights(), [v.numpy() for v in self._weight_averages()]

    def _restore(self, snapshot):
        weights, averages = snapshot
        self.model.set_weights(weights)
        for variable, value in zip(self._weight_averages(), averages):
            variable.assign(value)


def weight_averages(optimizer) -> list:
    """The moving averages of the weights that a Keras optimizer with ``use_ema`` keeps, in the order of
    the variables it was built with (``[]`` without ``use_ema`` or before the optimizer is built).

    Keras has no public accessor for them; they are among the public ``optimizer.variables``, named
    ``<variable>_average``. A RuntimeError says so when none is found (a later Keras renamed them),
    rather than silently restoring the weights without their averages.
    """
    if not getattr(optimizer, "use_ema", False) or not getattr(optimizer, "built", False):
        return []
    averages = [v for v in optimizer.variables if v.name.endswith("_average")]
    if not averages:
        raise RuntimeError(
            f"keras_advmi.callbacks.overfitting: the optimizer has use_ema=True but none of its variables is "
            f"named '*_average' (Keras {keras.__version__} changed how it stores the weight averages: "
            f"{[v.name for v in optimizer.variables]}); CatastrophicOverfittingMonitor cannot restore the best "
            "epoch's averages.")
    return averages

"""MIAT's phase schedule inside ``fit`` (the paper's procedure run by ``AdversarialModel.fit`` itself).

Phases, by the training step s (counted by MIAT, saved with the model):

    0  base          s < B             the base defense alone (PGD-AT, TRADES or MART), MI weight 0
    1  pretraining   B <= s < B + P    the model frozen (no update, inference mode); the natural and
                                       adversarial estimators trained on it (the paper's step 2) with the
                                       official objectives, on pairs from the pretraining attack (official:
                                       L2 PGD-20), Adam at ``MIATPretraining.learning_rate``
    2  MIAT          s >= B + P        the base loss + w(s) * MI term, estimators frozen, with the weight
                                       ramped in: w(s) = alpha * min(1, (s - B - P + 1) / R)   (R = 0: alpha)

B, P and R are fixed in steps when the first ``fit`` starts (``MIATState.schedule``), from ``MIATPhases`` in
epochs or steps: "auto" (the default) takes 25% / 10% / 25% of the run, in whole epochs (at least one each)
when it has 4 epochs or more (12 epochs: 3 base, 1 pretraining, 8 MIAT of which 3 ramp); base and
pretraining are skipped when the estimators are already pretrained (``MIAT.pretrain_estimators``, the
paper's explicit three-step protocol). The state (step, schedule, estimator optimizer) lives in variables
saved with the model, so ``keras.callbacks.BackupAndRestore`` restores the phase with the weights, and the
graph reads it with ``tf.cond``.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras

from .miat_config import PHASE_NAMES

__all__ = ["AUTO_FRACTIONS", "MIATState", "MIATSchedule", "resolve"]

#: Fractions of the run the "auto" lengths take: base, pretraining, ramp. Ramp 25%: on digits (12 epochs, 4
#: batch orders) MIAT stayed within 1.4 clean / 4.6 PGD points of PGD-AT; with 10% one order lost 6.7.
AUTO_FRACTIONS = (0.25, 0.1, 0.25)


class MIATState(keras.layers.Layer):
    """MIAT's training state: ``step`` (training steps taken, all phases), ``schedule`` = [resolved, B, P, R]
    in steps, and ``optimizer``, the estimators' Adam (its slots saved with the model); with the phase and
    the MI weight they imply."""

    def __init__(self, learning_rate=3e-3, initial_schedule=(0, 0, 0), **kwargs):
        super().__init__(**kwargs)
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64", name="step",
                                    aggregation="only_first_replica")
        self.schedule = self.add_weight(shape=(4,), initializer=keras.initializers.Constant([0, *initial_schedule]),
                                        trainable=False, dtype="int64", name="schedule",
                                        aggregation="only_first_replica")
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.built = True

    def summary(self) -> dict:
        """{'resolved', 'base', 'pretrain', 'ramp', 'step'}: the phase lengths in steps and the steps taken
        (eager; 'resolved' is False until a ``fit`` or ``MIAT.resolve_schedule`` has fixed the lengths)."""
        resolved, base, pretrain, ramp = (int(v) for v in self.schedule.numpy())
        return {"resolved": bool(resolved), "base": base, "pretrain": pretrain, "ramp": ramp,
                "step": int(self.step.numpy())}

    def fix(self, base: int, pretrain: int, ramp: int):
        """Fix the phase lengths (in steps) and mark the schedule resolved."""
        self.schedule.assign(np.array([1, base, pretrain, ramp], np.int64))

    def pretraining_done(self) -> bool:
        """Whether a resolved schedule's pretraining phase (P > 0) is over (eager)."""
        resolved, base, pretrain, _ = (int(v) for v in self.schedule.numpy())
        return bool(resolved) and pretrain > 0 and int(self.step.numpy()) >= base + pretrain

    def phase(self):
        """(phase, steps into phase 2) at the current step: phase 0 base, 1 pretraining, 2 MIAT (int64 tensors)."""
        step, schedule = self.step, self.schedule
        base, pretrain = tf.maximum(schedule[1], 0), tf.maximum(schedule[2], 0)
        phase = tf.where(step < base, tf.constant(0, tf.int64),
                         tf.where(step < base + pretrain, tf.constant(1, tf.int64), tf.constant(2, tf.int64)))
        return phase, step - base - pretrain

    def mi_weight(self, into_miat, full_weight: float):
        """w = full_weight * min(1, (into_miat + 1) / R), full_weight when R = 0 (a float32 tensor)."""
        ramp = tf.cast(self.schedule[3], tf.float32)
        fraction = tf.where(ramp > 0, tf.minimum(1.0, tf.cast(into_miat + 1, tf.float32) / tf.maximum(ramp, 1.0)), 1.0)
        return full_weight * tf.clip_by_value(fraction, 0.0, 1.0)


def resolve(lengths, epochs, steps_per_epoch, pretrained):
    """Phase lengths (B, P, R) in steps for a run of ``epochs`` x ``steps_per_epoch``.

    lengths: ((base_epochs, base_steps), (pretrain_epochs, pretrain_steps), (ramp_epochs, ramp_steps)), as
    ``MIATPhases.lengths`` holds them. "auto": the AUTO_FRACTIONS of the run (base 25%, pretraining 10%, ramp
    25%), whole epochs (at least one each) when the run has 4 epochs or more, else steps (at least one each);
    base and pretraining are 0 when the estimators are ``pretrained`` already (``pretrain_estimators``,
    the paper's explicit three-step protocol, or a loaded model).
    """
    total = None if epochs is None or steps_per_epoch is None else int(epochs) * int(steps_per_epoch)
    out = []
    for i, ((e, s), (name_e, name_s)) in enumerate(zip(lengths, PHASE_NAMES)):
        if s is not None:
            out.append(s)
            continue
        if e == "auto" and i < 2 and pretrained:
            out.append(0)
            continue
        if steps_per_epoch is None:
            raise ValueError(f"MIAT's `{name_e}`={e!r} needs the number of steps per epoch, which this fit does not "
                             f"know (a dataset of unknown length): pass fit(steps_per_epoch=...) or give the phase "
                             f"in steps (`{name_s}`).")
        if e == "auto":
            if epochs is not None and int(epochs) >= 4:
                out.append(int(steps_per_epoch) * max(1, int(round(AUTO_FRACTIONS[i] * int(epochs)))))
            else:
                out.append(max(1, int(round(AUTO_FRACTIONS[i] * (total or steps_per_epoch)))))
        else:
            out.append(int(round(e * int(steps_per_epoch))))
    base, pretrain, ramp = out
    if total is not None and base + pretrain >= total:
        raise ValueError(
            f"Received an invalid MIAT schedule for a run of {epochs} epochs x {steps_per_epoch} steps = {total} "
            f"steps: base ({base} steps, `base_epochs`/`base_steps`) + estimator pretraining ({pretrain} steps, "
            f"`pretrain_epochs`/`pretrain_steps`) = {base + pretrain} steps leave no MIAT step; expected "
            f"base + pretraining < {total} (shorten them or train for more epochs).")
    return base, pretrain, ramp


class MIATSchedule(keras.callbacks.Callback):
    """Added by ``AdversarialModel.fit`` after the user's callbacks: at train begin (after BackupAndRestore
    restored the state) it fixes the phase lengths in steps, once per MIAT state (a resumed or continued run
    keeps them); at each epoch's end it marks the estimators pretrained once phase 1 is over."""

    def __init__(self, defense):
        super().__init__()
        self.defense = defense

    def on_train_begin(self, logs=None):
        params = self.params or {}
        self.defense.resolve_schedule(params.get("epochs"), params.get("steps"))

    def on_epoch_end(self, epoch, logs=None):
        self.defense.mark_pretrained()

    def on_train_end(self, logs=None):
        self.defense.mark_pretrained()

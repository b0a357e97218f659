"""MIAT's phase schedule inside ``fit`` (the paper's procedure run by ``AdversarialModel.fit`` itself).

Phases, by the training step s (counted by MIAT, saved with the model):

    0  base          s < B             the base defense alone (PGD-AT, TRADES or MART), MI weight 0
    1  pretraining   B <= s < B + P    the model frozen (no update, inference mode); the natural and
                                       adversarial estimators trained on it (the paper's step 2)
    2  MIAT          s >= B + P        the base loss + w(s) * MI term, estimators frozen, with the weight
                                       ramped in: w(s) = alpha * min(1, (s - B - P + 1) / R)   (R = 0: alpha)

B, P and R are fixed in steps when the first ``fit`` starts (``MIATState.schedule``), from arguments in
epochs or steps; the state (step, schedule, estimator optimizer) lives in variables, so
``keras.callbacks.BackupAndRestore`` restores the phase with the weights, and the graph reads it with
``tf.cond``.
"""

from __future__ import annotations

import numbers

import keras

from .._checks import invalid

#: Fractions of the run the "auto" lengths take: base, pretraining, ramp. Ramp 25%: on digits (12 epochs, 4
#: batch orders) MIAT stayed within 1.4 clean / 4.6 PGD points of PGD-AT; with 10% one order lost 6.7.
AUTO_FRACTIONS = (0.25, 0.1, 0.25)


class MIATState(keras.layers.Layer):
    """MIAT's training state: ``step`` (training steps taken, all phases), ``schedule`` = [resolved, B, P, R]
    in steps, and ``optimizer``, the estimators' Adam (its slots saved with the model)."""

    def __init__(self, learning_rate=3e-3, initial_schedule=(0, 0, 0), **kwargs):
        super().__init__(**kwargs)
        self.step = self.add_weight(shape=(), initializer="zeros", trainable=False, dtype="int64", name="step",
                                    aggregation="only_first_replica")
        self.schedule = self.add_weight(shape=(4,), initializer=keras.initializers.Constant([0, *initial_schedule]),
                                        trainable=False, dtype="int64", name="schedule",
                                        aggregation="only_first_replica")
        self.optimizer = keras.optimizers.Adam(learning_rate)
        self.built = True


def _length(name_epochs, epochs_value, name_steps, steps_value):
    """Validate one phase length given as epochs ("auto", a number >= 0) or steps (int >= 0 or None)."""
    if steps_value is not None:
        if isinstance(steps_value, bool) or not isinstance(steps_value, numbers.Integral) or steps_value < 0:
            raise invalid(name_steps, "an integer >= 0 or None", steps_value)
        if epochs_value != "auto":
            raise invalid(name_epochs, f"'auto' when `{name_steps}` is given (one unit per phase)", epochs_value)
        return "auto", int(steps_value)
    if epochs_value == "auto":
        return "auto", None
    if isinstance(epochs_value, bool) or not isinstance(epochs_value, numbers.Real) or not epochs_value >= 0:
        raise invalid(name_epochs, "'auto' or a number of epochs >= 0", epochs_value)
    return float(epochs_value), None


def resolve(lengths, epochs, steps_per_epoch, pretrained):
    """Phase lengths (B, P, R) in steps for a run of ``epochs`` x ``steps_per_epoch``.

    lengths: ((base_epochs, base_steps), (pretrain_epochs, pretrain_steps), (ramp_epochs, ramp_steps)), as
    validated by ``_length``. "auto": the AUTO_FRACTIONS of the run (base 25%, pretraining 10%, ramp 25%),
    whole epochs (at least one each) when the run has 4 epochs or more, else steps (at least one each);
    base and pretraining are 0 when the estimators are ``pretrained`` already (``pretrain_estimators``,
    the paper's explicit three-step protocol, or a loaded model).
    """
    names = (("base_epochs", "base_steps"), ("pretrain_epochs", "pretrain_steps"),
             ("alpha_warmup_epochs", "alpha_warmup_steps"))
    total = None if epochs is None or steps_per_epoch is None else int(epochs) * int(steps_per_epoch)
    out = []
    for i, ((e, s), (name_e, _)) in enumerate(zip(lengths, names)):
        if s is not None:
            out.append(s)
            continue
        if e == "auto" and i < 2 and pretrained:
            out.append(0)
            continue
        if steps_per_epoch is None:
            raise ValueError(f"MIAT's `{name_e}`={e!r} needs the number of steps per epoch, which this fit does not "
                             f"know (a dataset of unknown length): pass fit(steps_per_epoch=...) or give the phase "
                             f"in steps (`{names[i][1]}`).")
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
    keeps them)."""

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

"""Learning-rate schedules for robust training (``keras-advmi train --lr-schedule``).

``OneCycle``: the piecewise-linear one-cycle rate of Smith & Topin, "Super-convergence: very fast training of
neural networks using large learning rates" (2019), as Wong et al., "Fast is better than free: revisiting
adversarial training" (2020), use it for adversarial training: with ``t = step / total_steps``,

    lr(t) = peak * t / w              for t < w
    lr(t) = peak * (1 - t) / (1 - w)  for w <= t <= 1     (0 after the last step)

``w`` = ``warmup_fraction`` (0.4). A run resumed by ``keras.callbacks.BackupAndRestore`` goes on at the
same rate, since the rate is a function of the optimizer's restored iteration count.
"""

from __future__ import annotations

import keras

from ._checks import check_in_unit_interval, check_positive, check_positive_int, invalid


@keras.saving.register_keras_serializable(package="keras_advmi")
class OneCycle(keras.optimizers.schedules.LearningRateSchedule):
    """Linear warm-up to ``peak`` over the first ``warmup_fraction`` of ``total_steps``, then linear decay to 0.

    Args:
      total_steps: optimizer steps of the whole run (epochs x steps per epoch), >= 1.
      peak: the largest rate, > 0.
      warmup_fraction: where the peak sits, in (0, 1).
    """

    def __init__(self, total_steps: int, peak: float, warmup_fraction: float = 0.4):
        self.total_steps = check_positive_int("total_steps", total_steps)
        self.peak = check_positive("peak", peak)
        self.warmup_fraction = check_in_unit_interval("warmup_fraction", warmup_fraction, open_low=True)
        if self.warmup_fraction == 1.0:
            raise invalid("warmup_fraction", "a number in (0, 1) (the peak's place in the run)", warmup_fraction)

    def __call__(self, step):
        t = keras.ops.cast(step, "float32") / float(self.total_steps)
        w = self.warmup_fraction
        return self.peak * keras.ops.maximum(0.0, keras.ops.where(t < w, t / w, (1.0 - t) / (1.0 - w)))

    def get_config(self):
        return {"total_steps": self.total_steps, "peak": self.peak, "warmup_fraction": self.warmup_fraction}

"""``RegionRefresh``: the Keras callback that recomputes a ``RegionAT``'s per-class deltas during ``fit``.

The deltas depend on the training subset, which the Defense protocol never sees (``train_step`` only
gets batches), so this callback holds the subset and asks the defense to recompute them at the start
of training and every ``defense.refresh`` epochs: ``robust.fit(xs, ys, callbacks=[RegionRefresh(defense,
xs, ys)])``, or ``defense.refresh_callback(xs, ys)``.
"""

from __future__ import annotations

import logging

import numpy as np
import keras

from .._checks import check_images, check_labels, invalid
from .._model import network_of
from ..attacks.universal import fooling_rates

logger = logging.getLogger(__name__)

__all__ = ["RegionRefresh"]


class RegionRefresh(keras.callbacks.Callback):
    """Recompute a ``RegionAT``'s deltas on (x, y) at the start of training and every ``refresh`` epochs.

    Adds ``region_fooling_rate`` (mean over targets of the fresh deltas' fooling rate on x) to the
    epoch logs of refresh epochs.

    Args:
      defense: the ``RegionAT`` whose deltas are refreshed (anything with ``refresh_deltas`` and
        ``refresh``; this module does not import ``region_at``, which imports it).
      x, y: the fine-tuning subset, images in [0, 1] and int labels.
    """

    def __init__(self, defense, x: np.ndarray, y: np.ndarray):
        super().__init__()
        if not callable(getattr(defense, "refresh_deltas", None)) or not isinstance(getattr(defense, "refresh", None),
                                                                                    int):
            raise invalid("defense", "a RegionAT instance", type(defense).__name__)
        check_images("x", x)
        self.defense, self.x = defense, np.asarray(x, np.float32)
        self.y = check_labels("y", y, n=len(self.x))
        self._first_epoch = None
        self._last_rate = None

    def on_epoch_begin(self, epoch, logs=None):
        if self._first_epoch is None:
            self._first_epoch = epoch
        self._last_rate = None
        if (epoch - self._first_epoch) % self.defense.refresh == 0:
            net = network_of(self.model)
            deltas = self.defense.refresh_deltas(net, self.x, self.y)
            self._last_rate = float(np.mean(fooling_rates(net, self.x, self.y, deltas=deltas)))
            logger.info("RegionAT: deltas refreshed at epoch %d, fooling rate on the subset %.3f", epoch + 1,
                        self._last_rate)

    def on_epoch_end(self, epoch, logs=None):
        if logs is not None and self._last_rate is not None:
            logs["region_fooling_rate"] = self._last_rate

"""``NeuronSensitivityLogger``: per-layer neuron sensitivity of a probe set, logged to TensorBoard.

Neuron sensitivity as in "Interpreting and Improving Adversarial Robustness of Deep Neural Networks with
Neuron Sensitivity" (2019, arXiv 1909.06978).

At the end of every ``every``-th epoch: x_adv = PGD(x_probe) against the current model, then
sigma(F_l^m, x, x_adv) per channel (``analysis.neuron_sensitivity``). Written to
``<log_dir>/sensitivity`` (step = epoch index, 0-based):
  scalars   ``sensitivity/<layer>/mean`` (mean over channels) and ``sensitivity/<layer>/top_k_mean``
  histogram ``sensitivity/<layer>/channels`` (the per-channel values)
and added to the epoch logs as ``sensitivity_<layer>`` (so ``History`` and other callbacks see them).
"""

from __future__ import annotations

import os

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_in_unit_interval, check_layer_names, check_positive, check_positive_int, check_seed, invalid
from .._model import network_of, resolve_layers
from ..analysis.neuron_sensitivity import neuron_sensitivity
from ..attacks import pgd
from ._probe import check_log_dir, check_probe


class NeuronSensitivityLogger(keras.callbacks.Callback):
    """Log per-layer neuron sensitivity of (x_probe, y_probe) under PGD to TensorBoard.

    Args:
      x_probe, y_probe: a small fixed probe set (e.g. 256-1,000 images in [0, 1], int labels).
      log_dir: TensorBoard log directory (the events go to ``<log_dir>/sensitivity``).
      layers: layer names of the logits model (checked at the start of training).
      epsilon: L-inf PGD budget; ``None`` uses the wrapped ``AdversarialModel``'s defense epsilon.
      steps, step_size: PGD iterations and step (default Madry's 2.5 * eps / steps, ``madry_step_size``).
        seed: PGD noise seed.
      every: log every ``every`` epochs. top_k: channels in the ``top_k_mean`` scalar (default 10%).
    """

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, log_dir: str | os.PathLike, layers: str | list[str],
                 epsilon: float | None = None, steps: int = 10, step_size: float | None = None, every: int = 1,
                 top_k: int | None = None, seed: int = 0):
        super().__init__()
        self.x_probe, self.y_probe = check_probe(x_probe, y_probe, minimum=1)
        self.log_dir = check_log_dir(log_dir)
        self.layers = check_layer_names("layers", layers)
        self.epsilon = None if epsilon is None else check_in_unit_interval("epsilon", epsilon, open_low=True)
        self.steps = check_positive_int("steps", steps)
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.every = check_positive_int("every", every)
        self.top_k = None if top_k is None else check_positive_int("top_k", top_k)
        self.seed = check_seed("seed", seed)
        self._writer = None
        self.last = None  #: the last {layer: per-channel sensitivities} measured

    def _net(self):
        return network_of(self.model)

    def _epsilon(self):
        if self.epsilon is not None:
            return self.epsilon
        defense = getattr(self.model, "defense", None)
        if defense is None:
            raise invalid("epsilon", "a PGD budget (the model is not a kam.AdversarialModel with a defense)", None)
        return float(defense.epsilon)

    def on_train_begin(self, logs=None):
        resolve_layers(self._net(), self.layers)
        self._epsilon()
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "sensitivity"))

    def measure(self) -> dict[str, np.ndarray]:
        """{layer: per-channel sensitivity} of the probe set under PGD against the current model."""
        net, eps = self._net(), self._epsilon()
        x_adv = pgd(net, self.x_probe, self.y_probe, epsilon=eps, step_size=self.step_size, steps=self.steps,
                    seed=self.seed)
        return neuron_sensitivity(net, self.x_probe, x_adv, self.layers)

    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every:
            return
        if self._writer is None:
            self.on_train_begin()
        self.last = self.measure()
        with self._writer.as_default(step=epoch):
            for name, values in self.last.items():
                k = self.top_k if self.top_k is not None else max(1, values.size // 10)
                tf.summary.scalar(f"sensitivity/{name}/mean", float(values.mean()))
                tf.summary.scalar(f"sensitivity/{name}/top_k_mean", float(np.sort(values)[::-1][:k].mean()))
                tf.summary.histogram(f"sensitivity/{name}/channels", values.astype(np.float32))
        self._writer.flush()
        if logs is not None:
            for name, values in self.last.items():
                logs[f"sensitivity_{name}"] = float(values.mean())

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

"""Neuron sensitivity (Zhang et al., "Interpreting and Improving Adversarial Robustness of Deep
Neural Networks with Neuron Sensitivity", 2019, arXiv 1909.06978).

For layer l and channel (neuron) m with activation map F_l^m, the sensitivity to an adversarial
pair (x, x') is

    sigma(F_l^m, x, x') = (1 / dim(F_l^m)) * || F_l^m(x) - F_l^m(x') ||_1,

i.e. the mean absolute change over the channel's spatial positions (dim = H*W for a conv map,
1 for a dense unit), averaged over samples. The paper's claim, checked by
``benchmarks/neuron_sensitivity.py``: adversarially trained models have lower neuron sensitivity than
normally trained ones.

The per-sample tensor function, ``channel_sensitivity``, lives in the foundation module
``keras_advmi._sensitivity`` (the SNS defense's loss uses it too) and is re-exported here.

Example: F(x) = [1, 2, 3, 4], F(x') = [2, 2, 3, 2] -> 0.75.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from numpy.typing import ArrayLike
import tensorflow as tf
import keras

from .._checks import check_images, check_positive_int, invalid
from .._model import network_of, resolve_layers, tap_model
from .._sensitivity import channel_sensitivity

__all__ = ["neuron_sensitivity", "channel_sensitivity", "resolve_layers", "sensitivity_summary", "top_k_channels"]


def neuron_sensitivity(model: keras.Model, x: ArrayLike, x_adv: ArrayLike, layers: str | Sequence[str],
                       batch_size: int = 256) -> dict[str, np.ndarray]:
    """Per-channel neuron sensitivity of ``layers``, averaged over the samples of (x, x_adv).

    Args:
      model: a functional/Sequential Keras model (or a ``kam.AdversarialModel``: its wrapped model).
      x: clean images (N, ...) in [0, 1]. x_adv: their adversarial counterparts, same shape.
      layers: a layer name or a list of names.
      batch_size: rows per forward pass.
    Returns:
      {layer_name: np.ndarray float64 of shape (channels,)}, sigma(F_l^m, x, x') averaged over the N samples.
    """
    model = network_of(model)
    check_images("x", x)
    check_images("x_adv", x_adv)
    x = np.asarray(x, dtype=np.float32)
    x_adv = np.asarray(x_adv, dtype=np.float32)
    if x.shape != x_adv.shape:
        raise invalid("x_adv", f"an array of the same shape as x {x.shape}", f"array of shape {x_adv.shape}")
    if len(x) == 0:
        raise invalid("x", "at least one sample", "an empty array")
    batch_size = check_positive_int("batch_size", batch_size)
    layers = resolve_layers(model, layers)
    extractor = tap_model(model, layers, include_logits=False)

    @tf.function(reduce_retracing=True)
    def batch_sums(xb, xab):
        clean = extractor(xb, training=False)
        adv = extractor(xab, training=False)
        clean = clean if isinstance(clean, (list, tuple)) else [clean]
        adv = adv if isinstance(adv, (list, tuple)) else [adv]
        return [tf.reduce_sum(channel_sensitivity(c, a), axis=0) for c, a in zip(clean, adv)]

    totals = None
    for start in range(0, len(x), batch_size):
        sums = [s.numpy().astype(np.float64) for s in batch_sums(x[start:start + batch_size],
                                                                 x_adv[start:start + batch_size])]
        totals = sums if totals is None else [t + s for t, s in zip(totals, sums)]
    return {name: total / len(x) for name, total in zip(layers, totals)}


def _check_sensitivities(sensitivities):
    if not isinstance(sensitivities, dict) or not sensitivities:
        raise invalid("sensitivities", "a non-empty dict {layer_name: per-channel array} from neuron_sensitivity",
                      type(sensitivities).__name__)
    out = {}
    for name, values in sensitivities.items():
        arr = np.asarray(values, dtype=np.float64)
        if arr.ndim != 1 or arr.size == 0:
            raise invalid("sensitivities", "1-D per-channel arrays", f"{name}: shape {arr.shape}")
        out[name] = arr
    return out


def sensitivity_summary(sensitivities: dict[str, ArrayLike], k: int | None = None) -> dict[str, dict]:
    """Per-layer summary: {layer: {"mean", "median", "max", "std", "channels"[, "top_k_mean"]}} (floats).

    ``k`` (int >= 1) adds the mean of the ``k`` most sensitive channels (clipped to the channel count).
    """
    sensitivities = _check_sensitivities(sensitivities)
    if k is not None:
        k = check_positive_int("k", k)
    summary = {}
    for name, arr in sensitivities.items():
        row = {"mean": float(arr.mean()), "median": float(np.median(arr)), "max": float(arr.max()),
               "std": float(arr.std()), "channels": int(arr.size)}
        if k is not None:
            row["top_k_mean"] = float(np.sort(arr)[::-1][:k].mean())
        summary[name] = row
    return summary


def top_k_channels(sensitivities: dict[str, ArrayLike], k: int) -> dict[str, np.ndarray]:
    """{layer: indices of the ``k`` most sensitive channels, most sensitive first} (k clipped per layer)."""
    sensitivities = _check_sensitivities(sensitivities)
    k = check_positive_int("k", k)
    # stable sort on the negated values: ties keep the lower channel index first
    return {name: np.argsort(-arr, kind="stable")[:k] for name, arr in sensitivities.items()}

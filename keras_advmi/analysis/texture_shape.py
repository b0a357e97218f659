"""Texture vs shape probe ("Exploring adversarial examples and adversarial robustness
of convolutional neural networks by mutual information", 2022, arXiv 2207.05756, after Zhang & Zhu, ICML 2019).

Accuracy of a classifier on transformed test images:

* saturation x_p (``layers.transforms.Saturation``) removes texture and keeps shape;
* patch shuffle with a k x k grid (``layers.transforms.PatchShuffle``) removes shape and keeps texture.

The paper's finding, checked by ``benchmarks/analysis.py``: adversarially trained (AT) models keep more
accuracy under saturation and lose more under patch shuffle than normally trained (NT) ones — AT
relies on shape, NT on texture.
"""

from __future__ import annotations

import numbers
from collections.abc import Sequence

import numpy as np
import keras
from numpy.typing import ArrayLike

from .._checks import check_labels, check_positive_int, check_seed, invalid
from ..layers.transforms import PatchShuffle, Saturation
from .._model import check_model_images, predict_logits
from ._common import check_network

__all__ = ["texture_shape_probe"]


def _levels(name, values, kind):
    if isinstance(values, (numbers.Number, str)) or values is None:
        raise invalid(name, f"a sequence of {kind}", values)
    values = list(values)
    if not values:
        raise invalid(name, f"a non-empty sequence of {kind}", values)
    return values


def texture_shape_probe(model: keras.Model, x: ArrayLike, y: ArrayLike,
                        saturation_ps: Sequence[float] = (2, 8, 16, 64, 1024), shuffle_ks: Sequence[int] = (0, 2, 4, 8),
                        seed: int = 0, batch_size: int = 256) -> dict:
    """Accuracy of ``model`` on x under each saturation level p and each patch-shuffle grid k.

    Args:
      model: Keras model or ``kam.AdversarialModel`` (its logits model) or callable returning logits.
      x: images (N, H, W, C) float in [0, 1], the model's input shape. y: int labels (N,).
      saturation_ps: levels p > 0 (2 = identity; the paper's levels: 2, 8, 16, 64, 1024).
      shuffle_ks: grids k >= 0 (0/1 = identity; 0, 2, 4, 8); each k <= min(H, W).
      seed: patch permutations seed (the same seed gives the same accuracies).
      batch_size: rows per forward pass.
    Returns:
      {"clean": acc, "saturation": {p: acc}, "patch_shuffle": {k: acc}, "n": N}, accuracies in [0, 1]
      (keys p as float, k as int, in the given order).
    """
    model = check_network(model)
    x = check_model_images(model, x, spatial=True)
    batch_size = check_positive_int("batch_size", batch_size)
    ps = [Saturation(p).p for p in _levels("saturation_ps", saturation_ps, "numbers p > 0")]
    ks = [PatchShuffle(k).k for k in _levels("shuffle_ks", shuffle_ks, "integers k >= 0")]
    check_seed("seed", seed)
    logits = predict_logits(model, x[:1], 1)
    y = check_labels("y", y, n=len(x), num_classes=logits.shape[-1])

    def accuracy(make_layer):
        """make_layer(batch_index) -> a Keras layer applied to that batch."""
        correct = 0
        for index, start in enumerate(range(0, len(x), batch_size)):
            xb = np.asarray(make_layer(index)(x[start:start + batch_size]))
            correct += int(np.sum(predict_logits(model, xb, batch_size).argmax(-1) == y[start:start + batch_size]))
        return correct / len(x)

    result = {"clean": accuracy(lambda i: (lambda xb: xb)), "saturation": {}, "patch_shuffle": {}, "n": int(len(x))}
    for p in ps:
        layer = Saturation(p)
        result["saturation"][p] = accuracy(lambda i, layer=layer: layer)
    for j, k in enumerate(ks):
        # a distinct, reproducible permutation stream per (k, batch)
        result["patch_shuffle"][k] = accuracy(
            lambda i, k=k, j=j: PatchShuffle(k, seed=None if seed is None else int(seed) + 1_000_003 * j + i))
    return result

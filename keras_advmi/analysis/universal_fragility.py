"""Universal-perturbation fragility per target class ("Improving adversarial robustness of deep neural
networks by using semantic information", 2020, arXiv 2008.07838).

For each target class t, one image-agnostic L-inf perturbation delta_t (|delta_t| <= eps) is fitted
on the inputs near the decision boundary to t (``kam.attacks.universal``); its fooling rate

    FR_t = #{i : y_i != t, argmax f(clip01(x_i + delta_t)) = t} / #{i : y_i != t}

says how easily the whole input distribution is pushed into class t. High FR_t marks the classes a
model's decision regions leave exposed; That paper's region adversarial training lowers them.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import keras
from numpy.typing import ArrayLike

from .._checks import check_labels, check_positive_int
from ..attacks._common import check_budget
from ..attacks.universal import fooling_rates, universal_perturbations
from .._model import check_model_images, predict_logits
from ._common import check_class_index, check_network

__all__ = ["universal_fragility"]


def universal_fragility(model: keras.Model, x: ArrayLike, y: ArrayLike, epsilon: float,
                        targets: Sequence[int] | None = None, steps: int = 40, step_size: float | None = None,
                        boundary_fraction: float = 0.5, seed: int = 0, batch_size: int = 256,
                        x_eval: ArrayLike | None = None, y_eval: ArrayLike | None = None,
                        return_deltas: bool = False) -> dict:
    """Per-target-class fooling rates of targeted universal perturbations at budget ``epsilon``.

    Args:
      model: Keras model / ``kam.AdversarialModel`` / callable returning logits.
      x: images (N, ...) in [0, 1] used to fit each delta_t. y: labels (N,).
      epsilon: L-inf radius in [0, 1] (pixel scale).
      targets: class indices (default: every class).
      steps, step_size, boundary_fraction, seed: as ``kam.attacks.targeted_universal_perturbation``.
      x_eval, y_eval: held-out images/labels for the fooling rates (default: x, y).
      return_deltas: also return the perturbations (T, ...) under "deltas".
    Returns:
      {"epsilon", "targets": [t...], "fooling_rate": np.ndarray (T,), "mean", "max",
       "most_fragile_target"} (+ "deltas").
    """
    model = check_network(model)
    check_budget(epsilon)
    steps = check_positive_int("steps", steps)
    x = check_model_images(model, x)
    num_classes = predict_logits(model, x[:1], 1).shape[-1]
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    if targets is None:
        targets = list(range(num_classes))
    else:
        targets = check_class_index("targets", np.atleast_1d(np.asarray(targets)), len(np.atleast_1d(targets)),
                                    num_classes).tolist()
    if x_eval is None:
        x_eval, y_eval = x, y
    else:
        x_eval = check_model_images(model, x_eval, name="x_eval")
        y_eval = check_labels("y_eval", y_eval, n=len(x_eval), num_classes=num_classes)
    deltas = universal_perturbations(model, x, y, epsilon=epsilon, targets=targets, steps=steps, step_size=step_size,
                                     boundary_fraction=boundary_fraction, seed=seed, batch_size=batch_size)
    rates = fooling_rates(model, x_eval, y_eval, deltas, targets=targets, batch_size=batch_size)
    out = {"epsilon": float(epsilon), "targets": [int(t) for t in targets], "fooling_rate": rates,
           "mean": float(rates.mean()), "max": float(rates.max()),
           "most_fragile_target": int(targets[int(np.argmax(rates))])}
    if return_deltas:
        out["deltas"] = deltas
    return out

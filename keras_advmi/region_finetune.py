"""The RegionAT fine-tuning recipe: subset, fine-tuning with refreshed deltas, robustness before and after.

"Improving adversarial robustness of deep neural networks by using semantic information" (2020, arXiv
2008.07838) fine-tunes a trained model on a small subset of its training data and reports the robust
accuracy (FGSM, PGD) and the fooling rate of fresh universal perturbations before and after, with the
fraction of data used. ``fine_tune`` is that workflow in one call:

    from keras_advmi.region_finetune import fine_tune
    report = fine_tune(kam.defenses.RegionAT(epsilon=0.3), model, x_train, y_train, epochs=5)

It wraps the model in an ``AdversarialModel``, so it lives beside ``models``, above the defenses.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

import numpy as np
import keras

from ._checks import check_images, check_labels, check_positive, check_positive_int, invalid
from ._model import network_of
from .defenses.region_at import RegionAT, region_robustness
from .models import AdversarialModel

__all__ = ["fine_tune"]


def fine_tune(defense: RegionAT, model: keras.Model, x: np.ndarray, y: np.ndarray, epochs: int = 5,
              batch_size: int = 64, learning_rate: float = 1e-3, eval_data: tuple[np.ndarray, np.ndarray] | None = None,
              eval_size: int = 1000, pgd_steps: int = 20, verbose: int = 0,
              callbacks: Sequence[keras.callbacks.Callback] | None = None) -> dict:
    """Select ``defense``'s subset, fine-tune ``model`` in place with RAT, and report before/after robustness.

    Args:
      defense: the ``RegionAT`` (its ``data_fraction``, ``epsilon``, ``seed`` and universal-perturbation
        settings are used).
      model: a Keras model with logits out (trained normally, typically); its weights are updated.
      x, y: the full training data; ``data_fraction`` of it (stratified, seeded) is used.
      epochs, batch_size, learning_rate: Adam fine-tuning budget.
      eval_data: (x_eval, y_eval) for the report; default ``eval_size`` training samples outside the subset.
      pgd_steps: steps of the PGD in the report (Madry's step, ``madry_step_size``; random start).
      verbose, callbacks: passed to ``fit``.
    Returns:
      dict with ``data_fraction``, ``n_subset``, ``n_train``, ``subset_indices``, ``epochs``,
      ``wall_time_s`` (fit only, refreshes included), ``history``, and ``before``/``after``:
      {"clean", "fgsm", "pgd", "fooling_rate"} where the fooling rate is the mean over targets of
      fresh universal perturbations (computed on the subset against the model) applied to eval data.
    """
    if not isinstance(defense, RegionAT):
        raise invalid("defense", "a kam.defenses.RegionAT", type(defense).__name__)
    model = network_of(model)
    if not isinstance(model, keras.Model):
        raise invalid("model", "a keras.Model that outputs logits", type(model).__name__)
    check_images("x", x)
    x = np.asarray(x, np.float32)
    y = check_labels("y", y, n=len(x))
    epochs = check_positive_int("epochs", epochs)
    batch_size = check_positive_int("batch_size", batch_size)
    learning_rate = check_positive("learning_rate", learning_rate)
    pgd_steps = check_positive_int("pgd_steps", pgd_steps)
    idx = defense.select_subset(y)
    xs, ys = x[idx], y[idx]
    xe, ye = _eval_set(defense, x, y, idx, eval_data, eval_size)

    before = region_robustness(defense, model, xs, ys, xe, ye, pgd_steps)
    robust = AdversarialModel(model, defense)
    robust.compile(optimizer=keras.optimizers.Adam(learning_rate), metrics=["accuracy"])
    start = time.perf_counter()
    history = robust.fit(xs, ys, epochs=epochs, batch_size=batch_size, verbose=verbose,
                         callbacks=[defense.refresh_callback(xs, ys)] + list(callbacks or []))
    wall = time.perf_counter() - start
    after = region_robustness(defense, model, xs, ys, xe, ye, pgd_steps)
    return {"data_fraction": defense.data_fraction, "n_subset": int(len(idx)), "n_train": int(len(x)),
            "subset_indices": idx, "epochs": epochs, "wall_time_s": wall,
            "history": {k: [float(v) for v in vals] for k, vals in history.history.items()},
            "before": before, "after": after}


def _eval_set(defense, x, y, idx, eval_data, eval_size):
    """(x_eval, y_eval): ``eval_data`` checked, or ``eval_size`` seeded training samples outside the subset."""
    if eval_data is None:
        rest = np.setdiff1d(np.arange(len(x)), idx)
        rest = rest if rest.size else idx
        rng = np.random.default_rng(None if defense.seed is None else defense.seed + 1)
        pick = np.sort(rng.choice(rest, size=min(check_positive_int("eval_size", eval_size), rest.size),
                                  replace=False))
        return x[pick], y[pick]
    if not isinstance(eval_data, (tuple, list)) or len(eval_data) != 2:
        raise invalid("eval_data", "a pair (x_eval, y_eval)", type(eval_data).__name__)
    check_images("eval_data[0]", eval_data[0])
    xe = np.asarray(eval_data[0], np.float32)
    return xe, check_labels("eval_data[1]", eval_data[1], n=len(xe))

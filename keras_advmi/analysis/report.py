"""The analysis report: every analysis of this package on one or more models (e.g. NT and PGD-AT side
by side), written as a self-contained ``index.html`` (PNG figures embedded as data URIs) plus
``results.json`` holding every number the figures show.

Per model, on the first N test images: clean accuracy; FGSM, PGD and targeted PGD examples at
``epsilon``; texture vs shape probe ("Exploring adversarial examples and adversarial
robustness of convolutional neural networks by mutual information", 2022); promotion/suppression at logit and neuron level for the
three attacks ("Interpreting Adversarial Examples by Activation Promotion and Suppression",
2019); Grad-CAM of the true and the adversarial class on x and x' (that paper's CAM link);
robust accuracy against epsilon; fooling rates of targeted universal perturbations ("Improving
adversarial robustness of deep neural networks by using semantic information", 2020); the
information plane of clean and PGD inputs (the 2022 MI paper).

This module validates and drives; the steps are in ``_steps`` (one function per analysis, looked up by
name in ``STEPS``), the page in ``_html``.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence

import keras
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from .._json import to_jsonable
from .._checks import check_choice, check_in_unit_interval, check_labels, check_positive_int, invalid
from .._model import check_model_images, predict_logits
from ..attacks import madry_step_size
from . import plots
from ._common import check_network
from ._html import write_report
from ._steps import STEPS, Run, random_targets

logger = logging.getLogger(__name__)

__all__ = ["analyze", "write_report", "to_jsonable", "ANALYSES"]

ANALYSES = ("texture_shape", "pse", "grad_cam", "robustness", "universal", "information_plane")
_PLOTTERS = {"information_plane": plots.plot_information_plane, "texture_shape": plots.plot_texture_shape,
             "pse": plots.plot_pse_scatter, "grad_cam": plots.plot_grad_cam,
             "robustness": plots.plot_robust_accuracy, "universal": plots.plot_fooling_rates}


def analyze(models: dict[str, keras.Model], x: ArrayLike, y: ArrayLike, epsilon: float,
            analyses: Sequence[str] = ANALYSES, pgd_steps: int = 20, universal_steps: int = 40, cam_samples: int = 4,
            info_plane_n: int = 1000, noise_var: float | str = "relative", layer: str | None = None,
            cam_layer: str | None = None, histories: dict[str, dict] | None = None, seed: int = 0,
            batch_size: int = 256, progress: bool = False) -> tuple[dict, dict[str, bytes]]:
    """Run the analyses on each model; returns ``(results, figures)``.

    Args:
      models: {label: model} (Keras models / ``kam.AdversarialModel``s), compared side by side.
      x: test images (N, H, W, C) in [0, 1]. y: labels (N,). epsilon: L-inf budget in (0, 1].
      analyses: a subset of ``ANALYSES``.
      pgd_steps: PGD iterations (step 2.5 * eps / steps, random start). universal_steps: iterations of
        each targeted universal perturbation (fitted on the first half of x, rates on the second).
      cam_samples: images shown with Grad-CAM per model. info_plane_n: probe size of the information plane.
      layer: layer of the neuron-level PSE (default: the last 4-D layer, else the penultimate one).
        cam_layer: Grad-CAM layer (default: the last 4-D layer).
      noise_var: KDE noise variance of the information plane: 'relative' (scale-aware, default) or an
        absolute s2 (0.1 in the 2022 MI paper); see ``information_plane``.
      histories: optional {label: MutualInformationLogger history} for per-epoch information planes.
      seed: attack and shuffle seed. progress: show a tqdm bar.
    Returns:
      results: JSON-ready dict {"config", "models": {label: {...}}, "timings"}; figures: {name: PNG bytes}.
    """
    models, x, y, epsilon, pgd_steps, num_classes = _check_inputs(models, x, y, epsilon, analyses, pgd_steps)
    results = {"config": {"n": int(len(x)), "epsilon": epsilon, "pgd_steps": pgd_steps,
                          "pgd_step_size": madry_step_size(epsilon, pgd_steps), "universal_steps": universal_steps,
                          "seed": seed, "analyses": list(analyses), "noise_var": noise_var, "classes": int(num_classes)},
               "models": {}, "timings": {}}
    run = Run(x=x, y=y, targets=random_targets(y, num_classes, seed), num_classes=int(num_classes), epsilon=epsilon,
              pgd_steps=pgd_steps, universal_steps=universal_steps, cam_samples=cam_samples, info_plane_n=info_plane_n,
              noise_var=noise_var, layer=layer, cam_layer=cam_layer, histories=histories or {}, seed=seed,
              batch_size=batch_size)
    jobs = []
    for label in models:
        jobs += [(label, "attacks")] + [(label, a) for a in analyses]
    _run_steps(run, models, jobs, results, progress)

    per = results["models"]
    figures = {name: plot({k: v[name] for k, v in per.items()})
               for name, plot in _PLOTTERS.items() if name in analyses}
    for label, out in per.items():  # per-sample image arrays are in the figures, not in the JSON
        if "grad_cam" in out:
            out["grad_cam"] = {k: v for k, v in out["grad_cam"].items() if k not in ("x", "x_adv")}
    return to_jsonable(results), figures


def _check_inputs(models, x, y, epsilon, analyses, pgd_steps):
    """The checked ``(models, x, y, epsilon, pgd_steps, num_classes)``: models unwrapped, x float32 images of
    the first model's input (each model takes them), y int labels below its class count."""
    if not isinstance(models, dict) or not models:
        raise invalid("models", "a non-empty dict {label: model}", type(models).__name__)
    for name in analyses:
        check_choice("analyses", name, ANALYSES)
    epsilon = check_in_unit_interval("epsilon", epsilon, open_low=True)
    pgd_steps = check_positive_int("pgd_steps", pgd_steps)
    models = {str(label): check_network(m) for label, m in models.items()}
    first = next(iter(models.values()))
    x = check_model_images(first, x, spatial=True)
    num_classes = predict_logits(first, x[:1], 1).shape[-1]
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    for model in models.values():
        check_model_images(model, x[:1])
    return models, x, y, epsilon, pgd_steps, num_classes


def _run_steps(run, models, jobs, results, progress):
    """Run each ``(label, step)`` of ``jobs`` (``STEPS[step]``) into ``results["models"][label]``, timing each
    into ``results["timings"]``; a tqdm bar when ``progress``."""
    bar = tqdm(total=len(jobs), desc="analyze", unit="step") if progress else None
    for label, step in jobs:
        if bar is not None:
            bar.set_description(f"{label}: {step}")
        out = results["models"].setdefault(label, {})
        start = time.perf_counter()
        STEPS[step](run, label, models[label], out)
        results["timings"][f"{label}/{step}"] = round(time.perf_counter() - start, 3)
        logger.info("%s %s: %.1f s", label, step, results["timings"][f"{label}/{step}"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

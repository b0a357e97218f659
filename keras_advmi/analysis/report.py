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
"""

from __future__ import annotations

import base64
import html
import json
import logging
import time
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import keras
from numpy.typing import ArrayLike
from tqdm.auto import tqdm

from .._json import to_jsonable
from .._checks import check_fraction, check_labels, check_positive_int, invalid
from ..callbacks.collapse import warn_if_collapsed
from .._model import check_model_images, predict_logits
from ..attacks import fgsm, pgd
from . import plots
from ._common import check_model
from .grad_cam import grad_cam, last_conv_layer
from .information_plane import information_plane
from .promotion_suppression import promotion_suppression
from .texture_shape import texture_shape_probe
from .universal_fragility import universal_fragility

logger = logging.getLogger(__name__)

__all__ = ["analyze", "write_report", "to_jsonable", "ANALYSES"]

ANALYSES = ("texture_shape", "pse", "grad_cam", "robustness", "universal", "information_plane")


def _neuron_layer(model):
    """Default layer of the neuron-level PSE: the Grad-CAM layer (the last 4-D feature map, the 2019 PSE paper's link
    between units and CAMs), else the last hidden layer with weights whose output is 2-D."""
    try:
        return last_conv_layer(model)
    except ValueError:
        pass
    layers = [l for l in getattr(model, "layers", []) if l.weights]
    for layer in reversed(layers[:-1]):
        try:
            if len(layer.output.shape) == 2:
                return layer.name
        except (AttributeError, ValueError):
            continue
    return None


def _random_targets(y, num_classes, seed):
    """t_i uniform over the classes != y_i (seeded)."""
    rng = np.random.default_rng(seed)
    return ((y + rng.integers(1, num_classes, size=len(y))) % num_classes).astype(np.int64)


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
    if not isinstance(models, dict) or not models:
        raise invalid("models", "a non-empty dict {label: model}", type(models).__name__)
    unknown = [a for a in analyses if a not in ANALYSES]
    if unknown:
        raise invalid("analyses", f"names among {list(ANALYSES)}", unknown)
    epsilon = check_fraction("epsilon", epsilon, low_open=True)
    pgd_steps = check_positive_int("pgd_steps", pgd_steps)
    models = {str(label): check_model(m) for label, m in models.items()}
    first = next(iter(models.values()))
    x = check_model_images(first, x, spatial=True)
    num_classes = predict_logits(first, x[:1], 1).shape[-1]
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    for label, model in models.items():
        check_model_images(model, x[:1])
    histories = histories or {}

    jobs = []
    for label in models:
        jobs += [(label, "attacks")] + [(label, a) for a in analyses]
    bar = None
    if progress:
        bar = tqdm(total=len(jobs), desc="analyze", unit="step")
    results = {"config": {"n": int(len(x)), "epsilon": epsilon, "pgd_steps": pgd_steps,
                          "pgd_step_size": 2.5 * epsilon / pgd_steps, "universal_steps": universal_steps,
                          "seed": seed, "analyses": list(analyses), "noise_var": noise_var, "classes": int(num_classes)},
               "models": {}, "timings": {}}
    targets = _random_targets(y, num_classes, seed)
    state = {}
    for label, step in jobs:
        if bar is not None:
            bar.set_description(f"{label}: {step}")
        model = models[label]
        out = results["models"].setdefault(label, {})
        start = time.perf_counter()
        if step == "attacks":
            step_size = 2.5 * epsilon / pgd_steps
            adv = {"FGSM": fgsm(model, x, y, epsilon=epsilon, batch_size=batch_size),
                   "PGD": pgd(model, x, y, epsilon=epsilon, step_size=step_size, steps=pgd_steps, seed=seed, batch_size=batch_size),
                   "targeted PGD": pgd(model, x, targets, epsilon=epsilon, step_size=step_size, steps=pgd_steps, targeted=True, seed=seed,
                                       batch_size=batch_size)}
            state[label] = adv
            clean_pred = predict_logits(model, x, batch_size).argmax(-1)
            acc = {"clean": float(np.mean(clean_pred == y))}
            collapse = warn_if_collapsed(f"analyze: model {label!r}", clean_pred, y, num_classes)
            if collapse:   # a constant classifier is no robust model: say so before any figure
                out["collapse"] = collapse
            for name in ("FGSM", "PGD"):
                acc[name] = float(np.mean(predict_logits(model, adv[name], batch_size).argmax(-1) == y))
            acc["targeted PGD success"] = float(np.mean(
                predict_logits(model, adv["targeted PGD"], batch_size).argmax(-1) == targets))
            out["accuracy"] = acc
        elif step == "texture_shape":
            out["texture_shape"] = texture_shape_probe(model, x, y, seed=seed, batch_size=batch_size)
        elif step == "pse":
            neuron_layer = layer if layer is not None else _neuron_layer(model)
            out["pse"] = {name: promotion_suppression(model, x, state[label][name], y,
                                                      target=targets if name == "targeted PGD" else None,
                                                      layer=neuron_layer, batch_size=batch_size)
                          for name in ("FGSM", "PGD", "targeted PGD")}
        elif step == "grad_cam":
            x_adv = state[label]["PGD"]
            pred_adv = predict_logits(model, x_adv, batch_size).argmax(-1)
            pick = np.flatnonzero(pred_adv != y)[:cam_samples]
            if len(pick) < cam_samples:  # robust model: fill with the first images (t = top other class)
                pick = np.concatenate([pick, np.setdiff1d(np.arange(len(x)), pick)[:cam_samples - len(pick)]])
            xs, xa, ys = x[pick], x_adv[pick], y[pick]
            za = predict_logits(model, xa, batch_size)
            za[np.arange(len(pick)), ys] = -np.inf
            ts = za.argmax(-1)
            out["grad_cam"] = {"index": pick, "x": xs, "x_adv": xa, "y": ys, "t": ts,
                               "layer": cam_layer or last_conv_layer(model),
                               "cam_x_y": grad_cam(model, xs, ys, cam_layer), "cam_x_t": grad_cam(model, xs, ts, cam_layer),
                               "cam_adv_y": grad_cam(model, xa, ys, cam_layer),
                               "cam_adv_t": grad_cam(model, xa, ts, cam_layer)}
        elif step == "robustness":
            grid = sorted({round(e, 4) for e in np.linspace(0, min(1.0, 4 / 3 * epsilon), 5)})
            curve = {"FGSM": {}, f"PGD-{pgd_steps}": {}}
            for e in grid:
                if e == 0:
                    clean = out["accuracy"]["clean"] if "accuracy" in out else float(
                        np.mean(predict_logits(model, x, batch_size).argmax(-1) == y))
                    curve["FGSM"][0.0] = curve[f"PGD-{pgd_steps}"][0.0] = clean
                    continue
                xf = fgsm(model, x, y, epsilon=e, batch_size=batch_size)
                xp = pgd(model, x, y, epsilon=e, step_size=None, steps=pgd_steps, seed=seed, batch_size=batch_size)
                curve["FGSM"][e] = float(np.mean(predict_logits(model, xf, batch_size).argmax(-1) == y))
                curve[f"PGD-{pgd_steps}"][e] = float(np.mean(predict_logits(model, xp, batch_size).argmax(-1) == y))
            out["robustness"] = curve
        elif step == "universal":
            half = max(1, len(x) // 2)
            fit_x, fit_y = x[:half], y[:half]
            ev_x, ev_y = (x[half:], y[half:]) if len(x) > 1 else (x, y)
            present = [t for t in range(num_classes) if np.any(fit_y != t) and np.any(ev_y != t)]
            out["universal"] = universal_fragility(model, fit_x, fit_y, epsilon, targets=present,
                                                   steps=universal_steps, seed=seed, batch_size=batch_size,
                                                   x_eval=ev_x, y_eval=ev_y)
        elif step == "information_plane":
            if label in histories:
                out["information_plane"] = information_plane(histories[label])
            else:
                m = min(len(x), info_plane_n)
                out["information_plane"] = information_plane(model, x[:m], y[:m], x_adv=state[label]["PGD"][:m],
                                                             noise_var=noise_var, batch_size=batch_size)
        results["timings"][f"{label}/{step}"] = round(time.perf_counter() - start, 3)
        logger.info("%s %s: %.1f s", label, step, results["timings"][f"{label}/{step}"])
        if bar is not None:
            bar.update(1)
    if bar is not None:
        bar.close()

    per = results["models"]
    plotters = {"information_plane": plots.plot_information_plane, "texture_shape": plots.plot_texture_shape,
                "pse": plots.plot_pse_scatter, "grad_cam": plots.plot_grad_cam,
                "robustness": plots.plot_robust_accuracy, "universal": plots.plot_fooling_rates}
    figures = {name: plot({k: v[name] for k, v in per.items()})
               for name, plot in plotters.items() if name in analyses}
    for label, out in per.items():  # per-sample image arrays are in the figures, not in the JSON
        if "grad_cam" in out:
            out["grad_cam"] = {k: v for k, v in out["grad_cam"].items() if k not in ("x", "x_adv")}
    return to_jsonable(results), figures


_SECTIONS = [
    ("robustness", "Robust accuracy vs epsilon",
     "FGSM and PGD (random start, step 2.5&middot;eps/steps) on the same test images."),
    ("texture_shape", "Texture vs shape (Exploring adversarial examples ... by mutual information, "
     "2022)",
     "Saturation removes texture and keeps shape; patch shuffle removes shape and keeps texture. "
     "The 2022 paper: adversarially trained models lose more under patch shuffle, normally trained ones more under saturation."),
    ("pse", "Promotion vs suppression (Interpreting Adversarial Examples by Activation "
     "Promotion and Suppression, 2019)",
     "Per successful adversarial example: suppression S of the true logit and promotion P of the adversarial "
     "logit; r = P/(P+S): &lt;1/3 suppression, &gt;2/3 promotion, else balanced."),
    ("grad_cam", "Grad-CAM of the true (y) and adversarial (t) class on x and x' (PGD)", ""),
    ("universal", "Targeted universal perturbations: fooling rate per target class (Improving "
     "adversarial robustness ... by using semantic information, 2020)",
     "One image-agnostic perturbation per target class, fitted on the first half of the images, "
     "evaluated on the second half."),
    ("information_plane", "Information plane, clean vs PGD (Exploring adversarial examples ... by mutual "
     "information, 2022)",
     "KDE upper bound, nats, noise variance 0.1 x each layer's median squared pairwise distance (scale-aware); "
     "every panel on the same axes, dotted lines at the ceilings log N (I(X;T)) and H(Y) (I(T;Y))."),
]


def _table(header, rows):
    head = "".join(f"<th>{html.escape(str(h))}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{head}</tr>{body}</table>"


def _pct(v):
    return "n/a" if v is None else f"{100 * v:.1f}%"


def _summary_tables(results):
    per = results["models"]
    labels = list(per)
    parts = []
    acc_keys = list(dict.fromkeys(k for v in per.values() for k in v.get("accuracy", {})))
    if acc_keys:
        parts.append(_table(["accuracy"] + labels, [[k] + [_pct(per[m]["accuracy"].get(k)) for m in labels]
                                                    for k in acc_keys]))
    if all("texture_shape" in per[m] for m in labels):
        first = per[labels[0]]["texture_shape"]
        rows = [[f"saturation p={p}"] + [_pct(per[m]["texture_shape"]["saturation"].get(p)) for m in labels]
                for p in first["saturation"]]
        rows += [[f"patch shuffle k={k}"] + [_pct(per[m]["texture_shape"]["patch_shuffle"].get(k)) for m in labels]
                 for k in first["patch_shuffle"]]
        parts.append(("texture_shape", _table(["transform"] + labels, rows)))
    if all("pse" in per[m] for m in labels):
        rows = []
        for attack in per[labels[0]]["pse"]:
            for level in ("logit", "neuron"):
                neuron = per[labels[0]]["pse"][attack].get("neuron")
                row = [f"{attack} (logits)" if level == "logit" else
                       f"{attack} (units of {neuron['layer'] if neuron else 'n/a'})"]
                for m in labels:
                    res = per[m]["pse"][attack] if level == "logit" else per[m]["pse"][attack].get("neuron")
                    if res is None:
                        row.append("n/a")
                        continue
                    f = res["fractions"]
                    row.append(f"S {_pct(f['suppression'])} / B {_pct(f['balanced'])} / P {_pct(f['promotion'])}"
                               f" (n={per[m]['pse'][attack]['n_success']})")
                rows.append(row)
        parts.append(("pse", _table(["attack (level)"] + labels, rows)))
    if all("universal" in per[m] for m in labels):
        first = per[labels[0]]["universal"]
        rows = [[f"target {t}"] + [_pct(per[m]["universal"]["fooling_rate"][i]) for m in labels]
                for i, t in enumerate(first["targets"])]
        rows.append(["mean"] + [_pct(per[m]["universal"]["mean"]) for m in labels])
        parts.append(("universal", _table(["fooling rate"] + labels, rows)))
    return parts


def write_report(out_dir: str | Path, results: dict, figures: dict[str, bytes],
                 title: str = "keras-advmi analysis") -> Path:
    """Write ``out_dir/index.html`` (figures embedded as base64 PNG) and ``out_dir/results.json``.

    Returns the path of index.html.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    (out / "results.json").write_text(json.dumps(results, indent=1))
    tables = _summary_tables(results)
    section_tables = {name: t for name, t in (p for p in tables if isinstance(p, tuple))}
    overview = [p for p in tables if not isinstance(p, tuple)]
    cfg = results.get("config", {})
    body = [f"<h1>{html.escape(title)}</h1>",
            f"<p>{html.escape(', '.join(results.get('models', {})))} on {cfg.get('n')} images"
            f"{' of ' + html.escape(str(cfg['dataset'])) if cfg.get('dataset') else ''}, epsilon {cfg.get('epsilon')}, "
            f"PGD-{cfg.get('pgd_steps')}, seed {cfg.get('seed')}. All numbers: "
            f"<a href='results.json'>results.json</a>.</p>"]
    body += [f"<p style='color:#b00'><b>WARNING</b>: {html.escape(m['collapse'])}</p>"
             for m in results.get("models", {}).values() if m.get("collapse")]
    body += overview
    for name, heading, text in _SECTIONS:
        if name not in figures:
            continue
        data = base64.b64encode(figures[name]).decode("ascii")
        body.append(f"<h2 id='{name}'>{html.escape(heading)}</h2>")
        if text:
            body.append(f"<p>{text}</p>")
        if name in section_tables:
            body.append(section_tables[name])
        body.append(f"<img alt='{name}' src='data:image/png;base64,{data}'>")
    timings = results.get("timings", {})
    if timings:
        body.append("<h2>Timings</h2>" + _table(["step", "seconds"], sorted(timings.items())))
    style = ("body{font-family:sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}"
             "img{max-width:100%;display:block;margin:1em 0}table{border-collapse:collapse;margin:1em 0}"
             "td,th{border:1px solid #ccc;padding:3px 8px;font-size:13px}th{background:#f3f3f3}")
    page = (f"<!DOCTYPE html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            f"<style>{style}</style></head><body>{''.join(body)}</body></html>")
    index = out / "index.html"
    index.write_text(page)
    return index

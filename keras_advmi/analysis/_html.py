"""The analysis report as a self-contained HTML page: one section per analysis (figure, note, summary
table), PNG figures embedded as data URIs, next to ``results.json``."""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

__all__ = ["write_report"]


_SECTIONS = [
    ("robustness", "Robust accuracy vs epsilon",
     "FGSM and PGD (random start, step 2.5&middot;eps/steps) on the same test images."),
    ("texture_shape", "Texture vs shape (Exploring adversarial examples ... by mutual information, "
     "2022)",
     "Saturation removes texture and keeps shape; patch shuffle removes shape and keeps texture. "
     "The 2022 paper: adversarially trained models lose more under patch shuffle, normally trained ones "
     "more under saturation."),
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

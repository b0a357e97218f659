"""Information plane of clean and adversarial inputs ("Exploring adversarial examples and
adversarial robustness of convolutional neural networks by mutual information", 2022, arXiv 2207.05756).

For each layer T and each training epoch, the point (I(X;T), I(T;Y)) in nats, once for clean inputs
and once for their adversarial counterparts (PGD, as in that paper), estimated by the KDE upper bound
(Kolchinsky & Tracey 2017; Saxe et al. 2018) on the layer's activations seen through Gaussian noise
of variance s2, D_ij = ||h_i - h_j||^2:

    I(X;T) = -(1/N) sum_i log( (1/N) sum_j exp(-D_ij / (2 s2)) )
    I(T;Y) = I(X;T) - sum_c p(c) I(X;T | Y = c)

s2 is scale-aware by default: 0.1 x the median squared pairwise distance of the layer's clean
activations (``kam.mi.kde_noise_var``), the same s2 for the adversarial ones, so a function-preserving
rescale of a layer leaves its point where it is. The paper's absolute s2 = 0.1 (``noise_var=0.1``) puts every
layer of an MNIST CNN at the ceiling. I(X;T) lies in [0, log N] and I(T;Y) in [0, H(Y)]; the result
carries both ceilings for the plots.
Input: either the per-epoch history a ``MutualInformationLogger`` recorded, or models (one
checkpoint per epoch, or one final model) plus probe data, estimated here with ``kam.mi``.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import numpy as np
import keras
from numpy.typing import ArrayLike

from .. import mi
from .._checks import check_choice, check_labels, check_layer_names, check_positive_int, invalid
from .._model import check_layer, check_model_images, check_network, predict_logits, tap_model
from ..mi.kde import check_noise_var

__all__ = ["information_plane", "weighted_layers"]


def weighted_layers(model: keras.Model) -> list[str]:
    """Names of the layers that have weights (conv/dense), in order: the default layers T."""
    return [layer.name for layer in getattr(model, "layers", []) if layer.weights]


def _as_points(name, values):
    arr = np.asarray(values, dtype=np.float64)
    if arr.ndim == 1 and arr.size == 2:
        arr = arr[None, :]
    if arr.ndim != 2 or arr.shape[1] != 2 or arr.shape[0] == 0 or not np.all(np.isfinite(arr)):
        raise invalid("model_or_history", "per layer a list of (I_XT, I_TY) pairs per epoch (finite numbers)",
                      f"{name}: array of shape {arr.shape}")
    return arr


_TAG = re.compile(r"^mi/(?P<layer>.+)/I_(?P<q>XT|TY)(?P<suffix>_lower|_binning)?/(?P<kind>clean|adv)$")
_SUFFIX = {"kde_upper": None, "kde_lower": "_lower", "binning": "_binning"}


def _from_tags(tags, estimator):
    """{'clean'|'adv': {layer: [(I_XT, I_TY)...]}} from MutualInformationLogger tags 'mi/<layer>/I_XT/clean'."""
    check_choice("estimator", estimator, sorted(_SUFFIX))
    series = {}
    for tag, values in tags.items():
        match = _TAG.match(str(tag))
        if match and match.group("suffix") == _SUFFIX[estimator]:
            series.setdefault(match.group("kind"), {}).setdefault(match.group("layer"), {})[match.group("q")] = values
    plane = {}
    for kind, layers in series.items():
        plane[kind] = {layer: list(zip(q.get("XT", []), q.get("TY", []))) for layer, q in layers.items()}
    if not plane:
        raise invalid("model_or_history", f"a MutualInformationLogger history with {estimator} tags "
                                          "('mi/<layer>/I_XT/clean', ...)", sorted(tags)[:5])
    return plane


def _from_history(history, estimator="kde_upper"):
    """Normalise a MutualInformationLogger (or its mi_history.json dict), {"clean": {layer: pts}, "adv": ...}
    or {layer: pts} (clean only)."""
    meta = {}
    if callable(getattr(history, "information_plane", None)) and isinstance(getattr(history, "history", None), dict):
        meta = {"n": len(history.x_probe), "unit": getattr(history, "unit", "nats")}
        if getattr(history, "h_y", None) is not None:
            meta["h_y"] = history.h_y
        history = _from_tags(history.history, estimator)
    elif isinstance(history, dict) and isinstance(history.get("history"), dict):   # mi_history.json
        meta = {"unit": history.get("unit", "nats")}
        if "h_y" in history:
            meta["h_y"] = history["h_y"]
        if "n_probe" in history:
            meta["n"] = history["n_probe"]
        history = _from_tags(history["history"], estimator)
    elif hasattr(history, "history") and isinstance(history.history, dict):
        history = history.history
    if isinstance(history, dict):
        history = {**history, **meta}
    if not history:
        raise invalid("model_or_history", "a non-empty dict", history)
    if set(history) & {"clean", "adv"}:
        extra = set(history) - {"clean", "adv", "log_n", "h_y", "unit", "n", "layers", "epochs"}
        if extra:
            raise invalid("model_or_history", "keys 'clean' and 'adv' (each {layer: [(I_XT, I_TY), ...]})",
                          sorted(extra))
        parts = {kind: history[kind] for kind in ("clean", "adv") if kind in history and history[kind] is not None}
    else:
        parts = {"clean": history}
    out = {}
    for kind, layers in parts.items():
        if not isinstance(layers, dict) or not layers:
            raise invalid("model_or_history", f"'{kind}' as a non-empty dict {{layer: [(I_XT, I_TY), ...]}}",
                          type(layers).__name__)
        out[kind] = {str(layer): _as_points(f"{kind}/{layer}", pts) for layer, pts in layers.items()}
    unit = history.get("unit", "nats")
    if unit not in ("nats", "bits"):
        raise invalid("model_or_history", "unit 'nats' or 'bits'", unit)
    result = {"clean": out.get("clean", {}), "adv": out.get("adv", {}), "unit": unit}
    result["layers"] = list(result["clean"] or result["adv"])
    if "h_y" in history:
        result["h_y"] = float(history["h_y"])
    if "n" in history:
        result["n"] = int(history["n"])
        result["log_n"] = float(np.log(result["n"]) / (np.log(2.0) if unit == "bits" else 1.0))
    elif "log_n" in history:
        result["log_n"] = float(history["log_n"])
    return result


def _activations(extractor, x, batch_size):
    """Per layer, activations flattened per sample (N, d) as float64."""
    chunks = None
    for start in range(0, len(x), batch_size):
        outs = extractor(x[start:start + batch_size], training=False)[:-1]
        flat = [np.asarray(o, np.float64).reshape(len(o), -1) for o in outs]
        chunks = [[f] for f in flat] if chunks is None else [c + [f] for c, f in zip(chunks, flat)]
    return [np.concatenate(c, axis=0) for c in chunks]


def information_plane(model_or_history: keras.Model | Sequence[keras.Model] | keras.callbacks.Callback | dict,
                      x: ArrayLike | None = None,
                      y: ArrayLike | None = None, x_adv: ArrayLike | None = None, layers: Sequence[str] | None = None,
                      noise_var: float | str = "relative", batch_size: int = 256, estimator: str = "kde_upper",
                      relative_noise: float = mi.RELATIVE_NOISE) -> dict:
    """(I(X;T), I(T;Y)) per layer and epoch, clean and adversarial, in nats.

    Args:
      model_or_history: one of
        * a ``kam.callbacks.MutualInformationLogger`` after ``fit`` (its per-epoch history), the
          ``mi_history.json`` it writes (loaded as a dict), or a dict ``{"clean": {layer: [(I_XT, I_TY)
          per epoch]}, "adv": {...}}`` (or ``{layer: [...]}``, taken as clean): validated and returned
          as arrays (in the logger's unit);
        * a Keras model (one point per layer) or a list of models (checkpoints, one per epoch): the
          estimates are computed here on (x, y) and (x_adv, y) with ``kam.mi.kde_information_plane``
          (noise variance ``noise_var``).
      x: probe images (N, ...) in [0, 1] (needed with models; the 2022 MI paper probes with >= 1,000
        samples).
      y: their labels (N,). x_adv: adversarial versions of x (same shape), or None for clean only.
      layers: layer names (default: every layer with weights).
      noise_var: 'relative' (default: s2 = ``relative_noise`` x the median squared pairwise distance of
        each layer's clean activations, used for the adversarial ones too) or an absolute s2 > 0 (0.1
        reproduces the information planes of the 2022 MI paper and of Saxe et al. 2018).
      batch_size: rows per forward pass.
      estimator: which logged estimator to read from a logger history: 'kde_upper', 'kde_lower', 'binning'.
    Returns:
      {"clean": {layer: np.ndarray (E, 2)}, "adv": {layer: (E, 2)} (empty without x_adv),
       "layers": [...], "unit": "nats", "n": N, "log_n": log N, "h_y": H(Y) (the ceilings)}; column 0 is
      I(X;T), column 1 I(T;Y), row e is epoch/checkpoint e.
    """
    if isinstance(model_or_history, dict) or (hasattr(model_or_history, "history") and
                                              isinstance(getattr(model_or_history, "history"), dict)):
        return _from_history(model_or_history, estimator)
    models = list(model_or_history) if isinstance(model_or_history, (list, tuple)) else [model_or_history]
    if not models:
        raise invalid("model_or_history", "a model, a non-empty list of models, or a history dict", model_or_history)
    if x is None or y is None:
        raise invalid("x", "probe images and labels (x, y) when model_or_history is a model", None)
    noise_var = check_noise_var(noise_var)
    batch_size = check_positive_int("batch_size", batch_size)
    models = [check_network(m) for m in models]
    x, y, x_adv = _check_probes(models[0], x, y, x_adv)
    layers = check_layer_names("layers", weighted_layers(models[0]) if layers is None else layers)
    return _estimate(models, x, y, x_adv, layers, noise_var, relative_noise, batch_size)


def _check_probes(model, x, y, x_adv):
    """(x float32 (N, ...), y int64 (N,), x_adv float32 like x or None), checked against ``model``."""
    x = check_model_images(model, x)
    num_classes = predict_logits(model, x[:1], 1).shape[-1]
    y = check_labels("y", y, n=len(x), num_classes=num_classes)
    if x_adv is not None:
        x_adv = check_model_images(model, x_adv, name="x_adv")
        if x_adv.shape != x.shape:
            raise invalid("x_adv", f"an array of the same shape as x {x.shape}", f"array of shape {x_adv.shape}")
    return x, y, x_adv


def _estimate(models, x, y, x_adv, layers, noise_var, relative_noise, batch_size):
    """The information-plane dict of ``information_plane`` for checked models and probes: per model, layer
    and probe kind the KDE point, with the clean activations' s2 for both kinds."""
    result = {"clean": {name: [] for name in layers}, "adv": {name: [] for name in layers} if x_adv is not None
              else {}, "layers": layers, "unit": "nats", "n": int(len(x)), "log_n": float(np.log(len(x))),
              "h_y": mi.label_entropy(y)}
    for model in models:
        for name in layers:
            check_layer(model, name, "layers")
        extractor = tap_model(model, layers)
        clean = _activations(extractor, x, batch_size)
        adv = _activations(extractor, x_adv, batch_size) if x_adv is not None else [None] * len(layers)
        for name, h, h_adv in zip(layers, clean, adv):
            s2 = mi.kde_noise_var(h, relative_noise) if noise_var == "relative" else noise_var
            for kind, acts in (("clean", h), ("adv", h_adv)):
                if acts is not None:
                    result[kind][name].append(mi.kde_information_plane(acts, y, s2) if s2 > 0 else (0.0, 0.0))
    for kind in ("clean", "adv"):
        result[kind] = {name: np.asarray(pts, np.float64).reshape(-1, 2) for name, pts in result[kind].items()}
    return result

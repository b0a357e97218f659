"""Promotion and suppression of logits and neurons by adversarial perturbations (Xu et al.,
"Interpreting Adversarial Examples by Activation Promotion and Suppression", 2019, arXiv 1904.02057).

Logit level (the paper leaves the exact formulas open; we use these): true label
y, adversarial/target label t, logits z, clean x, adversarial x':

    S = max(0, z_y(x) - z_y(x'))     suppression of the true class
    P = max(0, z_t(x') - z_t(x))     promotion of the adversarial class
    r = P / (P + S)

r < 1/3: suppression-dominated, r > 2/3: promotion-dominated, otherwise balanced (the paper's
three perturbation types); P + S = 0 gives type "none". Fixture: z(x) = [4, 1, 0], z(x') = [1, 3, 0],
y = 0, t = 1 -> S = 3, P = 2, r = 0.4, balanced.

Neuron level (also left open by the paper; we use a first-order reading) on a chosen layer with
activations a (flattened, d units): the first-order contribution of unit j to the change of logit c is
dz_c_j = (a_j(x') - a_j(x)) * g_cj, where
g_cj = (dz_c/da_j(x) + dz_c/da_j(x')) / 2 (trapezoid rule). Per sample

    S_n = max(0, -sum_j dz_y_j),  P_n = max(0, sum_j dz_t_j),  r_n = P_n / (P_n + S_n),

and per unit: "promoting" if dz_t_j > 0, "suppressing" if dz_y_j < 0. When the layer feeds the
logits linearly (the penultimate dense layer), sum_j dz_c_j equals z_c(x') - z_c(x) exactly, so the
neuron level reproduces the logit level.
"""

from __future__ import annotations

import numpy as np
import tensorflow as tf
import keras
from numpy.typing import ArrayLike

from .._checks import check_labels, check_positive_int, invalid
from .._model import check_layer, check_model_images, predict_logits, tap_model
from ._common import check_class_index, check_network

__all__ = ["promotion_suppression", "pse_ratio", "pse_type", "TYPES"]

#: Perturbation types, in the order the report uses.
TYPES = ("suppression", "balanced", "promotion", "none")


def pse_ratio(suppression: ArrayLike, promotion: ArrayLike) -> np.ndarray:
    """r = P / (P + S) with S, P clipped at 0; NaN where P + S = 0. Arrays of shape (N,)."""
    s = np.maximum(np.asarray(suppression, np.float64), 0.0)
    p = np.maximum(np.asarray(promotion, np.float64), 0.0)
    total = s + p
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(total > 0, p / np.where(total > 0, total, 1.0), np.nan)


def pse_type(ratio: ArrayLike, low: float = 1 / 3, high: float = 2 / 3) -> np.ndarray:
    """Per-sample type from r: "suppression" (r < low), "promotion" (r > high), "balanced", "none" (NaN)."""
    r = np.asarray(ratio, np.float64)
    out = np.full(r.shape, "balanced", dtype=object)
    out[r < low] = "suppression"
    out[r > high] = "promotion"
    out[np.isnan(r)] = "none"
    return out


def _fractions(types, mask):
    n = int(np.sum(mask))
    return {name: (float(np.mean(types[mask] == name)) if n else 0.0) for name in TYPES}


def _pse_summary(suppression, promotion, success):
    """S, P, r, type and the type fractions (among successful samples and among all) of one level."""
    ratio = pse_ratio(suppression, promotion)
    types = pse_type(ratio)
    return {"suppression": suppression, "promotion": promotion, "ratio": ratio, "type": types,
            "fractions": _fractions(types, success), "fractions_all": _fractions(types, np.ones(len(types), bool))}


def _adversarial_classes(z_adv, y, target):
    """The adversarial class t per sample (N,) int64: ``target`` checked (an int or (N,) ints, never y), or,
    for None, the class x' is classified as, else (the attack failed) the highest other logit of x'."""
    n, num_classes = z_adv.shape
    if target is not None:
        t = check_class_index("target", target, n, num_classes)
        if np.any(t == y):
            raise invalid("target", "target classes different from the true labels y",
                          f"{int(np.sum(t == y))} samples with target == y")
        return t
    pred_adv = z_adv.argmax(axis=1)
    if num_classes == 1:
        return pred_adv
    others = z_adv.copy()
    others[np.arange(n), y] = -np.inf
    return np.where(pred_adv != y, pred_adv, others.argmax(axis=1))


def _neuron_level(model, layer, x, x_adv, y, t, batch_size):
    """Per-sample neuron-level S_n, P_n and per-unit contributions summed over samples."""
    extractor = tap_model(model, [layer])

    def activations_and_grads(xb, cls):
        xb = tf.convert_to_tensor(xb)
        with tf.GradientTape(persistent=True) as tape:
            act, logits = extractor(xb, training=False)
            chosen = tf.gather(logits, tf.convert_to_tensor(cls), batch_dims=1)
            z_y, z_t = tf.reduce_sum(chosen[:, 0]), tf.reduce_sum(chosen[:, 1])
        g_y, g_t = tape.gradient(z_y, act), tape.gradient(z_t, act)
        del tape
        n = int(xb.shape[0])
        return (act.numpy().reshape(n, -1).astype(np.float64), g_y.numpy().reshape(n, -1).astype(np.float64),
                g_t.numpy().reshape(n, -1).astype(np.float64))

    s_n, p_n, promoting, suppressing, unit_promotion, unit_suppression = [], [], [], [], None, None
    for start in range(0, len(x), batch_size):
        sl = slice(start, start + batch_size)
        cls = np.stack([y[sl], t[sl]], axis=1).astype(np.int32)
        a0, gy0, gt0 = activations_and_grads(x[sl], cls)
        a1, gy1, gt1 = activations_and_grads(x_adv[sl], cls)
        delta = a1 - a0
        dz_y = delta * (gy0 + gy1) / 2.0
        dz_t = delta * (gt0 + gt1) / 2.0
        s_n.append(-dz_y.sum(axis=1))
        p_n.append(dz_t.sum(axis=1))
        promoting.append(np.mean(dz_t > 0, axis=1))
        suppressing.append(np.mean(dz_y < 0, axis=1))
        up, us = np.maximum(dz_t, 0).sum(axis=0), np.maximum(-dz_y, 0).sum(axis=0)
        unit_promotion = up if unit_promotion is None else unit_promotion + up
        unit_suppression = us if unit_suppression is None else unit_suppression + us
    return (np.concatenate(s_n), np.concatenate(p_n), np.concatenate(promoting), np.concatenate(suppressing),
            unit_promotion / len(x), unit_suppression / len(x))


def promotion_suppression(model: keras.Model, x: ArrayLike, x_adv: ArrayLike, y: ArrayLike,
                          target: ArrayLike | None = None, layer: str | None = None, batch_size: int = 256,
                          top_units: int = 10) -> dict:
    """Per-sample promotion/suppression (the 2019 PSE paper) of the true and the adversarial class, logits and neurons.

    Args:
      model: Keras model / ``kam.AdversarialModel`` (its logits model) / callable returning logits
        (a callable only for the logit level).
      x: clean images (N, ...) in [0, 1], the model's input shape. x_adv: adversarial images, same shape.
      y: true labels (N,).
      target: the adversarial class t: an int, an int array (N,) (e.g. the targets of a targeted
        attack), or None = the class x' is classified as, or, where the attack failed
        (argmax z(x') = y), the highest other logit of x'.
      layer: a layer name for the neuron level (None: logit level only).
      batch_size: rows per pass. top_units: how many most promoting/suppressing units to list.
    Returns:
      dict with arrays of shape (N,): "y", "target", "success" (x' classified as t), "suppression" S,
      "promotion" P, "ratio" r, "type" (str); "fractions" {type: share among successful samples},
      "fractions_all" (all samples), "n", "n_success". With ``layer``: "neuron" = the same keys
      (S_n, P_n, r_n, type, fractions) plus "promoting_units"/"suppressing_units" (per-sample share
      of units with dz_t > 0 / dz_y < 0), "top_promoting"/"top_suppressing" (unit indices, largest mean
      contribution first) and "layer".
    """
    model = check_network(model)
    x = check_model_images(model, x)
    x_adv = check_model_images(model, x_adv, name="x_adv")
    if x.shape != x_adv.shape:
        raise invalid("x_adv", f"an array of the same shape as x {x.shape}", f"array of shape {x_adv.shape}")
    batch_size = check_positive_int("batch_size", batch_size)
    top_units = check_positive_int("top_units", top_units)
    if layer is not None:
        check_layer(model, layer)
    z = predict_logits(model, x, batch_size).astype(np.float64)
    z_adv = predict_logits(model, x_adv, batch_size).astype(np.float64)
    y = check_labels("y", y, n=len(x), num_classes=z.shape[1])
    t = _adversarial_classes(z_adv, y, target)
    rows = np.arange(len(x))
    success = z_adv.argmax(axis=1) == t
    result = {"y": y, "target": t, "success": success,
              **_pse_summary(z[rows, y] - z_adv[rows, y], z_adv[rows, t] - z[rows, t], success),
              "n": int(len(x)), "n_success": int(success.sum())}
    if layer is not None:
        s_n, p_n, promoting, suppressing, unit_p, unit_s = _neuron_level(model, layer, x, x_adv, y, t, batch_size)
        result["neuron"] = {"layer": layer, **_pse_summary(s_n, p_n, success),
                            "promoting_units": promoting, "suppressing_units": suppressing,
                            "top_promoting": np.argsort(-unit_p, kind="stable")[:top_units],
                            "top_suppressing": np.argsort(-unit_s, kind="stable")[:top_units]}
    return result

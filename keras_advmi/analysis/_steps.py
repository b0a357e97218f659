"""The analysis steps of :func:`keras_advmi.analysis.analyze`, one function per analysis.

Each step is ``step(run, label, model, out)``: it reads the shared inputs of the run (``Run``), may use
the adversarial examples the ``attacks`` step stored for that model (``run.adversarial[label]``), and
writes its result into ``out``, the model's results dict. ``STEPS`` maps each analysis name to its step.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import keras

from ..attacks import fgsm, madry_step_size, pgd
from ..callbacks.collapse import warn_if_collapsed
from .._model import predict_logits
from .grad_cam import grad_cam, last_conv_layer
from .information_plane import information_plane
from .promotion_suppression import promotion_suppression
from .texture_shape import texture_shape_probe
from .universal_fragility import universal_fragility

__all__ = ["Run", "STEPS", "random_targets"]


@dataclasses.dataclass
class Run:
    """The inputs every step of one ``analyze`` call shares (validated there)."""

    x: np.ndarray
    y: np.ndarray
    targets: np.ndarray
    num_classes: int
    epsilon: float
    pgd_steps: int
    universal_steps: int
    cam_samples: int
    info_plane_n: int
    noise_var: float | str
    layer: str | None
    cam_layer: str | None
    histories: dict
    seed: int
    batch_size: int
    adversarial: dict = dataclasses.field(default_factory=dict)   #: {label: {attack name: x_adv}}

    def accuracy(self, model: keras.Model, x: np.ndarray, labels: np.ndarray | None = None) -> float:
        labels = self.y if labels is None else labels
        return float(np.mean(predict_logits(model, x, self.batch_size).argmax(-1) == labels))


def random_targets(y: np.ndarray, num_classes: int, seed: int) -> np.ndarray:
    """t_i uniform over the classes != y_i (seeded)."""
    rng = np.random.default_rng(seed)
    return ((y + rng.integers(1, num_classes, size=len(y))) % num_classes).astype(np.int64)


def _neuron_layer(model):
    """Default layer of the neuron-level PSE: the Grad-CAM layer (the last 4-D feature map, the 2019 PSE paper's
    link between units and CAMs), else the last hidden layer with weights whose output is 2-D."""
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


def attacks(run: Run, label: str, model, out: dict) -> None:
    """FGSM, PGD and targeted PGD examples at ``epsilon`` (kept for the later steps) and the accuracies."""
    x, y, targets, batch_size = run.x, run.y, run.targets, run.batch_size
    step_size = madry_step_size(run.epsilon, run.pgd_steps)
    adv = {"FGSM": fgsm(model, x, y, epsilon=run.epsilon, batch_size=batch_size),
           "PGD": pgd(model, x, y, epsilon=run.epsilon, step_size=step_size, steps=run.pgd_steps, seed=run.seed,
                      batch_size=batch_size),
           "targeted PGD": pgd(model, x, targets, epsilon=run.epsilon, step_size=step_size, steps=run.pgd_steps,
                               targeted=True, seed=run.seed, batch_size=batch_size)}
    run.adversarial[label] = adv
    clean_pred = predict_logits(model, x, batch_size).argmax(-1)
    acc = {"clean": float(np.mean(clean_pred == y))}
    # stacklevel 4: the warning points at the caller of analyze (warn -> this step -> analyze -> caller)
    collapse = warn_if_collapsed(f"analyze: model {label!r}", clean_pred, y, run.num_classes, stacklevel=4)
    if collapse:   # a constant classifier is no robust model: say so before any figure
        out["collapse"] = collapse
    for name in ("FGSM", "PGD"):
        acc[name] = run.accuracy(model, adv[name])
    acc["targeted PGD success"] = run.accuracy(model, adv["targeted PGD"], targets)
    out["accuracy"] = acc


def texture_shape(run: Run, label: str, model, out: dict) -> None:
    out["texture_shape"] = texture_shape_probe(model, run.x, run.y, seed=run.seed, batch_size=run.batch_size)


def pse(run: Run, label: str, model, out: dict) -> None:
    neuron_layer = run.layer if run.layer is not None else _neuron_layer(model)
    out["pse"] = {name: promotion_suppression(model, run.x, run.adversarial[label][name], run.y,
                                              target=run.targets if name == "targeted PGD" else None,
                                              layer=neuron_layer, batch_size=run.batch_size)
                  for name in ("FGSM", "PGD", "targeted PGD")}


def grad_cams(run: Run, label: str, model, out: dict) -> None:
    x, y, cam_samples, cam_layer = run.x, run.y, run.cam_samples, run.cam_layer
    x_adv = run.adversarial[label]["PGD"]
    pred_adv = predict_logits(model, x_adv, run.batch_size).argmax(-1)
    pick = np.flatnonzero(pred_adv != y)[:cam_samples]
    if len(pick) < cam_samples:  # robust model: fill with the first images (t = top other class)
        pick = np.concatenate([pick, np.setdiff1d(np.arange(len(x)), pick)[:cam_samples - len(pick)]])
    xs, xa, ys = x[pick], x_adv[pick], y[pick]
    za = predict_logits(model, xa, run.batch_size)
    za[np.arange(len(pick)), ys] = -np.inf
    ts = za.argmax(-1)
    out["grad_cam"] = {"index": pick, "x": xs, "x_adv": xa, "y": ys, "t": ts,
                       "layer": cam_layer or last_conv_layer(model),
                       "cam_x_y": grad_cam(model, xs, ys, cam_layer), "cam_x_t": grad_cam(model, xs, ts, cam_layer),
                       "cam_adv_y": grad_cam(model, xa, ys, cam_layer),
                       "cam_adv_t": grad_cam(model, xa, ts, cam_layer)}


def robustness(run: Run, label: str, model, out: dict) -> None:
    x, y, pgd_steps = run.x, run.y, run.pgd_steps
    grid = sorted({round(e, 4) for e in np.linspace(0, min(1.0, 4 / 3 * run.epsilon), 5)})
    curve = {"FGSM": {}, f"PGD-{pgd_steps}": {}}
    for e in grid:
        if e == 0:
            clean = out["accuracy"]["clean"] if "accuracy" in out else run.accuracy(model, x)
            curve["FGSM"][0.0] = curve[f"PGD-{pgd_steps}"][0.0] = clean
            continue
        xf = fgsm(model, x, y, epsilon=e, batch_size=run.batch_size)
        xp = pgd(model, x, y, epsilon=e, step_size=None, steps=pgd_steps, seed=run.seed, batch_size=run.batch_size)
        curve["FGSM"][e] = run.accuracy(model, xf)
        curve[f"PGD-{pgd_steps}"][e] = run.accuracy(model, xp)
    out["robustness"] = curve


def universal(run: Run, label: str, model, out: dict) -> None:
    x, y = run.x, run.y
    half = max(1, len(x) // 2)
    fit_x, fit_y = x[:half], y[:half]
    ev_x, ev_y = (x[half:], y[half:]) if len(x) > 1 else (x, y)
    present = [t for t in range(run.num_classes) if np.any(fit_y != t) and np.any(ev_y != t)]
    out["universal"] = universal_fragility(model, fit_x, fit_y, run.epsilon, targets=present,
                                           steps=run.universal_steps, seed=run.seed, batch_size=run.batch_size,
                                           x_eval=ev_x, y_eval=ev_y)


def information_planes(run: Run, label: str, model, out: dict) -> None:
    if label in run.histories:
        out["information_plane"] = information_plane(run.histories[label])
    else:
        m = min(len(run.x), run.info_plane_n)
        out["information_plane"] = information_plane(model, run.x[:m], run.y[:m],
                                                     x_adv=run.adversarial[label]["PGD"][:m],
                                                     noise_var=run.noise_var, batch_size=run.batch_size)


STEPS = {"attacks": attacks, "texture_shape": texture_shape, "pse": pse, "grad_cam": grad_cams,
         "robustness": robustness, "universal": universal, "information_plane": information_planes}

"""``MutualInformationLogger``: I(X;T) and I(T;Y) per layer, clean vs adversarial, as TensorBoard curves.

At the end of every ``every_n_epochs``-th epoch the logger attacks the probe set (PGD against the
current model, unless ``attack=None``), reads each layer's activations for x and x_adv, and estimates
("Exploring adversarial examples and adversarial robustness of convolutional neural networks by mutual
information", 2022, arXiv 2207.05756):

    tag (runs <log_dir>/mi/clean, <log_dir>/mi/adv)  quantity
    mi/<layer>/I_XT                       I(X;T), KDE upper bound        (estimator 'kde_upper')
    mi/<layer>/I_TY                       I(T;Y), KDE upper bound
    mi/<layer>/I_XT_lower, I_TY_lower     KDE lower bound                (estimator 'kde_lower')
    mi/<layer>/I_XT_binning, ...          binning, bin width 0.5         (estimator 'binning')
    mi/<layer>/I_TY_infonce               I(T;Y), neural InfoNCE bound of a critic trained online
                                          (``kam.mi.OnlineLabelMI``; ``neural=True``)
    mi/output/<name>                      each MI score the model's defense declares in ``mi_score_names``
                                          (MIAT: mi_natural, v_n(x -> h(x)) | v_n(x -> h(x_adv)), and
                                          mi_adversarial, v_a(n -> h(x)) | v_a(n -> h(x_adv)))
    mi/saturated                          how many of the run's estimates lie within 5% of their ceiling
    tag (run <log_dir>/mi/clean only)
    mi/log_N, mi/H_Y                      the ceilings: log N of I(X;T), H(Y) of I(T;Y)
    mi/information_plane                  the information-plane picture (image), clean and adv

(the ``mi/output`` rows: the mean of ``Defense.mi_scores`` of the probe and its adversarial version, for a
``kam.AdversarialModel`` whose defense declares scores, and an attack). The clean and the adversarial value
share one tag in two runs, as Keras's ``train`` and ``validation`` do, so TensorBoard draws them in two
run colours and names them in its run list (``keras_advmi.callbacks.mi_layout``). The writers are
opened in ``set_model``, adv then clean, so that listed before a ``keras.callbacks.TensorBoard``
(``callbacks=[mi_logger, tensorboard]``) these runs come first in TensorBoard's run order, which picks
the colours. The KDE's noise variance is scale-aware by default (``noise_var='relative'``): per layer,
0.1 x the median squared pairwise distance of the clean probe's activations at that epoch, used for the
adversarial ones too, so clean and
adversarial share one yardstick and a function-preserving rescale of a layer changes nothing
(``kam.mi.kde_noise_var``; that paper's absolute 0.1 saturates at log N on MNIST CNNs and stays available as
``noise_var=0.1``). Values in nats (``unit='bits'`` converts), step = epoch index (0-based). At the start
of training a custom-scalars layout is written so that TensorBoard's "Custom Scalars" tab shows, per
quantity and estimator, one chart per layer with one curve per run (clean and adv of each model in the
logdir; ``mi_layout``), and the ceilings in a chart of their own. Each logged epoch also writes an
information-plane picture (axes fixed at [0, log N] x [0, H(Y)]).
Estimates within 5% of their ceiling are counted in ``mi/saturated``, passed on as ``logs["mi_saturated"]``
(History, CSVLogger and a later TensorBoard callback see it) and named in a logged warning. ``history``
keeps every value under the keys ``<tag>/clean|adv`` (e.g. ``mi/conv1/I_XT/adv``) and ``<tag>`` (e.g.
``mi/log_N``), and ``<log_dir>/mi/mi_history.json`` mirrors it for ``keras_advmi.analysis.information_plane``.
"""

from __future__ import annotations

import json
import logging
import math
import os

import numpy as np
import tensorflow as tf
import keras

from .._checks import (check_bool, check_in_unit_interval, check_layer_names, check_positive, check_positive_int,
                       check_seed, invalid)
from .._model import network_of, resolve_layers, tap_model
from ..analysis.plots import plot_information_plane
from ..mi import OnlineLabelMI, Standardizer, binning_mi, kde_information_plane, kde_noise_var, label_entropy, log_n
from ..mi._inputs import check_unit
from ..mi.kde import check_noise_var
from ._probe import attack_probe, check_log_dir, check_probe, layer_activations
from .mi_layout import ESTIMATORS, KINDS, NEURAL_SUFFIX, MIRuns, mi_layout

__all__ = ["MutualInformationLogger", "ESTIMATORS", "mi_layout"]   # the last two re-exported from mi_layout

log = logging.getLogger(__name__)

SATURATION = 0.95   #: an estimate at or above this fraction of its ceiling is flagged as saturated


class MutualInformationLogger(keras.callbacks.Callback):
    """Log per-layer MI of a probe set, clean and under attack, to TensorBoard during ``fit``.

    Args:
      x_probe, y_probe: a fixed probe set, at least as many images as classes (>= 1,000 recommended: the
        KDE's I(X;T) is at most log N).
      log_dir: TensorBoard log directory; events go to the runs ``<log_dir>/mi/clean`` and ``<log_dir>/mi/adv``
        (same tags, one run per probe kind; the ceilings and the picture in the clean run).
      layers: layer names of the (wrapped) model; default every layer with weights (conv, dense, logits).
      attack: 'pgd' (L-inf PGD, default), None (clean only), or a callable ``attack(model, x, y) -> x_adv``.
      estimators: any of 'kde_upper' (default), 'kde_lower', 'binning'.
      every_n_epochs: log every this many epochs.
      noise_var: KDE noise variance: 'relative' (default, scale-aware: ``relative_noise`` x the median
        squared pairwise distance of each layer's clean probe activations) or an absolute s2 (0.1 reproduces
        the information planes of the 2022 MI paper and of Saxe et al. 2018).
      relative_noise: see ``noise_var``. bin_width: binning width (the paper's 0.5, absolute). unit: 'nats' or 'bits'.
      neural: also log the neural InfoNCE bound on I(T;Y) (``I_TY_infonce``) of a critic per layer and
        probe kind, trained ``neural_steps`` steps at each logged epoch on half the probe set and evaluated
        on the other half, warm-started from the previous epoch (``kam.mi.OnlineLabelMI``).
      epsilon, steps, step_size, seed: the PGD attack (epsilon defaults to the AdversarialModel's defense
        epsilon; step size to Madry's 2.5 * epsilon / steps, ``madry_step_size``); the seed also seeds the critics.
      batch_size: probe batch for activations and attack.
      plane_image: also write the information-plane picture.
    Reference: "Exploring adversarial examples and adversarial robustness of convolutional neural networks
    by mutual information" (2022, arXiv 2207.05756); Saxe et al. 2018; Shwartz-Ziv & Tishby 2017; Goldfeld et al. 2019.
    """

    def __init__(self, x_probe: np.ndarray, y_probe: np.ndarray, log_dir: str | os.PathLike,
                 layers: str | list[str] | None = None, attack="pgd",
                 estimators: str | tuple[str, ...] = ("kde_upper",),
                 every_n_epochs: int = 1, noise_var: str | float = "relative", bin_width: float = 0.5,
                 unit: str = "nats", epsilon: float | None = None, steps: int = 10, step_size: float | None = None,
                 seed: int = 0, batch_size: int = 500, plane_image: bool = True, relative_noise: float = 0.1,
                 neural: bool = True, neural_steps: int = 50):
        super().__init__()
        self.x_probe, self.y_probe = check_probe(x_probe, y_probe, minimum=2)
        self.log_dir = check_log_dir(log_dir)
        self.layers = check_layer_names("layers", layers, allow_none=True)
        if not (attack is None or attack == "pgd" or callable(attack)):
            raise invalid("attack", "'pgd', None or a callable attack(model, x, y) -> x_adv", attack)
        self.attack = attack
        if isinstance(estimators, str):
            estimators = (estimators,)
        unknown = [e for e in estimators or () if e not in ESTIMATORS]
        if not estimators or unknown:
            raise invalid("estimators", f"a non-empty subset of {sorted(ESTIMATORS)}", estimators)
        self.estimators = tuple(estimators)
        self.every_n_epochs = check_positive_int("every_n_epochs", every_n_epochs)
        self.noise_var = check_noise_var(noise_var)
        self.relative_noise = check_positive("relative_noise", relative_noise)
        self.bin_width = check_positive("bin_width", bin_width)
        self.unit = check_unit(unit)
        self.epsilon = None if epsilon is None else check_in_unit_interval("epsilon", epsilon, open_low=True)
        self.steps = check_positive_int("steps", steps)
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.seed = check_seed("seed", seed, allow_none=False)
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.plane_image = check_bool("plane_image", plane_image)
        self.neural = check_bool("neural", neural)
        self.neural_steps = check_positive_int("neural_steps", neural_steps)
        self.h_y = label_entropy(self.y_probe, self.unit)   #: H(Y) of the probe labels, the ceiling of I(T;Y)
        self.history = {"epoch": []}   #: tag -> list of values, one per logged epoch
        self._runs = MIRuns(self.log_dir, KINDS if self.attack is not None else ("clean",))
        self._layout_written = False
        self._features = None
        self._critics = None
        self._score_names = ()

    # -- model plumbing -------------------------------------------------------------------------
    def _net(self):
        return network_of(self.model)

    def _defense(self):
        return getattr(self.model, "defense", None)

    def _epsilon(self):
        if self.epsilon is not None:
            return self.epsilon
        defense = self._defense()
        if defense is None or getattr(defense, "epsilon", None) is None:
            raise invalid("epsilon", "a PGD budget (the model is not a kam.AdversarialModel with a defense)", None)
        return float(defense.epsilon)

    def set_model(self, model):
        super().set_model(model)
        self._runs.open()   # here, not at train begin: before a later TensorBoard callback's runs

    def on_train_begin(self, logs=None):
        net = self._net()
        if self.layers is None:
            self.layers = [layer.name for layer in net.layers if layer.weights and layer.output is not None]
        self.layers = resolve_layers(net, self.layers)
        self._classes = int(net.outputs[0].shape[-1])
        if len(self.x_probe) < self._classes:
            raise invalid("x_probe", f"at least as many probe images as the model has classes ({self._classes})",
                          f"{len(self.x_probe)} images")
        if int(self.y_probe.max()) >= self._classes:
            raise invalid("y_probe", f"labels in [0, {self._classes}) (the model's classes)", int(self.y_probe.max()))
        if self.attack == "pgd":
            self._epsilon()
        self._features = tap_model(net, self.layers, include_logits=False)
        defense = self._defense()
        self._score_names = tuple(defense.mi_score_names) if defense is not None else ()
        self._runs.open()
        if not self._layout_written:
            self._runs.write_layout(mi_layout(self.layers, self.estimators, scores=self._score_names,
                                              neural=self.neural, unit=self.unit))
            self._layout_written = True

    # -- measurement ----------------------------------------------------------------------------
    def adversarial_probe(self):
        """x_adv of the probe set against the current model (None when ``attack`` is None)."""
        if self.attack is None:
            return None
        return attack_probe(self._net(), self.attack, self.x_probe, self.y_probe,
                            epsilon=None if callable(self.attack) else self._epsilon(), steps=self.steps,
                            step_size=self.step_size, seed=self.seed, batch_size=self.batch_size)

    def _noise_var(self, h_clean):
        if self.noise_var == "relative":
            return kde_noise_var(h_clean, self.relative_noise)
        return self.noise_var

    def _layer_values(self, h, s2):
        values = {}
        for est in self.estimators:
            suffix = ESTIMATORS[est]
            if est == "binning":
                ixt, ity = binning_mi(h, self.y_probe, self.bin_width, unit=self.unit)
            elif s2 > 0:
                ixt, ity = kde_information_plane(h, self.y_probe, s2, est.split("_")[1], unit=self.unit)
            else:   # every clean row identical ('relative' s2 = 0): the layer carries no information
                ixt = ity = 0.0
            values[f"I_XT{suffix}"], values[f"I_TY{suffix}"] = ixt, ity
        return values

    def _neural_values(self, features):
        """{(layer, kind): I(T;Y) InfoNCE bound} from one warm-started critic bank for every layer and kind."""
        if self._critics is None:
            self._critics = OnlineLabelMI(len(features), self._classes, steps=self.neural_steps, seed=self.seed)
        bounds = self._critics.update(list(features.values()), self.y_probe)
        return {key: float(v) / (math.log(2.0) if self.unit == "bits" else 1.0) for key, v in zip(features, bounds)}

    def _score_values(self, x_adv):
        """{'mi/output/<name>/<kind>': mean score} of the scores the defense declares (``mi_score_names``)."""
        scores = self._defense().mi_scores(self._net(), self.x_probe, x_adv)
        return {f"mi/output/{name}/{kind}": float(np.mean(scores[f"{name}/{kind}"]))
                for name in self._score_names for kind in KINDS if f"{name}/{kind}" in scores}

    def measure(self):
        """{tag: value} for the current model (the tags of the module docstring)."""
        if self._features is None:
            self.on_train_begin()
        probes = {"clean": self.x_probe}
        x_adv = self.adversarial_probe()
        if x_adv is not None:
            probes["adv"] = x_adv
        values = {"mi/log_N": log_n(len(self.x_probe), self.unit), "mi/H_Y": self.h_y}
        acts = {kind: layer_activations(self._features, self.layers, x, kind, self.batch_size)
                for kind, x in probes.items()}
        features = {}
        for i, layer in enumerate(self.layers):
            s2 = self._noise_var(acts["clean"][i])
            standardize = Standardizer(acts["clean"][i], seed=self.seed + i) if self.neural else None
            for kind in probes:
                h = acts[kind][i]
                for quantity, v in self._layer_values(h, s2).items():
                    values[f"mi/{layer}/{quantity}/{kind}"] = float(v)
                if self.neural:
                    features[(layer, kind)] = standardize(h)
        if features:
            for (layer, kind), v in self._neural_values(features).items():
                values[f"mi/{layer}/I_TY{NEURAL_SUFFIX}/{kind}"] = v
        if self._score_names and x_adv is not None:
            values.update(self._score_values(x_adv))
        values["mi/saturated"] = float(len(self.saturated(values)))
        return values

    def saturated(self, values):
        """Tags of the estimates in ``values`` at or above 95% of their ceiling (log N or H(Y))."""
        ceilings = {"I_XT": values["mi/log_N"], "I_TY": values["mi/H_Y"]}
        flagged = []
        for tag, v in values.items():
            parts = tag.split("/")
            if len(parts) == 4 and parts[2][:4] in ceilings and v >= SATURATION * ceilings[parts[2][:4]]:
                flagged.append(tag)
        return flagged

    # -- logging --------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if not self._runs.writers or not self._layout_written:
            self.on_train_begin()
        values = self.measure()
        flagged = self.saturated(values)
        if flagged:
            log.warning("epoch %d: %d MI estimates within 5%% of their ceiling (log N = %.3f for I(X;T), "
                        "H(Y) = %.3f for I(T;Y)); at the ceiling an estimate cannot rise further and cannot "
                        "tell runs apart: %s", epoch, len(flagged), values["mi/log_N"], values["mi/H_Y"],
                        ", ".join(flagged))
        if logs is not None:
            logs["mi_saturated"] = values["mi/saturated"]
        self.history["epoch"].append(int(epoch))
        for tag, v in values.items():
            self.history.setdefault(tag, []).append(v)
        self._runs.write_scalars(epoch, values, flagged)
        if self.plane_image:
            try:
                self._runs.write_image(epoch, "mi/information_plane", self._plane_png())
            except (RuntimeError, ValueError) as exc:   # a figure must never stop training
                log.warning("information-plane image of epoch %d not written: %s", epoch, exc)
        self._runs.flush()
        with open(os.path.join(self.log_dir, "mi", "mi_history.json"), "w") as f:
            json.dump({"unit": self.unit, "layers": self.layers, "estimators": list(self.estimators),
                       "n_probe": len(self.x_probe), "h_y": self.h_y, "noise_var": self.noise_var,
                       "relative_noise": self.relative_noise, "history": self.history}, f)

    def information_plane(self, estimator="kde_upper"):
        """{'clean'|'adv': {layer: [(I_XT, I_TY) per logged epoch]}} from ``history``."""
        if estimator not in self.estimators:
            raise invalid("estimator", f"one of the logged estimators {self.estimators}", estimator)
        suffix = ESTIMATORS[estimator]
        plane = {}
        for kind in KINDS:
            per_layer = {layer: list(zip(self.history.get(f"mi/{layer}/I_XT{suffix}/{kind}", []),
                                         self.history.get(f"mi/{layer}/I_TY{suffix}/{kind}", [])))
                         for layer in self.layers or []}
            if any(per_layer.values()):
                plane[kind] = per_layer
        return plane

    def _plane_png(self):
        plane = {kind: {layer: np.asarray(pts, np.float64).reshape(-1, 2) for layer, pts in layers.items()}
                 for kind, layers in self.information_plane(self.estimators[0]).items()}
        plane.update(layers=self.layers, unit=self.unit, log_n=log_n(len(self.x_probe), self.unit), h_y=self.h_y)
        plane.setdefault("clean", {})
        title = (f"Information plane ({self.estimators[0]}), epoch {self.history['epoch'][-1]}: "
                 "solid clean, dashed adversarial")
        png = plot_information_plane({"model": plane}, title=title)
        return tf.image.decode_png(png, channels=4)[None]

    def on_train_end(self, logs=None):
        self._runs.close()
        self._layout_written = False

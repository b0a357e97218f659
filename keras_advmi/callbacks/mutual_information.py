"""``MutualInformationLogger``: I(X;T) and I(T;Y) per layer, clean vs adversarial, as TensorBoard curves.

At the end of every ``every_n_epochs``-th epoch the logger attacks the probe set (PGD against the
current model, unless ``attack=None``), reads each layer's activations for x and x_adv, and estimates
(METHODS.md "MI estimators"; P1):

    tag                                   quantity
    mi/<layer>/I_XT/clean|adv             I(X;T), KDE upper bound        (estimator 'kde_upper')
    mi/<layer>/I_TY/clean|adv             I(T;Y), KDE upper bound
    mi/<layer>/I_XT_lower/..., I_TY_lower KDE lower bound                (estimator 'kde_lower')
    mi/<layer>/I_XT_binning/..., ...      binning, bin width 0.5         (estimator 'binning')
    mi/output/mi_natural/clean|adv        MIAT's natural MI, v_n(x -> h(x)) | v_n(x -> h(x_adv))
    mi/output/mi_adversarial/clean|adv    MIAT's adversarial MI, v_a(n -> h(x)) | v_a(n -> h(x_adv))
    mi/log_N                              log N: the ceiling every estimate saturates at

(the MIAT rows appear when the model's defense has ``mi_scores``). Values in nats (``unit='bits'``
converts), step = epoch index (0-based). Events go to ``<log_dir>/mi``. At the start of training a
custom-scalars layout is written so that TensorBoard's "Custom Scalars" tab shows, per layer, the clean
and adversarial curves of each quantity in one chart; each logged epoch also writes an
information-plane picture (``mi/information_plane`` image). ``history`` keeps every value, and
``<log_dir>/mi/mi_history.json`` mirrors it for ``keras_advmi.analysis.information_plane``.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re

import numpy as np
import tensorflow as tf
import keras

from .._checks import check_fraction, check_positive_int, invalid
from ..analysis.neuron_sensitivity import feature_model, resolve_layers
from ..attacks._common import logits_model
from ..mi import binning_mi, kde_information_plane, log_n
from ..mi._inputs import check_positive, check_unit
from ._probe import check_layer_names, check_log_dir, check_probe

__all__ = ["MutualInformationLogger", "ESTIMATORS", "mi_layout"]

log = logging.getLogger(__name__)

#: estimator name -> tag suffix
ESTIMATORS = {"kde_upper": "", "kde_lower": "_lower", "binning": "_binning"}
_KINDS = ("clean", "adv")


def mi_layout(layers, estimators=("kde_upper",), miat=False):
    """The custom-scalars layout (``layout_pb2.Layout``): one chart per layer and quantity, with the clean and
    adversarial curves (and, across runs, e.g. NT vs AT) drawn together."""
    from tensorboard.plugins.custom_scalar import layout_pb2

    categories = []
    for quantity, title in (("I_XT", "I(X;T)"), ("I_TY", "I(T;Y)")):
        for est in estimators:
            suffix = ESTIMATORS[est]
            charts = [layout_pb2.Chart(
                title=f"{title} {layer}{' (' + est + ')' if suffix else ''}: clean vs adv",
                multiline=layout_pb2.MultilineChartContent(tag=[rf"^mi/{re.escape(layer)}/{quantity}{suffix}/(clean|adv)$"]))
                for layer in layers]
            categories.append(layout_pb2.Category(title=f"MI {title}{' ' + est if suffix else ''} per layer",
                                                  chart=charts))
    if miat:
        charts = [layout_pb2.Chart(title=f"{name}: clean vs adv",
                                   multiline=layout_pb2.MultilineChartContent(tag=[rf"^mi/output/{name}/(clean|adv)$"]))
                  for name in ("mi_natural", "mi_adversarial")]
        categories.append(layout_pb2.Category(title="MIAT natural / adversarial MI", chart=charts))
    return layout_pb2.Layout(category=categories)


class MutualInformationLogger(keras.callbacks.Callback):
    """Log per-layer MI of a probe set, clean and under attack, to TensorBoard during ``fit``.

    Args:
      x_probe, y_probe: a fixed probe set (>= 1,000 images recommended: estimates saturate at log N).
      log_dir: TensorBoard log directory; events go to ``<log_dir>/mi``.
      layers: layer names of the (wrapped) model; default every layer with weights (conv, dense, logits).
      attack: 'pgd' (L-inf PGD, default), None (clean only), or a callable ``attack(model, x, y) -> x_adv``.
      estimators: any of 'kde_upper' (default), 'kde_lower', 'binning'.
      every_n_epochs: log every this many epochs.
      noise_var: KDE noise variance (P1: 0.1); bin_width: binning width (P1: 0.5); unit: 'nats' or 'bits'.
      epsilon, steps, step_size, seed: the PGD attack (epsilon defaults to the AdversarialModel's defense
        epsilon; step size to 2.5 * epsilon / steps).
      batch_size: probe batch for activations and attack.
      plane_image: also write the information-plane picture.
    Reference: P1 (METHODS.md); Saxe et al. 2018; Shwartz-Ziv & Tishby 2017.
    """

    def __init__(self, x_probe, y_probe, log_dir, layers=None, attack="pgd", estimators=("kde_upper",),
                 every_n_epochs=1, noise_var=0.1, bin_width=0.5, unit="nats", epsilon=None, steps=10,
                 step_size=None, seed=0, batch_size=500, plane_image=True):
        super().__init__()
        self.x_probe, self.y_probe = check_probe(x_probe, y_probe, minimum=2)
        self.log_dir = check_log_dir(log_dir)
        self.layers = check_layer_names(layers, allow_none=True)
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
        self.noise_var = check_positive("noise_var", noise_var)
        self.bin_width = check_positive("bin_width", bin_width)
        self.unit = check_unit(unit)
        self.epsilon = None if epsilon is None else check_fraction("epsilon", epsilon, low_open=True)
        self.steps = check_positive_int("steps", steps)
        self.step_size = None if step_size is None else check_positive("step_size", step_size)
        self.seed = seed
        self.batch_size = check_positive_int("batch_size", batch_size)
        self.plane_image = bool(plane_image)
        self.history = {"epoch": []}   #: tag -> list of values, one per logged epoch
        self._writer = None
        self._features = None

    # -- model plumbing -------------------------------------------------------------------------
    def _net(self):
        return logits_model(self.model)

    def _defense(self):
        return getattr(self.model, "defense", None)

    def _default_layers(self, net):
        return [layer.name for layer in net.layers if layer.weights and layer.output is not None]

    def _epsilon(self):
        if self.epsilon is not None:
            return self.epsilon
        defense = self._defense()
        if defense is None or getattr(defense, "epsilon", None) is None:
            raise invalid("epsilon", "a PGD budget (the model is not a kam.AdversarialModel with a defense)", None)
        return float(defense.epsilon)

    def on_train_begin(self, logs=None):
        net = self._net()
        if self.layers is None:
            self.layers = self._default_layers(net)
        self.layers = resolve_layers(net, self.layers)
        if self.attack == "pgd":
            self._epsilon()
        self._features = feature_model(net, self.layers)
        self._miat = callable(getattr(self._defense(), "mi_scores", None))
        if self._writer is None:
            self._writer = tf.summary.create_file_writer(os.path.join(self.log_dir, "mi"))
            from tensorboard.plugins.custom_scalar import summary as cs_summary

            with self._writer.as_default():
                tf.summary.experimental.write_raw_pb(
                    cs_summary.pb(mi_layout(self.layers, self.estimators, self._miat)).SerializeToString(), step=0)
            self._writer.flush()

    # -- measurement ----------------------------------------------------------------------------
    def adversarial_probe(self):
        """x_adv of the probe set against the current model (None when ``attack`` is None)."""
        if self.attack is None:
            return None
        net = self._net()
        if callable(self.attack):
            x_adv = np.asarray(self.attack(net, self.x_probe, self.y_probe), np.float32)
            if x_adv.shape != self.x_probe.shape:
                raise invalid("attack", f"a callable returning x_adv of shape {self.x_probe.shape}", x_adv.shape)
            return x_adv
        from ..attacks import pgd

        eps = self._epsilon()
        step = self.step_size if self.step_size is not None else 2.5 * eps / self.steps
        return np.asarray(pgd(net, self.x_probe, self.y_probe, eps, step, self.steps, seed=self.seed,
                              batch_size=self.batch_size))

    def _activations(self, x):
        outs = [[] for _ in self.layers]
        for start in range(0, len(x), self.batch_size):
            batch = self._features(tf.constant(x[start:start + self.batch_size]), training=False)
            batch = batch if isinstance(batch, (list, tuple)) else [batch]
            for acc, b in zip(outs, batch):
                acc.append(np.asarray(b).reshape(len(b), -1))
        return [np.concatenate(o) for o in outs]

    def _layer_values(self, h):
        values = {}
        for est in self.estimators:
            suffix = ESTIMATORS[est]
            if est == "binning":
                ixt, ity = binning_mi(h, self.y_probe, self.bin_width, unit=self.unit)
            else:
                ixt, ity = kde_information_plane(h, self.y_probe, self.noise_var, est.split("_")[1], unit=self.unit)
            values[f"I_XT{suffix}"], values[f"I_TY{suffix}"] = ixt, ity
        return values

    def measure(self):
        """{tag: value} for the current model (the tags of the module docstring)."""
        probes = {"clean": self.x_probe}
        x_adv = self.adversarial_probe()
        if x_adv is not None:
            probes["adv"] = x_adv
        values = {"mi/log_N": log_n(len(self.x_probe), self.unit)}
        for kind, x in probes.items():
            for layer, h in zip(self.layers, self._activations(x)):
                for quantity, v in self._layer_values(h).items():
                    values[f"mi/{layer}/{quantity}/{kind}"] = float(v)
        if self._miat and x_adv is not None:
            scores = self._defense().mi_scores(self._net(), self.x_probe, x_adv)
            for key, per_sample in scores.items():   # keys like 'mi_natural/clean'
                values[f"mi/output/{key}"] = float(np.mean(per_sample))
        return values

    # -- logging --------------------------------------------------------------------------------
    def on_epoch_end(self, epoch, logs=None):
        if (epoch + 1) % self.every_n_epochs:
            return
        if self._writer is None:
            self.on_train_begin()
        values = self.measure()
        self.history["epoch"].append(int(epoch))
        for tag, v in values.items():
            self.history.setdefault(tag, []).append(v)
        with self._writer.as_default(step=epoch):
            for tag, v in values.items():
                tf.summary.scalar(tag, v)
            if self.plane_image:
                try:
                    tf.summary.image("mi/information_plane", self._plane_png(), max_outputs=1)
                except (RuntimeError, ValueError) as exc:   # a figure must never stop training
                    log.warning("information-plane image of epoch %d not written: %s", epoch, exc)
        self._writer.flush()
        with open(os.path.join(self.log_dir, "mi", "mi_history.json"), "w") as f:
            json.dump({"unit": self.unit, "layers": self.layers, "estimators": list(self.estimators),
                       "n_probe": len(self.x_probe), "history": self.history}, f)

    def information_plane(self, estimator="kde_upper"):
        """{'clean'|'adv': {layer: [(I_XT, I_TY) per logged epoch]}} from ``history``."""
        if estimator not in self.estimators:
            raise invalid("estimator", f"one of the logged estimators {self.estimators}", estimator)
        suffix = ESTIMATORS[estimator]
        plane = {}
        for kind in _KINDS:
            per_layer = {layer: list(zip(self.history.get(f"mi/{layer}/I_XT{suffix}/{kind}", []),
                                         self.history.get(f"mi/{layer}/I_TY{suffix}/{kind}", [])))
                         for layer in self.layers or []}
            if any(per_layer.values()):
                plane[kind] = per_layer
        return plane

    def _plane_png(self):
        import matplotlib

        matplotlib.use("Agg", force=False)
        import matplotlib.pyplot as plt

        plane = self.information_plane(self.estimators[0])
        fig, ax = plt.subplots(figsize=(6, 4.5), dpi=100)
        colours = plt.get_cmap("viridis")(np.linspace(0, 0.9, max(len(self.layers), 1)))
        for kind, style in (("clean", dict(ls="-", marker="o")), ("adv", dict(ls="--", marker="x"))):
            for colour, layer in zip(colours, self.layers):
                pts = np.asarray(plane.get(kind, {}).get(layer, []))
                if len(pts):
                    ax.plot(pts[:, 0], pts[:, 1], color=colour, ms=4, label=f"{layer} ({kind})", **style)
                    ax.plot(pts[-1, 0], pts[-1, 1], color=colour, marker=style["marker"], ms=9)
        ceiling = log_n(len(self.x_probe), self.unit)
        ax.axvline(ceiling, color="grey", lw=0.8, ls=":")
        ax.text(ceiling, 0.02, " log N", color="grey", fontsize=8, rotation=90, va="bottom",
                transform=ax.get_xaxis_transform())   # x in data units, y in axes units
        ax.set_xlabel(f"I(X;T) [{self.unit}]")
        ax.set_ylabel(f"I(T;Y) [{self.unit}]")
        ax.set_title(f"Information plane, epoch {self.history['epoch'][-1]} (solid clean, dashed adversarial)",
                     fontsize=9)
        ax.legend(fontsize=7, ncol=2, loc="lower right")
        fig.tight_layout()
        buf = io.BytesIO()
        fig.savefig(buf, format="png")
        plt.close(fig)
        return tf.image.decode_png(buf.getvalue(), channels=4)[None]

    def on_train_end(self, logs=None):
        if self._writer is not None:
            self._writer.close()
            self._writer = None

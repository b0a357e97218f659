"""The TensorBoard runs and custom-scalars layout of ``MutualInformationLogger``'s events.

Clean and adversarial values go to two runs, ``<log_dir>/mi/clean`` and ``<log_dir>/mi/adv``, under the
same tag (``mi/<layer>/I_XT``), the way Keras separates ``train`` and ``validation``: TensorBoard then
draws them in its run colours and names them in its run list. Values of neither probe (the ceilings,
the information-plane picture, the layout) go to the clean run, which every logger writes (the adv run
needs an attack); each run holds its own saturation count. No third run: TensorBoard gives runs the
colours of its palette in run order (first event's whole second, then name), so every extra run
shifts the colours of the next model's runs.

The layout has one category per quantity and estimator, one chart per layer in each (its curves: one per
run, so clean and adv of each logged model), then the charts of the MI scores the model's defense declares
(``Defense.mi_score_names``, e.g. MIAT's ``mi_natural`` and ``mi_adversarial``) and a chart of the
ceilings and the saturation count. ``MIRuns`` holds the runs' summary writers.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as cs_summary

__all__ = ["ESTIMATORS", "NEURAL_SUFFIX", "KINDS", "MIRuns", "mi_layout", "run_and_tag", "write_layout"]

#: estimator name -> tag suffix
ESTIMATORS = {"kde_upper": "", "kde_lower": "_lower", "binning": "_binning"}
NEURAL_SUFFIX = "_infonce"
#: the probe kinds, each a run ``<log_dir>/mi/<kind>``
KINDS = ("clean", "adv")

_NAMES = {"kde_upper": "KDE upper bound", "kde_lower": "KDE lower bound", "binning": "binning",
          "infonce": "InfoNCE bound of a critic trained online"}


def run_and_tag(key: str) -> tuple[str, str]:
    """(run directory below ``log_dir``, TensorBoard tag) of a ``history`` key.

    ``'mi/conv1/I_XT/adv'`` -> ``('mi/adv', 'mi/conv1/I_XT')``; ``'mi/log_N'`` -> ``('mi/clean', 'mi/log_N')``.
    """
    head, _, kind = key.rpartition("/")
    if kind in KINDS and head.count("/") >= 1:
        return f"mi/{kind}", head
    return "mi/clean", key


def _chart(title: str, *patterns: str) -> layout_pb2.Chart:
    return layout_pb2.Chart(title=title, multiline=layout_pb2.MultilineChartContent(tag=list(patterns)))


def mi_layout(layers: Sequence[str], estimators: Sequence[str] = ("kde_upper",), scores: Sequence[str] = (),
              neural: bool = False, unit: str = "nats") -> layout_pb2.Layout:
    """The custom-scalars layout (``layout_pb2.Layout``).

    Per quantity (I(X;T), I(T;Y)) and estimator one category with one chart per layer; each chart's one
    tag pattern (``^mi/<layer>/<quantity><suffix>$``) matches one curve per run, i.e. the clean and the
    adversarial curve of every model logged under the same TensorBoard logdir (4 curves for NT vs AT).
    ``neural`` adds a category for the InfoNCE bound on I(T;Y), ``scores`` (the defense's
    ``mi_score_names``) one with a chart per score (tag ``mi/output/<name>``); the ceilings (log N, H(Y): 2 curves a model) and the saturation count (one per run)
    have charts of their own, last.
    Category titles name the estimator, the unit and the ceiling.
    """
    categories = []
    for quantity, title, ceiling in (("I_XT", "I(X;T)", "log N"), ("I_TY", "I(T;Y)", "H(Y)")):
        sources = [(ESTIMATORS[e], _NAMES[e], e) for e in estimators]
        if neural and quantity == "I_TY":
            sources.append((NEURAL_SUFFIX, _NAMES["infonce"], "infonce"))
        for suffix, name, short in sources:
            charts = [_chart(f"{layer} {title}" + ("" if short == "kde_upper" else f" ({short})"),
                             rf"^mi/{re.escape(layer)}/{quantity}{re.escape(suffix)}$") for layer in layers]
            categories.append(layout_pb2.Category(
                title=f"{title} per layer, {name} [{unit}], clean vs adv (ceiling {ceiling})", chart=charts))
    if scores:
        charts = [_chart(f"{name} [{unit}]", rf"^mi/output/{re.escape(name)}$") for name in scores]
        categories.append(layout_pb2.Category(title=f"the defense's MI scores ({', '.join(scores)}), clean vs adv",
                                              chart=charts))
    categories.append(layout_pb2.Category(title="MI ceilings and saturated estimates", chart=[
        _chart(f"ceilings [{unit}]: log N of I(X;T), H(Y) of I(T;Y)", r"^mi/log_N$", r"^mi/H_Y$"),
        _chart("saturated estimates (within 5% of log N or H(Y)); 0 is healthy", r"^mi/saturated$")]))
    return layout_pb2.Layout(category=categories)


def write_layout(writer: tf.summary.SummaryWriter, layout: layout_pb2.Layout) -> None:
    """Write ``layout`` to ``writer`` (step 0) so that TensorBoard's "Custom Scalars" tab shows it."""
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(cs_summary.pb(layout).SerializeToString(), step=0)
    writer.flush()


class MIRuns:
    """The summary writers of the runs ``<log_dir>/mi/<kind>``, one per probe kind of ``kinds`` (module doc).

    ``open`` creates them once, adv then clean: TensorBoard orders runs by their first event's whole second,
    then by name, and its run colours follow that order; creation in name order keeps the two orders alike,
    so the two runs are adjacent and get two different colours of its palette.
    """

    def __init__(self, log_dir: str, kinds: Sequence[str]):
        self.log_dir, self.kinds = log_dir, tuple(kinds)
        self.writers = {}   #: run below log_dir ('mi/clean', 'mi/adv') -> summary writer

    def open(self) -> None:
        if not self.writers:
            for kind in sorted(self.kinds):
                self.writers[f"mi/{kind}"] = tf.summary.create_file_writer(os.path.join(self.log_dir, "mi", kind))

    def write_layout(self, layout: layout_pb2.Layout) -> None:
        """The custom-scalars layout, in the clean run (every logger writes it)."""
        write_layout(self.writers["mi/clean"], layout)

    def write_scalars(self, epoch: int, values: dict, flagged: Sequence[str]) -> None:
        """Each of ``values`` ({history key: float}) at step ``epoch``, in its run under its tag
        (``run_and_tag``); ``mi/saturated`` of each run counts that run's keys among ``flagged`` (the total
        stays in the history)."""
        per_run = {run: {"mi/saturated": float(sum(t.endswith("/" + run.split("/")[1]) for t in flagged))}
                   for run in self.writers}
        for key, v in values.items():
            if key != "mi/saturated":
                run, tag = run_and_tag(key)
                per_run[run][tag] = v
        for run, scalars in per_run.items():
            with self.writers[run].as_default(step=epoch):
                for tag, v in scalars.items():
                    tf.summary.scalar(tag, v)

    def write_image(self, epoch: int, tag: str, image) -> None:
        """An image (1, H, W, C) uint8 at step ``epoch`` in the clean run."""
        with self.writers["mi/clean"].as_default(step=epoch):
            tf.summary.image(tag, image, max_outputs=1)

    def flush(self) -> None:
        for writer in self.writers.values():
            writer.flush()

    def close(self) -> None:
        for writer in self.writers.values():
            writer.close()
        self.writers = {}

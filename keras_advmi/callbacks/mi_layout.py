"""The TensorBoard custom-scalars layout of ``MutualInformationLogger``'s tags.

Per layer one I(X;T) chart and one I(T;Y) chart, each with the clean and adversarial curves of every
estimator and the ceiling; the MIAT natural/adversarial MI charts; the saturation count.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

import tensorflow as tf
from tensorboard.plugins.custom_scalar import layout_pb2
from tensorboard.plugins.custom_scalar import summary as cs_summary

__all__ = ["ESTIMATORS", "NEURAL_SUFFIX", "mi_layout", "write_layout"]

#: estimator name -> tag suffix
ESTIMATORS = {"kde_upper": "", "kde_lower": "_lower", "binning": "_binning"}
NEURAL_SUFFIX = "_infonce"


def mi_layout(layers: Sequence[str], estimators: Sequence[str] = ("kde_upper",), miat: bool = False,
              neural: bool = False) -> layout_pb2.Layout:
    """The custom-scalars layout (``layout_pb2.Layout``): per layer, one I(X;T) chart and one I(T;Y) chart,
    each holding the clean and adversarial curves of every estimator and the ceiling (``mi/log_N``,
    ``mi/H_Y``); across runs (e.g. NT vs AT) the same chart overlays them."""
    suffixes = "|".join(re.escape(ESTIMATORS[e]) for e in estimators if ESTIMATORS[e])
    names = ", ".join(estimators)
    categories = []
    for quantity, title, ceiling in (("I_XT", "I(X;T)", "log_N"), ("I_TY", "I(T;Y)", "H_Y")):
        extra = suffixes + ("|" + NEURAL_SUFFIX if neural and quantity == "I_TY" else "")
        extra = extra.strip("|")
        group = f"({extra})?" if extra else ""
        label = names + (", infonce" if neural and quantity == "I_TY" else "")
        charts = [layout_pb2.Chart(
            title=f"{layer} {title}: clean vs adv, ceiling {ceiling.replace('_', ' ')} ({label})",
            multiline=layout_pb2.MultilineChartContent(
                tag=[rf"^mi/{re.escape(layer)}/{quantity}{group}/(clean|adv)$", rf"^mi/{ceiling}$"]))
            for layer in layers]
        categories.append(layout_pb2.Category(title=f"MI {title} per layer", chart=charts))
    if miat:
        charts = [layout_pb2.Chart(title=f"{name}: clean vs adv",
                                   multiline=layout_pb2.MultilineChartContent(tag=[rf"^mi/output/{name}/(clean|adv)$"]))
                  for name in ("mi_natural", "mi_adversarial")]
        categories.append(layout_pb2.Category(title="MIAT natural / adversarial MI", chart=charts))
    categories.append(layout_pb2.Category(title="MI estimates at their ceiling", chart=[layout_pb2.Chart(
        title="saturated estimates (within 5% of log N or H(Y)); 0 is healthy",
        multiline=layout_pb2.MultilineChartContent(tag=[r"^mi/saturated$"]))]))
    return layout_pb2.Layout(category=categories)


def write_layout(writer: tf.summary.SummaryWriter, layout: layout_pb2.Layout) -> None:
    """Write ``layout`` to ``writer`` (step 0) so that TensorBoard's "Custom Scalars" tab shows it."""
    with writer.as_default():
        tf.summary.experimental.write_raw_pb(cs_summary.pb(layout).SerializeToString(), step=0)
    writer.flush()

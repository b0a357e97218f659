"""Prometheus metrics of the server through ``prometheus_client``, under TF Serving's metric names.

``:tensorflow:serving:request_count{model_name, API, entrypoint, status}`` and the histogram
``:tensorflow:serving:request_latency{model_name, API, entrypoint}`` (microseconds), as
``tensorflow_serving/servables/tensorflow/util.cc`` records them; ``entrypoint`` is ``REST`` or
``GRPC``. Values live in ``prometheus_client`` metrics (thread-safe) and the page is
``prometheus_client.generate_latest`` (escaping by the library). Counters keep TF Serving's sample
names (no ``_total`` suffix, which ``prometheus_client`` would add), so they are exposed as
``untyped`` families, as TF Serving's names cannot be both a counter and suffix-free in the
library's exposition. Only configured model names become label values; any other name a URL or
RPC carries is counted under ``UNKNOWN_MODEL``, so the page cannot be grown by unknown names.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest
from prometheus_client.core import Metric

_BUCKETS = (1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, float("inf"))  # microseconds
UNKNOWN_MODEL = "_unknown_"     # cannot be a configured name (those start with a letter or digit)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """Request count and latency per configured model, API, entrypoint; ``text()`` is the page."""

    def __init__(self, model_names=()):
        self._known = frozenset(model_names)
        self._count = Counter(":tensorflow:serving:request_count", "The total number of requests.",
                              ["model_name", "API", "entrypoint", "status"], registry=None)
        self._latency = Histogram(":tensorflow:serving:request_latency",
                                  "Distribution of wall time (in microseconds) for Tensorflow Serving request.",
                                  ["model_name", "API", "entrypoint"], buckets=_BUCKETS, registry=None)
        self._children = {}
        self._batches_fn = None
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(self)

    def label(self, model):
        return model if model in self._known else UNKNOWN_MODEL

    def observe(self, model, api, status, micros, entrypoint="REST"):
        """Count one request: ``status`` is its ``grpc.StatusCode`` (OK or the error's canonical code),
        labelled by name as TF Serving labels it; ``micros`` its latency in microseconds."""
        key = (self.label(model), api, entrypoint, status.name)
        children = self._children.get(key)
        if children is None:     # label sets are few (configured names x APIs x codes): cache them
            children = self._children.setdefault(key, (self._count.labels(*key), self._latency.labels(*key[:3])))
        children[0].inc()
        children[1].observe(micros)

    def batch_count(self, fn):
        """Report ``fn()`` as ``:tensorflow:serving:batching_session:batch_count``."""
        self._batches_fn = fn

    def collect(self):
        """prometheus_client Collector protocol: TF Serving's sample names, no ``_created``."""
        for metric in self._count.collect():
            out = Metric(metric.name, metric.documentation, "unknown")
            for s in metric.samples:
                if s.name.endswith("_total"):
                    out.add_sample(metric.name, s.labels, s.value)
            yield out
        for metric in self._latency.collect():
            out = Metric(metric.name, metric.documentation, "histogram")
            for s in metric.samples:
                if not s.name.endswith("_created"):
                    out.add_sample(s.name, s.labels, s.value)
            yield out
        batches = Metric(":tensorflow:serving:batching_session:batch_count", "Model calls run by the batcher.",
                         "unknown")
        batches.add_sample(batches.name, {}, float(self._batches_fn() if self._batches_fn else 0))
        yield batches

    def text(self):
        """The exposition page (Prometheus text format 0.0.4), bytes."""
        return generate_latest(self.registry)

"""Prometheus text exposition of the server's counters (TF Serving metric names where they exist)."""

from __future__ import annotations

import collections
import threading

_BUCKETS = (1e3, 2e3, 5e3, 1e4, 2e4, 5e4, 1e5, 2e5, 5e5, 1e6, float("inf"))  # microseconds


class Metrics:
    """Thread-safe counters: request count by model/API/status, latency histogram (us), rejects."""

    def __init__(self):
        self._lock = threading.Lock()
        self.requests = collections.Counter()
        self.latency = collections.defaultdict(lambda: [0] * len(_BUCKETS))
        self.latency_sum = collections.Counter()

    def observe(self, model, api, status, micros):
        with self._lock:
            self.requests[(model, api, status)] += 1
            buckets = self.latency[(model, api)]
            for i, b in enumerate(_BUCKETS):
                if micros <= b:
                    buckets[i] += 1
            self.latency_sum[(model, api)] += micros

    def text(self, batches=0):
        """Prometheus text format 0.0.4."""
        lines = ["# TYPE :tensorflow:serving:request_count counter"]
        with self._lock:
            for (m, api, st), n in sorted(self.requests.items()):
                lines.append(f':tensorflow:serving:request_count{{model_name="{m}",API="{api}",'
                             f'entrypoint="REST",status="{st}"}} {n}')
            lines.append("# TYPE :tensorflow:serving:request_latency histogram")
            for (m, api), buckets in sorted(self.latency.items()):
                for b, n in zip(_BUCKETS, buckets):
                    le = "+Inf" if b == float("inf") else f"{b:g}"
                    lines.append(f':tensorflow:serving:request_latency_bucket{{model_name="{m}",'
                                 f'API="{api}",le="{le}"}} {n}')
                lines.append(f':tensorflow:serving:request_latency_sum{{model_name="{m}",API="{api}"}} '
                             f'{self.latency_sum[(m, api)]:g}')
                lines.append(f':tensorflow:serving:request_latency_count{{model_name="{m}",API="{api}"}} '
                             f'{buckets[-1]}')
        lines.append("# TYPE :tensorflow:serving:batching_session:batch_count counter")
        lines.append(f":tensorflow:serving:batching_session:batch_count {batches}")
        return "\n".join(lines) + "\n"

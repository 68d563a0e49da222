"""Prometheus metrics of a pod, with ModelMesh's names where one exists (SPEC section 5).

Each pod process has its own registry and HTTP endpoint (``MESH_METRICS_PORT``). Per-model
series (``mesh_model_requests_total``, ``mesh_model_request_milliseconds``) are what
ModelMesh users asked for and never got.
"""

from __future__ import annotations

import bisect
import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server
from prometheus_client.core import CounterMetricFamily, HistogramMetricFamily

from plane.records import InstanceRecord

__all__ = ["PodMetrics"]


class _RequestStats:
    """Per-model request counts and latency histograms, exposed at scrape time.

    prometheus_client's Histogram.observe walks its buckets in Python under a lock (about 3 µs);
    on the hit path, where onnxruntime itself takes 15-40 µs, that showed. Here a request costs a
    bisect and three increments; the families are built only when Prometheus scrapes.
    """

    def __init__(self) -> None:
        self._models: dict[str, list] = {}  # model -> [bucket counts..., sum]

    def observe(self, model_id: str, ms: float) -> None:
        row = self._models.get(model_id)
        if row is None:
            row = self._models[model_id] = [0] * (len(_MS_BUCKETS) + 1) + [0.0]
        row[bisect.bisect_left(_MS_BUCKETS, ms)] += 1
        row[-1] += ms

    def forget(self, model_id: str) -> None:
        self._models.pop(model_id, None)

    def collect(self):  # called by the Prometheus HTTP thread
        rows = {m: list(r) for m, r in list(self._models.items())}
        per_model = HistogramMetricFamily("mesh_model_request_milliseconds", "Request time per model",
                                          labels=["model"])
        counts = CounterMetricFamily("mesh_model_requests", "Requests served per model", labels=["model"])
        total = [0] * (len(_MS_BUCKETS) + 1)
        total_sum = 0.0
        for model, row in sorted(rows.items()):
            per_model.add_metric([model], _buckets(row[:-1]), row[-1])
            counts.add_metric([model], sum(row[:-1]))
            total = [a + b for a, b in zip(total, row[:-1], strict=True)]
            total_sum += row[-1]
        api = HistogramMetricFamily("modelmesh_api_request_milliseconds", "Inference requests served here")
        api.add_metric([], _buckets(total), total_sum)
        return [api, per_model, counts]

    def describe(self):
        return []


def _buckets(counts: list[int]) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    running = 0
    for bound, n in zip([*_MS_BUCKETS, float("inf")], counts, strict=True):
        running += n
        out.append(("+Inf" if bound == float("inf") else repr(float(bound)), running))
    return out

_MS_BUCKETS = (0.25, 0.5, 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 5000, 10000, 30000, 90000)
_AGE_BUCKETS = (1e3, 1e4, 6e4, 3e5, 9e5, 1.8e6, 3.6e6, 1.08e7, 8.64e7)


class PodMetrics:
    def __init__(self, pod_id: str):
        self.pod_id = pod_id
        self.registry = CollectorRegistry()
        r = self.registry
        self.cache_miss_ms = Histogram("modelmesh_cache_miss_milliseconds",
                                       "Time of requests that found no loaded copy", registry=r, buckets=_MS_BUCKETS)
        self.load_ms = Histogram("modelmesh_loadmodel_milliseconds", "Time to load a model", registry=r,
                                 buckets=_MS_BUCKETS)
        self.age_at_eviction = Histogram("modelmesh_age_at_eviction_milliseconds",
                                         "Time since last use of evicted copies", registry=r, buckets=_AGE_BUCKETS)
        self.lru_age = Gauge("modelmesh_instance_lru_age_seconds", "Age of the least recently used copy", registry=r)
        self.capacity = Gauge("modelmesh_instance_capacity_bytes", "Model cache capacity", registry=r)
        self.used = Gauge("modelmesh_instance_used_bytes", "Model cache bytes used", registry=r)
        self.loaded = Gauge("modelmesh_models_loaded_total", "Copies loaded on this pod", registry=r)
        self.evictions = Counter("mesh_evictions", "Copies evicted from this pod", registry=r)
        self.write_failures = Counter("mesh_registry_write_failures", "Registry writes that failed (then repaired "
                                      "by reconciliation or retried)", ["op"], registry=r)
        self.repairs = Counter("mesh_reconcile_repairs", "Copy records the reconciler had to correct", registry=r)
        self.loop_failures = Counter("mesh_background_loop_failures", "Background loops that raised and were "
                                     "restarted", ["loop"], registry=r)
        self.requests = _RequestStats()
        r.register(self.requests)

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def request(self, model_id: str, ms: float) -> None:
        self.requests.observe(model_id, ms)

    def forget(self, model_id: str) -> None:
        """Drop a model's series (unregistered): per-model metrics must not grow without bound."""
        self.requests.forget(model_id)

    def registry_write_failed(self, op: str) -> None:
        self.write_failures.labels(op).inc()

    def reconciled(self, n: int) -> None:
        self.repairs.inc(n)

    def loop_failed(self, name: str) -> None:
        self.loop_failures.labels(name).inc()

    def cache_miss(self, ms: float) -> None:
        self.cache_miss_ms.observe(ms)

    def load(self, ms: float) -> None:
        self.load_ms.observe(ms)

    def eviction(self, age_ms: float) -> None:
        self.evictions.inc()
        self.age_at_eviction.observe(age_ms)

    def instance(self, rec: InstanceRecord) -> None:
        self.capacity.set(rec.capacity)
        self.used.set(rec.used)
        self.loaded.set(rec.count)
        self.lru_age.set(max(0.0, time.time() - rec.lru_ms / 1000) if rec.lru_ms else 0)

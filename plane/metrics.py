"""Prometheus metrics of a pod, with ModelMesh's names where one exists (SPEC section 5).

Each pod process has its own registry and HTTP endpoint (``MESH_METRICS_PORT``). Per-model
series (``mesh_model_requests_total``, ``mesh_model_request_milliseconds``) are what
ModelMesh users asked for and never got.
"""

from __future__ import annotations

import time

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, start_http_server

from plane.registry import InstanceRecord

__all__ = ["PodMetrics"]

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
        self.api_ms = Histogram("modelmesh_api_request_milliseconds", "Inference requests served here", registry=r,
                                buckets=_MS_BUCKETS)
        self.lru_age = Gauge("modelmesh_instance_lru_age_seconds", "Age of the least recently used copy", registry=r)
        self.capacity = Gauge("modelmesh_instance_capacity_bytes", "Model cache capacity", registry=r)
        self.used = Gauge("modelmesh_instance_used_bytes", "Model cache bytes used", registry=r)
        self.loaded = Gauge("modelmesh_models_loaded_total", "Copies loaded on this pod", registry=r)
        self.evictions = Counter("mesh_evictions", "Copies evicted from this pod", registry=r)
        self.model_requests = Counter("mesh_model_requests", "Requests served per model", ["model"], registry=r)
        self.model_ms = Histogram("mesh_model_request_milliseconds", "Request time per model", ["model"], registry=r,
                                  buckets=_MS_BUCKETS)
        self._init_fast_paths()

    def _init_fast_paths(self) -> None:
        self._children: dict[str, tuple] = {}
        self._api_observe = self.api_ms.observe

    def serve(self, port: int, host: str = "127.0.0.1") -> None:
        start_http_server(port, addr=host, registry=self.registry)

    def request(self, model_id: str, ms: float) -> None:
        # Label lookups take a lock and hash the labels: keep each model's children at hand.
        children = self._children.get(model_id)
        if children is None:
            children = self._children[model_id] = (self.model_requests.labels(model_id).inc,
                                                   self.model_ms.labels(model_id).observe)
        self._api_observe(ms)
        children[0]()
        children[1](ms)

    def forget(self, model_id: str) -> None:
        """Drop a model's series (unregistered): per-model metrics must not grow without bound."""
        if self._children.pop(model_id, None) is not None:
            for metric in (self.model_requests, self.model_ms):
                try:
                    metric.remove(model_id)
                except KeyError:
                    pass

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

"""Prometheus metrics of a pod, with ModelMesh's names where one exists (SPEC section 5).

Each pod process has its own registry and HTTP endpoint (``MESH_METRICS_PORT``). Names,
labels and buckets are ModelMesh's (kserve/modelmesh Metric.java and Metrics.java; the table in
docs/modelmesh-compat.md), per-model labels ``modelId``/``vModelId`` included; the per-model
series (``per_model_metrics``, on by default here) are what ModelMesh users asked for.

The endpoint is :class:`MetricsServer`, not prometheus_client's ``start_http_server`` (which
keeps a thread per connection with no timeout: 200 silent sockets meant 200 threads). It is
one thread running an asyncio loop, so open sockets cost no threads, and it bounds everything
a client can hold: the request head must arrive within ``head_timeout_s`` (a total deadline,
not per byte, so a trickling client is cut off too), an idle keep-alive connection is closed
after ``idle_timeout_s``, a response not taken within ``write_timeout_s`` is dropped, the
request head is at most ``max_head_bytes``, and at most ``max_connections`` connections are
open. A connection beyond that cap is accepted and the connection idle longest (waiting for
a request head or idle between keep-alive requests) is closed to make room, so a flood of
silent sockets cannot lock a real scraper out; when every connection is busy answering, the
new one is closed at once. Only ``GET``/``HEAD /metrics`` is served (404 otherwise).
"""

from __future__ import annotations

import bisect
import contextlib
import contextvars
import itertools
import time
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, HistogramMetricFamily, Metric

from plane.records import InstanceRecord, ModelRecord

__all__ = ["PodMetrics", "MetricsServer", "note_resolved"]

from plane.metrics_http import MetricsServer  # noqa: E402 - re-exported: the endpoint lives beside

# ModelMesh's buckets (kserve/modelmesh Metrics.java PrometheusMetrics): MS_TIME_BUCKETS (with 0.1 and 0.25 ms
# added: an in-process inference takes tens of microseconds), AGE_HISTO, MODEL_SIZE_HISTO (exponentialBuckets(
# 256 KiB, 4, 8)) and MESSAGE_SIZE_HISTO (exponentialBuckets(128, 4, 8)).
_MS_BUCKETS = (0.1, 0.25, 0.5, 1.0, 2.0, 5.0, 10.0, 20.0, 50.0, 75.0, 100.0, 200.0, 500.0, 1e3, 2e3, 5e3, 1e4, 2e4,
               6e4, 1.2e5, 3e5)
_MIN, _HOUR, _DAY = 60_000, 3_600_000, 86_400_000
_AGE_BUCKETS = (_MIN / 2, 5 * _MIN, 15 * _MIN, _HOUR, 4 * _HOUR, 12 * _HOUR, _DAY, 7 * _DAY, 30 * _DAY, 90 * _DAY)
_SIZE_BUCKETS = tuple(256 * 1024 * 4.0**i for i in range(8))
_MSG_BUCKETS = tuple(128 * 4.0**i for i in range(8))
API_METHODS = frozenset({"ModelInfer", "ModelMetadata", "ModelReady"})  # the calls that name a model
_CODES = {c: c.name for c in grpc.StatusCode}
_NO_LRU = (2**63 - 1) // 1000  # ModelMesh: an empty cache reports Long.MAX_VALUE as its LRU time
_RESOLVED: contextvars.ContextVar[tuple[str, str]] = contextvars.ContextVar("mesh_resolved", default=("", ""))


def note_resolved(model_id: str, vmodel_id: str = "") -> None:
    """The router names the model (and vmodel) the current call resolved to: the per-model
    labels of its api_request series (each gRPC call runs in a task of its own)."""
    _RESOLVED.set((model_id, vmodel_id))


class _Fast:
    """Histogram families observed with a dict lookup and a bisect per value (prometheus_client's
    ``observe`` walks its buckets under a lock: about 3 µs, which showed on the hit path). A key
    (the label values) holds one row per family; the families are built only at scrape time."""

    def __init__(self, labels: list[str], *specs: tuple[str, str, tuple[float, ...]]):
        self.labels, self.specs = labels, specs
        self.rows: dict[tuple[str, ...], list[list]] = {}

    def observe(self, key: tuple[str, ...], *values: float | None) -> None:
        rows = self.rows.get(key)
        if rows is None:
            rows = self.rows[key] = [[0] * (len(b) + 1) + [0.0] for _, _, b in self.specs]
        for row, (_, _, bounds), v in zip(rows, self.specs, values, strict=True):
            if v is not None:
                row[bisect.bisect_left(bounds, v)] += 1
                row[-1] += v

    def snapshot(self) -> dict[tuple[str, ...], list[list]]:
        return {k: [list(r) for r in rows] for k, rows in list(self.rows.items())}

    def families(self, snap: dict[tuple[str, ...], list[list]]) -> list[HistogramMetricFamily]:
        fams = [HistogramMetricFamily(name, doc, labels=self.labels) for name, doc, _ in self.specs]
        for key, rows in sorted(snap.items()):
            for fam, (_, _, bounds), row in zip(fams, self.specs, rows, strict=True):
                if sum(row[:-1]):
                    fam.add_metric(list(key), _buckets(row[:-1], bounds), row[-1])
        return fams


def _buckets(counts: list[int], bounds: tuple[float, ...]) -> list[tuple[str, float]]:
    return list(zip([*(repr(float(b)) for b in bounds), "+Inf"], itertools.accumulate(counts), strict=True))


def _size(msg: Any) -> int | None:
    return None if msg is None else len(msg) if type(msg) is bytes else msg.ByteSize()


class PodMetrics:
    """ModelMesh's metric names and labels (kserve/modelmesh Metric.java, Metrics.java, docs/metrics.md)
    for what this plane produces, plus ``mesh_*`` extras ModelMesh lacks (docs/modelmesh-compat.md).
    ``per_model`` is ModelMesh's ``per_model_metrics``: labels ``modelId``/``vModelId`` on the
    histograms (None: ``MeshSettings().per_model_metrics``)."""

    def __init__(self, pod_id: str, *, per_model: bool | None = None):
        if per_model is None:
            from plane.settings import MeshSettings

            per_model = MeshSettings().per_model_metrics
        self.pod_id, self.per_model = pod_id, per_model
        self.registry = r = CollectorRegistry()
        pm = ["modelId", "vModelId"] if per_model else []

        def hist(name: str, doc: str, buckets: tuple[float, ...]) -> Histogram:
            return Histogram(name, doc, pm, registry=r, buckets=buckets)

        self.cache_miss_ms = hist("modelmesh_cache_miss_milliseconds", "Cache miss delay", _MS_BUCKETS)
        self.load_ms = hist("modelmesh_loadmodel_milliseconds", "Time taken to load model", _MS_BUCKETS)
        self.loaded_size = hist("modelmesh_loaded_model_size_bytes", "Reported size of loaded model", _SIZE_BUCKETS)
        self.age_at_eviction = hist("modelmesh_age_at_eviction_milliseconds",
                                    "Time since model was last used when evicted", _AGE_BUCKETS)
        self.queue_delay_ms = hist("modelmesh_req_queue_delay_milliseconds", "Time spent in inference request queue",
                                   _MS_BUCKETS)
        self.load_queue_ms = hist("modelmesh_loading_queue_delay_milliseconds", "Time spent in model loading queue",
                                  _MS_BUCKETS)
        self.gauges = {name: Gauge(f"modelmesh_instance_{name}", doc, registry=r) for name, doc in (
            ("lru_seconds", "Last used time of least recently used model in pod (in secs since epoch)"),
            ("lru_age_seconds", "Last used age of least recently used model in pod (secs ago)"),
            ("capacity_bytes", "Effective model capacity of pod excluding unload buffer"),
            ("used_bytes", "Amount of capacity currently in use by loaded models"),
            ("used_bps", "Amount of capacity used in basis points (100ths of percent)"),
            ("models_total", "Number of model copies loaded in pod"))}
        self.evictions = Counter("mesh_evictions", "Copies evicted from this pod (the same count as "
                                 "modelmesh_age_at_eviction_milliseconds_count)", registry=r)
        self.write_failures = Counter("mesh_registry_write_failures", "Registry writes that failed (then repaired "
                                      "by reconciliation or retried)", ["op"], registry=r)
        self.repairs = Counter("mesh_reconcile_repairs", "Copy records the reconciler had to correct", registry=r)
        self.loop_failures = Counter("mesh_background_loop_failures", "Background loops that raised and were "
                                     "restarted", ["loop"], registry=r)
        labels = ["method", "code", *pm]
        self.calls = _Fast(labels, ("modelmesh_api_request_milliseconds", "External inference request time",
                                    _MS_BUCKETS),
                           ("modelmesh_request_size_bytes", "Inference request payload size", _MSG_BUCKETS),
                           ("modelmesh_response_size_bytes", "Inference response payload size", _MSG_BUCKETS))
        self.invoke = _Fast(labels, ("modelmesh_invoke_model_milliseconds",
                                     "Internal model server inference request time", _MS_BUCKETS))
        self.load_failures = 0
        self._mesh: tuple[Callable[[], Iterable[ModelRecord]], Callable[[], bool], int] | None = None
        r.register(self)

    def serve(self, port: int, host: str = "127.0.0.1") -> MetricsServer:
        """Serve ``/metrics`` on host:port from a thread of its own (bind errors raise here)."""
        self.server = MetricsServer(self.registry, host, port).start()
        return self.server

    # -- what the pod reports --------------------------------------------------------------------------

    def _observe(self, hist: Histogram, value: float, model_id: str) -> None:
        (hist.labels(model_id, "") if self.per_model else hist).observe(value)

    def request(self, model_id: str, ms: float, vmodel_id: str = "") -> None:
        """A ModelInfer this pod ran on its own copy: ModelMesh's invoke_model (the runtime call)."""
        self.invoke.observe(("ModelInfer", "OK", model_id, vmodel_id) if self.per_model else ("ModelInfer", "OK"), ms)

    def api_request(self, method: str, code: Any, ms: float, request: Any = None, response: Any = None,
                    model_id: str = "", vmodel_id: str = "") -> None:
        """An external gRPC call as the edge answered it (``code``: a grpc.StatusCode, None = OK).
        Only calls that name a model count, as in ModelMesh (ModelMeshApi.java logs them with
        ``logRequestMetrics(true, ...)``, with the payload sizes); management calls do not. A
        ModelInfer answer is sized only as bytes (forwarded): upb's ByteSize serialises it again."""
        if method not in API_METHODS:
            return
        if method == "ModelInfer" and type(response) is not bytes:
            response = None
        if self.per_model and not model_id:
            model_id, vmodel_id = _RESOLVED.get()
        name = _CODES.get(code, "OK")
        key = (method, name, model_id, vmodel_id) if self.per_model else (method, name)
        self.calls.observe(key, float(ms), _size(request), _size(response))

    def load(self, ms: float, model_id: str = "", size: int = 0) -> None:
        self._observe(self.load_ms, ms, model_id)
        if size:
            self._observe(self.loaded_size, size, model_id)

    def load_failed(self, model_id: str = "") -> None:
        self.load_failures += 1  # modelmesh_loadmodel_failure: a counter without labels in ModelMesh

    def loading_queue_delay(self, ms: float, model_id: str = "") -> None:
        self._observe(self.load_queue_ms, ms, model_id)

    def queue_delay(self, ms: float, model_id: str = "") -> None:
        self._observe(self.queue_delay_ms, ms, model_id)

    def cache_miss(self, ms: float, model_id: str = "") -> None:
        self._observe(self.cache_miss_ms, ms, model_id)

    def eviction(self, age_ms: float, model_id: str = "") -> None:
        self.evictions.inc()
        self._observe(self.age_at_eviction, age_ms, model_id)

    def forget(self, model_id: str) -> None:
        """Drop a model's series (unregistered): per-model metrics must not grow without bound."""
        if not self.per_model:
            return
        for fast in (self.calls, self.invoke):
            for key in [k for k in list(fast.rows) if k[2] == model_id]:
                fast.rows.pop(key, None)
        for h in (self.cache_miss_ms, self.load_ms, self.loaded_size, self.age_at_eviction, self.queue_delay_ms,
                  self.load_queue_ms):
            with contextlib.suppress(KeyError):
                h.remove(model_id, "")

    def registry_write_failed(self, op: str) -> None:
        self.write_failures.labels(op).inc()

    def reconciled(self, n: int) -> None:
        self.repairs.inc(n)

    def loop_failed(self, name: str) -> None:
        self.loop_failures.labels(name).inc()

    def instance(self, rec: InstanceRecord) -> None:
        """The pod's gauges, as ModelMesh's ``logInstanceStats`` (Metrics.java)."""
        g = self.gauges
        g["lru_seconds"].set(rec.lru_ms // 1000 if rec.lru_ms else _NO_LRU)
        g["lru_age_seconds"].set(max(0.0, time.time() - rec.lru_ms / 1000) if rec.lru_ms else 0)
        g["capacity_bytes"].set(rec.capacity)
        g["used_bytes"].set(rec.used)
        g["used_bps"].set(int(rec.used / rec.capacity * 10_000) if rec.capacity else 0)
        g["models_total"].set(rec.count)

    def track_mesh(self, models: Callable[[], Iterable[ModelRecord]], leading: Callable[[], bool], *,
                   failure_expiry_ms: int = 900_000) -> None:
        """Publish the deployment-wide gauges (models_loaded/with_failure/managed_total) from the
        registry view, only while ``leading()``: ModelMesh registers them on the leader only
        (Metrics.java ``registerGlobals``), so a sum or max over pods counts each model once."""
        self._mesh = (models, leading, failure_expiry_ms)

    # -- scrape time (the metrics server's thread) --------------------------------------------------------

    def collect(self) -> Iterable[Any]:
        invoke = self.invoke.snapshot()
        yield from self.calls.families(self.calls.snapshot())
        yield from self.invoke.families(invoke)
        failures = Metric("modelmesh_loadmodel_failure", "Model load failures", "unknown")  # no _total: as ModelMesh
        failures.add_sample("modelmesh_loadmodel_failure", {}, self.load_failures)
        yield failures
        per_model: dict[str, list] = {}  # the plane's extras: invoke_model summed per model
        for key, (row,) in invoke.items() if self.per_model else ():
            acc = per_model.get(key[2])
            per_model[key[2]] = row if acc is None else [a + b for a, b in zip(acc, row, strict=True)]
        counts = CounterMetricFamily("mesh_model_requests", "Requests served per model", labels=["modelId"])
        times = HistogramMetricFamily("mesh_model_request_milliseconds", "Request time per model", labels=["modelId"])
        for model_id, row in sorted(per_model.items()):
            counts.add_metric([model_id], sum(row[:-1]))
            times.add_metric([model_id], _buckets(row[:-1], _MS_BUCKETS), row[-1])
        yield from (counts, times)
        mesh = [GaugeMetricFamily(f"modelmesh_models_{name}_total", doc) for name, doc in (
            ("loaded", "Total number of models with at least one loaded copy"),
            ("with_failure", "Total number of models with one or more recent load failures"),
            ("managed", "Total number of models managed"))]
        if self._mesh is not None and self._mesh[1]():
            recs, now, expiry = list(self._mesh[0]()), int(time.time() * 1000), self._mesh[2]
            for fam, n in zip(mesh, (sum(1 for m in recs if m.loaded_on()),
                                     sum(1 for m in recs if m.live_failures(now, expiry)), len(recs)), strict=True):
                fam.add_metric([], n)
        yield from mesh

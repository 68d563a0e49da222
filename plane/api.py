"""The plane's operations as plain, synchronous Python functions.

This is the one library the CLI, ``mesh-console`` and the dashboard call for registration,
storage configuration, vmodels, placement snapshots and the event log; none of them talks
to etcd its own way. :class:`PlaneClient` owns an asyncio loop on a private thread and runs
:class:`~plane.registry.Registry` coroutines there, so it is safe to call from any thread
(Textual thread workers, Streamlit script runs).
"""

from __future__ import annotations

import asyncio
import dataclasses
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass
from typing import Any, TypeVar

from plane import operations, stats
from plane.operations import (
    REGISTER_LAST_USED_OFFSET_MS,
    REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS,
    InUse,
    ModelSpec,
    NotFound,
    ValidationError,
    validate_model_id,
)
from plane.registry import (
    Event,
    InstanceRecord,
    ModelRecord,
    Registry,
    RegistryError,
    StorageConfig,
    VModelRecord,
    now_ms,
)
from plane.settings import MeshSettings
from plane.stats import StatsRecord
from plane.storage import StorageTestResult

__all__ = [
    "PlaneClient",
    "PlacementSnapshot",
    "Overview",
    "ModelSpec",
    "StorageTestResult",
    "ValidationError",
    "NotFound",
    "InUse",
    "validate_model_id",
    "REGISTER_LAST_USED_OFFSET_MS",
    "REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS",
]

T = TypeVar("T")

CALL_TIMEOUT_S = 30.0
STORAGE_TYPES = ("local", "s3", "http", "gcs", "azure", "pvc")


@dataclass
class PlacementSnapshot:
    """Everything the placement views draw, read in one pass over the registry."""

    pods: list[InstanceRecord]
    models: list[ModelRecord]
    vmodels: list[VModelRecord]
    taken_ms: int

    def matrix(self) -> dict[str, dict[str, str]]:
        """model id -> {pod id -> 'loaded' | 'loading'} for models that have copies."""
        return {m.model_id: {p: c.state for p, c in m.copies.items()} for m in self.models if m.copies}

    def pod_models(self, pod_id: str) -> list[tuple[ModelRecord, int]]:
        """(model, size of its copy) for every copy on the pod, biggest first."""
        out = [(m, m.copies[pod_id].size or m.size) for m in self.models if pod_id in m.copies]
        return sorted(out, key=lambda x: -x[1])


@dataclass
class Overview:
    pods_ready: int
    pods_total: int
    models_registered: int
    models_loaded: int
    models_failed: int
    capacity: int
    used: int
    loads_recent: int
    evictions_recent: int
    failures_recent: int
    window_s: int


class PlaneClient:
    """Synchronous access to a running plane (its etcd registry).

    ``PlaneClient.connect()`` with no arguments finds the etcd of ``MESH_ETCD`` or, when that
    is unset, of the embedded plane in the state dir. Raises
    :class:`~plane.registry.EtcdUnavailable` when none answers.
    """

    def __init__(self, registry: Registry, loop: asyncio.AbstractEventLoop, thread: threading.Thread,
                 settings: MeshSettings):
        self.registry = registry
        self.settings = settings
        self._loop = loop
        self._thread = thread

    # -- lifecycle ------------------------------------------------------------------------------------

    @classmethod
    def connect(cls, settings: MeshSettings | None = None, *, etcd: str | None = None,
                timeout: float = 5.0) -> PlaneClient:
        settings = settings or MeshSettings()
        if etcd:
            settings = settings.model_copy(update={"etcd": etcd})
        endpoints = settings.etcd_endpoints()
        if not endpoints:
            from plane import local

            endpoints = local.embedded_etcd_endpoints(settings.state_dir)
            if not endpoints:
                raise RegistryError(
                    "no plane is running: start one with `mesh up` or set MESH_ETCD=host:port"
                )
            settings = local.with_embedded_tls(settings)
        loop = asyncio.new_event_loop()
        thread = threading.Thread(target=loop.run_forever, name="plane-client-loop", daemon=True)
        thread.start()
        try:
            fut = asyncio.run_coroutine_threadsafe(
                Registry.from_settings(settings, endpoints, timeout=timeout), loop)
            registry = fut.result(timeout + 5 * len(endpoints))
        except BaseException:
            loop.call_soon_threadsafe(loop.stop)
            thread.join(2)
            raise
        return cls(registry, loop, thread, settings)

    def close(self) -> None:
        if not self._loop.is_running():
            return
        try:
            self._run(self.registry.close(), timeout=5)
        except Exception:  # noqa: BLE001 - closing a dead connection is not an error worth raising
            pass
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)

    def __enter__(self) -> PlaneClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def etcd_endpoint(self) -> str:
        return self.registry.endpoint

    def _run(self, coro: Coroutine[Any, Any, T], timeout: float | None = CALL_TIMEOUT_S) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self._loop).result(timeout)

    def run_async(self, coro: Coroutine[Any, Any, T], timeout: float | None = CALL_TIMEOUT_S) -> T:
        """Run any registry coroutine on this client's loop (for callers that need more, such as
        a long-running watch: ``timeout=None``)."""
        return self._run(coro, timeout)

    # -- models ---------------------------------------------------------------------------------------

    def register_model(
        self,
        model_id: str,
        *,
        path: str,
        storage_key: str = "default",
        type: str = "onnx",
        load_now: bool = False,
        pinned: bool = False,
        min_copies: int = 0,
        max_copies: int = 0,
        sync: bool = False,
    ) -> ModelRecord:
        """Register a model. Raises ValidationError for bad input, and when the id is taken by
        a model with a different path/storage (registering the same thing twice is fine)."""
        spec = ModelSpec(model_id, path, storage_key, type, pinned, min_copies, max_copies)
        rec = self._run(operations.register(self.registry, spec, load_now=load_now))
        if load_now:
            self.ensure_loaded(model_id, sync=sync)
            rec = self.get_model(model_id) or rec
        return rec

    def register_models(self, specs: Iterable[ModelSpec], *,
                        progress: Callable[[int, int], None] | None = None) -> int:
        """Batch registration (one etcd transaction per 64 models). Returns how many were new."""
        specs = list(specs)
        for s in specs:
            operations.check_spec(s)
        created = 0
        step = 512
        for i in range(0, len(specs), step):
            recs = [operations.record_for(s, load_now=False) for s in specs[i : i + step]]
            created += self._run(self.registry.put_models(recs), timeout=120)
            if progress:
                progress(min(i + step, len(specs)), len(specs))
        if created:
            self._run(self.registry.add_event(Event("register", reason=f"batch of {created} models")))
        return created

    def unregister_model(self, model_id: str) -> bool:
        """Remove a model. Pods holding copies unload them. False if it did not exist; InUse
        while a vmodel targets it."""
        return self._run(operations.unregister(self.registry, model_id))

    def get_model(self, model_id: str) -> ModelRecord | None:
        return self._run(self.registry.get_model(model_id))

    def list_models(self) -> list[ModelRecord]:
        return sorted(self._run(self.registry.list_models()), key=lambda m: m.model_id)

    def set_model_policy(self, model_id: str, *, pinned: bool | None = None, min_copies: int | None = None,
                         max_copies: int | None = None) -> ModelRecord:
        def change(m: ModelRecord) -> ModelRecord:
            if pinned is not None:
                m.pinned = pinned
            if min_copies is not None:
                m.min_copies = max(0, min_copies)
            if max_copies is not None:
                m.max_copies = max(0, max_copies)
            return m

        rec = self._run(self.registry.update_model(model_id, change))
        if rec is None:
            raise NotFound(f"model {model_id!r} is not registered")
        return rec

    def ensure_loaded(self, model_id: str, *, sync: bool = False, timeout: float = 120.0) -> ModelRecord:
        """Ask a live pod to load the model (ModelMesh ``ensureLoaded``)."""
        from plane import mgmt_client

        pods = [p for p in self.pods() if not p.shutting_down]
        if not pods:
            raise RegistryError("no runtime pod is running to load the model: start pods with `mesh up`")
        mgmt_client.ensure_loaded([p.endpoint for p in pods], model_id, sync=sync, timeout=timeout,
                                  settings=self.settings)
        rec = self.get_model(model_id)
        if rec is None:
            raise NotFound(f"model {model_id!r} is not registered")
        return rec

    def _peer_token(self) -> str:
        return self.settings.peer_token or self._run(operations.peer_token(self.registry))

    def _pod(self, pod_id: str) -> InstanceRecord:
        pod = next((p for p in self.pods() if p.pod_id == pod_id), None)
        if pod is None:
            raise NotFound(f"pod {pod_id!r} is not running; `mesh status` lists the pods")
        return pod

    def load_on(self, model_id: str, pod_id: str, *, timeout: float = 120.0) -> ModelRecord:
        """Load a copy of the model on that pod (an operator's placement: it may evict there)."""
        from plane import mgmt_client

        if self.get_model(model_id) is None:
            raise NotFound(f"model {model_id!r} is not registered")
        pod = self._pod(pod_id)
        mgmt_client.load_on(pod.endpoint, model_id, token=self._peer_token(), timeout=timeout, settings=self.settings)
        rec = self.get_model(model_id)
        assert rec is not None
        return rec

    def unload_copy(self, model_id: str, pod_id: str, *, reason: str = "unloaded by an operator") -> bool:
        """Drop that pod's copy of the model. False when the pod held none."""
        from plane import mgmt_client

        pod = self._pod(pod_id)
        return mgmt_client.unload_copy(pod.endpoint, model_id, reason=reason, token=self._peer_token(),
                                       settings=self.settings)

    # -- vmodels --------------------------------------------------------------------------------------

    def set_vmodel(self, vmodel_id: str, target_model_id: str, *, auto_delete: bool = False, owner: str = "",
                   sync: bool = False, timeout: float = 120.0) -> VModelRecord:
        """Point a vmodel at a model. With pods running, the target is loaded first and the
        switch happens in one transaction (via a pod's ``setVModel``)."""
        validate_model_id(vmodel_id, what="vmodel id")
        if self.get_model(target_model_id) is None:
            raise NotFound(f"target model {target_model_id!r} is not registered; register it first")
        pods = [p for p in self.pods() if not p.shutting_down]
        if pods:
            from plane import mgmt_client

            mgmt_client.set_vmodel([p.endpoint for p in pods], vmodel_id, target_model_id,
                                   auto_delete=auto_delete, owner=owner, sync=sync, timeout=timeout,
                                   settings=self.settings)
        else:
            self._run(operations.set_vmodel_direct(self.registry, vmodel_id, target_model_id, auto_delete, owner))
        rec = self.get_vmodel(vmodel_id)
        assert rec is not None
        return rec

    def get_vmodel(self, vmodel_id: str) -> VModelRecord | None:
        return self._run(self.registry.get_vmodel(vmodel_id))

    def list_vmodels(self) -> list[VModelRecord]:
        return sorted(self._run(self.registry.list_vmodels()), key=lambda v: v.vmodel_id)

    def delete_vmodel(self, vmodel_id: str) -> bool:
        return self._run(operations.delete_vmodel(self.registry, vmodel_id))

    # -- storage --------------------------------------------------------------------------------------

    def set_storage(self, key: str, type: str, params: dict[str, Any]) -> StorageConfig:
        """Create or replace a storage config (SPEC section 4 format)."""
        from plane import storage

        cfg = storage.validate_config(key, type, params)
        self._run(self.registry.put_storage(cfg))
        return cfg

    def list_storage(self) -> list[dict[str, Any]]:
        """Storage configs with secrets masked (safe to print)."""
        return [c.masked() for c in sorted(self._run(self.registry.list_storage()), key=lambda c: c.key)]

    def get_storage(self, key: str) -> StorageConfig | None:
        """The full config, secrets included: for code that connects, never for display."""
        return self._run(self.registry.get_storage(key))

    def remove_storage(self, key: str) -> bool:
        return self._run(self.registry.delete_storage(key))

    def test_storage(self, key: str, *, path: str = "", limit: int = 20) -> StorageTestResult:
        """List what the storage holds under ``path``; report the error in words if it fails."""
        from plane import storage

        cfg = self.get_storage(key)
        if cfg is None:
            return StorageTestResult(False, f"no storage config named {key!r}: add it with `mesh storage set`")
        return storage.test_config(cfg, path=path, limit=limit)

    # -- placement, overview, events ------------------------------------------------------------------

    def pods(self) -> list[InstanceRecord]:
        return sorted(self._run(self.registry.list_instances()), key=lambda p: p.pod_id)

    def snapshot(self) -> PlacementSnapshot:
        tables, _ = self._run(self.registry.snapshot_with_revision())
        return snapshot_from_tables(tables)

    def events(self, *, since_ms: int = 0, limit: int = 500) -> list[Event]:
        return self._run(self.registry.list_events(since_ms=since_ms, limit=limit))

    def stats(self, *, since_ms: int = 0) -> list[StatsRecord]:
        """Every pod's per-minute counts from ``since_ms``'s minute on (plane.stats): exact
        loads, evictions, unloads, failures and requests, however many events there were."""
        return self._run(self.registry.list_stats(since_ms=stats.minute_of(since_ms)))

    def overview(self, *, window_s: int = 300) -> Overview:
        """Counts over the whole minutes of the last ``window_s`` seconds, from the pods' own
        per-minute stats (never from a sample of the bounded event log)."""
        snap = self.snapshot()
        since = now_ms() - window_s * 1000
        return overview_from(snap, [], window_s=window_s, totals=stats.totals(self.stats(since_ms=since)))


def snapshot_from_tables(tables: dict[str, list[tuple[str, bytes]]]) -> PlacementSnapshot:
    """Build a snapshot from raw registry tables (also used by watchers that keep tables)."""
    return PlacementSnapshot(
        pods=sorted((InstanceRecord.from_json(v) for _, v in tables.get("instances", [])), key=lambda p: p.pod_id),
        models=sorted((ModelRecord.from_json(v) for _, v in tables.get("models", [])), key=lambda m: m.model_id),
        vmodels=sorted((VModelRecord.from_json(v) for _, v in tables.get("vmodels", [])),
                       key=lambda v: v.vmodel_id),
        taken_ms=now_ms(),
    )


def overview_from(snap: PlacementSnapshot, events: list[Event], *, window_s: int = 300,
                  totals: dict[str, int] | None = None) -> Overview:
    """The overview figures; ``totals`` (plane.stats) gives exact activity counts, else they are
    counted from ``events``."""
    live = {p.pod_id for p in snap.pods}
    if totals is None:
        totals = {"loads": sum(1 for e in events if e.kind == "loaded"),
                  "evictions": sum(1 for e in events if e.kind == "evict"),
                  "failures": sum(1 for e in events if e.kind == "load-failed")}
    return Overview(
        pods_ready=sum(1 for p in snap.pods if not p.shutting_down),
        pods_total=len(snap.pods),
        models_registered=len(snap.models),
        models_loaded=sum(1 for m in snap.models if any(p in live for p in m.loaded_on())),
        models_failed=sum(1 for m in snap.models if m.failed and not m.loaded_on()),
        capacity=sum(p.capacity for p in snap.pods),
        used=sum(p.used for p in snap.pods),
        loads_recent=totals.get("loads", 0),
        evictions_recent=totals.get("evictions", 0),
        failures_recent=totals.get("failures", 0),
        window_s=window_s,
    )


def record_as_dict(rec: Any) -> dict[str, Any]:
    """A registry record as plain data (for ``--json`` output and raw views)."""
    return dataclasses.asdict(rec)

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
import re
import threading
from collections.abc import Callable, Coroutine, Iterable
from dataclasses import dataclass, field
from typing import Any, TypeVar

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

__all__ = [
    "PlaneClient",
    "PlacementSnapshot",
    "Overview",
    "ModelSpec",
    "StorageTestResult",
    "ValidationError",
    "NotFound",
    "validate_model_id",
    "REGISTER_LAST_USED_OFFSET_MS",
    "REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS",
]

T = TypeVar("T")

# ModelMesh gives new registrations a last-used time in the past so they never push out
# models that were used in the last hour.
REGISTER_LAST_USED_OFFSET_MS = 6 * 3600 * 1000
REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS = 3600 * 1000
CALL_TIMEOUT_S = 30.0
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,252}$")
STORAGE_TYPES = ("local", "s3", "http", "gcs", "azure", "pvc")


class ValidationError(ValueError):
    """Bad input from the operator; the message says what is wrong and how to fix it."""


class NotFound(KeyError):
    """The named model, vmodel or storage key does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


def validate_model_id(model_id: str, *, what: str = "model id") -> str:
    if not isinstance(model_id, str) or not _ID_RE.match(model_id):
        raise ValidationError(
            f"invalid {what} {model_id!r}: use 1-253 letters, digits and . _ : @ + - "
            "(starting with a letter or digit)"
        )
    return model_id


@dataclass
class ModelSpec:
    """What an operator registers."""

    model_id: str
    path: str
    storage_key: str = "default"
    type: str = "onnx"
    pinned: bool = False
    min_copies: int = 0
    max_copies: int = 0


@dataclass
class StorageTestResult:
    ok: bool
    message: str
    objects: list[str] = field(default_factory=list)


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
        rec = self._run(_register(self.registry, spec, load_now=load_now))
        if load_now:
            self.ensure_loaded(model_id, sync=sync)
            rec = self.get_model(model_id) or rec
        return rec

    def register_models(self, specs: Iterable[ModelSpec], *,
                        progress: Callable[[int, int], None] | None = None) -> int:
        """Batch registration (one etcd transaction per 64 models). Returns how many were new."""
        specs = list(specs)
        for s in specs:
            _check_spec(s)
        created = 0
        step = 512
        for i in range(0, len(specs), step):
            recs = [_record_for(s, load_now=False) for s in specs[i : i + step]]
            created += self._run(self.registry.put_models(recs), timeout=120)
            if progress:
                progress(min(i + step, len(specs)), len(specs))
        if created:
            self._run(self.registry.add_event(Event("register", reason=f"batch of {created} models")))
        return created

    def unregister_model(self, model_id: str) -> bool:
        """Remove a model. Pods holding copies unload them. False if it did not exist."""
        ok = self._run(self.registry.delete_model(model_id))
        if ok:
            self._run(self.registry.add_event(Event("unregister", model=model_id, reason="unregistered")))
        return ok

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
            self._run(_set_vmodel_direct(self.registry, vmodel_id, target_model_id, auto_delete, owner))
        rec = self.get_vmodel(vmodel_id)
        assert rec is not None
        return rec

    def get_vmodel(self, vmodel_id: str) -> VModelRecord | None:
        return self._run(self.registry.get_vmodel(vmodel_id))

    def list_vmodels(self) -> list[VModelRecord]:
        return sorted(self._run(self.registry.list_vmodels()), key=lambda v: v.vmodel_id)

    def delete_vmodel(self, vmodel_id: str) -> bool:
        return self._run(_delete_vmodel(self.registry, vmodel_id))

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

    def overview(self, *, window_s: int = 300) -> Overview:
        snap = self.snapshot()
        events = self.events(since_ms=now_ms() - window_s * 1000, limit=0)
        return overview_from(snap, events, window_s=window_s)


def snapshot_from_tables(tables: dict[str, list[tuple[str, bytes]]]) -> PlacementSnapshot:
    """Build a snapshot from raw registry tables (also used by watchers that keep tables)."""
    return PlacementSnapshot(
        pods=sorted((InstanceRecord.from_json(v) for _, v in tables.get("instances", [])), key=lambda p: p.pod_id),
        models=sorted((ModelRecord.from_json(v) for _, v in tables.get("models", [])), key=lambda m: m.model_id),
        vmodels=sorted((VModelRecord.from_json(v) for _, v in tables.get("vmodels", [])),
                       key=lambda v: v.vmodel_id),
        taken_ms=now_ms(),
    )


def overview_from(snap: PlacementSnapshot, events: list[Event], *, window_s: int = 300) -> Overview:
    live = {p.pod_id for p in snap.pods}
    return Overview(
        pods_ready=sum(1 for p in snap.pods if not p.shutting_down),
        pods_total=len(snap.pods),
        models_registered=len(snap.models),
        models_loaded=sum(1 for m in snap.models if any(p in live for p in m.loaded_on())),
        models_failed=sum(1 for m in snap.models if m.failed and not m.loaded_on()),
        capacity=sum(p.capacity for p in snap.pods),
        used=sum(p.used for p in snap.pods),
        loads_recent=sum(1 for e in events if e.kind == "loaded"),
        evictions_recent=sum(1 for e in events if e.kind == "evict"),
        failures_recent=sum(1 for e in events if e.kind == "load-failed"),
        window_s=window_s,
    )


# -- coroutines shared with the pods' management API ------------------------------------------------


def _check_spec(spec: ModelSpec) -> None:
    validate_model_id(spec.model_id)
    if not spec.type:
        raise ValidationError("model type must not be empty (use 'onnx')")
    if spec.type.lower() not in ("onnx", "onnxruntime"):
        raise ValidationError(f"model type {spec.type!r} is not served here: only 'onnx' models are")
    if not spec.path:
        raise ValidationError("model path must not be empty: give the file's path inside the storage")
    from plane import storage

    try:
        storage.check_relative_path(spec.path)
    except storage.StorageError as exc:
        raise ValidationError(str(exc)) from exc
    if spec.min_copies < 0 or spec.max_copies < 0:
        raise ValidationError("copy counts must not be negative")
    if spec.max_copies and spec.min_copies > spec.max_copies:
        raise ValidationError("min copies must not exceed max copies")


def _record_for(spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0) -> ModelRecord:
    now = now_ms()
    offset = REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS if load_now else REGISTER_LAST_USED_OFFSET_MS
    return ModelRecord(
        model_id=spec.model_id,
        type=spec.type.lower(),
        path=spec.path,
        key=spec.storage_key or "default",
        created_ms=now,
        last_used_ms=last_used_ms or now - offset,
        pinned=spec.pinned,
        min_copies=spec.min_copies,
        max_copies=spec.max_copies,
    )


async def _register(registry: Registry, spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0) -> ModelRecord:
    _check_spec(spec)
    rec = _record_for(spec, load_now=load_now, last_used_ms=last_used_ms)
    if await registry.create_model(rec):
        await registry.add_event(Event("register", model=spec.model_id, reason=f"{spec.storage_key}:{spec.path}"))
        return rec
    existing = await registry.get_model(spec.model_id)
    if existing is None:  # deleted in between: try once more
        if await registry.create_model(rec):
            return rec
        raise ValidationError(f"model {spec.model_id!r} is being changed concurrently; try again")
    if (existing.path, existing.key, existing.type) != (rec.path, rec.key, rec.type):
        raise ValidationError(
            f"model {spec.model_id!r} is already registered with {existing.key}:{existing.path}; "
            "unregister it first or choose another id"
        )
    return existing


async def _set_vmodel_direct(registry: Registry, vmodel_id: str, target: str, auto_delete: bool,
                             owner: str) -> VModelRecord | None:
    def change(v: VModelRecord | None) -> VModelRecord:
        v = v or VModelRecord(vmodel_id=vmodel_id, owner=owner)
        v.active = target
        v.target = target
        v.auto_delete = auto_delete
        v.failed = ""
        v.updated_ms = now_ms()
        return v

    rec = await registry.update_vmodel(vmodel_id, change)
    await _add_ref(registry, target, vmodel_id)
    return rec


async def _add_ref(registry: Registry, model_id: str, vmodel_id: str) -> None:
    def change(m: ModelRecord) -> ModelRecord:
        if vmodel_id not in m.refs:
            m.refs = sorted({*m.refs, vmodel_id})
        return m

    await registry.update_model(model_id, change)


async def _delete_vmodel(registry: Registry, vmodel_id: str) -> bool:
    rec = await registry.get_vmodel(vmodel_id)
    if rec is None:
        return False
    await registry.delete_vmodel(vmodel_id)
    for model_id in {rec.active, rec.target} - {""}:
        def change(m: ModelRecord) -> ModelRecord:
            m.refs = [r for r in m.refs if r != vmodel_id]
            return m

        await registry.update_model(model_id, change)
    await registry.add_event(Event("vmodel", model=rec.active, reason=f"vmodel {vmodel_id} deleted"))
    return True


def record_as_dict(rec: Any) -> dict[str, Any]:
    """A registry record as plain data (for ``--json`` output and raw views)."""
    return dataclasses.asdict(rec)

"""The plane's operations as plain, synchronous Python functions.

This is the one library the CLI, ``mesh-console`` and the dashboard call for registration,
storage configuration, vmodels, placement snapshots and the event log; none of them talks
to etcd its own way. :class:`PlaneClient` owns an asyncio loop on a private thread and runs
:class:`~plane.registry.Registry` coroutines there, so it is safe to call from any thread
(Textual thread workers, Streamlit script runs).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable, Coroutine, Iterable
from typing import Any, TypeVar

from plane import admission, operations, stats
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
from plane.snapshots import Overview, PlacementSnapshot, overview_from, record_as_dict, snapshot_from_tables
from plane.stats import StatsRecord
from plane.storage import StorageTestResult

__all__ = [
    "PlaneClient",
    "PlacementSnapshot",
    "Overview",
    "snapshot_from_tables",
    "overview_from",
    "record_as_dict",
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
        require_storage: bool = False,
    ) -> ModelRecord:
        """Register a model. Raises ValidationError for bad input, and when the id is taken by
        a model with a different path/storage (registering the same thing twice is fine).
        ``require_storage``: refuse a storage key without a config (admission.UnknownStorage;
        off by default, as ModelMesh's registerModel: a key may be configured after the model)."""
        spec = ModelSpec(model_id, path, storage_key, type, pinned, min_copies, max_copies)
        operations.check_spec(spec)
        self.copy_floor_warning(min_copies)
        if require_storage:
            self._run(admission.check_storage_key(self.registry, storage_key))
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
        """Change what is given; the policy that results must be valid (admission.check_copies)
        and, on a plane of fixed size, a floor its pods can meet (:meth:`copy_floor_warning`)."""
        admission.check_copies(min_copies or 0, max_copies or 0)  # what is wrong whatever the record holds
        if min_copies is not None:
            self.copy_floor_warning(min_copies)

        def change(m: ModelRecord) -> ModelRecord:
            low = m.min_copies if min_copies is None else min_copies
            high = m.max_copies if max_copies is None else max_copies
            admission.check_copies(low, high)
            m.min_copies, m.max_copies = low, high
            if pinned is not None:
                m.pinned = pinned
            return m

        rec = self._run(self.registry.update_model(model_id, change))
        if rec is None:
            raise NotFound(f"model {model_id!r} is not registered")
        return rec

    def copy_floor_warning(self, min_copies: int) -> str:
        """'' when the pods can hold ``min_copies`` copies of a model (one per pod). Raises
        ValidationError when a plane of fixed size (embedded) cannot; else the warning to show."""
        if min_copies <= 1:
            return ""
        fixed = admission.fixed_pod_count(self.settings.state_dir, self.etcd_endpoint, self.settings.etcd_prefix)
        pods = fixed if fixed is not None else len(self.pods())
        return admission.copy_floor_warning(min_copies, pods=pods, fixed=fixed is not None)

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
                   sync: bool = False, timeout: float = 120.0, shadow_model: bool = False) -> VModelRecord:
        """Point a vmodel at a model. With pods running, the target is loaded first and the
        switch happens in one transaction (via a pod's ``setVModel``); with ``sync``, a target
        that fails to load leaves things as they were (admission.undo_set_vmodel) and the error
        is raised. A vmodel id that is a model's id is refused unless ``shadow_model``."""
        validate_model_id(vmodel_id, what="vmodel id")
        if self.get_model(target_model_id) is None:
            raise NotFound(f"target model {target_model_id!r} is not registered; register it first")
        self._run(admission.check_vmodel_id(self.registry, vmodel_id, shadow_model=shadow_model))
        pods = [p for p in self.pods() if not p.shutting_down]
        if pods:
            from plane import mgmt_client

            before = self.get_vmodel(vmodel_id)
            try:
                mgmt_client.set_vmodel([p.endpoint for p in pods], vmodel_id, target_model_id,
                                       auto_delete=auto_delete, owner=owner, sync=sync, timeout=timeout,
                                       settings=self.settings)
            except mgmt_client.ManagementError:
                if sync:
                    self._run(admission.undo_set_vmodel(self.registry, vmodel_id, target_model_id, before,
                                                        owner=owner))
                raise
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

    def remove_storage_unused(self, key: str, *, force: bool = False) -> bool:
        """Remove a storage config unless registered models use it: then InUse, naming how many
        and which (``force`` removes it anyway; those models fail to load until it is back)."""
        users = [] if force else [m.model_id for m in self.list_models() if (m.key or "default") == key]
        if users:
            shown = ", ".join(users[:10]) + (f" and {len(users) - 10} more" if len(users) > 10 else "")
            raise InUse(f"storage {key!r} is used by {len(users)} model(s): {shown}; unregister them or register "
                        "them with another storage key first, or force the removal (mesh storage remove --force)")
        return self.remove_storage(key)

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

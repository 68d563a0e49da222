"""The runtime pod: one process serving KServe V2 inference and the ModelMesh management API.

Wiring only; the decisions live elsewhere:

* ``view``      — the registry mirrored in memory by an etcd watch (no etcd on the request path)
* ``cache``     — which local copies to evict so a model fits
* ``placement`` — which pod loads a model, which copy serves a request
* ``runtime``   — onnxruntime sessions; ``tensors`` — V2 tensor decoding/encoding
* ``storage``   — model files from local dirs or S3, through a disk cache

Any pod accepts any request. A hit on a local copy is served here. Otherwise the request is
forwarded (over pooled peer channels) to a pod holding a copy, or to the pod placement
chooses, which loads the model and holds the request until the copy is ready. A forwarded
request carries ``mm-internal-hop`` so the receiver serves it itself and never forwards again.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import os
import signal
import socket
import time
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from typing import Any

import grpc
import grpc.aio

from plane import api, metrics, placement, planner, storage, tls, usage
from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.registry import (
    CopyInfo,
    EtcdUnavailable,
    Event,
    FailureInfo,
    InstanceRecord,
    ModelRecord,
    Registry,
    RegistryError,
    VModelRecord,
    now_ms,
)
from plane.runtime import ModelLoadError, ModelSession, load_session, warm_up
from plane.settings import MeshSettings, format_age
from plane.tensors import TensorError, decode_inputs, encode_outputs

__all__ = ["Pod", "MeshError", "main", "HOP_HEADER"]

log = logging.getLogger("mesh.pod")

HOP_HEADER = "mm-internal-hop"
_HOP_METADATA = ((HOP_HEADER, "1"),)
PEER_UNLOAD = "/meshinternal.Peer/Unload"  # pod-to-pod only: the leader asks a pod to drop a copy
SERVER_NAME = "mesh-plane"
SERVER_VERSION = "0.1.0"
INLINE_RUN_LIMIT_US = 1000.0  # sessions faster than this run on the event loop, others on a thread
PUBLISH_INTERVAL_S = 1.0
SHUTDOWN_MIGRATION_S = 30.0
SHUTDOWN_GRACE_S = 5.0
MIGRATE_RECENT_MS = 3600 * 1000
RPM_WINDOW_S = 60.0
FORWARD_TIMEOUT_S = 120.0

MS = mpb.ModelStatusInfo
VS = mpb.VModelStatusInfo
_STATUS = {"NOT_FOUND": MS.NOT_FOUND, "NOT_LOADED": MS.NOT_LOADED, "LOADING": MS.LOADING,
           "LOADED": MS.LOADED, "LOADING_FAILED": MS.LOADING_FAILED}
_VSTATUS = {"DEFINED": VS.DEFINED, "TRANSITIONING": VS.TRANSITIONING, "TRANSITION_FAILED": VS.TRANSITION_FAILED}


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


class MeshError(Exception):
    """An error with the gRPC status code a client should see."""

    def __init__(self, code: grpc.StatusCode, message: str, *, load_failed: bool = False):
        super().__init__(message)
        self.code = code
        self.message = message
        self.load_failed = load_failed


def _ago(ms: float) -> str:
    return format_age(ms, now_ms())


class Pod:
    """State and behaviour of one runtime pod."""

    def __init__(self, settings: MeshSettings, registry: Registry):
        from plane.view import RegistryView

        self.settings = settings
        self.registry = registry
        self.port = settings.grpc_port
        self.pod_id = settings.pod_id or f"{socket.gethostname()}-{self.port}"
        self.endpoint = f"{settings.advertise_host or settings.host}:{self.port}"
        self.view = RegistryView(registry)
        self.view.hooks.append(self._on_change)
        self.cache = WeightedLRU(settings.capacity)
        self.sessions: dict[str, ModelSession] = {}
        self.loading: dict[str, asyncio.Future[ModelSession]] = {}
        self.load_sem = asyncio.Semaphore(max(1, settings.max_concurrent_loads))
        self.disk_cache = storage.DiskCache(
            settings.resolved_disk_cache_dir() / self.pod_id, settings.disk_cache_bytes
        )
        self.peer_in_flight: dict[str, int] = defaultdict(int)
        self._max_elements = settings.max_message_bytes  # no tensor can hold more elements than bytes
        self._pending_loader: dict[str, tuple[str, float]] = {}  # model -> (loader pod, until)
        self.in_flight = 0
        self._channels: dict[str, grpc.aio.Channel] = {}
        self._stubs: dict[str, igrpc.GRPCInferenceServiceStub] = {}
        self._usage: dict[str, int] = defaultdict(int)  # requests since last flush
        self._unseen_counts: dict[str, list[tuple[int, int]]] = {}  # flushed, not yet in the view
        self._last_used: dict[str, float] = {}
        self._req_times: deque[float] = deque()
        self._model_rpm: dict[str, deque[float]] = defaultdict(deque)
        self.lease: Any = None
        self._lease_lock = asyncio.Lock()
        self.ready = False
        self.shutting_down = False
        self.started_ms = now_ms()
        self._tasks: list[asyncio.Task] = []
        self._dirty = asyncio.Event()
        self.metrics_port = settings.metrics_port
        self.metrics = metrics.PodMetrics(self.pod_id)
        self.server: grpc.aio.Server | None = None
        self.stopped = asyncio.Event()

    # -- lifecycle --------------------------------------------------------------------------------------

    async def start(self) -> None:
        opts = [
            ("grpc.max_receive_message_length", self.settings.max_message_bytes),
            ("grpc.max_send_message_length", self.settings.max_message_bytes),
            ("grpc.so_reuseport", 0),
        ]
        self.server = grpc.aio.server(options=opts)
        igrpc.add_GRPCInferenceServiceServicer_to_server(InferenceServicer(self), self.server)
        mgrpc.add_ModelMeshServicer_to_server(ManagementServicer(self), self.server)
        self.server.add_generic_rpc_handlers((self._peer_handler(),))
        creds = tls.server_credentials(self.settings)
        address = f"{self.settings.host}:{self.port}"
        bound = (self.server.add_secure_port(address, creds) if creds is not None
                 else self.server.add_insecure_port(address))
        if bound == 0:
            raise OSError(f"cannot bind {self.settings.host}:{self.port}: is another pod using it?")
        await asyncio.to_thread(warm_up)
        self.view.start()
        await asyncio.wait_for(self.view.synced.wait(), 30)
        await self._purge_own_stale_copies()
        self.lease = await self.registry.client.lease(self.settings.lease_ttl_s)
        await self._publish()
        if self.metrics_port:
            self.metrics.serve(self.metrics_port, self.settings.host)
        await self.server.start()
        self._tasks += [
            asyncio.create_task(self._keepalive_loop(), name="keepalive"),
            asyncio.create_task(self._publish_loop(), name="publish"),
            asyncio.create_task(self._usage_loop(), name="usage"),
            asyncio.create_task(self._leader_loop(), name="leader"),
        ]
        self.ready = True
        log.info("pod %s serving on %s (capacity %d bytes)", self.pod_id, self.endpoint, self.cache.capacity)

    def _peer_handler(self) -> grpc.GenericRpcHandler:
        async def unload(request: dict, context: grpc.aio.ServicerContext) -> dict:
            done = await self.unload_copy(str(request.get("model_id", "")), str(request.get("reason", "planner")))
            return {"unloaded": done}

        service, _, method = PEER_UNLOAD.strip("/").partition("/")
        return grpc.method_handlers_generic_handler(service, {
            method: grpc.unary_unary_rpc_method_handler(
                unload, request_deserializer=json.loads, response_serializer=_json_bytes),
        })

    async def shutdown(self, *, graceful: bool = True) -> None:
        """Stop taking loads, hand recently used models to peers (bounded), then deregister."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.ready = False
        log.info("pod %s shutting down (graceful=%s)", self.pod_id, graceful)
        with contextlib.suppress(Exception):
            await self._publish()
        if graceful:
            try:
                await asyncio.wait_for(self._migrate_models(), SHUTDOWN_MIGRATION_S)
            except (TimeoutError, Exception) as exc:  # noqa: BLE001
                log.warning("migration incomplete: %s", exc)
        with contextlib.suppress(Exception):
            await self._flush_usage()
        # Take our copies out of the registry before we stop answering, so peers route elsewhere.
        for model_id in list(self.sessions):
            with contextlib.suppress(Exception):
                await self._registry_drop_copy(model_id)
        if self.server is not None:
            await self.server.stop(SHUTDOWN_GRACE_S)
        for task in self._tasks:
            task.cancel()
        with contextlib.suppress(Exception):
            await self.registry.delete_instance(self.pod_id)
        with contextlib.suppress(Exception):
            if self.lease is not None:
                await self.lease.revoke()
        await self.view.stop()
        for ch in self._channels.values():
            with contextlib.suppress(Exception):
                await ch.close()
        self.stopped.set()

    async def _migrate_models(self) -> None:
        """Ask peers to load the models only this pod holds that were used recently."""
        peers = [p for p in self.view.instances.values() if p.pod_id != self.pod_id and not p.shutting_down]
        if not peers:
            return
        now = now_ms()
        todo = []
        for entry in reversed(self.cache.entries()):  # most recently used first
            rec = self.view.models.get(entry.model_id)
            if rec is None or entry.loading:
                continue
            others = [p for p in rec.loaded_on() if p != self.pod_id and p in self.view.instances]
            if others or now - entry.last_used_ms > MIGRATE_RECENT_MS:
                continue
            todo.append((entry.model_id, entry.size))
        for model_id, size in todo:
            target = placement.choose_pod_for_load(peers, size=size)
            if target is None:
                log.warning("no peer has room for %s (%d bytes); it leaves with this pod", model_id, size)
                continue  # a smaller, less recent model may still fit somewhere
            try:
                await self._peer_mgmt(target.pod_id).ensureLoaded(
                    mpb.EnsureLoadedRequest(modelId=model_id, sync=True),
                    metadata=((HOP_HEADER, "1"),), timeout=self.settings.load_timeout_s,
                )
                log.info("migrated %s to %s", model_id, target.pod_id)
            except grpc.aio.AioRpcError as exc:
                log.warning("could not migrate %s to %s: %s", model_id, target.pod_id, exc.details())

    # -- registry bookkeeping -----------------------------------------------------------------------------

    def instance_record(self) -> InstanceRecord:
        return InstanceRecord(
            pod_id=self.pod_id,
            endpoint=self.endpoint,
            metrics_endpoint=f"{self.settings.host}:{self.metrics_port}" if self.metrics_port else "",
            capacity=self.cache.capacity,
            used=self.cache.used,
            count=len(self.cache),
            lru_ms=int(self.cache.lru_time()),
            loading=len(self.loading),
            max_loads=self.settings.max_concurrent_loads,
            rpm=self._rpm(self._req_times),
            in_flight=self.in_flight,
            shutting_down=self.shutting_down,
            started_ms=self.started_ms,
            updated_ms=now_ms(),
            pid=os.getpid(),
        )

    def _rpm(self, times: deque[float]) -> float:
        cutoff = time.monotonic() - RPM_WINDOW_S
        while times and times[0] < cutoff:
            times.popleft()
        return round(len(times) * 60.0 / RPM_WINDOW_S, 1)

    async def _publish(self) -> None:
        # Serialised with _reregister: a put still carrying an expired lease must never land after
        # the put with the new one (the record would vanish when the old lease goes).
        async with self._lease_lock:
            rec = self.instance_record()
            await self.registry.put_instance(rec, self.lease)
        self.metrics.instance(rec)

    def mark_dirty(self) -> None:
        self._dirty.set()

    async def _publish_loop(self) -> None:
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._dirty.wait(), PUBLISH_INTERVAL_S)
            self._dirty.clear()
            try:
                await self._publish()
            except Exception as exc:  # noqa: BLE001 - etcd down: keep serving, try again
                log.debug("publish failed: %s", exc)
            await asyncio.sleep(0.2)  # coalesce bursts of changes

    async def _keepalive_loop(self) -> None:
        interval = max(0.5, self.settings.lease_ttl_s / 3)
        while True:
            await asyncio.sleep(interval)
            try:
                reply = await self.lease.refresh()
                if reply is None or getattr(reply, "TTL", 1) <= 0:
                    await self._reregister()
            except Exception as exc:  # noqa: BLE001
                log.warning("lease refresh failed: %s", exc)

    async def _reregister(self) -> None:
        """Our lease expired (etcd was away): take a new one and restore our records."""
        log.warning("lease expired; registering again")
        async with self._lease_lock:
            self.lease = await self.registry.client.lease(self.settings.lease_ttl_s)
        await self._publish()
        for model_id, entry in list((m, self.cache.get(m)) for m in self.sessions):
            if entry is None:
                continue
            size = entry.size

            def add(m: ModelRecord, size: int = size) -> ModelRecord:
                m.copies[self.pod_id] = CopyInfo("loaded", now_ms(), size)
                return m

            await self.registry.update_model(model_id, add)

    async def _purge_own_stale_copies(self) -> None:
        """Copies recorded under our pod id by an earlier process are not here any more."""
        live = set(self.view.instances)
        for rec in list(self.view.models.values()):
            stale = [p for p in rec.copies if p == self.pod_id or p not in live]
            if stale:
                await self._registry_drop_pods(rec.model_id, set(stale))

    async def _registry_drop_pods(self, model_id: str, pods: set[str]) -> None:
        def drop(m: ModelRecord) -> ModelRecord:
            for p in pods:
                m.copies.pop(p, None)
            return m

        await self.registry.update_model(model_id, drop)

    async def _registry_drop_copy(self, model_id: str) -> None:
        await self._registry_drop_pods(model_id, {self.pod_id})

    def _on_change(self, table: str, name: str, old: object | None, new: object | None) -> None:
        if table == "models" and isinstance(new, ModelRecord):
            pending = self._unseen_counts.get(name)
            if pending is not None:
                pending[:] = [(stamp, n) for stamp, n in pending if stamp > new.freq_ms]
                if not pending:
                    del self._unseen_counts[name]
            entry = self.cache.get(name)
            if entry is not None and entry.pinned != new.pinned:
                entry.pinned = new.pinned
        if table == "models" and new is None:
            self.metrics.forget(name)
            self._unseen_counts.pop(name, None)
        if table == "models" and new is None and name in self.cache:
            asyncio.get_running_loop().create_task(self._unload(name, reason="model unregistered"))
        elif table == "instances" and new is None and name != self.pod_id:
            self._channels.pop(name, None)
            self._stubs.pop(name, None)
            if self._is_janitor():
                asyncio.get_running_loop().create_task(self._purge_dead_pod(name))

    def _is_janitor(self) -> bool:
        live = sorted(p for p, r in self.view.instances.items() if not r.shutting_down)
        return bool(live) and live[0] == self.pod_id

    async def _purge_dead_pod(self, pod_id: str) -> None:
        await asyncio.sleep(0.05)
        if pod_id in self.view.instances:
            return
        for rec in list(self.view.models.values()):
            if pod_id in rec.copies:
                with contextlib.suppress(Exception):
                    await self._registry_drop_pods(rec.model_id, {pod_id})
                    await self.registry.add_event(
                        Event("unload", model=rec.model_id, pod=pod_id, size=rec.copies[pod_id].size,
                              reason="pod gone (lease expired)")
                    )

    # -- leadership: copies and preloading ------------------------------------------------------------------

    async def _leader_loop(self) -> None:
        key = self.registry.key("leader", "")[:-1]
        while True:
            await asyncio.sleep(self.settings.planner_interval_s)
            if self.shutting_down:
                return
            try:
                if not await self._is_leader(key):
                    continue
                await self.run_planner()
            except Exception as exc:  # noqa: BLE001 - planning is best effort
                log.warning("planner round failed: %s", exc)

    async def _is_leader(self, key: bytes) -> bool:
        tx = self.registry.client.transactions
        ok, _ = await self.registry.client.transaction(
            compare=[tx.version(key) == 0],
            success=[tx.put(key, self.pod_id.encode(), lease=self.lease)],
            failure=[],
        )
        if ok:
            log.info("pod %s is now the leader", self.pod_id)
            await self.registry.add_event(Event("leader", pod=self.pod_id, reason="elected leader"))
            return True
        value, _ = await self.registry.get_raw(key)
        return value == self.pod_id.encode()

    async def run_planner(self) -> list[planner.Action]:
        ps = planner.PlannerSettings(
            scale_up_rpm=self.settings.scale_up_rpm,
            pressure_fraction=self.settings.pressure_fraction,
            size_multiplier=self.settings.size_multiplier,
            failure_expiry_ms=self._expiry_ms(),
        )
        pods = list(self.view.instances.values())
        actions = planner.plan(self.view.models.values(), pods, now_ms=now_ms(), settings=ps)
        if not self.settings.preload:
            actions = [a for a in actions if not a.reason.startswith("preload")]
        for action in actions:
            log.info("planner: %s %s on %s (%s)", action.kind, action.model_id, action.pod_id, action.reason)
            try:
                if action.kind == "load":
                    await self._load_on(action.model_id, action.pod_id, action.reason)
                else:
                    await self._unload_on(action.model_id, action.pod_id, action.reason)
            except (MeshError, grpc.aio.AioRpcError) as exc:
                log.warning("planner action %s failed: %s", action, exc)
        return actions

    async def _load_on(self, model_id: str, pod_id: str, reason: str) -> None:
        await self.registry.add_event(Event("plan", model=model_id, pod=pod_id, reason=reason))
        if pod_id == self.pod_id:
            self.background(self.ensure_local(model_id), f"loading {model_id}")
            return
        await self._peer_mgmt(pod_id).ensureLoaded(
            mpb.EnsureLoadedRequest(modelId=model_id, sync=False), metadata=((HOP_HEADER, "1"),), timeout=10)

    async def _unload_on(self, model_id: str, pod_id: str, reason: str) -> None:
        if pod_id == self.pod_id:
            await self.unload_copy(model_id, reason)
            return
        call = self._channel(pod_id).unary_unary(
            PEER_UNLOAD, request_serializer=_json_bytes, response_deserializer=json.loads)
        await call({"model_id": model_id, "reason": reason}, timeout=30)

    async def unload_copy(self, model_id: str, reason: str) -> bool:
        """Drop this pod's copy (planner decision): registry first, so routing stops using it."""
        if model_id not in self.cache:
            return False
        with contextlib.suppress(Exception):
            await self._registry_drop_copy(model_id)
        await self._unload(model_id, reason=reason)
        return True

    # -- usage --------------------------------------------------------------------------------------------

    def record_use(self, model_id: str) -> None:
        now = time.monotonic()
        self._usage[model_id] += 1
        self._req_times.append(now)
        self._model_rpm[model_id].append(now)

    async def _usage_loop(self) -> None:
        while True:
            await asyncio.sleep(self.settings.usage_flush_s)
            try:
                await self._flush_usage()
            except Exception as exc:  # noqa: BLE001
                log.debug("usage flush failed: %s", exc)

    async def _flush_usage(self) -> None:
        """Write last-used times and rates in one batch: never an etcd write per request."""
        used, self._usage = self._usage, defaultdict(int)
        if not used:
            return
        stamp = now_ms()
        # Until this pod's view shows a record written at or after ``stamp``, the eviction weight
        # adds these counts itself: a count must never be missing from both places (the watch
        # delivers records in order, some time after the write).
        for model_id, n in used.items():
            self._unseen_counts.setdefault(model_id, []).append((stamp, n))
        try:
            for model_id, n in list(used.items()):
                rpm = self._rpm(self._model_rpm[model_id])

                def change(m: ModelRecord, rpm: float = rpm, n: int = n) -> ModelRecord:
                    usage.note_session_start(m, stamp)
                    usage.note_requests(m, n, stamp)
                    m.last_used_ms = max(m.last_used_ms, stamp)
                    usage.update_rate(m, self.pod_id, rpm, stamp)
                    return m

                await self.registry.update_model(model_id, change)
                used.pop(model_id, None)
        finally:
            for model_id, n in used.items():  # not written (etcd away): count them next time
                pending = self._unseen_counts.get(model_id, [])
                if (stamp, n) in pending:
                    pending.remove((stamp, n))
                self._usage[model_id] += n
        self.mark_dirty()

    # -- model resolution -----------------------------------------------------------------------------------

    def resolve(self, name: str, metadata: Any) -> tuple[str, bool]:
        """(model id, forwarded-by-a-peer) from the request name and gRPC metadata."""
        model_id = vmodel_id = None
        hop = False
        for key, value in metadata or ():
            if key == HOP_HEADER:
                hop = True
            elif key == "mm-model-id":
                model_id = value
            elif key == "mm-vmodel-id":
                vmodel_id = value
            elif key == "mm-model-id-bin":
                model_id = value.decode("utf-8") if isinstance(value, bytes) else value
            elif key == "mm-vmodel-id-bin":
                vmodel_id = value.decode("utf-8") if isinstance(value, bytes) else value
        if model_id and vmodel_id:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "request names both a model id and a vmodel id")
        if vmodel_id:
            v = self.view.vmodels.get(vmodel_id)
            if v is None or not v.active:
                raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {vmodel_id!r} is not defined")
            return v.active, hop
        if model_id:
            return model_id, hop
        if not name:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty")
        v = self.view.vmodels.get(name)
        if v is not None and v.active:
            return v.active, hop
        return name, hop

    async def model_record(self, model_id: str) -> ModelRecord:
        rec = self.view.models.get(model_id)
        if rec is None:
            # Not yet seen by the watch (just registered elsewhere): one read on the miss path only.
            with contextlib.suppress(RegistryError):
                rec = await self.registry.get_model(model_id)
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} is not registered")
        return rec

    # -- serving ------------------------------------------------------------------------------------------

    async def infer(self, request: ipb.ModelInferRequest, metadata: Any) -> ipb.ModelInferResponse:
        model_id, hop = self.resolve(request.model_name, metadata)
        sess = self.sessions.get(model_id)
        if sess is not None:
            return await self.serve_local(sess, request)
        if hop:
            sess = await self.ensure_local(model_id)
            return await self.serve_local(sess, request)
        return await self.route(model_id, "ModelInfer", request, metadata)

    async def serve_local(self, sess: ModelSession, request: ipb.ModelInferRequest) -> ipb.ModelInferResponse:
        model_id = sess.model_id
        entry = self.cache.get(model_id)
        if entry is not None:
            entry.in_flight += 1
            self.cache.touch(model_id, time.time() * 1000)
        self.in_flight += 1
        t0 = time.perf_counter()
        try:
            try:
                inputs = decode_inputs(request, sess.inputs, max_elements=self._max_elements)
                requested = [o.name for o in request.outputs] if request.outputs else None
                if sess.avg_run_us < INLINE_RUN_LIMIT_US:
                    outputs = sess.run(inputs, requested)
                else:
                    outputs = await asyncio.to_thread(sess.run, inputs, requested)
                response = ipb.ModelInferResponse(model_name=model_id, id=request.id)
                encode_outputs(response, outputs, requested)
            except TensorError as exc:
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        finally:
            self.in_flight -= 1
            if entry is not None:
                entry.in_flight -= 1
        self.record_use(model_id)
        self.metrics.request(model_id, (time.perf_counter() - t0) * 1000)
        return response

    async def route(self, model_id: str, method: str, request: Any, metadata: Any) -> Any:
        """Serve a request for a model this pod does not hold: forward to a holder, or have a
        pod load it. Stale entries (peer gone) are dropped and the request retried."""
        tried: set[str] = set()
        last_error: MeshError | None = None
        t_miss = time.perf_counter()
        for _ in range(self.settings.route_retries + 1):
            rec = await self.model_record(model_id)
            live = {p: r for p, r in self.view.instances.items() if not r.shutting_down or p == self.pod_id}
            holders = [p for p in rec.loaded_on() if p in live and p not in tried]
            loading = [p for p in rec.loading_on() if p in live and p not in tried]
            if holders:
                target = placement.choose_copy(holders, self.peer_in_flight, prefer=self.pod_id)
            elif loading:
                target = loading[0]
            else:
                # A burst of misses for one model from this pod goes to one loader, not to
                # whichever pod each request's random tie-break would pick.
                pending = self._pending_loader.get(model_id)
                if pending and pending[1] > time.monotonic() and pending[0] not in tried and (
                        pending[0] in live or pending[0] == self.pod_id):
                    target = pending[0]
                else:
                    target = self._choose_loader(rec, exclude=tried)
                    if target is not None:
                        self._pending_loader[model_id] = (target, time.monotonic() + self.settings.load_timeout_s)
                if target is None:
                    if last_error is not None:
                        raise last_error
                    raise MeshError(grpc.StatusCode.UNAVAILABLE,
                                    f"no pod can load model {model_id!r}: all pods are full, shutting down or failed")
            if target == self.pod_id:
                sess = await self.ensure_local(model_id)
                self._pending_loader.pop(model_id, None)
                if method == "ModelInfer":
                    return await self.serve_local(sess, request)
                return self.metadata_response(sess)
            assert target is not None
            try:
                response = await self.forward(target, method, request, metadata)
                if not holders:
                    self.metrics.cache_miss((time.perf_counter() - t_miss) * 1000)
                    self._pending_loader.pop(model_id, None)
                return response
            except grpc.aio.AioRpcError as exc:
                code = exc.code()
                trailing = dict(exc.trailing_metadata() or ())
                self._pending_loader.pop(model_id, None)
                if code == grpc.StatusCode.UNAVAILABLE or code == grpc.StatusCode.CANCELLED:
                    tried.add(target)
                    last_error = MeshError(code, f"pod {target} unavailable: {exc.details()}")
                    if target not in self.view.instances or code == grpc.StatusCode.UNAVAILABLE:
                        with contextlib.suppress(Exception):
                            await self._registry_drop_pods(model_id, {target})
                    continue
                if trailing.get("mm-load-failed") == "1":
                    tried.add(target)
                    last_error = MeshError(code, exc.details() or "load failed", load_failed=True)
                    rec = await self.model_record(model_id)
                    if len(rec.live_failures(now_ms(), self._expiry_ms())) >= self.settings.max_load_failures:
                        raise last_error from None
                    continue
                raise MeshError(code, exc.details() or code.name) from None
        assert last_error is not None
        raise last_error

    def _expiry_ms(self) -> int:
        return int(self.settings.failure_expiry_s * 1000)

    def _choose_loader(self, rec: ModelRecord, *, exclude: set[str]) -> str | None:
        failed = set(rec.live_failures(now_ms(), self._expiry_ms()))
        size = rec.size or placement.predict_size(rec.file_size, self.settings.size_multiplier)
        pods = [p for p in self.view.instances.values() if not p.shutting_down]
        if self.pod_id not in self.view.instances and not self.shutting_down:
            pods.append(self.instance_record())
        choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude | failed)
        if choice is None and failed - exclude:
            # every pod failed once: try again on one of them rather than give up early
            choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude)
        return choice.pod_id if choice else None

    def _channel(self, pod_id: str) -> grpc.aio.Channel:
        ch = self._channels.get(pod_id)
        if ch is None:
            inst = self.view.instances.get(pod_id)
            if inst is None:
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"pod {pod_id} is not registered")
            ch = tls.aio_channel(
                inst.endpoint,
                self.settings,
                options=[
                    ("grpc.max_receive_message_length", self.settings.max_message_bytes),
                    ("grpc.max_send_message_length", self.settings.max_message_bytes),
                ],
            )
            self._channels[pod_id] = ch
        return ch

    def _peer_mgmt(self, pod_id: str) -> mgrpc.ModelMeshStub:
        return mgrpc.ModelMeshStub(self._channel(pod_id))

    async def forward(self, pod_id: str, method: str, request: Any, metadata: Any) -> Any:
        stub = self._stubs.get(pod_id)
        if stub is None:  # one stub per peer: building one costs more than the call's own Python work
            stub = self._stubs[pod_id] = igrpc.GRPCInferenceServiceStub(self._channel(pod_id))
        md = tuple((k, v) for k, v in (metadata or ()) if k.startswith("mm-") and k != HOP_HEADER)
        md += _HOP_METADATA
        self.peer_in_flight[pod_id] += 1
        try:
            return await getattr(stub, method)(request, metadata=md, timeout=FORWARD_TIMEOUT_S)
        finally:
            self.peer_in_flight[pod_id] -= 1

    def metadata_response(self, sess: ModelSession) -> ipb.ModelMetadataResponse:
        resp = ipb.ModelMetadataResponse(name=sess.model_id, versions=["1"], platform="onnxruntime_onnx")
        for spec in sess.inputs.values():
            resp.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        for spec in sess.outputs.values():
            resp.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        return resp

    # -- loading and evicting -------------------------------------------------------------------------------

    async def ensure_local(self, model_id: str) -> ModelSession:
        sess = self.sessions.get(model_id)
        if sess is not None:
            return sess
        fut = self.loading.get(model_id)
        if fut is None:
            if self.shutting_down:
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"pod {self.pod_id} is shutting down")
            fut = asyncio.get_running_loop().create_future()
            self.loading[model_id] = fut
            self.mark_dirty()
            asyncio.get_running_loop().create_task(self._load(model_id, fut))
        return await asyncio.shield(fut)

    async def _load(self, model_id: str, fut: asyncio.Future[ModelSession]) -> None:
        t0 = time.perf_counter()
        added = False
        try:
            async with asyncio.timeout(self.settings.load_timeout_s):
                async with self.load_sem:
                    rec = await self.model_record(model_id)
                    cfg = self.view.storage.get(rec.key) or await self.registry.get_storage(rec.key)
                    if cfg is None:
                        raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                                        f"storage key {rec.key!r} of model {model_id} is not configured: "
                                        "add it with `mesh storage set`", load_failed=True)
                    head = None
                    if rec.size:
                        predicted = rec.size
                    else:
                        if cfg.type == "s3":
                            head = await asyncio.to_thread(storage.s3_head, cfg, rec.path)
                            file_size = int(head["ContentLength"])
                        else:
                            file_size = await asyncio.to_thread(storage.object_size, cfg, rec.path)
                        predicted = placement.predict_size(file_size, self.settings.size_multiplier)
                    await self._make_room(model_id, predicted)
                    self.cache.add(model_id, predicted, time.time() * 1000, loading=True, pinned=rec.pinned)
                    added = True

                    def mark_loading(m: ModelRecord) -> ModelRecord:
                        m.copies[self.pod_id] = CopyInfo("loading", now_ms(), predicted)
                        return m

                    if await self.registry.update_model(model_id, mark_loading) is None:
                        raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} was unregistered")
                    await self.registry.add_event(Event("load", model=model_id, pod=self.pod_id, size=predicted,
                                                        reason=f"{rec.key}:{rec.path}"))
                    path, source = await asyncio.to_thread(storage.fetch_model_file, cfg, rec.path, self.disk_cache,
                                                           head)
                    sess = await asyncio.to_thread(
                        load_session, model_id, path, intra_threads=self.settings.intra_threads, source=source
                    )
            if model_id not in self.cache:  # unregistered while loading
                raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} was unregistered while loading")
            self.cache.resize(model_id, sess.size)
            entry = self.cache.get(model_id)
            assert entry is not None
            entry.loading = False
            self.sessions[model_id] = sess
            if self.cache.used > self.cache.capacity:
                # the measured size is larger than predicted: make room after the fact
                with contextlib.suppress(NoRoom):
                    await self._make_room(model_id, 0)
            io = {
                "inputs": [[s.name, s.datatype, s.shape] for s in sess.inputs.values()],
                "outputs": [[s.name, s.datatype, s.shape] for s in sess.outputs.values()],
            }

            def mark_loaded(m: ModelRecord) -> ModelRecord:
                m.copies[self.pod_id] = CopyInfo("loaded", now_ms(), sess.size)
                m.size = sess.size
                m.file_size = sess.file_size
                m.io = io
                m.failed.pop(self.pod_id, None)
                return m

            if await self.registry.update_model(model_id, mark_loaded) is None:
                raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} was unregistered while loading")
            ms = (time.perf_counter() - t0) * 1000
            self.metrics.load(ms)
            await self.registry.add_event(Event("loaded", model=model_id, pod=self.pod_id, size=sess.size,
                                                reason=f"from {source} in {ms:.0f} ms"))
            log.info("loaded %s (%d bytes, from %s, %.0f ms)", model_id, sess.size, source, ms)
            fut.set_result(sess)
        except BaseException as exc:
            err = self._load_error(model_id, exc)
            if added or model_id in self.cache:
                self.cache.remove(model_id)
            self.sessions.pop(model_id, None)
            if err.load_failed:
                await self._record_failure(model_id, err.message)
            else:
                with contextlib.suppress(Exception):
                    await self._registry_drop_copy(model_id)
            if not fut.done():
                fut.set_exception(err)
            if isinstance(exc, asyncio.CancelledError):
                raise
        finally:
            self.loading.pop(model_id, None)
            self.mark_dirty()

    def _load_error(self, model_id: str, exc: BaseException) -> MeshError:
        if isinstance(exc, MeshError):
            return exc
        if isinstance(exc, TimeoutError):
            return MeshError(grpc.StatusCode.UNAVAILABLE,
                             f"loading {model_id} on {self.pod_id} timed out after {self.settings.load_timeout_s:.0f}s",
                             load_failed=True)
        if isinstance(exc, NoRoom):
            return MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot load {model_id} on {self.pod_id}: {exc}")
        if isinstance(exc, ModelLoadError | storage.StorageError):
            return MeshError(grpc.StatusCode.INTERNAL, f"loading {model_id} failed on {self.pod_id}: {exc}",
                             load_failed=True)
        if isinstance(exc, EtcdUnavailable):
            return MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable while loading {model_id}: {exc}")
        if isinstance(exc, asyncio.CancelledError):
            return MeshError(grpc.StatusCode.CANCELLED, f"loading {model_id} was cancelled")
        log.exception("unexpected load error for %s", model_id)
        return MeshError(grpc.StatusCode.INTERNAL, f"loading {model_id} failed on {self.pod_id}: "
                         f"{type(exc).__name__}: {exc}", load_failed=True)

    async def _record_failure(self, model_id: str, message: str) -> None:
        def fail(m: ModelRecord) -> ModelRecord:
            m.copies.pop(self.pod_id, None)
            m.failed[self.pod_id] = FailureInfo(now_ms(), message)
            return m

        with contextlib.suppress(Exception):
            await self.registry.update_model(model_id, fail)
            await self.registry.add_event(Event("load-failed", model=model_id, pod=self.pod_id, reason=message))
        log.warning("%s", message)

    def eviction_weight(self, entry: CacheEntry) -> float:
        """Decayed request count of a copy (registry figure + requests not yet flushed)."""
        model_id = entry.model_id
        rec = self.view.models.get(model_id)
        weight = usage.request_weight(rec, time.time() * 1000) + self._usage.get(model_id, 0)
        pending = self._unseen_counts.get(model_id)
        if pending:
            seen = rec.freq_ms if rec is not None else 0
            pending[:] = [(stamp, n) for stamp, n in pending if stamp > seen]
            weight += sum(n for _, n in pending)
        return weight

    async def _make_room(self, model_id: str, size: int) -> None:
        victims = self.cache.plan_admission(size, exclude=model_id, key=self.eviction_weight)
        # Remove synchronously (no await in between) so no new request can pick a victim.
        removed = []
        for v in victims:
            weight = self.eviction_weight(v)
            self.cache.remove(v.model_id)
            self.sessions.pop(v.model_id, None)
            removed.append((v, weight))
        for v, weight in removed:
            age = now_ms() - v.last_used_ms
            self.metrics.eviction(age)
            why = f"last used {_ago(v.last_used_ms)}, {weight:.1f} recent requests"
            reason = f"evicted for {model_id}, {why}" if model_id else f"over capacity, {why}"
            with contextlib.suppress(Exception):
                await self._registry_drop_copy(v.model_id)
                await self.registry.add_event(Event("evict", model=v.model_id, pod=self.pod_id, size=v.size,
                                                    reason=reason))
            log.info("evicted %s (%d bytes): %s", v.model_id, v.size, reason)
        if removed:
            self.mark_dirty()

    async def _unload(self, model_id: str, *, reason: str) -> None:
        entry = self.cache.get(model_id)
        if entry is None:
            return
        # A copy serving requests is left to finish them first.
        while entry.in_flight > 0:
            await asyncio.sleep(0.01)
        self.cache.remove(model_id)
        self.sessions.pop(model_id, None)
        self.mark_dirty()
        with contextlib.suppress(Exception):
            await self.registry.add_event(Event("unload", model=model_id, pod=self.pod_id, size=entry.size,
                                                reason=reason))

    # -- management operations ------------------------------------------------------------------------------

    def status_info(self, rec: ModelRecord | None) -> mpb.ModelStatusInfo:
        if rec is None:
            return mpb.ModelStatusInfo(status=MS.NOT_FOUND)
        live = self.view.instances
        copies = {p: c for p, c in rec.copies.items() if p in live}
        status = "LOADED" if any(c.state == "loaded" for c in copies.values()) else (
            "LOADING" if copies else ("LOADING_FAILED" if rec.failed else "NOT_LOADED"))
        info = mpb.ModelStatusInfo(status=_STATUS[status])
        for pod, c in sorted(copies.items()):
            info.modelCopyInfos.add(location=pod, copyStatus=_STATUS["LOADED" if c.state == "loaded" else "LOADING"],
                                    time=c.since_ms)
        for pod, f in sorted(rec.failed.items()):
            info.errors.append(f"{pod}: {f.message}")
            info.modelCopyInfos.add(location=pod, copyStatus=MS.LOADING_FAILED, time=f.time_ms)
        return info

    async def ensure_loaded_anywhere(self, model_id: str, *, hop: bool = False) -> None:
        """Load a copy somewhere (here when ``hop``: a peer chose us) unless one exists."""
        if hop:
            await self.ensure_local(model_id)
            return
        tried: set[str] = set()
        last_error: MeshError | None = None
        for _ in range(self.settings.max_load_failures + 1):
            rec = await self.model_record(model_id)
            if any(p in self.view.instances for p in rec.loaded_on()):
                return
            target = self._choose_loader(rec, exclude=tried)
            if target is None:
                if last_error is not None:
                    raise last_error  # the reason the loads failed, not just "no pod left"
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"no pod can load model {model_id!r}")
            if target == self.pod_id:
                try:
                    await self.ensure_local(model_id)
                    return
                except MeshError as exc:
                    if not exc.load_failed:
                        raise
                    tried.add(target)
                    last_error = exc
                    continue
            try:
                await self._peer_mgmt(target).ensureLoaded(
                    mpb.EnsureLoadedRequest(modelId=model_id, sync=True),
                    metadata=((HOP_HEADER, "1"),), timeout=self.settings.load_timeout_s + 5,
                )
                return
            except grpc.aio.AioRpcError as exc:
                tried.add(target)
                if exc.code() not in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL,
                                      grpc.StatusCode.FAILED_PRECONDITION):
                    raise MeshError(exc.code(), exc.details() or "load failed") from None
                last_error = MeshError(exc.code(), exc.details() or "load failed", load_failed=True)
        if last_error is not None:
            raise last_error
        raise MeshError(grpc.StatusCode.INTERNAL, f"model {model_id!r} failed to load on {len(tried)} pods")

    def background(self, coro: Awaitable[Any], what: str) -> None:
        async def run() -> None:
            try:
                await coro
            except Exception as exc:  # noqa: BLE001
                log.warning("%s failed: %s", what, exc)

        self._tasks.append(asyncio.get_running_loop().create_task(run()))

    async def set_vmodel(self, req: mpb.SetVModelRequest) -> VModelRecord:
        vid = req.vModelId
        target = req.targetModelId
        try:
            api.validate_model_id(vid, what="vmodel id")
            api.validate_model_id(target, what="target model id")
        except api.ValidationError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        existing = self.view.vmodels.get(vid) or await self.registry.get_vmodel(vid)
        if req.updateOnly and existing is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {vid!r} does not exist (updateOnly)")
        if existing is not None and req.owner and existing.owner and existing.owner != req.owner:
            raise MeshError(grpc.StatusCode.ALREADY_EXISTS, f"vmodel {vid!r} is owned by {existing.owner!r}")
        if req.expectedTargetModelId and existing is not None and existing.target != req.expectedTargetModelId:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"vmodel {vid!r} targets {existing.target!r}, not {req.expectedTargetModelId!r}")
        if req.HasField("modelInfo") and req.modelInfo.type:
            spec = api.ModelSpec(target, req.modelInfo.path, req.modelInfo.key or "default", req.modelInfo.type)
            try:
                await api._register(self.registry, spec, load_now=req.loadNow)
            except api.ValidationError as exc:
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        if await self.model_record(target) is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"target model {target!r} is not registered")

        def begin(v: VModelRecord | None) -> VModelRecord:
            v = v or VModelRecord(vmodel_id=vid, owner=req.owner)
            if not v.active or req.force:
                v.active = target
            v.target = target
            v.auto_delete = req.autoDeleteTargetModel
            v.failed = ""
            v.updated_ms = now_ms()
            return v

        rec = await self.registry.update_vmodel(vid, begin)
        assert rec is not None
        await api._add_ref(self.registry, target, vid)
        await self.registry.add_event(Event("vmodel", model=target, pod=self.pod_id,
                                            reason=f"vmodel {vid} -> {target}"))
        if rec.active != rec.target:
            if req.sync:
                await self._transition(vid, target)
            else:
                self.background(self._transition(vid, target), f"vmodel {vid} transition")
        elif req.loadNow or req.sync:
            if req.sync:
                await self.ensure_loaded_anywhere(target)
            else:
                self.background(self.ensure_loaded_anywhere(target), f"loading {target}")
        return await self.registry.get_vmodel(vid) or rec

    async def _transition(self, vid: str, target: str) -> None:
        """Load the target first, then switch active -> target in one transaction."""
        try:
            await self.ensure_loaded_anywhere(target)
        except MeshError as exc:
            message = exc.message

            def failed(v: VModelRecord | None) -> VModelRecord | None:
                if v is None or v.target != target:
                    return v
                v.failed = message
                return v

            await self.registry.update_vmodel(vid, failed)
            raise
        old_active: list[str] = []

        def switch(v: VModelRecord | None) -> VModelRecord | None:
            if v is None or v.target != target:
                return v  # superseded by a newer setVModel
            old_active[:] = [v.active] if v.active != target else []
            v.active = target
            v.updated_ms = now_ms()
            return v

        rec = await self.registry.update_vmodel(vid, switch)
        if rec is None or not old_active:
            return
        old = old_active[0]
        await self.registry.add_event(Event("vmodel", model=target, pod=self.pod_id,
                                            reason=f"vmodel {vid} switched {old} -> {target}"))

        def unref(m: ModelRecord) -> ModelRecord:
            m.refs = [r for r in m.refs if r != vid]
            return m

        old_rec = await self.registry.update_model(old, unref)
        if rec.auto_delete and old_rec is not None and not old_rec.refs:
            await self.registry.delete_model(old)
            await self.registry.add_event(Event("unregister", model=old, pod=self.pod_id,
                                                reason=f"auto-deleted after vmodel {vid} moved to {target}"))

    def vmodel_info(self, rec: VModelRecord | None) -> mpb.VModelStatusInfo:
        if rec is None:
            return mpb.VModelStatusInfo(status=VS.NOT_FOUND)
        info = mpb.VModelStatusInfo(status=_VSTATUS[rec.status()], activeModelId=rec.active,
                                    targetModelId=rec.target, owner=rec.owner)
        info.activeModelStatus.CopyFrom(self.status_info(self.view.models.get(rec.active)))
        info.targetModelStatus.CopyFrom(self.status_info(self.view.models.get(rec.target)))
        return info


# -- gRPC servicers ---------------------------------------------------------------------------------------------


def _handler(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            return await method(self, request, context)
        except MeshError as exc:
            if exc.load_failed:
                context.set_trailing_metadata((("mm-load-failed", "1"),))
            await context.abort(exc.code, exc.message)
        except RegistryError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))

    wrapper.__name__ = method.__name__
    return wrapper


class InferenceServicer(igrpc.GRPCInferenceServiceServicer):
    def __init__(self, pod: Pod):
        self.pod = pod

    async def ServerLive(self, request, context):  # noqa: N802 - gRPC names
        return ipb.ServerLiveResponse(live=True)

    async def ServerReady(self, request, context):  # noqa: N802
        pod = self.pod
        return ipb.ServerReadyResponse(ready=pod.ready and not pod.shutting_down and pod.view.synced.is_set())

    async def ServerMetadata(self, request, context):  # noqa: N802
        return ipb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_mesh"])

    @_handler
    async def ModelReady(self, request, context):  # noqa: N802
        model_id, _ = self.pod.resolve(request.name, context.invocation_metadata())
        if model_id in self.pod.sessions:
            return ipb.ModelReadyResponse(ready=True)
        rec = self.pod.view.models.get(model_id)
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} is not registered")
        return ipb.ModelReadyResponse(ready=any(p in self.pod.view.instances for p in rec.loaded_on()))

    @_handler
    async def ModelMetadata(self, request, context):  # noqa: N802
        pod = self.pod
        md = context.invocation_metadata()
        model_id, hop = pod.resolve(request.name, md)
        sess = pod.sessions.get(model_id)
        if sess is not None:
            return pod.metadata_response(sess)
        rec = await pod.model_record(model_id)
        if rec.io:
            resp = ipb.ModelMetadataResponse(name=model_id, versions=["1"], platform="onnxruntime_onnx")
            for name, dt, shape in rec.io.get("inputs", []):
                resp.inputs.add(name=name, datatype=dt, shape=shape)
            for name, dt, shape in rec.io.get("outputs", []):
                resp.outputs.add(name=name, datatype=dt, shape=shape)
            return resp
        if hop:
            return pod.metadata_response(await pod.ensure_local(model_id))
        req = ipb.ModelMetadataRequest(name=model_id)
        return await pod.route(model_id, "ModelMetadata", req, md)

    @_handler
    async def ModelInfer(self, request, context):  # noqa: N802
        return await self.pod.infer(request, context.invocation_metadata())


class ManagementServicer(mgrpc.ModelMeshServicer):
    def __init__(self, pod: Pod):
        self.pod = pod

    @_handler
    async def registerModel(self, request, context):  # noqa: N802
        pod = self.pod
        info = request.modelInfo
        spec = api.ModelSpec(request.modelId, info.path, info.key or "default", info.type)
        try:
            rec = await api._register(pod.registry, spec, load_now=request.loadNow,
                                      last_used_ms=int(request.lastUsedTime))
        except api.ValidationError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        pod.view.models.setdefault(rec.model_id, rec)
        if request.loadNow:
            if request.sync:
                await pod.ensure_loaded_anywhere(rec.model_id)
            else:
                pod.background(pod.ensure_loaded_anywhere(rec.model_id), f"loading {rec.model_id}")
        return pod.status_info(await pod.registry.get_model(rec.model_id))

    @_handler
    async def unregisterModel(self, request, context):  # noqa: N802
        pod = self.pod
        rec = await pod.registry.get_model(request.modelId)
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {request.modelId!r} is not registered")
        if rec.refs:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"model {request.modelId!r} is the target of vmodel(s) {', '.join(rec.refs)}")
        await pod.registry.delete_model(request.modelId)
        await pod.registry.add_event(Event("unregister", model=request.modelId, pod=pod.pod_id,
                                           reason="unregistered"))
        return mpb.UnregisterModelResponse()

    @_handler
    async def getModelStatus(self, request, context):  # noqa: N802
        return self.pod.status_info(await self.pod.registry.get_model(request.modelId))

    @_handler
    async def ensureLoaded(self, request, context):  # noqa: N802
        pod = self.pod
        hop = any(k == HOP_HEADER for k, _ in context.invocation_metadata() or ())
        await pod.model_record(request.modelId)
        if request.lastUsedTime:
            stamp = int(request.lastUsedTime)

            def touch(m: ModelRecord) -> ModelRecord:
                m.last_used_ms = max(m.last_used_ms, stamp)
                return m

            await pod.registry.update_model(request.modelId, touch)
        if request.sync or hop:
            await pod.ensure_loaded_anywhere(request.modelId, hop=hop)
        else:
            pod.background(pod.ensure_loaded_anywhere(request.modelId), f"loading {request.modelId}")
            await asyncio.sleep(0)
        return pod.status_info(await pod.registry.get_model(request.modelId))

    @_handler
    async def setVModel(self, request, context):  # noqa: N802
        rec = await self.pod.set_vmodel(request)
        return self.pod.vmodel_info(rec)

    @_handler
    async def deleteVModel(self, request, context):  # noqa: N802
        pod = self.pod
        rec = await pod.registry.get_vmodel(request.vModelId)
        if rec is not None and request.owner and rec.owner and rec.owner != request.owner:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, f"vmodel {request.vModelId!r} has another owner")
        await api._delete_vmodel(pod.registry, request.vModelId)
        return mpb.DeleteVModelResponse()

    @_handler
    async def getVModelStatus(self, request, context):  # noqa: N802
        return self.pod.vmodel_info(await self.pod.registry.get_vmodel(request.vModelId))


# -- process entry point --------------------------------------------------------------------------------------


async def serve(settings: MeshSettings) -> None:
    endpoints = settings.etcd_endpoints()
    if not endpoints:
        from plane import local

        endpoints = local.embedded_etcd_endpoints(settings.state_dir)
    registry = await Registry.from_settings(settings, endpoints)
    pod = Pod(settings, registry)
    await pod.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(pod.shutdown(graceful=True)))
    await pod.stopped.wait()
    await registry.close()


def main() -> None:
    logging.basicConfig(
        level=os.environ.get("MESH_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s %(message)s",
    )
    try:
        asyncio.run(serve(MeshSettings()))
    except RegistryError as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None
    except OSError as exc:
        log.error("cannot start the pod: %s", exc)
        raise SystemExit(1) from None


if __name__ == "__main__":
    main()

"""The runtime pod process: builds the parts, starts the background loops, serves gRPC.

Parts (each owns one concern; see their modules):

* ``membership`` — lease, instance record, re-registration, purging pods that are gone
* ``copies``     — sessions, the byte-sized cache, the copy state machine, reconciliation
* ``accounting`` — usage counts, rates, the eviction weight
* ``routing``    — naming, serving, forwarding, choosing loaders
* ``leader``     — election and the planner round
* ``vmodels``    — alias transitions
* ``peers``      — pod-to-pod calls, behind an interface tests can fake
* ``servicers``  — protobuf in, protobuf out

The background loops are small coroutines started here as named tasks and cancelled in one
place; a loop that raises is logged, counted and restarted, never silently dropped.
"""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any

import grpc
import grpc.aio

from plane import metrics, operations, placement, secrets, tls
from plane.pod.accounting import Usage
from plane.pod.calls import CallReader
from plane.pod.copies import Copies
from plane.pod.errors import MeshError, PeerError, Purpose
from plane.pod.hop import HopServer, deadline_of
from plane.pod.leader import Leader
from plane.pod.membership import Membership
from plane.pod.peers import GrpcPeers, PeerClient, peer_handler
from plane.pod.routing import Router
from plane.pod.servicers import add_to_server
from plane.pod.serving import Server
from plane.pod.vmodels import VModels
from plane.records import InstanceRecord, ModelRecord, RegistryError, now_ms
from plane.registry import Registry
from plane.runtime import warm_up
from plane.settings import MeshSettings
from plane.view import RegistryView

__all__ = ["Pod", "serve", "main"]

log = logging.getLogger("mesh.pod")

RECONCILE_INTERVAL_S = 1.0
LOOP_RESTART_S = 1.0
VIEW_SYNC_TIMEOUT_S = 30.0
SHUTDOWN_MIGRATION_S = 30.0
SHUTDOWN_GRACE_S = 5.0
SHUTDOWN_RELEASE_S = 10.0
MIGRATE_RECENT_MS = 3600 * 1000


class Pod:
    """One runtime pod: the parts, wired."""

    def __init__(self, settings: MeshSettings, registry: Registry, *, peers: PeerClient | None = None):
        self.settings = settings
        self.registry = registry
        self.port = settings.grpc_port
        self.pod_id = settings.pod_id or f"{socket.gethostname()}-{self.port}"
        self.endpoint = f"{settings.advertise_host or settings.host}:{self.port}"
        self.metrics_port = settings.metrics_port
        self.metrics = metrics.PodMetrics(self.pod_id, per_model=settings.per_model_metrics)
        self.view = RegistryView(registry)
        self.ready = False
        self.shutting_down = False
        self.started_ms = now_ms()
        self.stopped = asyncio.Event()
        self.server: grpc.aio.Server | None = None
        self.rest: Any = None  # plane.rest.RestServer when MESH_REST_PORT is set
        self.hop: HopServer | None = None  # forwarded inference from peers (plane.pod.hop)
        self._tasks: dict[str, asyncio.Task[Any]] = {}
        self._background: set[asyncio.Task[Any]] = set()
        fail = self.metrics.registry_write_failed
        self.usage = Usage(self.pod_id, registry, self.view, on_write_failed=fail)
        self.membership = Membership(pod_id=self.pod_id, settings=settings, registry=registry, view=self.view,
                                     record=self.instance_record, reregistered=self.reconcile,
                                     metrics=self.metrics)
        self.copies = Copies(pod_id=self.pod_id, settings=settings, registry=registry, view=self.view,
                             metrics=self.metrics, weight=self.usage.weight, changed=self.membership.mark_dirty,
                             registry_ok=self.membership.etcd_ok, note=self.usage.note)
        self.token: str | None = settings.peer_token
        self.calls = CallReader(lambda: self.token)
        self.peers: PeerClient = peers or GrpcPeers(settings, self.membership.endpoint_of, lambda: self.token)
        self.server_part = Server(settings=settings, copies=self.copies, usage=self.usage, metrics=self.metrics)
        self.router = Router(pod_id=self.pod_id, settings=settings, registry=registry, view=self.view,
                             copies=self.copies, peers=self.peers, membership=self.membership,
                             server=self.server_part, metrics=self.metrics, shutting_down=lambda: self.shutting_down)
        self.leader = Leader(pod_id=self.pod_id, settings=settings, registry=registry, view=self.view,
                             copies=self.copies, peers=self.peers, membership=self.membership, spawn=self.spawn)
        self.metrics.track_mesh(lambda: self.view.models.values(), lambda: self.leader.leading,
                                failure_expiry_ms=int(settings.failure_expiry_s * 1000))
        self.vmodels = VModels(pod_id=self.pod_id, registry=registry, view=self.view, router=self.router,
                               spawn=self.spawn)
        self.view.hooks.append(self._on_change)

    # -- what others read of this pod ---------------------------------------------------------------

    def instance_record(self) -> InstanceRecord:
        cache = self.copies.cache
        return InstanceRecord(
            pod_id=self.pod_id, endpoint=self.endpoint,
            metrics_endpoint=f"{self.settings.host}:{self.metrics_port}" if self.metrics_port else "",
            rest_endpoint=f"{self.settings.advertise_host or self.settings.host}:{self.rest.port}" if self.rest else "",
            capacity=cache.capacity, used=cache.used, count=len(cache), lru_ms=int(cache.lru_time()),
            loading=len(self.copies.ready), max_loads=self.settings.max_concurrent_loads,
            rpm=self.usage.pod_rpm(), in_flight=self.router.in_flight, shutting_down=self.shutting_down,
            started_ms=self.started_ms, updated_ms=now_ms(), pid=os.getpid(),
        )

    def is_ready(self) -> bool:
        return self.ready and not self.shutting_down and self.view.synced.is_set()

    # -- tasks ----------------------------------------------------------------------------------------

    def spawn(self, coro: Awaitable[Any], what: str) -> None:
        """Run a one-off coroutine in the background; its failure is logged, not lost."""

        async def run() -> None:
            try:
                await coro
            except (MeshError, PeerError, RegistryError) as exc:
                log.warning("%s failed: %s", what, exc)
            except Exception:  # noqa: BLE001 - a bug: keep the traceback
                log.exception("%s failed", what)

        task = asyncio.get_running_loop().create_task(run(), name=what)
        self._background.add(task)
        task.add_done_callback(self._background.discard)

    def _loop(self, name: str, body: Callable[[], Coroutine[Any, Any, Any]]) -> None:
        """A background loop as a named task, restarted (logged and counted) if it raises."""

        async def supervised() -> None:
            while True:
                try:
                    await body()
                    return
                except asyncio.CancelledError:
                    raise
                except Exception:  # noqa: BLE001 - logged with its traceback, counted, restarted
                    self.metrics.loop_failed(name)
                    log.exception("background loop %s failed; restarting", name)
                    await asyncio.sleep(LOOP_RESTART_S)

        self._tasks[name] = asyncio.get_running_loop().create_task(supervised(), name=name)

    async def _reconcile_loop(self) -> None:
        while True:
            await asyncio.sleep(RECONCILE_INTERVAL_S)
            await self.reconcile()

    async def reconcile(self) -> None:
        if not self.view.connected or not self.membership.etcd_ok():
            return  # nothing can be written; the next round after etcd answers repairs
        await self.copies.reconcile()
        await self.membership.sweep()

    # -- lifecycle ------------------------------------------------------------------------------------

    async def start(self) -> None:
        opts = [("grpc.max_receive_message_length", self.settings.max_message_bytes),
                ("grpc.max_send_message_length", self.settings.max_message_bytes),
                ("grpc.so_reuseport", 0)]
        self.server = grpc.aio.server(options=opts)
        add_to_server(self.server, self)
        self.server.add_generic_rpc_handlers((peer_handler(self.copies.unload, lambda: self.hop.port if self.hop else 0,
                                                           self.calls.require_peer),))
        creds = tls.server_credentials(self.settings)
        address = f"{self.settings.host}:{self.port}"
        bound = (self.server.add_secure_port(address, creds) if creds is not None
                 else self.server.add_insecure_port(address))
        if bound == 0:
            raise OSError(f"cannot bind {address}: is another pod using it?")
        await asyncio.to_thread(warm_up)
        self.view.start()
        await asyncio.wait_for(self.view.synced.wait(), VIEW_SYNC_TIMEOUT_S)
        if self.token is None:
            self.token = await operations.peer_token(self.registry)
        await self.membership.join()
        await self.copies.reconcile()  # copies recorded under our id by an earlier process are gone
        if self.metrics_port:
            self.metrics.serve(self.metrics_port, self.settings.host)
        await self.server.start()
        if self.settings.hop_port >= 0 and not tls.enabled(self.settings):
            self.hop = HopServer(self._hop_infer, lambda: self.token, max_frame=self.settings.max_message_bytes)
            await self.hop.start(self.settings.host, self.settings.hop_port)
        if self.settings.rest_port:
            from plane.rest import rest_ssl_context, start_rest

            self.rest = await start_rest(self, self.settings.host, self.settings.rest_port,
                                         ssl_context=rest_ssl_context(self.settings))
            await self.membership.publish()  # the record joined with no REST port: name it now
        self._loop("keepalive", self.membership.keepalive_loop)
        self._loop("publish", self.membership.publish_loop)
        self._loop("usage", lambda: self.usage.loop(self.settings.usage_flush_s))
        self._loop("leader", self.leader.loop)
        self._loop("reconcile", self._reconcile_loop)
        self.ready = True
        log.info("pod %s serving on %s (capacity %d bytes)", self.pod_id, self.endpoint, self.copies.cache.capacity)

    async def _hop_infer(self, raw: bytes, headers: tuple[tuple[str, Any], ...], timeout_s: float) -> bytes:
        """A ModelInfer a peer forwarded over the hop port (the connection presented the token)."""
        call = self.calls.forwarded(headers, deadline_of(timeout_s))
        response = await self.router.infer_raw(raw, call)
        return response if isinstance(response, bytes) else response.SerializeToString()

    def _on_change(self, table: str, name: str, old: object | None, new: object | None) -> None:
        if table == "models":
            rec = new if isinstance(new, ModelRecord) else None
            self.usage.on_model_change(name, rec)
            entry = self.copies.cache.get(name)
            if rec is not None and entry is not None and entry.pinned != rec.pinned:
                entry.pinned = rec.pinned
            if new is None:
                self.metrics.forget(name)
                if entry is not None:
                    self.spawn(self.copies.forget(name), f"unloading unregistered {name}")
        elif table == "instances":
            inst_old = old if isinstance(old, InstanceRecord) else None
            inst_new = new if isinstance(new, InstanceRecord) else None
            self.membership.on_instance_change(name, inst_old, inst_new)
            if inst_new is not None and inst_old is not None and inst_new.endpoint != inst_old.endpoint:
                self.peers.forget(name)

    async def shutdown(self, *, graceful: bool = True) -> None:
        """Stop taking loads, hand recently used models to peers (bounded), then deregister."""
        if self.shutting_down:
            return
        self.shutting_down = True
        self.ready = False
        self.copies.accepting = False
        self.membership.shutting_down = True
        log.info("pod %s shutting down (graceful=%s)", self.pod_id, graceful)
        try:
            await self.membership.publish()
        except RegistryError as exc:
            log.warning("could not announce the shutdown: %s", exc)
        if graceful and self.view.connected:
            try:
                await asyncio.wait_for(self._migrate(), SHUTDOWN_MIGRATION_S)
            except TimeoutError:
                log.warning("migration incomplete after %.0fs", SHUTDOWN_MIGRATION_S)
        # Take our copies out of the registry before we stop answering, so peers route elsewhere.
        # Bounded: with etcd away every write would wait for its timeout.
        try:
            await asyncio.wait_for(self._release(), SHUTDOWN_RELEASE_S)
        except TimeoutError:
            log.warning("registry not updated within %.0fs; the lease expiry will clear this pod", SHUTDOWN_RELEASE_S)
        if self.rest is not None:
            await self.rest.close()
        if self.server is not None:
            await self.server.stop(SHUTDOWN_GRACE_S)
        if self.hop is not None:
            await self.hop.close()
        for task in self._tasks.values():
            task.cancel()
        try:
            await asyncio.wait_for(self.membership.leave(), SHUTDOWN_RELEASE_S)
        except TimeoutError:
            log.warning("could not deregister within %.0fs; the lease will expire", SHUTDOWN_RELEASE_S)
        await self.view.stop()
        await self.peers.close()
        self.server_part.isolated.close()
        self.copies.close()
        self.stopped.set()

    async def _release(self) -> None:
        await self.usage.flush()
        for model_id in list(self.copies.sessions):
            await self.copies.unload(model_id, "pod shutting down")
        await self.copies.idle()  # evictions' and loads' writes still queued

    async def _migrate(self) -> None:
        """Ask peers to load the models only this pod holds that were used recently."""
        peers = [p for p in self.view.instances.values() if p.pod_id != self.pod_id and not p.shutting_down]
        if not peers:
            return
        now = now_ms()
        for entry in reversed(self.copies.cache.entries()):  # most recently used first
            rec = self.view.models.get(entry.model_id)
            if rec is None or entry.loading or now - entry.last_used_ms > MIGRATE_RECENT_MS:
                continue
            if any(p != self.pod_id and p in self.view.instances for p in rec.loaded_on()):
                continue
            target = placement.choose_pod_for_load(peers, size=entry.size)
            if target is None:
                log.warning("no peer has room for %s (%d bytes); it leaves with this pod", entry.model_id, entry.size)
                continue  # a smaller, less recent model may still fit somewhere
            try:
                await self.peers.ensure_loaded(target.pod_id, entry.model_id, sync=True, purpose=Purpose.REQUEST,
                                               timeout=self.settings.load_timeout_s)
                log.info("migrated %s to %s", entry.model_id, target.pod_id)
            except (PeerError, MeshError) as exc:
                log.warning("could not migrate %s to %s: %s", entry.model_id, target.pod_id, exc)


async def serve(settings: MeshSettings) -> None:
    endpoints = settings.etcd_endpoints()
    if not endpoints:
        from plane import local

        endpoints = local.embedded_etcd_endpoints(settings.state_dir)
    # Short etcd timeouts: with etcd away, work that needs it fails fast instead of hanging.
    registry = await Registry.from_settings(settings, endpoints, timeout=settings.etcd_timeout_s)
    pod = Pod(settings, registry)
    await pod.start()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, lambda: loop.create_task(pod.shutdown(graceful=True)))
    await pod.stopped.wait()
    await registry.close()


def main() -> None:
    logging.basicConfig(level=os.environ.get("MESH_LOG_LEVEL", "INFO").upper(),
                        format="%(asctime)s %(levelname)s %(name)s %(message)s")
    secrets.install_log_filter()  # URL userinfo and secret values never reach the log
    try:
        asyncio.run(serve(MeshSettings()))
    except RegistryError as exc:
        log.error("%s", exc)
        raise SystemExit(3) from None
    except OSError as exc:
        log.error("cannot start the pod: %s", exc)
        raise SystemExit(1) from None

"""The copies a pod holds: sessions, the byte-sized cache, and the copy lifecycle.

Every change of a copy goes through one of the transitions below, and only these touch the
cache and the sessions::

    (none) --reserve--> LOADING --settle--> LOADED --evict/unload--> (none)
                          \\--failed--> (none, failure recorded)

A load (:meth:`Copies._load`) answers as soon as its session exists: the view gives the record
and the storage config (no etcd round trip unless the view lacks them), :class:`Capacity
<plane.pod.capacity.Capacity>` reserves the size measured at an earlier load (else the
prediction), the file is fetched, the session built in a load slot (:class:`LoadSlots
<plane.pod.capacity.LoadSlots>`; a file measured before is built once and not measured again,
:mod:`plane.size_memo`), the reservation corrected to the measured size, and the waiting requests
are served. The registry learns of the copy right after, in the background (:class:`CopyWrites
<plane.pod.writes.CopyWrites>`): the LOADING entry written when the load started, the LOADED entry
with the measured size and tensor metadata, and the ``load``/``loaded`` events stamped with the
times they happened. A failed load is recorded before its error is returned, so the pod that
retries elsewhere reads where it failed.

The registry's entry for this pod is never written from a remembered intent: each write
computes :meth:`Copies.desired` (the local truth) inside its compare-and-swap, so however writes
interleave the last one to land carries the current state; a write that fails is left to
:meth:`Copies.reconcile`, which the pod runs every second and after every re-registration.

Capacity is a hard invariant: a copy whose measured size does not fit after evicting what may
be evicted is dropped again and recorded as a load failure ("needs X, capacity Y"). Only a
request's load evicts; a planned load (preload, scale-up) uses free space only.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Callable
from typing import Any

import grpc

from plane import placement, runtimes, size_memo, storage
from plane.cache import CacheEntry, WeightedLRU
from plane.pod import lookup, reloads
from plane.pod.capacity import Capacity, LoadSlots
from plane.pod.errors import MeshError, Purpose, q
from plane.pod.load_errors import TooBig, load_error
from plane.pod.writes import CopyWrites
from plane.records import CopyInfo, CopyState, Event, FailureInfo, ModelRecord, RegistryError, now_ms
from plane.runtime import ModelSession
from plane.settings import format_age

__all__ = ["Copies"]

log = logging.getLogger("mesh.pod.copies")

UNLOAD_DRAIN_POLL_S = 0.01


class Copies:
    """Owns ``cache`` (what is charged), ``sessions`` (what can serve) and the loads in progress."""

    def __init__(self, *, pod_id: str, settings: Any, registry: Any, view: Any, metrics: Any,
                 weight: Callable[[CacheEntry], float], changed: Callable[[], None],
                 loader: Callable[..., ModelSession] | None = None,
                 registry_ok: Callable[[], bool] = lambda: True,
                 note: Callable[[str], None] = lambda kind: None):
        self.pod_id = pod_id
        self.settings = settings
        self.registry = registry
        self.view = view
        self.metrics = metrics
        self.weight = weight
        self.changed = changed  # the instance record should be republished
        self.loader = loader  # path -> session; None: the runtime the model's type names (a test may pass its own)
        self.note = note  # counts a transition in this minute's stats (plane.stats)
        self.cache = WeightedLRU(settings.capacity)
        self.capacity = Capacity(self.cache, pod_id=pod_id, weight=weight, evicted=self._evicted)
        self.slots = LoadSlots(settings.max_concurrent_loads, metrics)
        self.reloads = reloads.Reloads()
        self.writes = CopyWrites(pod_id=pod_id, registry=registry, metrics=metrics, desired=self.desired,
                                 registry_ok=registry_ok)
        self.sessions: dict[str, ModelSession] = {}
        self.ready: dict[str, asyncio.Future[ModelSession]] = {}  # loads in progress
        self.tasks: dict[str, asyncio.Task[None]] = {}  # loads, until their registry writes landed
        self.disk_cache = storage.DiskCache(settings.resolved_disk_cache_dir() / pod_id, settings.disk_cache_bytes)
        self.accepting = True
        # Load failures on this pod, known here before the view shows the record we wrote.
        self.failures: dict[str, FailureInfo] = {}
        self._since: dict[str, int] = {}
        self._cache_fault_told: str | None = None  # the disk-cache fault last reported in an event

    # -- the local truth ---------------------------------------------------------------------------

    def desired(self, model_id: str) -> CopyInfo | None:
        """What the registry should say about this pod's copy of ``model_id``."""
        entry = self.cache.get(model_id)
        if entry is None:
            return None
        state = CopyState.LOADED if model_id in self.sessions and not entry.loading else CopyState.LOADING
        return CopyInfo(state, self._since.get(model_id, 0), entry.size)

    def drifted(self) -> list[str]:
        """Models whose registry entry for this pod (as the view has it) differs from the truth."""
        out = [m for m in self.unsynced]
        for model_id, rec in self.view.models.items():
            have, want = rec.copies.get(self.pod_id), self.desired(model_id)
            if have is None and want is None:
                continue
            if have is None or want is None or (have.state, have.size) != (want.state, want.size):
                out.append(model_id)
        return out

    @property
    def unsynced(self) -> set[str]:
        return self.writes.unsynced

    async def sync(self, model_id: str, *, extra: Callable[[ModelRecord], None] | None = None,
                   failure: FailureInfo | None = None) -> bool:
        """Write this pod's entry for the model now (see :meth:`CopyWrites.sync`)."""
        return await self.writes.sync(model_id, extra=extra, failure=failure)

    async def reconcile(self) -> int:
        """Make the registry's record of this pod's copies equal its sessions. Returns the number
        of models repaired."""
        repaired = 0
        for model_id in dict.fromkeys(self.drifted()):
            if self.writes.busy(model_id) or model_id in self.ready:
                continue  # a write is queued or under way (or a load will write); it carries the truth
            if await self.sync(model_id):
                repaired += 1
        # Copies of models the registry no longer has (unregistered while we were away).
        if self.view.synced.is_set():
            for model_id in [m for m in self.sessions if m not in self.view.models]:
                if await self._registry_lacks(model_id):
                    await self.unload(model_id, "model unregistered")
                    repaired += 1
        if repaired:
            self.metrics.reconciled(repaired)
            log.info("reconciled %d copy record(s)", repaired)
        return repaired

    async def _registry_lacks(self, model_id: str) -> bool:
        try:
            return await self.registry.get_model(model_id) is None
        except RegistryError:
            return False

    # -- loading -----------------------------------------------------------------------------------

    async def ensure_local(self, model_id: str, *, purpose: str = Purpose.REQUEST,
                           settle: bool = False) -> ModelSession:
        """The session, loading it here first if needed. ``settle``: also wait until the
        registry records the copy (management calls that report status afterwards)."""
        sess = self.sessions.get(model_id)
        if sess is None:
            fut = self.ready.get(model_id)
            if fut is None:
                if not self.accepting:
                    raise MeshError(grpc.StatusCode.UNAVAILABLE, f"pod {self.pod_id} is shutting down")
                fut = asyncio.get_running_loop().create_future()
                self.ready[model_id] = fut
                self.tasks[model_id] = asyncio.get_running_loop().create_task(
                    self._load(model_id, fut, purpose), name=f"load {model_id}")
                self.changed()
            sess = await asyncio.shield(fut)
        task = self.tasks.get(model_id)
        if settle and task is not None:
            await asyncio.shield(task)
        return sess

    async def _load(self, model_id: str, fut: asyncio.Future[ModelSession], purpose: str) -> None:
        t0 = time.perf_counter()
        sess: ModelSession | None = None
        try:
            async with asyncio.timeout(self.settings.load_timeout_s):
                rec, cfg, head, expected = await self._prepare(model_id)
                reserved = await self.capacity.reserve(model_id, expected, purpose=purpose, pinned=rec.pinned)
                self._since[model_id] = now_ms()
                self.changed()
                self.writes.write(model_id)  # LOADING, in the background
                self.writes.event(Event("load", model=model_id, size=reserved, reason=f"{rec.key}:{rec.path}"))
                sess, reused = await self._fetch_and_load(model_id, rec, cfg, head)
                if not await self.capacity.settle(model_id, sess.size, purpose=purpose):
                    raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(model_id)} was unregistered while loading")
            self.sessions[model_id] = sess
            self._since[model_id] = now_ms()
            self.failures.pop(model_id, None)
        except BaseException as exc:
            err = load_error(model_id, self.pod_id, exc, timeout_s=self.settings.load_timeout_s)
            try:
                await self._fail(model_id, err, sess)
            finally:
                if not fut.done():
                    fut.set_exception(err)
                    fut.exception()  # retrieved: nobody may be waiting any more
                self._finished(model_id)
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self.ready.pop(model_id, None)
            self.changed()
        fut.set_result(sess)  # the waiting requests are served now; the registry learns of it below
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.load(ms, model_id, sess.size)
        io = {"inputs": [[s.name, s.datatype, s.shape] for s in sess.inputs.values()],
              "outputs": [[s.name, s.datatype, s.shape] for s in sess.outputs.values()]}
        size, file_size = sess.size, sess.file_size

        def learned(m: ModelRecord) -> None:
            m.size, m.file_size, m.io = size, file_size, io
            m.failed.pop(self.pod_id, None)

        self.note("loads")
        how = ", size measured at an earlier load of the same file" if reused else ""
        log.info("loaded %s (%d bytes%s, from %s, %.0f ms)", model_id, size, how, sess.source, ms)
        try:
            await self.writes.write(model_id, extra=learned)
            await self.writes.event(Event("loaded", model=model_id, size=size,
                                          reason=f"from {sess.source} in {ms:.0f} ms{how}"))
        finally:
            self._finished(model_id)

    def _finished(self, model_id: str) -> None:
        if self.tasks.get(model_id) is asyncio.current_task():  # not a later load of the same model
            del self.tasks[model_id]

    async def _fetch_and_load(self, model_id: str, rec: ModelRecord, cfg: Any, head: Any
                              ) -> tuple[ModelSession, bool]:
        """The model's file from storage (through the disk cache), then a session of it built in a
        load slot; True with it when its size is the one measured at an earlier load of the same
        file. An unchanged local file whose last build was quick is built again on the event loop
        (:mod:`plane.pod.reloads`). A disk cache that cannot be written is passed by (a warning
        event, once per fault)."""
        where = reloads.origin(rec, cfg)
        again = self.reloads.quick(model_id, where)
        if again is not None:
            try:
                return self.slots.run_inline(model_id, functools.partial(self._build, model_id, rec, again, "local",
                                                                         where, inline=True))
            except size_memo.BuildBusy:
                pass  # a measured build runs: wait for a slot like any load
        warnings: list[str] = []
        path, source = await asyncio.to_thread(storage.fetch_model_file, cfg, rec.path, self.disk_cache, head,
                                               warnings.append)
        try:
            return await self.slots.run(model_id, functools.partial(self._build, model_id, rec, path, source, where))
        finally:
            storage.release_model_file(path)  # a scratch download only; cache entries stay
            fault = self.disk_cache.fault
            if warnings and fault != self._cache_fault_told:
                self._cache_fault_told = fault
                log.warning("%s", warnings[0])
                self.writes.event(Event("pod", model=model_id, reason=warnings[0]))
            elif not fault:
                self._cache_fault_told = None

    def _build(self, model_id: str, rec: ModelRecord, path: Any, source: str, where: tuple, *,
               inline: bool = False) -> tuple[ModelSession, bool]:
        """A session of the local file ``path``, measured unless this file was measured before
        (on a load slot's thread, or on the event loop for a quick reload)."""
        load = self.loader or functools.partial(runtimes.load, rec.type, settings=self.settings)
        context = (rec.type, self.settings.intra_threads)
        identity = size_memo.file_identity(path, *context)
        t0 = time.perf_counter()
        with size_memo.measured_once(identity, inline=inline) as memo:
            sess = load(model_id, path, intra_threads=self.settings.intra_threads, source=source)
        took = (time.perf_counter() - t0) * 1000 if inline else None  # a thread's time counts its GIL waits
        self.reloads.note(model_id, where, path, source, context, identity, took)
        return sess, bool(memo and memo.reused)

    async def _prepare(self, model_id: str) -> tuple[ModelRecord, Any, Any, int]:
        """The record, its storage config, an S3 HEAD when one was needed, and the bytes to
        reserve: the size measured at an earlier load, else the prediction from the file size."""
        rec = await lookup.model_record(self.view, self.registry, model_id)
        cfg = await lookup.storage_config(self.view, self.registry, rec.key)
        if cfg is None:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"storage key {rec.key!r} of model {model_id} is not configured: "
                            "add it with `mesh storage set`", load_failed=True)
        head = None
        if rec.size:
            return rec, cfg, head, rec.size
        if cfg.type == "s3":
            head = await asyncio.to_thread(storage.s3_head, cfg, rec.path)
            file_size = int(head["ContentLength"])
        else:
            file_size = await asyncio.to_thread(storage.object_size, cfg, rec.path)
        if file_size > self.cache.capacity:  # its weights alone cannot fit: fail before loading
            raise TooBig(file_size, self.cache.capacity, "its file")
        return rec, cfg, head, placement.predict_size(file_size, self.settings.size_multiplier)

    async def _fail(self, model_id: str, err: MeshError, sess: ModelSession | None) -> None:
        """LOADING -> (none): give back the reservation; record a failure when it was the model's.
        The registry has the failure (and the event log its event) before the error is returned."""
        self.capacity.release(model_id)
        self.sessions.pop(model_id, None)
        self._since.pop(model_id, None)
        del sess  # the session (if any) is dropped with its memory
        if err.load_failed:
            failure = FailureInfo(now_ms(), err.message, needs=err.needs, capacity=err.capacity)
            self.failures[model_id] = failure
            needs = failure.needs

            def size(m: ModelRecord) -> None:
                if needs:
                    m.size = max(m.size, needs)  # placement learns it does not fit here

            recorded = self.writes.write(model_id, failure=failure, extra=size)
            logged = self.writes.event(Event("load-failed", model=model_id, reason=err.message))
            self.note("failures")
            self.metrics.load_failed(model_id)
            log.warning("%s", err.message)
            await recorded
            await logged
        else:
            await self.writes.write(model_id)

    # -- evicting and unloading --------------------------------------------------------------------

    def _evicted(self, victim: CacheEntry, for_model: str, weight: float, grew: bool) -> None:
        """LOADED -> (none) for a copy :class:`Capacity` took out to make room; its registry write
        and event follow in the background."""
        self.sessions.pop(victim.model_id, None)
        self._since.pop(victim.model_id, None)
        self.metrics.eviction(now_ms() - victim.last_used_ms, victim.model_id)
        self.note("evictions")
        why = f"last used {format_age(victim.last_used_ms, now_ms())}, {weight:.1f} recent requests"
        reason = f"evicted for {for_model} (it measured more than predicted), {why}" if grew else \
            f"evicted for {for_model}, {why}"
        log.info("evicted %s (%d bytes): %s", victim.model_id, victim.size, reason)
        self.writes.write(victim.model_id)
        self.writes.event(Event("evict", model=victim.model_id, size=victim.size, reason=reason))
        self.changed()

    async def forget(self, model_id: str) -> None:
        """The model was unregistered: a load in progress is abandoned, a copy unloaded."""
        entry = self.cache.get(model_id)
        if entry is None:
            return
        self.reloads.forget(model_id)
        if entry.loading:
            self.capacity.release(model_id)  # the load sees this and fails as "unregistered while loading"
            self.changed()
            return
        await self.unload(model_id, "model unregistered")

    async def unload(self, model_id: str, reason: str) -> bool:
        """LOADED -> (none), for the planner, an unregistration or a shutdown. Requests in flight
        finish first; the registry entry goes before the session, so routing stops using it."""
        entry = self.cache.get(model_id)
        if entry is None or entry.loading:
            return False
        entry.pinned = True  # keep it out of eviction while it drains
        while entry.in_flight > 0:
            await asyncio.sleep(UNLOAD_DRAIN_POLL_S)
        if self.cache.get(model_id) is not entry:
            return False
        self.capacity.release(model_id)
        self.sessions.pop(model_id, None)
        self._since.pop(model_id, None)
        self.changed()
        self.note("unloads")
        await self.writes.write(model_id)
        await self.writes.event(Event("unload", model=model_id, size=entry.size, reason=reason))
        return True

    async def idle(self) -> None:
        """Wait until every registry write and event queued so far has landed (or failed)."""
        await self.writes.idle()

    def close(self) -> None:
        self.slots.close()

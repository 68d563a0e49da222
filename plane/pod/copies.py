"""The copies a pod holds: sessions, the byte-sized cache, and the copy lifecycle.

Every change of a copy goes through one of the transitions below, and only these touch the
cache and the sessions::

    (none) --begin--> LOADING --loaded--> LOADED --evict/unload--> (none)
                         \\--failed--> (none, failure recorded)

The registry's entry for this pod is never written from a remembered intent: each write
computes :meth:`Copies.desired` (the local truth) inside its compare-and-swap, under a per-model
lock, so however writes interleave the last one to land carries the current state. A write
that fails is logged, counted, and left to :meth:`Copies.reconcile`, which the pod runs every
second and after every re-registration: it makes the registry's record of this pod's copies
equal its sessions.

Capacity is a hard invariant: a copy whose measured size does not fit after evicting what may
be evicted is unloaded again and recorded as a load failure ("needs X, capacity Y"). Only a
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

from plane import operations, placement, runtimes, storage
from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.pod.errors import MeshError, Purpose, q
from plane.pod.load_errors import TooBig, load_error
from plane.records import CopyInfo, CopyState, Event, FailureInfo, ModelRecord, RegistryError, now_ms
from plane.runtime import ModelSession
from plane.settings import format_age, format_size

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
        self.registry_ok = registry_ok  # False while etcd does not answer: skip writes, repair later
        self.note = note  # counts a transition in this minute's stats (plane.stats)
        self.cache = WeightedLRU(settings.capacity)
        self.sessions: dict[str, ModelSession] = {}
        self.ready: dict[str, asyncio.Future[ModelSession]] = {}  # loads in progress
        self.tasks: dict[str, asyncio.Task[None]] = {}
        self.disk_cache = storage.DiskCache(settings.resolved_disk_cache_dir() / pod_id, settings.disk_cache_bytes)
        self.accepting = True
        self.unsynced: set[str] = set()
        # Load failures on this pod, known here before the view shows the record we wrote.
        self.failures: dict[str, FailureInfo] = {}
        self._since: dict[str, int] = {}
        self._locks: dict[str, asyncio.Lock] = {}
        self._load_sem = asyncio.Semaphore(max(1, settings.max_concurrent_loads))
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

    async def sync(self, model_id: str, *, extra: Callable[[ModelRecord], None] | None = None,
                   failure: FailureInfo | None = None) -> bool:
        """Write this pod's entry for the model as it is now. False (logged, counted, queued for
        reconciliation) when the registry could not be written."""
        if not self.registry_ok():
            self.unsynced.add(model_id)  # etcd is away: don't wait for its timeout on every write
            self.metrics.registry_write_failed("copy")
            return False
        lock = self._locks.setdefault(model_id, asyncio.Lock())
        try:
            async with lock:
                await operations.write_copy(self.registry, model_id, self.pod_id, lambda: self.desired(model_id),
                                            extra=extra, failure=failure)
        except RegistryError as exc:
            self.unsynced.add(model_id)
            self.metrics.registry_write_failed("copy")
            log.warning("could not record the copy of %s (%s); reconciliation will retry", model_id, exc)
            return False
        self.unsynced.discard(model_id)
        return True

    async def event(self, ev: Event) -> None:
        ev.pod = ev.pod or self.pod_id
        if not self.registry_ok():
            self.metrics.registry_write_failed("event")
            log.warning("event not recorded (etcd away): %s %s %s", ev.kind, ev.model, ev.reason)
            return
        try:
            await self.registry.add_event(ev)
        except RegistryError as exc:
            self.metrics.registry_write_failed("event")
            log.warning("event not recorded (%s): %s %s %s", exc, ev.kind, ev.model, ev.reason)

    async def reconcile(self) -> int:
        """Make the registry's record of this pod's copies equal its sessions. Returns the number
        of models repaired."""
        repaired = 0
        for model_id in dict.fromkeys(self.drifted()):
            lock = self._locks.get(model_id)
            if lock is not None and lock.locked():
                continue  # a write is under way; it carries the truth
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

    async def _record(self, model_id: str) -> ModelRecord:
        rec = self.view.models.get(model_id)
        if rec is None:
            try:
                rec = await self.registry.get_model(model_id)
            except RegistryError as exc:
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(model_id)} is not registered")
        return rec

    async def _load(self, model_id: str, fut: asyncio.Future[ModelSession], purpose: str) -> None:
        t0 = time.perf_counter()
        sess: ModelSession | None = None
        try:
            async with asyncio.timeout(self.settings.load_timeout_s):
                async with self._load_sem:
                    self.metrics.loading_queue_delay((time.perf_counter() - t0) * 1000, model_id)
                    rec, cfg, head, predicted = await self._prepare(model_id)
                    self._begin(model_id, rec, predicted, purpose)
                    await self.sync(model_id)
                    await self.event(Event("load", model=model_id, size=predicted, reason=f"{rec.key}:{rec.path}"))
                    sess = await self._fetch_and_load(model_id, rec, cfg, head)
            if model_id not in self.cache:
                raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(model_id)} was unregistered while loading")
            self._admit(model_id, sess, purpose)
        except BaseException as exc:
            err = load_error(model_id, self.pod_id, exc, timeout_s=self.settings.load_timeout_s)
            await self._fail(model_id, err, sess)
            if not fut.done():
                fut.set_exception(err)
                fut.exception()  # retrieved: nobody may be waiting any more
            if isinstance(exc, asyncio.CancelledError):
                raise
            return
        finally:
            self.ready.pop(model_id, None)
            self.changed()
        ms = (time.perf_counter() - t0) * 1000
        self.metrics.load(ms, model_id, sess.size)
        io = {"inputs": [[s.name, s.datatype, s.shape] for s in sess.inputs.values()],
              "outputs": [[s.name, s.datatype, s.shape] for s in sess.outputs.values()]}
        size, file_size = sess.size, sess.file_size

        def learned(m: ModelRecord) -> None:
            m.size, m.file_size, m.io = size, file_size, io
            m.failed.pop(self.pod_id, None)

        # The registry learns of the copy before anyone is answered from it, so a client that
        # asks any pod right after gets the same picture.
        try:
            await self.sync(model_id, extra=learned)
        finally:
            fut.set_result(sess)
        self.note("loads")
        await self.event(Event("loaded", model=model_id, size=sess.size, reason=f"from {sess.source} in {ms:.0f} ms"))
        log.info("loaded %s (%d bytes, from %s, %.0f ms)", model_id, sess.size, sess.source, ms)
        self.tasks.pop(model_id, None)

    async def _fetch_and_load(self, model_id: str, rec: ModelRecord, cfg: Any, head: Any) -> ModelSession:
        """The model's file from storage (through the disk cache), then a session of it. A disk
        cache that cannot be written is passed by (a warning event, once per fault)."""
        warnings: list[str] = []
        path, source = await asyncio.to_thread(storage.fetch_model_file, cfg, rec.path, self.disk_cache, head,
                                               warnings.append)
        load = self.loader or functools.partial(runtimes.load, rec.type, settings=self.settings)
        try:
            return await asyncio.to_thread(load, model_id, path, intra_threads=self.settings.intra_threads,
                                           source=source)
        finally:
            storage.release_model_file(path)  # a scratch download only; cache entries stay
            fault = self.disk_cache.fault
            if warnings and fault != self._cache_fault_told:
                self._cache_fault_told = fault
                log.warning("%s", warnings[0])
                await self.event(Event("pod", model=model_id, reason=warnings[0]))
            elif not fault:
                self._cache_fault_told = None

    async def _prepare(self, model_id: str) -> tuple[ModelRecord, Any, Any, int]:
        rec = await self._record(model_id)
        cfg = self.view.storage.get(rec.key)
        if cfg is None:
            try:
                cfg = await self.registry.get_storage(rec.key)
            except RegistryError as exc:
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
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

    def _begin(self, model_id: str, rec: ModelRecord, predicted: int, purpose: str) -> None:
        """(none) -> LOADING: reserve the predicted size (at most the whole cache)."""
        reserve = min(predicted, self.cache.capacity)
        if purpose != Purpose.REQUEST and self.cache.free < reserve:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                            f"no free space for a planned load of {model_id} on {self.pod_id} "
                            f"({format_size(reserve)} needed, {format_size(self.cache.free)} free)")
        if purpose == Purpose.REQUEST:
            self._make_room(model_id, reserve)
        self.cache.add(model_id, reserve, time.time() * 1000, loading=True, pinned=rec.pinned)
        self._since[model_id] = now_ms()

    def _admit(self, model_id: str, sess: ModelSession, purpose: str) -> None:
        """LOADING -> LOADED, charging the measured size; a copy that cannot fit is refused."""
        if sess.size > self.cache.capacity:
            raise TooBig(sess.size, self.cache.capacity, "measured")
        self.cache.resize(model_id, sess.size)
        if self.cache.used > self.cache.capacity:
            if purpose != Purpose.REQUEST:
                raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                                f"planned load of {model_id} measured {format_size(sess.size)}, more than the free "
                                f"space on {self.pod_id}; not evicting for it")
            try:
                self._make_room(model_id, 0)
            except NoRoom as exc:
                raise MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                f"cannot load {model_id} on {self.pod_id}: needs {format_size(sess.size)}, "
                                f"{format_size(exc.evictable)} can be freed of capacity "
                                f"{format_size(self.cache.capacity)}", load_failed=True) from None
        entry = self.cache.get(model_id)
        assert entry is not None
        entry.loading = False
        self.sessions[model_id] = sess
        self._since[model_id] = now_ms()
        self.failures.pop(model_id, None)

    async def _fail(self, model_id: str, err: MeshError, sess: ModelSession | None) -> None:
        """LOADING -> (none): give back the reservation; record a failure when it was the model's."""
        self.cache.remove(model_id)
        self.sessions.pop(model_id, None)
        self._since.pop(model_id, None)
        self.tasks.pop(model_id, None)
        del sess  # the session (if any) is dropped with its memory
        if err.load_failed:
            failure = FailureInfo(now_ms(), err.message, needs=err.needs, capacity=err.capacity)
            self.failures[model_id] = failure
            needs = failure.needs

            def size(m: ModelRecord) -> None:
                if needs:
                    m.size = max(m.size, needs)  # placement learns it does not fit here

            await self.sync(model_id, failure=failure, extra=size)
            self.note("failures")
            self.metrics.load_failed(model_id)
            await self.event(Event("load-failed", model=model_id, reason=err.message))
            log.warning("%s", err.message)
        else:
            await self.sync(model_id)

    # -- evicting and unloading --------------------------------------------------------------------

    def _make_room(self, model_id: str, size: int) -> None:
        """LOADED -> (none) for the lowest-weight copies until ``size`` more bytes fit. Victims
        leave the cache at once (no await in between, so no request can pick one); their registry
        writes and events follow in the background."""
        victims = self.cache.plan_admission(size, exclude=model_id, key=self.weight)
        for v in victims:
            weight = self.weight(v)
            self.cache.remove(v.model_id)
            self.sessions.pop(v.model_id, None)
            self._since.pop(v.model_id, None)
            self.metrics.eviction(now_ms() - v.last_used_ms, v.model_id)
            self.note("evictions")
            why = f"last used {format_age(v.last_used_ms, now_ms())}, {weight:.1f} recent requests"
            reason = f"evicted for {model_id}, {why}" if size else \
                f"evicted for {model_id} (it measured more than predicted), {why}"
            log.info("evicted %s (%d bytes): %s", v.model_id, v.size, reason)
            asyncio.get_running_loop().create_task(self._after_evict(v, reason), name=f"evicted {v.model_id}")
        if victims:
            self.changed()

    async def _after_evict(self, entry: CacheEntry, reason: str) -> None:
        await self.sync(entry.model_id)
        await self.event(Event("evict", model=entry.model_id, size=entry.size, reason=reason))

    async def forget(self, model_id: str) -> None:
        """The model was unregistered: a load in progress is abandoned, a copy unloaded."""
        entry = self.cache.get(model_id)
        if entry is None:
            return
        if entry.loading:
            self.cache.remove(model_id)  # the load sees this and fails as "unregistered while loading"
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
        self.cache.remove(model_id)
        self.sessions.pop(model_id, None)
        self._since.pop(model_id, None)
        self.changed()
        self.note("unloads")
        await self.sync(model_id)
        await self.event(Event("unload", model=model_id, size=entry.size, reason=reason))
        return True

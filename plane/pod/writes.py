"""A pod's registry writes about its copies, kept off the request path.

A copy's entry is never written from a remembered intent: each write computes the local truth
(``desired(model_id)``) inside its compare-and-swap, under a per-model lock, so however writes
interleave the last one to land carries the current state. :meth:`CopyWrites.write` queues a write
and returns at once: writes asked for while one is in flight for the same model are folded into
the next one (their extra changes applied together), so a load that finishes while its LOADING
write is still on the wire costs one more write, not two. Events go to the log in the order they
happened, from one queue, stamped with the time they happened rather than the time they were
written. A write that fails is logged, counted, and left to reconciliation (``unsynced``).
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plane import operations
from plane.records import CopyInfo, Event, FailureInfo, ModelRecord, RegistryError, now_ms

__all__ = ["CopyWrites"]

log = logging.getLogger("mesh.pod.copies")

Extra = Callable[[ModelRecord], None]


@dataclass
class _Queued:
    done: asyncio.Future[bool]
    extras: list[Extra] = field(default_factory=list)
    failure: FailureInfo | None = None


class CopyWrites:
    def __init__(self, *, pod_id: str, registry: Any, metrics: Any, desired: Callable[[str], CopyInfo | None],
                 registry_ok: Callable[[], bool]):
        self.pod_id = pod_id
        self.registry = registry
        self.metrics = metrics
        self.desired = desired
        self.registry_ok = registry_ok  # False while etcd does not answer: skip writes, repair later
        self.unsynced: set[str] = set()  # entries a write could not record: reconciliation repairs them
        self._locks: dict[str, asyncio.Lock] = {}
        self._queued: dict[str, _Queued] = {}
        self._writers: dict[str, asyncio.Task[None]] = {}
        self._events: deque[tuple[Event, asyncio.Future[None]]] = deque()
        self._event_writer: asyncio.Task[None] | None = None

    def busy(self, model_id: str) -> bool:
        """A write for the model is queued or under way (it will carry the truth)."""
        lock = self._locks.get(model_id)
        return model_id in self._writers or (lock is not None and lock.locked())

    async def sync(self, model_id: str, *, extra: Extra | None = None, failure: FailureInfo | None = None) -> bool:
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

    def write(self, model_id: str, *, extra: Extra | None = None,
              failure: FailureInfo | None = None) -> asyncio.Future[bool]:
        """Queue a write of the entry (with ``extra`` changes and a ``failure`` to record). The
        future tells when a write carrying the state as of now has landed (True) or failed."""
        queued = self._queued.get(model_id)
        if queued is None:
            queued = self._queued[model_id] = _Queued(asyncio.get_running_loop().create_future())
        if extra is not None:
            queued.extras.append(extra)
        if failure is not None:
            queued.failure = failure
        if model_id not in self._writers:
            self._writers[model_id] = asyncio.get_running_loop().create_task(self._drain(model_id),
                                                                             name=f"record {model_id}")
        return queued.done

    async def _drain(self, model_id: str) -> None:
        queued: _Queued | None = None
        try:
            while (queued := self._queued.pop(model_id, None)) is not None:
                extras = queued.extras

                def apply(m: ModelRecord, extras: list[Extra] = extras) -> None:
                    for fn in extras:
                        fn(m)

                try:
                    ok = await self.sync(model_id, extra=apply if extras else None, failure=queued.failure)
                except Exception:  # noqa: BLE001 - a bug: logged; reconciliation repairs the entry
                    log.exception("writing the copy of %s failed", model_id)
                    self.unsynced.add(model_id)
                    ok = False
                if not queued.done.done():
                    queued.done.set_result(ok)
        finally:
            self._writers.pop(model_id, None)
            for left in (queued, self._queued.pop(model_id, None)):
                if left is not None and not left.done.done():
                    left.done.set_result(False)  # cancelled (the pod is stopping)

    def event(self, ev: Event) -> asyncio.Future[None]:
        """Queue an event for the log, stamped now; the future tells when it was written (or given
        up: etcd away)."""
        ev.pod = ev.pod or self.pod_id
        ev.time_ms = ev.time_ms or now_ms()
        done: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self._events.append((ev, done))
        if self._event_writer is None:
            self._event_writer = asyncio.get_running_loop().create_task(self._drain_events(), name="record events")
        return done

    async def _drain_events(self) -> None:
        try:
            while self._events:
                ev, done = self._events.popleft()
                try:
                    await self._add_event(ev)
                except Exception:  # noqa: BLE001 - a bug: logged, the next events still go out
                    log.exception("event not recorded: %s %s", ev.kind, ev.model)
                finally:
                    if not done.done():
                        done.set_result(None)
        finally:
            self._event_writer = None
            while self._events:  # only when cancelled (the pod is stopping): nobody should wait for them
                _, done = self._events.popleft()
                if not done.done():
                    done.set_result(None)

    async def _add_event(self, ev: Event) -> None:
        if not self.registry_ok():
            self.metrics.registry_write_failed("event")
            log.warning("event not recorded (etcd away): %s %s %s", ev.kind, ev.model, ev.reason)
            return
        try:
            await self.registry.add_event(ev)
        except RegistryError as exc:
            self.metrics.registry_write_failed("event")
            log.warning("event not recorded (%s): %s %s %s", exc, ev.kind, ev.model, ev.reason)

    async def idle(self) -> None:
        """Wait until every queued write and event has landed (or failed)."""
        while self._writers or self._event_writer is not None:
            await asyncio.gather(*self._writers.values(), *([self._event_writer] if self._event_writer else []),
                                 return_exceptions=True)

"""Room for a load, and a slot to build it in.

:class:`Capacity` keeps the pod's hard invariant: the bytes charged in the cache never exceed its
capacity, at any await. A load reserves its expected size (the size measured at an earlier load,
else the prediction from its file size) before it fetches anything, evicting the lowest-weight
copies for a request's load; once the session is measured the reservation is corrected, evicting
more if it grew. Loads run side by side as far as that accounting allows: a load that finds the
room it needs held by other loads still in progress waits until one of them settles (bounded by
the load timeout), rather than failing; a load whose room could never appear fails at once. Loads
waiting to settle are not counted as room to come, so two of them never wait for each other.

:class:`LoadSlots` are where sessions get built: ``max_concurrent_loads`` at a time, on a thread
pool of their own, so a queue of loads never delays the worker threads that serve large requests
and slow models. Only the build holds a slot: fetching the file, registry writes and events do not.
A slot is given back when the build's thread finishes, not when its waiter gives up, so a
timed-out load cannot let more builds run than there are slots.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any, TypeVar

import grpc

from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.pod.errors import MeshError, Purpose
from plane.pod.load_errors import TooBig
from plane.settings import format_size

__all__ = ["Capacity", "LoadSlots"]

T = TypeVar("T")

#: (victim, the model it made room for, its weight, whether the room was for a measured size
#: larger than the reservation). Called after the victim left the cache.
Evicted = Callable[[CacheEntry, str, float, bool], None]


class Capacity:
    """Reservations in the cache (``cache.used <= cache.capacity`` always)."""

    def __init__(self, cache: WeightedLRU, *, pod_id: str, weight: Callable[[CacheEntry], float], evicted: Evicted):
        self.cache = cache
        self.pod_id = pod_id
        self.weight = weight
        self.evicted = evicted
        self._settling: set[str] = set()  # measured loads waiting for room: not room to come
        self._room: asyncio.Future[None] | None = None

    # -- waiting for room ---------------------------------------------------------------------------

    def notify(self) -> None:
        """Room may have appeared (a load settled or failed, a copy left): waiters look again."""
        if self._room is not None and not self._room.done():
            self._room.set_result(None)
        self._room = None

    async def _wait(self) -> None:
        if self._room is None:
            self._room = asyncio.get_running_loop().create_future()
        await asyncio.shield(self._room)

    def _coming(self, model_id: str, *, settling: bool = False) -> int:
        """Bytes reserved by other loads still building (with ``settling``: by any other load)."""
        return sum(e.size for e in self.cache.entries() if e.loading and e.model_id != model_id
                   and (settling or e.model_id not in self._settling))

    # -- the transitions ------------------------------------------------------------------------------

    async def reserve(self, model_id: str, size: int, *, purpose: str, pinned: bool) -> int:
        """(none) -> LOADING: charge ``size`` (at most the whole cache) before the load starts.
        Only a request's load evicts; a planned one uses free space or fails. Returns the bytes
        reserved."""
        size = min(size, self.cache.capacity)
        while True:
            if purpose != Purpose.REQUEST:
                if self.cache.free < size:
                    raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"no free space for a planned load of {model_id} on {self.pod_id} "
                                    f"({format_size(size)} needed, {format_size(self.cache.free)} free)")
                break
            try:
                self.make_room(model_id, size)
                break
            except NoRoom as exc:
                coming = self._coming(model_id)
                if not coming or exc.evictable + coming < size:
                    raise
            await self._wait()
        self.cache.add(model_id, size, time.time() * 1000, loading=True, pinned=pinned)
        return size

    async def settle(self, model_id: str, measured: int, *, purpose: str) -> bool:
        """LOADING -> LOADED: charge the measured size instead of the reservation. False when the
        reservation is gone (the model was unregistered while loading). A copy that cannot fit
        raises (a load failure of the model when no other load holds the room it would need)."""
        if measured > self.cache.capacity:
            raise TooBig(measured, self.cache.capacity, "measured")
        try:
            while True:
                entry = self.cache.get(model_id)
                if entry is None or not entry.loading:
                    return False
                grow = measured - entry.size
                if grow <= self.cache.free:
                    break
                if purpose != Purpose.REQUEST:
                    raise MeshError(grpc.StatusCode.FAILED_PRECONDITION,
                                    f"planned load of {model_id} measured {format_size(measured)}, more than the "
                                    f"free space on {self.pod_id}; not evicting for it")
                try:
                    self.make_room(model_id, grow, grew=True)
                    break
                except NoRoom as exc:
                    if not self._coming(model_id) or exc.evictable + self._coming(model_id) < grow:
                        held = exc.evictable + self._coming(model_id, settling=True) >= grow
                        raise MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                                        f"cannot load {model_id} on {self.pod_id}: needs {format_size(measured)}, "
                                        + (f"the rest of the room is held by other loads in progress (capacity "
                                           f"{format_size(self.cache.capacity)})" if held else
                                           f"{format_size(exc.evictable)} can be freed of capacity "
                                           f"{format_size(self.cache.capacity)}"), load_failed=not held) from None
                self._settling.add(model_id)
                await self._wait()
        finally:
            self._settling.discard(model_id)
        self.cache.resize(model_id, measured)
        entry.loading = False
        self.notify()
        return True

    def release(self, model_id: str) -> CacheEntry | None:
        """Take a copy (or a reservation) out of the cache."""
        entry = self.cache.remove(model_id)
        if entry is not None:
            self.notify()
        return entry

    def make_room(self, model_id: str, size: int, *, grew: bool = False) -> None:
        """LOADED -> (none) for the lowest-weight copies until ``size`` more bytes fit (NoRoom when
        they cannot). Victims leave the cache at once, with no await in between, so no request can
        pick one; ``evicted`` records each."""
        victims = self.cache.plan_admission(size, exclude=model_id, key=self.weight)
        for v in victims:
            weight = self.weight(v)
            self.cache.remove(v.model_id)
            self.evicted(v, model_id, weight, grew)


class LoadSlots:
    """``slots`` session builds at a time, on threads of their own."""

    def __init__(self, slots: int, metrics: Any):
        self.slots = max(1, slots)
        self.metrics = metrics
        self._sem = asyncio.Semaphore(self.slots)
        self._pool = ThreadPoolExecutor(self.slots, thread_name_prefix="mesh-load")

    def run_inline(self, model_id: str, build: Callable[[], T]) -> T:
        """Run ``build`` right here, on the event loop, without a slot (quick rebuilds of a known
        file, which must not wait: ``build`` raises rather than wait for a measured build)."""
        self.metrics.loading_queue_delay(0.0, model_id)
        return build()

    async def run(self, model_id: str, build: Callable[[], T]) -> T:
        """Wait for a slot (the wait is ``modelmesh_loading_queue_delay_milliseconds``), then run
        ``build`` on the slots' pool."""
        t0 = time.perf_counter()
        await self._sem.acquire()
        self.metrics.loading_queue_delay((time.perf_counter() - t0) * 1000, model_id)
        loop = asyncio.get_running_loop()
        try:
            done: Future[T] = self._pool.submit(build)
        except BaseException:
            self._sem.release()
            raise

        def give_back(_: Future[T]) -> None:
            try:
                loop.call_soon_threadsafe(self._sem.release)
            except RuntimeError:  # the loop closed (the pod stopped): nothing waits for the slot
                pass

        done.add_done_callback(give_back)
        return await asyncio.wrap_future(done, loop=loop)

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)

"""Following the registry: one consistent read, then an etcd watch from that revision.

:func:`follow` runs on the :class:`~plane.api.PlaneClient`'s event loop (the console's
thread worker waits on it) and hands batches of parsed changes to a callback. A watch
alone does not notice a dead etcd quickly, so it also asks etcd for its revision every
few seconds; when that fails it raises :class:`~plane.registry.EtcdUnavailable` and the
console reconnects.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
import time
from collections.abc import Callable

from console.state import Change, PlaneState, parse_change
from plane.registry import EtcdUnavailable, Registry

__all__ = ["read_state", "follow", "BATCH_S", "HEARTBEAT_S", "HEARTBEAT_TIMEOUT_S"]

BATCH_S = 0.1  # changes arriving within this window reach the UI as one batch
POLL_STOP_S = 0.25  # how soon a stop request is noticed
HEARTBEAT_S = 2.0  # how often etcd is asked whether it is still there
HEARTBEAT_TIMEOUT_S = 3.0


async def read_state(registry: Registry) -> PlaneState:
    tables, revision = await registry.snapshot_with_revision()
    return PlaneState.from_tables(tables, revision)


async def follow(registry: Registry, start_revision: int, emit: Callable[[list[Change]], None],
                 stop: threading.Event) -> None:
    """Watch from ``start_revision`` until ``stop`` is set; raise when etcd goes away."""
    queue: asyncio.Queue[Change | None] = asyncio.Queue()

    async def pump() -> None:
        async for table, name, value, _rev in registry.watch(start_revision=start_revision):
            change = parse_change(table, name, value)
            if change is not None:
                queue.put_nowait(change)
        raise EtcdUnavailable("the etcd watch ended")

    task = asyncio.create_task(pump())
    last_beat = time.monotonic()
    try:
        while not stop.is_set():
            batch: list[Change] = []
            with contextlib.suppress(TimeoutError):
                first = await asyncio.wait_for(queue.get(), POLL_STOP_S)
                if first is not None:
                    batch.append(first)
                await asyncio.sleep(BATCH_S)
            while not queue.empty():
                item = queue.get_nowait()
                if item is not None:
                    batch.append(item)
            if batch:
                emit(batch)
            if task.done():
                task.result()  # re-raises what ended the watch
                raise EtcdUnavailable("the etcd watch ended")
            if time.monotonic() - last_beat >= HEARTBEAT_S:
                try:
                    await asyncio.wait_for(registry.revision(), HEARTBEAT_TIMEOUT_S)
                except TimeoutError as exc:
                    raise EtcdUnavailable(f"etcd at {registry.endpoint} stopped answering") from exc
                last_beat = time.monotonic()
    finally:
        task.cancel()
        with contextlib.suppress(BaseException):
            await task

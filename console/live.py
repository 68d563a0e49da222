"""Following the registry: one consistent read, the history, then an etcd watch.

:func:`read_history` reads the event log and the last hour of the pods' per-minute stats
through the :class:`~plane.api.PlaneClient` right after the registry, so a console opened
after an hour of traffic shows that hour; the watch then starts from the registry read's
revision (events written meanwhile arrive twice and count once: they are keyed).

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

from console.messages import HistoryLoaded
from console.state import STATS_WINDOW_MS, Change, PlaneState, parse_change
from plane.api import PlaneClient
from plane.registry import EtcdUnavailable, Registry

__all__ = ["read_state", "read_history", "follow", "BATCH_S", "HEARTBEAT_S", "HEARTBEAT_TIMEOUT_S"]

BATCH_S = 0.1  # changes arriving within this window reach the UI as one batch
POLL_STOP_S = 0.25  # how soon a stop request is noticed
HEARTBEAT_S = 2.0  # how often etcd is asked whether it is still there
HEARTBEAT_TIMEOUT_S = 3.0


async def read_state(registry: Registry) -> PlaneState:
    tables, revision = await registry.snapshot_with_revision()
    state = PlaneState.from_tables(tables, revision)
    state.history_pending = True  # the event log and the stats are read next (read_history)
    return state


def read_history(client: PlaneClient, now_ms: int) -> HistoryLoaded:
    """The whole event log (the app keeps its newest entries and counts all of them) and the
    per-minute stats of the last hour. Never raises: a failure is reported in the message."""
    try:
        events = client.events(limit=0)
        stats = client.stats(since_ms=now_ms - STATS_WINDOW_MS)
    except Exception as exc:  # noqa: BLE001 - shown in the views, the watch still starts
        return HistoryLoaded([], [], f"{type(exc).__name__}: {exc}")
    return HistoryLoaded(events, stats)


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

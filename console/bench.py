"""How the console copes with a big plane (``python -m console.bench``).

Builds an in-memory plane of N models (default 10,000) on P pods (default 20), a full event
log (5,000 events, of which the console keeps the newest 1,000) and an hour of per-minute
stats, then runs the app headless and feeds it the way the plane worker does (the registry
read, then the history, then watch batches and stats polls), timing what an operator waits
for: the first paint, each view's first rows and full fill, the cost of a refresh (a watch
batch of changed models, a full pass with nothing changed, the periodic pass when every
relative time has moved on) and the longest UI freeze (event-loop lag, sampled every 5 ms,
while all of it runs). What the worker thread does off the UI (parsing the registry) is timed
apart. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import inspect
import random
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from console.app import MeshConsole
from console.messages import HistoryLoaded, PlaneChanged, PlaneConnected, StatsUpdated
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen
from console.state import Change, PlaneState
from console.widgets.keyed_table import KeyedTable
from plane.registry import CopyInfo, Event, InstanceRecord, ModelRecord
from plane.stats import MINUTE_MS, StatsRecord, minute_of

__all__ = ["build_state", "build_history", "run", "main", "Row"]

NOW_MS = 1_790_000_000_000
MIB = 1024**2
LOG_EVENTS = 5000
PROBE_S = 0.005


@dataclass
class Row:
    what: str
    elapsed_ms: float = 0.0
    first_ms: float | None = None  # first rows painted, for fills
    freeze_ms: float = 0.0  # the longest event-loop lag during the step
    note: bool = False  # a line of text, no figures


def build_state(n_models: int, n_pods: int, *, placed: float = 0.3, seed: int = 7) -> PlaneState:
    rng = random.Random(seed)
    pods = [f"pod-{i}" for i in range(n_pods)]
    changes: list[Change] = []
    for i in range(n_models):
        copies = {}
        if rng.random() < placed:
            for pod in rng.sample(pods, k=rng.choice((1, 1, 2))):
                copies[pod] = CopyInfo("loaded", NOW_MS - rng.randint(5, 3600) * 1000, 4 * MIB)
        # one model in ten never used; the others last used up to an hour ago, reported by a pod then
        used = 0 if rng.random() < 0.1 else NOW_MS - rng.randint(0, 3600_000)
        rpm = round(rng.random() * 50, 2) if used else 0.0
        m = ModelRecord(model_id=f"model-{i:05d}", path=f"m/{i}.onnx", size=rng.randint(1, 64) * MIB,
                        last_used_ms=used or NOW_MS - 6 * 3600_000, used_ms=used, copies=copies, rpm=rpm,
                        pod_rpm={next(iter(copies), pods[i % n_pods]): [rpm, used]} if used else {})
        changes.append(Change("models", m.model_id, m))
    for pod in pods:
        changes.append(Change("instances", pod, InstanceRecord(pod, "127.0.0.1:1", capacity=4096 * MIB)))
    state = PlaneState.from_changes(changes)
    state.history_pending = True  # as the registry read leaves it
    return state


def build_history(n_models: int, n_pods: int, *, seed: int = 8) -> tuple[list[Event], list[StatsRecord]]:
    """A full event log (oldest first) and an hour of every pod's minutes."""
    rng = random.Random(seed)
    events = []
    for i in range(LOG_EVENTS):
        t = NOW_MS - (LOG_EVENTS - i) * 700
        ev = Event(rng.choice(("loaded", "evict", "load", "unload")), model=f"model-{rng.randrange(n_models):05d}",
                   pod=f"pod-{rng.randrange(n_pods)}", size=4 * MIB, reason="bench", time_ms=t)
        ev.key = f"{t * 1000 + i % 1000:020d}-{ev.pod}"
        events.append(ev)
    stats = [StatsRecord(f"pod-{p}", minute_of(NOW_MS) - k * MINUTE_MS,
                         {"loads": rng.randint(0, 9), "evictions": rng.randint(0, 5), "requests": rng.randint(0, 900)})
             for k in range(60) for p in range(n_pods)]
    return events, stats


def _changed_batch(state: PlaneState, size: int, seed: int) -> list[Change]:
    """``size`` models whose copies moved (as a burst of loads/evictions would do)."""
    rng = random.Random(seed)
    pods = sorted(state.pods)
    out = []
    for mid in rng.sample(sorted(state.models), size):
        m = ModelRecord.from_json(state.models[mid].to_json())
        if m.copies:
            m.copies.clear()
        else:
            m.copies[rng.choice(pods)] = CopyInfo("loaded", NOW_MS, 4 * MIB)
        m.last_used_ms = m.used_ms = NOW_MS
        out.append(Change("models", mid, m))
    return out


class LagProbe:
    """Samples the event loop's lag every 5 ms for the whole run; any window's worst is asked."""

    def __init__(self) -> None:
        self.samples: list[tuple[float, float]] = []  # (when the sample ended, lag in s)
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(PROBE_S)
            t1 = time.perf_counter()
            self.samples.append((t1, t1 - t0 - PROBE_S))

    def start(self) -> None:
        self._task = asyncio.get_running_loop().create_task(self._probe())

    def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()

    def worst_ms(self, since: float = 0.0, until: float = float("inf")) -> float:
        """The longest lag inside the window (a lag that began before it counts from its start)."""
        return max((min(lag, t - since) for t, lag in self.samples if since <= t <= until + PROBE_S),
                   default=0.0) * 1000


def _time_worker_parse(state: PlaneState) -> float:
    """What the plane worker spends parsing the registry read (off the UI thread)."""
    tables = {"models": [(m.model_id, m.to_json()) for m in state.models.values()],
              "instances": [(p.pod_id, p.to_json()) for p in state.pods.values()]}
    t0 = time.perf_counter()
    PlaneState.from_tables(tables)
    return (time.perf_counter() - t0) * 1000


async def run(n_models: int = 10_000, n_pods: int = 20, batch: int = 200) -> list[Row]:
    state = build_state(n_models, n_pods)
    events, stats = build_history(n_models, n_pods)
    clock = [NOW_MS]
    rows: list[Row] = [Row(f"worker: parse {n_models:,} models read from etcd (off the UI thread)",
                           _time_worker_parse(state))]
    probe = LagProbe()
    probe.start()
    t_start = time.perf_counter()
    app = MeshConsole(state=PlaneState(), clock=lambda: clock[0], tz=dt.UTC, start_view="overview")
    try:
        async with app.run_test(size=(160, 48)) as pilot:
            await pilot.pause()
            rows.append(Row("app start -> first frame (connecting)", (time.perf_counter() - t_start) * 1000,
                            freeze_ms=probe.worst_ms(t_start)))

            async def measure(label: str, action: Callable[[], Awaitable[None] | object],
                              table: Callable[[], KeyedTable | None] | None = None) -> Row:
                before = table() if table is not None else None
                fresh = before is None or not before.row_count  # a fill: when do its first rows show?
                t0 = time.perf_counter()
                first: list[float] = []

                async def watch_first() -> None:  # runs beside the action (a key press returns late)
                    while table is not None and fresh:
                        t = table()
                        if t is not None and t.row_count:
                            first.append((time.perf_counter() - t0) * 1000)
                            return
                        await asyncio.sleep(PROBE_S)

                watcher = asyncio.get_running_loop().create_task(watch_first())
                out = action()
                if inspect.isawaitable(out):
                    await out
                await pilot.pause()
                while table is not None:
                    t = table()
                    if t is not None and not t.filling and (t.row_count or not fresh):
                        break
                    await pilot.pause(0.005)
                await pilot.pause()
                watcher.cancel()
                t1 = time.perf_counter()
                row = Row(label, (t1 - t0) * 1000, first[0] if first else None, probe.worst_ms(t0, t1))
                rows.append(row)
                return row

            def view_table(wid: str) -> Callable[[], KeyedTable | None]:
                def get() -> KeyedTable | None:
                    found = app.screen.query(f"#{wid}")
                    return found.first(KeyedTable) if found else None
                return get

            def tick(seconds: int) -> None:
                clock[0] += seconds * 1000

            connected = await measure(f"registry in ({n_models:,} models, {n_pods} pods) -> Overview drawn",
                                      lambda: app.post_message(PlaneConnected("bench:2379", state)))
            history = await measure(f"history in ({LOG_EVENTS:,}-event log, {len(stats):,} stat minutes) -> drawn",
                                    lambda: app.post_message(HistoryLoaded(events, stats)))
            assert app.state.events_in_log == LOG_EVENTS and len(app.state.models) == n_models
            rows.insert(1, Row("time to first paint (start -> Overview with the registry and the hour)",
                               rows[1].elapsed_ms + connected.elapsed_ms + history.elapsed_ms,
                               freeze_ms=max(rows[1].freeze_ms, connected.freeze_ms, history.freeze_ms)))
            current = [StatsRecord(f"pod-{p}", minute_of(NOW_MS), {"loads": 50, "requests": 2000})
                       for p in range(n_pods)]
            await measure("overview: stats poll (20 pods' current minute) -> redrawn",
                          lambda: app.post_message(StatsUpdated(current)))

            await measure("models: open view, fill table", lambda: pilot.press("4"), view_table("models-table"))
            models = app.screen
            assert isinstance(models, ModelsScreen) and models.table.row_count == n_models
            await measure("models: full refresh, nothing changed", models.full_sync, view_table("models-table"))
            tick(10)
            await measure("models: periodic refresh, clock +10 s (times move)", models.full_sync,
                          view_table("models-table"))
            changes = _changed_batch(app.state, batch, 1)
            await measure(f"models: watch batch of {batch} changed models",
                          lambda: app.on_plane_changed(PlaneChanged(changes)), view_table("models-table"))
            await measure("models: sort by size", lambda: models.table.sort_by("size"), view_table("models-table"))

            await measure("placement: open view, fill matrix", lambda: pilot.press("6"),
                          view_table("placement-table"))
            placement = app.screen
            assert isinstance(placement, PlacementScreen)
            matrix_rows = placement.table.row_count
            await measure("placement: full refresh, nothing changed", placement.full_sync,
                          view_table("placement-table"))
            tick(10)
            await measure("placement: periodic refresh, clock +10 s (+ re-sort)", placement._tick,
                          view_table("placement-table"))
            changes = _changed_batch(app.state, batch, 2)
            await measure(f"placement: watch batch of {batch} changed models",
                          lambda: app.on_plane_changed(PlaneChanged(changes)), view_table("placement-table"))
            await measure("placement: sort cycle (activity -> size)", placement.action_sort,
                          view_table("placement-table"))
            await measure("placement: 20 cursor moves", lambda: pilot.press(*["down"] * 20),
                          view_table("placement-table"))
            await measure("pod view: open pod-0 (its copies, trends, events)", lambda: app.open_pod("pod-0"),
                          view_table("pod-copies"))
            pod = app.screen
            assert isinstance(pod, PodScreen)
            copies = pod.table.row_count
            changes = _changed_batch(app.state, batch, 3)
            await measure(f"pod view: watch batch of {batch} changed models",
                          lambda: app.on_plane_changed(PlaneChanged(changes)), view_table("pod-copies"))
            await measure("events: open view (1,000 of 5,000 events)", lambda: pilot.press("7"),
                          view_table("events-table"))
            rows.append(Row(f"(placement matrix: {matrix_rows:,} rows x {n_pods} pods; pod-0 holds {copies} copies)",
                            note=True))
            rows.append(Row("longest UI freeze over the whole run", freeze_ms=probe.worst_ms(t_start)))
    finally:
        probe.stop()
    return rows


def format_rows(rows: list[Row]) -> list[str]:
    out = [f"  {'':<74} {'elapsed':>9} {'first rows':>11} {'longest freeze':>15}"]
    for r in rows:
        if r.note:
            out.append(f"  {r.what}")
            continue
        elapsed = f"{r.elapsed_ms:6.0f} ms" if r.elapsed_ms else ""
        first = f"{r.first_ms:8.0f} ms" if r.first_ms is not None else ""
        out.append(f"  {r.what:<74} {elapsed:>9} {first:>11} {r.freeze_ms:12.0f} ms")
    return out


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--pods", type=int, default=20)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    rows = asyncio.run(run(args.models, args.pods, args.batch))
    print(f"mesh-console responsiveness, {args.models:,} models on {args.pods} pods")
    print("\n".join(format_rows(rows)))


if __name__ == "__main__":
    main()

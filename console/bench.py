"""How the Models and Placement views cope with many models (``python -m console.bench``).

Builds an in-memory plane of N models (default 10,000) on P pods, runs the app headless and
times, in the UI thread, what an operator would wait for: the first fill of each table, a
watch batch of changed models, a full re-sync with nothing changed (what the periodic
refresh costs), a filter keystroke and a sort. Prints a table; nothing is asserted.
"""

from __future__ import annotations

import argparse
import asyncio
import datetime as dt
import random
import time
from collections.abc import Awaitable, Callable

from console.app import MeshConsole
from console.messages import PlaneChanged
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from console.state import Change, PlaneState
from console.widgets.keyed_table import KeyedTable
from plane.registry import CopyInfo, InstanceRecord, ModelRecord

__all__ = ["build_state", "run", "main"]

NOW_MS = 1_790_000_000_000
MIB = 1024**2


def build_state(n_models: int, n_pods: int, *, placed: float = 0.3, seed: int = 7) -> PlaneState:
    rng = random.Random(seed)
    pods = [f"pod-{i}" for i in range(n_pods)]
    changes: list[Change] = []
    for i in range(n_models):
        copies = {}
        if rng.random() < placed:
            for pod in rng.sample(pods, k=rng.choice((1, 1, 2))):
                copies[pod] = CopyInfo("loaded", NOW_MS - 60_000, 4 * MIB)
        # one model in ten never used; the others last used up to an hour ago, reported by a pod then
        used = 0 if rng.random() < 0.1 else NOW_MS - rng.randint(0, 3600_000)
        rpm = round(rng.random() * 50, 2) if used else 0.0
        m = ModelRecord(model_id=f"model-{i:05d}", path=f"m/{i}.onnx", size=rng.randint(1, 64) * MIB,
                        last_used_ms=used or NOW_MS - 6 * 3600_000, used_ms=used, copies=copies, rpm=rpm,
                        pod_rpm={next(iter(copies), pods[i % n_pods]): [rpm, used]} if used else {})
        changes.append(Change("models", m.model_id, m))
    for pod in pods:
        changes.append(Change("instances", pod, InstanceRecord(pod, "127.0.0.1:1", capacity=4096 * MIB)))
    return PlaneState.from_changes(changes)


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


class StallMeter:
    """The longest time the event loop (the UI) did not get a turn, sampled every 5 ms."""

    def __init__(self) -> None:
        self.worst = 0.0
        self._task: asyncio.Task[None] | None = None

    async def _probe(self) -> None:
        while True:
            t0 = time.perf_counter()
            await asyncio.sleep(0.005)
            self.worst = max(self.worst, time.perf_counter() - t0 - 0.005)

    def start(self) -> None:
        self.worst = 0.0
        self._task = asyncio.get_running_loop().create_task(self._probe())

    def stop(self) -> float:
        if self._task is not None:
            self._task.cancel()
        return self.worst * 1000


async def run(n_models: int = 10_000, n_pods: int = 10, batch: int = 200) -> list[tuple[str, float, float]]:
    """Rows of (what, elapsed ms, longest UI stall ms)."""
    state = build_state(n_models, n_pods)
    app = MeshConsole(state=state, clock=lambda: NOW_MS, tz=dt.UTC, start_view="overview")
    results: list[tuple[str, float, float]] = []
    meter = StallMeter()

    async with app.run_test(size=(160, 48)) as pilot:

        async def measure(label: str, action: Callable[[], Awaitable[None] | None],
                          table: Callable[[], KeyedTable]) -> None:
            meter.start()
            t0 = time.perf_counter()
            out = action()
            if out is not None:
                await out
            await pilot.pause()
            while table().filling:
                await pilot.pause(0.01)
            await pilot.pause()
            elapsed = (time.perf_counter() - t0) * 1000
            results.append((label, elapsed, meter.stop()))

        def models_table() -> KeyedTable:
            return app.screen.query_one("#models-table", KeyedTable)

        def placement_table() -> KeyedTable:
            return app.screen.query_one("#placement-table", KeyedTable)

        await measure("models: open view, fill table", lambda: pilot.press("4"), models_table)
        models = app.screen
        assert isinstance(models, ModelsScreen)
        assert models.table.row_count == n_models, models.table.row_count
        await measure("models: re-sync, nothing changed (periodic)", models.full_sync, models_table)
        changes = _changed_batch(app.state, batch, 1)
        await measure(f"models: watch batch of {batch} changed models",
                      lambda: app.on_plane_changed(PlaneChanged(changes)), models_table)

        async def type_filter() -> None:
            await pilot.press("slash", *"model-01", "enter")

        await measure("models: filter /model-01 + enter (-> 1,000 rows)", type_filter, models_table)
        assert models.table.row_count == 1000, models.table.row_count
        await measure("models: esc clears filter (-> 10,000 rows)", lambda: pilot.press("escape"),
                      models_table)
        await measure("models: sort by size", lambda: models.table.sort_by("size"), models_table)
        await measure("models: 20 cursor moves", lambda: pilot.press(*["down"] * 20), models_table)
        await measure("placement: open view, fill matrix", lambda: pilot.press("6"), placement_table)
        placement = app.screen
        assert isinstance(placement, PlacementScreen)
        rows = placement.table.row_count
        await measure("placement: re-sync, nothing changed", placement.full_sync, placement_table)
        changes = _changed_batch(app.state, batch, 2)
        await measure(f"placement: watch batch of {batch} changed models",
                      lambda: app.on_plane_changed(PlaneChanged(changes)), placement_table)
        await measure("placement: 20 cursor moves", lambda: pilot.press(*["down"] * 20), placement_table)
        results.append((f"(placement matrix: {rows} rows x {n_pods} pods)", 0.0, 0.0))
    return results


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--models", type=int, default=10_000)
    parser.add_argument("--pods", type=int, default=10)
    parser.add_argument("--batch", type=int, default=200)
    args = parser.parse_args(argv)
    results = asyncio.run(run(args.models, args.pods, args.batch))
    print(f"mesh-console responsiveness, {args.models} models on {args.pods} pods")
    print(f"  {'':<50} {'elapsed':>10} {'longest UI stall':>18}")
    for label, ms, stall in results:
        print(f"  {label:<50} {ms:8.0f} ms {stall:15.0f} ms" if ms else f"  {label}")


if __name__ == "__main__":
    main()

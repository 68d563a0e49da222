"""What the console shows of a model's use: the rate now (decayed, 0 a minute after the last
request) and the time of the last real request ("never" for a model never used), not the
registry's internal eviction order (``last_used_ms``, set hours in the past at registration)."""

from __future__ import annotations

import io
import re

from rich.console import Console
from tests_console_support import SIZE, wait_for

from console.demo import DEMO_NOW_MS
from console.screens.models import MODEL_COLUMNS, ModelsScreen, model_details, model_row
from console.state import Change, PlaneState
from plane.registry import ModelRecord

NOW = DEMO_NOW_MS
MIN = 60_000
COLUMNS = [key for key, _ in MODEL_COLUMNS]


def records() -> list[ModelRecord]:
    return [
        # 239 req/min in its pod's last report, two minutes ago: idle since
        ModelRecord("idle-2m", last_used_ms=NOW - 2 * MIN, used_ms=NOW - 2 * MIN, rpm=239.0,
                    pod_rpm={"pod-0": [239.0, NOW - 2 * MIN]}),
        # as registration writes it: an eviction order 6 h in the past, no request ever
        ModelRecord("never-used", last_used_ms=NOW - 6 * 3600_000),
        # reported a second ago
        ModelRecord("busy", last_used_ms=NOW - 1000, used_ms=NOW - 1000, rpm=60.0,
                    pod_rpm={"pod-0": [60.0, NOW - 1000]}),
    ]


def shown(row: tuple) -> dict[str, str]:
    return {key: spec[0] for key, spec in zip(COLUMNS, row, strict=True)}


def test_rows_show_the_decayed_rate_and_never():
    idle, never, busy = records()
    assert shown(model_row(idle, NOW))["rate"] == "-"
    assert shown(model_row(idle, NOW))["last_used"] == "2m ago"
    assert shown(model_row(never, NOW))["last_used"] == "never"
    assert shown(model_row(never, NOW))["rate"] == "-"
    assert shown(model_row(busy, NOW))["rate"] == "59/min"  # 60/min reported 1 s ago
    assert shown(model_row(busy, NOW))["last_used"] == "1s ago"
    assert shown(model_row(busy, NOW + 2 * MIN))["rate"] == "-"  # two minutes later, idle


def test_details_show_the_same_numbers():
    idle, never, _ = records()
    console = Console(width=140, record=True, file=io.StringIO())
    for part in model_details(idle, NOW)[:1] + model_details(never, NOW)[:1]:
        console.print(part)
    rows = [re.split(r"\s{2,}", line.strip()) for line in console.export_text().splitlines()]
    assert [value for label, value in rows if label == "last used"] == ["2m ago", "never"]
    assert [value for label, value in rows if label == "rate"] == ["-", "-"]


async def test_models_view_decays_the_rate_and_sorts_never_used_as_oldest(demo_app):
    clock = [NOW]
    state = PlaneState.from_changes(Change("models", m.model_id, m) for m in records())
    app = demo_app(state=state, clock=lambda: clock[0], start_view="models")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        table = screen.table
        await wait_for(pilot, lambda: table.row_count == 3, what="the three models")

        def cells(key: str) -> dict[str, str]:
            spec = table.spec(key)
            assert spec is not None
            return shown(spec)

        assert cells("idle-2m")["rate"] == "-"
        assert cells("never-used")["last_used"] == "never"
        assert cells("busy")["rate"] == "59/min"

        table.sort_by("last_used")  # most recent first: never-used is the oldest
        order = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)]
        assert order == ["busy", "idle-2m", "never-used"]
        table.sort_by("last_used")
        order = [table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(3)]
        assert order == ["never-used", "idle-2m", "busy"]

        clock[0] = NOW + 2 * MIN  # the periodic pass redraws the decayed rate
        screen.full_sync()
        await pilot.pause()
        assert cells("busy")["rate"] == "-"
        assert cells("busy")["last_used"] == "2m ago"

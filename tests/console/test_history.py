"""History on open: a console started after traffic shows it. The event log and an hour of
the pods' per-minute stats are in etcd before the app starts; Events must show the newest
1,000 events and say how many the log holds, Overview must draw its counts and sparklines
from the stats, and both must stay true as the watch and the stats poll bring more."""

from __future__ import annotations

import asyncio

import pytest
from tests_console_support import SIZE, static_text, wait_for
from textual.widgets import Sparkline, Static

from console.app import MeshConsole
from console.screens.events import EventsScreen
from console.screens.overview import OverviewScreen
from console.state import Change, PlaneState
from plane.registry import Event, now_ms
from plane.stats import MINUTE_MS, StatsRecord, minute_of

LOGGED = 1234
PODS = ("pod-a", "pod-b")


def minute_stats(now: int) -> list[StatsRecord]:
    """An hour of two pods' minutes: loads k%3, an eviction every fifth minute, requests."""
    out = []
    for k in range(60):
        minute = minute_of(now) - k * MINUTE_MS
        for pod in PODS:
            out.append(StatsRecord(pod, minute, {"loads": k % 3, "evictions": int(k % 5 == 0),
                                                 "requests": 100 + k}))
    return out


def text_of(widget: Static) -> str:
    return static_text(widget)


def test_the_log_count_follows_puts_and_deletes_of_known_keys():
    state = PlaneState()
    events = []
    for i in range(10):
        ev = Event("loaded", model=f"m{i}", pod="p", time_ms=1000 + i)
        ev.key = f"{1000 + i:020d}-p"
        events.append(ev)
    state.history_pending = True
    state.load_history(events, [], now_ms=2000, keep=4)
    assert state.events_in_log == 10 and list(state.events) == [e.key for e in events[-4:]]
    assert not state.history_pending
    state.apply([Change("events", events[-1].key, events[-1])])  # the watch replays a known event
    assert state.events_in_log == 10
    state.apply([Change("events", events[0].key, None)])  # trimmed from the log, never held here
    assert state.events_in_log == 9 and len(state.events) == 4
    state.apply([Change("events", "never-seen", None)])  # deleted before the log was read
    assert state.events_in_log == 9
    new = Event("evict", model="m", pod="p", time_ms=3000)
    state.apply([Change("events", "00000000000000003000-p", new)])
    assert state.events_in_log == 10 and len(state.events) == 5


def test_stats_merge_replace_minutes_and_drop_the_old_ones():
    now = 1_790_000_000_000
    state = PlaneState()
    assert state.merge_stats(minute_stats(now), now) == 120
    assert state.merge_stats(minute_stats(now), now) == 0  # the same counts again: nothing changed
    assert sum(state.per_minute("loads", now)) == 2 * sum(k % 3 for k in range(60))
    assert state.per_minute("requests", now, pod="pod-a")[-1] == 100  # the current minute last
    later = now + 2 * 3600_000
    state.merge_stats([], later)
    assert not state.stats


@pytest.mark.slow
async def test_a_console_opened_after_traffic_shows_the_log_and_the_last_hour(settings, plane_client):
    now = now_ms()
    registry = plane_client.registry

    async def write() -> None:
        for start in range(0, LOGGED, 100):
            await asyncio.gather(*(registry.add_event(
                Event("loaded" if i % 2 else "evict", model=f"m{i % 40}", pod=PODS[i % 2],
                      reason=f"history {i}", time_ms=now - (LOGGED - i) * 2500))
                for i in range(start, min(LOGGED, start + 100))))
        for rec in minute_stats(now):
            await registry.put_stats(rec)

    plane_client.run_async(write(), timeout=120)
    assert len(plane_client.events(limit=0)) == LOGGED

    app = MeshConsole(settings, clock=lambda: now, offer_start=False)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.connected and not app.state.history_pending, what="the history")
        overview = app.screen
        assert isinstance(overview, OverviewScreen)
        overview.full_sync()
        await pilot.pause()
        loads = overview.query_one("#spark-loads", Sparkline).data
        assert loads is not None and sum(loads) == 2 * sum(k % 3 for k in range(60)) and len(loads) == 60
        evictions = overview.query_one("#spark-evictions", Sparkline).data
        assert evictions is not None and sum(evictions) == 2 * 12
        activity = text_of(overview.query_one("#card-activity", Static))
        assert "12 loads\n4 evictions · 0 failed" in activity, activity  # minutes 0-5 of two pods
        assert "no events" not in text_of(overview.query_one("#overview-events", Static))
        assert "history 1233" in text_of(overview.query_one("#overview-events", Static))

        await pilot.press("7")
        events = app.screen
        assert isinstance(events, EventsScreen)
        summary = events.query_one("#events-summary", Static)
        await wait_for(pilot, lambda: events.table.row_count == 1000 and not events.table.filling,
                       what="the newest 1,000 events in the table")
        assert "1,234 events in the log, 1,000 shown" in text_of(summary), text_of(summary)
        assert "following" in text_of(summary)
        assert events.table.selected_key() == events.table.keys()[-1]  # following: on the newest
        newest = events.table.spec(events.table.keys()[-1])
        assert newest is not None and newest[5][0] == "history 1233"

        # the watch adds to the count; the stats poll brings a new minute's loads
        await asyncio.to_thread(plane_client.run_async, registry.add_event(
            Event("evict", model="m1", pod="pod-a", reason="after opening", time_ms=now)))
        await wait_for(pilot, lambda: "1,235 events in the log" in text_of(summary), what="the watched event")
        current = StatsRecord("pod-a", minute_of(now), {"loads": 7, "evictions": 1, "requests": 100})
        await asyncio.to_thread(plane_client.run_async, registry.put_stats(current))
        await pilot.press("1")
        await wait_for(pilot, lambda: sum(overview.query_one("#spark-loads", Sparkline).data or []) == 127,
                       timeout=20, what="the polled stats in the loads sparkline")

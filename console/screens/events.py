"""Events: the live stream of loads, unloads, evictions and failures, with their reasons.

On connecting the console reads the event log (its newest ``ROWS_SHOWN`` events are shown,
and the header says how many the log holds); new events arrive through the etcd watch and
are appended by key. ``p`` pauses (new events wait, counted, until following resumes); ``/``
filters with ``kind:evict``, ``model:NAME``, ``pod:NAME`` and free words.
"""

from __future__ import annotations

import datetime as dt

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Input, Static

from console import formatting, keymaps
from console.screens.base import ViewScreen
from console.screens.overview import KIND_STYLE
from console.state import HISTORY_EVENTS
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane.registry import Event

__all__ = ["EventsScreen", "EVENT_COLUMNS", "EventFilter", "event_row"]

EVENT_COLUMNS = (("time", "time"), ("kind", "kind"), ("model", "model"), ("pod", "pod"), ("size", "size"),
                 ("reason", "reason"))
ROWS_SHOWN = HISTORY_EVENTS
FLEX = {"reason": 24, "model": 16, "pod": 8}  # give way in this order


class EventFilter:
    """``kind:evict model:mnist pod:pod-1 words`` — every part must match."""

    def __init__(self, text: str = "") -> None:
        self.text = text.strip()
        self.fields: dict[str, str] = {}
        self.words: list[str] = []
        for part in self.text.lower().split():
            name, sep, value = part.partition(":")
            if sep and name in ("kind", "model", "pod"):
                self.fields[name] = value
            else:
                self.words.append(part)

    def __bool__(self) -> bool:
        return bool(self.text)

    def matches(self, ev: Event) -> bool:
        for name, value in self.fields.items():
            if value not in getattr(ev, name).lower():
                return False
        hay = f"{ev.kind} {ev.model} {ev.pod} {ev.reason}".lower()
        return all(w in hay for w in self.words)


def event_row(ev: Event, tz: dt.tzinfo | None = None) -> tuple[CellSpec, ...]:
    return (
        cell(formatting.clock_time(ev.time_ms, tz), sort=ev.key),
        cell(ev.kind, style=KIND_STYLE.get(ev.kind, "")),
        cell(ev.model or "-"),
        cell(ev.pod or "-"),
        cell(formatting.size(ev.size), sort=ev.size),
        cell(ev.reason),
    )


class EventsScreen(ViewScreen):
    VIEW = "events"
    VIEW_TITLE = "Events"
    CSS_PATH = "events.tcss"
    AUTO_FOCUS = "#events-table"
    BINDINGS = keymaps.VIEW_KEYS["events"]

    def __init__(self) -> None:
        super().__init__()
        self.follow = True
        self.filter = EventFilter()
        self.pending = 0
        self.matched = 0  # held events that match the filter (the rows are the newest of them)

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="/ filter: kind:evict model:NAME pod:NAME words", id="events-filter")
        yield Static(id="events-summary")
        yield KeyedTable(id="events-table", zebra_stripes=False)

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#events-table", KeyedTable)

    def on_mount(self) -> None:
        self.table.define_columns(EVENT_COLUMNS)
        self.table.set_flex(FLEX)
        self.table.after_fill = self._filled
        self.query_one("#events-filter").display = False

    def _filled(self) -> None:
        if self.follow:
            self._to_end()
        self._summary()

    def _wanted(self) -> dict[str, Event]:
        events = [(k, e) for k, e in self.plane.events.items() if self.filter.matches(e)]
        self.matched = len(events)
        return dict(events[-ROWS_SHOWN:])

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        tz = self.console.tz
        wanted = self._wanted()
        table = self.table
        with self.app.batch_update():
            if any(k not in wanted for k in table.keys()) and len(wanted) and table.row_count:
                # rows only ever append in key order; anything else (trim, filter) redraws in order
                keep = [k for k in table.keys() if k in wanted]
                if keep != list(wanted)[: len(keep)]:
                    table.reset_rows()
            table.sync({k: event_row(e, tz) for k, e in wanted.items()})
        self.pending = 0
        if self.follow:
            self._to_end()
        self._summary()

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        names = touched.get("events")
        if not names or not self.is_mounted:
            return
        new = sorted(n for n in names if n in self.plane.events and not self.table.has_key(n)
                     and self.filter.matches(self.plane.events[n]))
        gone = [n for n in names if n not in self.plane.events]
        if not self.follow:
            self.pending += len(new)
            self._summary()
            return
        self.matched += len(new) - sum(1 for n in gone if self.table.has_key(n))
        table = self.table
        with self.app.batch_update():
            for n in gone:
                table.drop(n)
            for n in new:
                table.upsert(n, event_row(self.plane.events[n], self.console.tz))
            while table.row_count > ROWS_SHOWN:
                table.drop(table.keys()[0])
        self._to_end()
        self._summary()

    def _to_end(self) -> None:
        if self.table.row_count:
            self.table.move_cursor(row=self.table.row_count - 1, animate=False)

    def _summary(self) -> None:
        plane = self.plane
        if plane.history_pending and not plane.events:
            self.query_one("#events-summary", Static).update(Text(" reading the event log…", style="dim italic"))
            return
        shown = self.table.wanted_count
        text = Text(f" {formatting.count(plane.events_in_log, 'event')} in the log, {shown:,} shown", style="bold")
        if self.filter:
            text.append(f"  ·  {self.matched:,} of the newest {len(plane.events):,} match /{self.filter.text}")
        if plane.history_error:
            text.append(f"  ·  log not read: {plane.history_error}", style="yellow")
        if self.follow:
            text.append("  ·  following", style="green")
        else:
            text.append(f"  ·  paused, {self.pending} new", style="yellow")
        self.query_one("#events-summary", Static).update(text)

    def history_loaded(self) -> None:
        self.full_sync()

    def action_toggle_follow(self) -> None:
        self.follow = not self.follow
        if self.follow:
            self.full_sync()
        else:
            self._summary()

    def action_filter(self) -> None:
        box = self.query_one("#events-filter", Input)
        box.display = True
        box.focus()

    def action_clear_filter(self) -> None:
        self.query_one("#events-filter", Input).value = ""

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter = EventFilter(event.value)
        self.full_sync()

    def on_input_submitted(self) -> None:
        self.table.focus()

    def handle_back(self) -> bool:
        box = self.query_one("#events-filter", Input)
        if box.display:
            box.display = False
            self.table.focus()
            return True
        return super().handle_back()

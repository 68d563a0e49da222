"""The pod view (``enter`` on a pod in Placement, or ``:pod NAME``): one runtime pod.

Its capacity and state, its copies biggest first (type, state, size, age, rate on this pod), its
request rate and its loads and evictions per minute over the last hour (the pod's own
per-minute stats), its recent events (the event log filtered by pod), and, for a pod of the
embedded plane, the end of its log file, read in a worker and refreshed every few seconds.
The copy actions of Placement work here on the copy under the cursor.
"""

from __future__ import annotations

import pathlib
import textwrap

from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal, Vertical
from textual.widgets import Label, Log, Sparkline, Static

from console import formatting, keymaps
from console.podlog import LogTail, read_tail
from console.screens.copies import CopyActionsView
from console.screens.overview import KIND_STYLE
from console.widgets.capacity import BAR_WIDTH
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane import usage
from plane.registry import Event, ModelRecord
from plane.runtimes.types import runtime_label

__all__ = ["PodScreen", "COPY_COLUMNS", "copy_row", "pod_rate"]

COPY_COLUMNS = (("model", "model"), ("type", "runtime"), ("state", "state"), ("size", "size"), ("age", "loaded"),
                ("rate", "rate here"), ("used", "last used"))
SORTS = (("size", True), ("rate", True), ("model", False))
LOG_REFRESH_S = 2.0
TICK_S = 5.0
EVENTS_SHOWN = 12
TREND_MINUTES = 60
NOTE_WIDTH = 50
STATE_STYLE = {"loaded": "green", "loading": "yellow"}


def pod_rate(m: ModelRecord, pod_id: str, now: int) -> float:
    """This pod's share of the model's rate now (its last report, decayed as fresh_rpm does)."""
    rpm, at = (m.pod_rpm.get(pod_id) or (0.0, 0))[:2]
    age = max(0, now - int(at))
    return round(rpm * (1.0 - age / usage.RATE_WINDOW_MS), 1) if age < usage.RATE_WINDOW_MS else 0.0


def copy_row(m: ModelRecord, pod_id: str, now: int) -> tuple[CellSpec, ...]:
    c = m.copies[pod_id]
    size = c.size or m.size
    rpm = pod_rate(m, pod_id, now)
    return (
        cell(m.model_id, style="bold" if m.pinned else ""),
        cell(runtime_label(m.type)),
        cell(c.state + (" · pinned" if m.pinned else ""), style=STATE_STYLE.get(c.state, "")),
        cell(formatting.size(size), sort=size),
        cell(formatting.ago(c.since_ms, now), sort=-c.since_ms),
        cell(formatting.rate(rpm), sort=(rpm, m.used_ms)),
        cell(usage.last_used_text(m, now), sort=m.used_ms),
    )


class PodScreen(CopyActionsView):
    VIEW = "pod"
    CSS_PATH = "pod.tcss"
    AUTO_FOCUS = "#pod-copies"
    BINDINGS = keymaps.VIEW_KEYS["pod"]

    def __init__(self, pod_id: str) -> None:
        self.pod_id = pod_id
        self.VIEW_TITLE = f"Pod {pod_id}"
        super().__init__()
        self.log_tail = LogTail(note="reading the log…")
        self.log_events: dict[str, Event] = {}  # this pod's events from the whole log (read once)
        self._mounted_all = False

    def compose_body(self) -> ComposeResult:
        yield Static(id="pod-head")
        with Horizontal(id="pod-trends"):
            for kind in ("requests", "loads", "evictions"):
                with Vertical(classes="trend"):
                    yield Label(kind, id=f"trend-{kind}", classes="trend-title")
                    yield Sparkline([0], id=f"spark-{kind}")
        yield Static(id="pod-copies-title", classes="section-title")
        yield KeyedTable(id="pod-copies")
        with Horizontal(id="pod-bottom"):
            with Vertical(id="pod-events-box"):
                yield Label("recent events", classes="section-title")
                yield Static(id="pod-events")
            with Vertical(id="pod-log-box"):
                yield Label("log", id="pod-log-title", classes="section-title")
                yield Log(id="pod-log", max_lines=500)

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#pod-copies", KeyedTable)

    @property
    def _ready(self) -> bool:
        """Every widget is in (a screen pushed while the app starts can resume, and even mount,
        before the widgets nested in its containers are)."""
        if not self._mounted_all:
            self._mounted_all = bool(self.query("#pod-log")) and bool(self.query("#spark-evictions"))
        return self._mounted_all

    def on_mount(self) -> None:
        self.table.define_columns(COPY_COLUMNS)
        self.table.set_flex({"model": 14, "type": 6})
        self.table.sort_column, self.table.sort_reverse = SORTS[0]
        self.set_interval(LOG_REFRESH_S, self._refresh_log)
        self.set_interval(TICK_S, self._tick)
        self.action_refresh()
        self.call_after_refresh(self.full_sync)

    def _tick(self) -> None:
        if self.is_current:
            self.full_sync()

    def _refresh_log(self) -> None:
        if self.is_current:
            self.read_log()

    def action_refresh(self) -> None:
        self.read_log()
        if self.console.client is not None:
            self.read_events()

    # -- workers ------------------------------------------------------------------------------------

    @work(thread=True, exclusive=True, exit_on_error=False, group="pod-log", name="pod log")
    def read_log(self) -> None:
        tail = read_tail(pathlib.Path(self.console.settings.state_dir), self.pod_id)
        self.app.call_from_thread(self._show_log, tail)

    @work(thread=True, exclusive=True, exit_on_error=False, group="pod-events", name="pod events")
    def read_events(self) -> None:
        events = self.client_or_raise().events(limit=0)
        mine = [e for e in events if e.pod == self.pod_id][-EVENTS_SHOWN * 4:]
        self.app.call_from_thread(self._take_events, mine)

    def _take_events(self, events: list[Event]) -> None:
        self.log_events = {e.key: e for e in events}
        if self._ready:
            self._draw_events()

    def _show_log(self, tail: LogTail) -> None:
        if tail == self.log_tail or not self._ready:
            return
        self.log_tail = tail
        title = f"log  {tail.path}" if tail.path else "log"
        self.query_one("#pod-log-title", Label).update(title)
        widget = self.query_one("#pod-log", Log)
        widget.clear()
        widget.write_lines(tail.lines if tail.lines or not tail.note else textwrap.wrap(tail.note, NOTE_WIDTH))

    # -- drawing ------------------------------------------------------------------------------------

    def full_sync(self) -> None:
        if not self._ready:  # resumed before its widgets are in
            return
        now = self.now()
        rows = {mid: copy_row(m, self.pod_id, now) for mid, m in self.plane.models.items()
                if self.pod_id in m.copies}
        with self.app.batch_update():
            self.table.sync(rows)
            self._draw_head(now)
            self._draw_trends(now)
            self._draw_events()
        self.note_selection(self.table.wanted_count > 0)

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        if not self._ready:
            return
        now = self.now()
        added = 0
        with self.app.batch_update():
            for mid in touched.get("models", ()):
                m = self.plane.models.get(mid)
                if m is not None and self.pod_id in m.copies:
                    added += self.table.upsert(mid, copy_row(m, self.pod_id, now)) == "added"
                else:
                    self.table.drop(mid)
            if added:
                self.table.apply_sort()
            if touched.get("models") or self.pod_id in touched.get("instances", ()):
                self._draw_head(now)
            names = touched.get("events", ())
            if any(n in self.plane.events and self.plane.events[n].pod == self.pod_id for n in names):
                self._draw_events()
        self.note_selection(self.table.wanted_count > 0)

    def stats_changed(self) -> None:
        if self._ready:
            self._draw_trends(self.now())

    def _draw_head(self, now: int) -> None:
        pod = self.plane.pods.get(self.pod_id)
        text = Text()
        text.append(f"{self.pod_id}  ", style="bold")
        if pod is None:
            text.append("not registered in etcd (stopped, or its lease expired)", style="bold red")
        else:
            state, colour = ("shutting down", "red") if pod.shutting_down else ("ready", "green")
            text.append(f"● {state}", style=f"bold {colour}")
            text.append(f"   {pod.endpoint}")
            if pod.metrics_endpoint:
                text.append(f"   metrics {pod.metrics_endpoint}", style="dim")
            if pod.pid:
                text.append(f"   pid {pod.pid}", style="dim")
            text.append(f"   started {formatting.ago(pod.started_ms, now)}", style="dim")
            frac = pod.used / pod.capacity if pod.capacity else 0.0
            colour = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
            text.append("\n")
            text.append(formatting.bar(pod.used, pod.capacity, BAR_WIDTH), style=colour)
            text.append(f" {frac:4.0%}  {formatting.size(pod.used)} of {formatting.size(pod.capacity)}")
            text.append(f"   {formatting.count(pod.count, 'copy', 'copies')}")
            if pod.loading:
                text.append(f", {pod.loading} loading", style="yellow")
            text.append(f"   {formatting.rate(pod.rpm)} now" if pod.rpm else "   idle now")
            if pod.in_flight:
                text.append(f", {pod.in_flight} in flight")
        hour = self.plane.activity(now, window_s=3600, pod=self.pod_id)
        text.append("\nlast hour: ", style="dim")
        text.append(" · ".join(formatting.count(hour.get(kind, 0), noun) for kind, noun in
                               (("requests", "request"), ("loads", "load"), ("evictions", "eviction"),
                                ("unloads", "unload"))) + " · ")
        failures = hour.get("failures", 0)
        text.append(formatting.count(failures, "load failure"), style="bold red" if failures else "")
        self.query_one("#pod-head", Static).update(text)
        n = self.table.wanted_count
        self.query_one("#pod-copies-title", Static).update(
            f"{formatting.count(n, 'copy', 'copies')} on {self.pod_id}, "
            f"by {self.table.sort_column or 'size'}")

    def _draw_trends(self, now: int) -> None:
        for kind in ("requests", "loads", "evictions"):
            series = self.plane.series(kind, now, minutes=TREND_MINUTES, pod=self.pod_id)
            total = sum(series)
            self.query_one(f"#trend-{kind}", Label).update(f"{kind}/min, last hour: {total:,}")
            self.query_one(f"#spark-{kind}", Sparkline).data = series

    def _draw_events(self) -> None:
        merged = dict(self.log_events)
        merged.update((k, e) for k, e in self.plane.events.items() if e.pod == self.pod_id)
        events = [merged[k] for k in sorted(merged)[-EVENTS_SHOWN:]]
        box = self.query_one("#pod-events", Static)
        if not events:
            box.update(Text(f"no events of {self.pod_id} in the log", style="dim italic"))
            return
        table = Table(box=None, show_header=False, pad_edge=False, expand=True)
        table.add_column(width=8, no_wrap=True)
        table.add_column(width=11, no_wrap=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        for ev in reversed(events):
            table.add_row(formatting.clock_time(ev.time_ms, self.console.tz),
                          Text(ev.kind, style=KIND_STYLE.get(ev.kind, "")),
                          f"{ev.model}  {ev.reason}".strip())
        box.update(table)

    # -- the cursor ---------------------------------------------------------------------------------

    def selected_copy(self) -> tuple[str | None, str | None]:
        return self.table.selected_key(), self.pod_id

    def on_data_table_row_highlighted(self) -> None:
        self.note_selection(self.table.row_count > 0)

    def action_sort(self) -> None:
        columns = [c for c, _ in SORTS]
        current = self.table.sort_column
        nxt = SORTS[(columns.index(current) + 1) % len(SORTS)] if current in columns else SORTS[0]
        self.table.sort_column, self.table.sort_reverse = nxt
        self.table.apply_sort()
        self._draw_head(self.now())

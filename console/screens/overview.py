"""Overview: a pulse of the plane — pods, models, capacity, recent loads and evictions.

Activity (the counts of the last five minutes and the per-minute sparklines of the last
hour) comes from the pods' own per-minute stats (``plane.stats``), read when the console
connects and polled since: a console opened after an hour of traffic shows that hour, and
the counts are exact however many events the bounded log kept. A plane whose pods write no
stats falls back to counting the events held.
"""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Horizontal, Vertical
from textual.widgets import Label, Sparkline, Static

from console import formatting, keymaps
from console.screens.base import ViewScreen
from console.widgets.capacity import PodCapacity

__all__ = ["OverviewScreen", "WINDOW_S", "TICK_S", "SPARK_MINUTES", "SPARKS"]

WINDOW_S = 300  # "recent" means the last five minutes
TICK_S = 1.0  # relative times and counts are redrawn this often
RECENT_EVENTS = 8
SPARK_MINUTES = 60
SPARKS = (("loads", "loads"), ("evictions", "evictions"), ("requests", "requests"))  # (stats kind, title)


class OverviewScreen(ViewScreen):
    VIEW = "overview"
    VIEW_TITLE = "Overview"
    CSS_PATH = "overview.tcss"
    BINDINGS = keymaps.VIEW_KEYS["overview"]

    def compose_body(self) -> ComposeResult:
        with Grid(id="cards"):
            yield Static(id="card-pods", classes="card")
            yield Static(id="card-models", classes="card")
            yield Static(id="card-capacity", classes="card")
            yield Static(id="card-activity", classes="card")
        with Horizontal(id="pulse"):
            for kind, _title in SPARKS:
                with Vertical(classes="pulse-column"):
                    yield Label(kind, id=f"title-{kind}", classes="section-title")
                    yield Sparkline([0], id=f"spark-{kind}")
        yield Label("pods", classes="section-title")
        yield PodCapacity(id="overview-pods")
        yield Label("latest events", id="events-title", classes="section-title")
        yield Static(id="overview-events")

    def on_mount(self) -> None:
        self.set_interval(TICK_S, self._tick)

    def _tick(self) -> None:
        if self.is_current:  # a hidden overview costs nothing
            self.full_sync()

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        now = self.now()
        ov = self.plane.overview(now, window_s=WINDOW_S)
        minutes = WINDOW_S // 60
        self.query_one("#card-pods", Static).update(
            _card("pods ready", f"{ov.pods_ready} / {ov.pods_total}",
                  "good" if ov.pods_total and ov.pods_ready == ov.pods_total else "warn"))
        self.query_one("#card-models", Static).update(
            _card("models", f"{ov.models_registered} registered",
                  "good", f"{ov.models_loaded} loaded · {ov.models_failed} failed"))
        frac = ov.used / ov.capacity if ov.capacity else 0.0
        self.query_one("#card-capacity", Static).update(
            _card("capacity used", f"{frac:.0%}", "good" if frac < 0.9 else "warn",
                  f"{formatting.size(ov.used)} of {formatting.size(ov.capacity)}"))
        if self.plane.history_pending:
            self.query_one("#card-activity", Static).update(
                _card(f"last {minutes} min", "reading history…", "warn"))
        else:
            self.query_one("#card-activity", Static).update(
                _card(f"last {minutes} min", formatting.count(ov.loads_recent, "load"),
                      "bad" if ov.failures_recent else "good",
                      f"{formatting.count(ov.evictions_recent, 'eviction')} · {ov.failures_recent:,} failed"))
        self._sparks(now)
        pods = sorted(self.plane.pods.values(), key=lambda p: p.pod_id)
        self.query_one("#overview-pods", PodCapacity).show(pods)
        n = self.plane.events_in_log
        self.query_one("#events-title", Label).update(
            f"latest events  ({formatting.count(n, 'event')} in the log)" if n else "latest events")
        self.query_one("#overview-events", Static).update(self._latest(now))

    def _sparks(self, now: int) -> None:
        source = "" if self.plane.stats else " (events)"
        for kind, title in SPARKS:
            series = self.plane.series(kind, now, minutes=SPARK_MINUTES)
            self.query_one(f"#title-{kind}", Label).update(
                f"{title}/min, last hour: {sum(series):,}{source}")
            self.query_one(f"#spark-{kind}", Sparkline).data = series

    def stats_changed(self) -> None:
        if self.is_current:
            self.full_sync()

    def _latest(self, now: int) -> Table | Text:
        events = list(self.plane.events.values())[-RECENT_EVENTS:]
        if not events:
            if self.plane.history_pending:
                return Text("reading the event log…", style="dim italic")
            if self.plane.history_error:
                return Text(f"the event log could not be read: {self.plane.history_error}", style="yellow")
            return Text("no events in the log yet", style="dim italic")
        table = Table(box=None, show_header=False, pad_edge=False, expand=True)
        table.add_column(width=9, no_wrap=True)
        table.add_column(width=11, no_wrap=True)
        table.add_column(ratio=1, no_wrap=True, overflow="ellipsis")
        table.add_column(ratio=2, no_wrap=True, overflow="ellipsis")
        for ev in reversed(events):
            table.add_row(formatting.ago(ev.time_ms, now), Text(ev.kind, style=KIND_STYLE.get(ev.kind, "")),
                          " ".join(filter(None, (ev.model, f"@{ev.pod}" if ev.pod else ""))), ev.reason)
        return table


KIND_STYLE = {
    "loaded": "green",
    "load": "cyan",
    "evict": "bold yellow",
    "unload": "yellow",
    "load-failed": "bold red",
    "register": "blue",
    "unregister": "magenta",
    "vmodel": "blue",
}


def _card(title: str, value: str, tone: str, detail: str = "") -> Text:
    colour = {"good": "green", "warn": "yellow", "bad": "red"}[tone]
    text = Text(f"{title}\n", style="dim")
    text.append(value, style=f"bold {colour}")
    if detail:
        text.append(f"\n{detail}", style="")
    return text

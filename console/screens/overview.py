"""Overview: a pulse of the plane — pods, models, capacity, recent loads and evictions."""

from __future__ import annotations

from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.containers import Grid, Vertical
from textual.widgets import Label, Sparkline, Static

from console import formatting, keymaps
from console.screens.base import ViewScreen
from console.widgets.capacity import PodCapacity

__all__ = ["OverviewScreen", "WINDOW_S", "TICK_S"]

WINDOW_S = 300  # "recent" means the last five minutes
TICK_S = 1.0  # relative times and counts are redrawn this often
RECENT_EVENTS = 8


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
        with Vertical(id="pulse"):
            yield Label("loads per minute, last 30 min", classes="section-title")
            yield Sparkline([0], id="spark-loads")
            yield Label("evictions per minute, last 30 min", classes="section-title")
            yield Sparkline([0], id="spark-evictions")
        yield Label("pods", classes="section-title")
        yield PodCapacity(id="overview-pods")
        yield Label("latest events", classes="section-title")
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
        self.query_one("#card-activity", Static).update(
            _card(f"last {minutes} min", f"{ov.loads_recent} loads · {ov.evictions_recent} evictions",
                  "bad" if ov.failures_recent else "good", f"{ov.failures_recent} load failures"))
        self.query_one("#spark-loads", Sparkline).data = self.plane.event_counts(now, kinds=("loaded",))
        self.query_one("#spark-evictions", Sparkline).data = self.plane.event_counts(now, kinds=("evict",))
        pods = sorted(self.plane.pods.values(), key=lambda p: p.pod_id)
        self.query_one("#overview-pods", PodCapacity).show(pods)
        self.query_one("#overview-events", Static).update(self._latest(now))

    def _latest(self, now: int) -> Table | Text:
        events = list(self.plane.events.values())[-RECENT_EVENTS:]
        if not events:
            return Text("no events yet", style="dim italic")
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

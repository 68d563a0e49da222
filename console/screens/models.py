"""Models: every registered model with where its copies are, filterable and sortable.

Rows are keyed by model id. A watch batch updates only the rows of the models it touched;
a full pass (on entering the view, on a filter change, and every few seconds so that
"last used" stays true) still changes only the cells whose text differs.
"""

from __future__ import annotations

from typing import Any

from rich.json import JSON
from rich.table import Table
from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.timer import Timer
from textual.widgets import DataTable, Input, Static

from console import formatting, keymaps
from console.screens.base import ViewScreen
from console.screens.dialogs import ConfirmScreen, DetailsScreen
from console.screens.register import register_form
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane import usage
from plane.api import record_as_dict
from plane.registry import ModelRecord
from plane.runtimes.types import runtime_label

__all__ = ["ModelsScreen", "MODEL_COLUMNS", "model_row", "model_matches"]

MODEL_COLUMNS = (
    ("model", "model"),
    ("status", "status"),
    ("copies", "copies on pods"),
    ("size", "size"),
    ("last_used", "last used"),
    ("rate", "rate"),
    ("failures", "failures"),
    ("type", "runtime"),
    ("source", "storage:path"),
)
# give way when the table is too wide, in this order, down to these widths (the id goes last)
FLEX = {"source": 14, "failures": 12, "copies": 14, "type": 8, "model": 16}
RELATIVE_TIME_REFRESH_S = 10.0
FILTER_DEBOUNCE_S = 0.15
FAILURE_TEXT_MAX = 36  # the full messages are in the details
STATUS_STYLE = {"LOADED": "green", "LOADING": "yellow", "LOADING_FAILED": "bold red", "NOT_LOADED": "dim"}


def model_row(m: ModelRecord, now: int) -> tuple[CellSpec, ...]:
    """The table row of one model. "last used" is the last real request (``never`` sorts as
    the oldest); the rate is the decayed one, 0 a minute after the last request."""
    status = m.status()
    loaded, loading = m.loaded_on(), m.loading_on()
    rpm = usage.fresh_rpm(m, now)
    copies = ", ".join(loaded + [f"{p}…" for p in loading]) or "-"
    fail = ""
    if m.failed:
        last = max(m.failed.values(), key=lambda f: f.time_ms)
        fail = f"{len(m.failed)}: {last.message}"
        if len(fail) > FAILURE_TEXT_MAX:
            fail = fail[: FAILURE_TEXT_MAX - 1] + "…"
    return (
        cell(m.model_id),
        cell(status, style=STATUS_STYLE.get(status, "")),
        cell(copies, sort=(len(loaded) + len(loading), copies)),
        cell(formatting.size(m.size), sort=m.size),
        cell(usage.last_used_text(m, now), sort=-m.used_ms),
        cell(formatting.rate(rpm), sort=rpm),
        cell(fail, sort=len(m.failed), style="red" if fail else ""),
        cell(runtime_label(m.type)),
        cell(f"{m.key}:{m.path}"),
    )


def model_matches(m: ModelRecord, needle: str) -> bool:
    if not needle:
        return True
    needle = needle.lower()
    return (needle in m.model_id.lower() or needle in m.status().lower()
            or any(needle in p.lower() for p in m.copies) or needle in m.path.lower() or needle in m.type.lower())


class ModelsScreen(ViewScreen):
    VIEW = "models"
    VIEW_TITLE = "Models"
    CSS_PATH = "models.tcss"
    AUTO_FOCUS = "#models-table"
    BINDINGS = keymaps.VIEW_KEYS["models"]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._filter_timer: Timer | None = None
        # model id -> (record, time-dependent text, row): a full pass rebuilds only rows whose
        # record was replaced by the watch or whose "last used" or decaying rate changed
        self._rows: dict[str, tuple[ModelRecord, str, tuple[CellSpec, ...]]] = {}

    def compose_body(self) -> ComposeResult:
        yield Input(placeholder="/ filter by id, status, pod, path or type", id="models-filter")
        yield Static(id="models-summary")
        yield KeyedTable(id="models-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#models-table", KeyedTable)

    def on_mount(self) -> None:
        self.table.define_columns(MODEL_COLUMNS)
        self.table.set_flex(FLEX)
        self.table.sort_column = "model"
        self.query_one("#models-filter").display = False
        self.set_interval(RELATIVE_TIME_REFRESH_S, self._tick)

    def _tick(self) -> None:
        if self.is_current:
            self.full_sync()

    # -- drawing ------------------------------------------------------------------------------------

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        now = self.now()
        needle = self.filter_text
        rows = {mid: self._row(m, now) for mid, m in self.plane.models.items() if model_matches(m, needle)}
        if len(self._rows) > len(self.plane.models):
            self._rows = {k: v for k, v in self._rows.items() if k in self.plane.models}
        with self.app.batch_update():
            self.table.sync(rows)
        self._summary()

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        names = touched.get("models")
        if not names or not self.is_mounted:
            return
        now = self.now()
        table = self.table
        added = 0
        with self.app.batch_update():
            for name in names:
                m = self.plane.models.get(name)
                if m is not None and model_matches(m, self.filter_text):
                    added += table.upsert(name, self._row(m, now)) == "added"
                else:
                    table.drop(name)
            if added:
                table.apply_sort()
        self._summary()

    def _row(self, m: ModelRecord, now: int) -> tuple[CellSpec, ...]:
        timely = f"{usage.last_used_text(m, now)}|{formatting.rate(usage.fresh_rpm(m, now))}"
        cached = self._rows.get(m.model_id)
        if cached is not None and cached[0] is m and cached[1] == timely:
            return cached[2]
        row = model_row(m, now)
        self._rows[m.model_id] = (m, timely, row)
        return row

    def _summary(self) -> None:
        self.note_selection(self.table.wanted_count > 0)
        total = len(self.plane.models)
        shown = self.table.wanted_count
        text = Text(f" {total} models registered", style="bold")
        if self.filter_text:
            text.append(f"  ·  {shown} match /{self.filter_text}")
        if self.table.sort_column:
            arrow = "↓" if self.table.sort_reverse else "↑"
            label = dict(MODEL_COLUMNS)[self.table.sort_column]
            text.append(f"  ·  sorted by {label} {arrow}", style="dim")
        self.query_one("#models-summary", Static).update(text)

    # -- filter and sort ----------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#models-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        if event.input.id == "models-filter":
            # typing fast re-filters once, when the keys stop
            if self._filter_timer is not None:
                self._filter_timer.stop()
            self._filter_timer = self.set_timer(FILTER_DEBOUNCE_S, self._apply_filter)

    def _apply_filter(self) -> None:
        self.filter_text = self.query_one("#models-filter", Input).value.strip()
        self.full_sync()

    def on_input_submitted(self, event: Input.Submitted) -> None:
        if event.input.id == "models-filter":
            self._apply_filter()
            self.table.focus()

    def handle_back(self) -> bool:
        box = self.query_one("#models-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.filter_text = ""
            self.table.focus()
            self.full_sync()
            return True
        return super().handle_back()

    def action_sort(self) -> None:
        keys = [k for k, _ in MODEL_COLUMNS]
        current = self.table.sort_column
        nxt = keys[(keys.index(current) + 1) % len(keys)] if current in keys else keys[0]
        self.table.sort_column, self.table.sort_reverse = nxt, nxt in ("size", "rate", "failures", "copies")
        self.table.apply_sort()
        self._summary()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.call_after_refresh(self._summary)

    # -- actions ------------------------------------------------------------------------------------

    def _selected(self) -> ModelRecord | None:
        key = self.table.selected_key()
        return self.plane.models.get(key) if key else None

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action in ("unregister", "load", "details") and self.is_mounted:
            return self._selected() is not None or None
        return allowed

    def on_data_table_row_highlighted(self) -> None:
        self.note_selection(self.table.row_count > 0)

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.action_details()

    def action_details(self) -> None:
        m = self._selected()
        if m is not None:
            self.app.push_screen(DetailsScreen(f"model {m.model_id}", model_details(m, self.now())))

    def action_register(self) -> None:
        if self.writable():
            self.app.push_screen(register_form(self), self._done)

    def _done(self, message: str | None) -> None:
        if message:
            self.notify(message)

    def action_unregister(self) -> None:
        if not self.writable():
            return
        m = self._selected()
        if m is None:
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.unregister(m.model_id)

        where = f" Its copies on {', '.join(sorted(m.copies))} will be unloaded." if m.copies else ""
        question = f"Unregister model {m.model_id}?{where}"
        self.app.push_screen(ConfirmScreen(question, confirm_label="Unregister"), answer)

    @work(thread=True, exclusive=False, exit_on_error=False, name="unregister")
    def unregister(self, model_id: str) -> None:
        self.require_writable()
        if self.client_or_raise().unregister_model(model_id):
            self.app.call_from_thread(self.notify, f"unregistered {model_id}")

    def action_load(self) -> None:
        if not self.writable():
            return
        m = self._selected()
        if m is not None:
            self.load(m.model_id)

    @work(thread=True, exclusive=False, exit_on_error=False, name="load")
    def load(self, model_id: str) -> None:
        self.require_writable()
        self.client_or_raise().ensure_loaded(model_id)
        self.app.call_from_thread(self.notify, f"load of {model_id} requested")


def model_details(m: ModelRecord, now: int) -> list[Any]:
    head = Table.grid(padding=(0, 2))
    head.add_column(style="bold")
    head.add_column()
    status = m.status()
    head.add_row("status", Text(status, style=STATUS_STYLE.get(status, "")))
    head.add_row("storage", f"{m.key}:{m.path} ({m.type})")
    head.add_row("size", f"{formatting.size(m.size)} in memory, {formatting.size(m.file_size)} on disk")
    head.add_row("last used", usage.last_used_text(m, now))
    head.add_row("rate", formatting.rate(usage.fresh_rpm(m, now)))
    head.add_row("policy", f"pinned={m.pinned} min_copies={m.min_copies} max_copies={m.max_copies or '∞'}")
    head.add_row("vmodels", ", ".join(m.refs) or "-")
    copies = Table(title="copies", title_justify="left", expand=True)
    for col in ("pod", "state", "since", "size"):
        copies.add_column(col)
    for pod, c in sorted(m.copies.items()):
        copies.add_row(pod, c.state, formatting.ago(c.since_ms, now), formatting.size(c.size))
    if not m.copies:
        copies.add_row("-", "no copies", "", "")
    parts: list[Any] = [head, copies]
    if m.failed:
        failures = Table(title="load failures", title_justify="left", expand=True, style="red")
        failures.add_column("pod")
        failures.add_column("when")
        failures.add_column("error", ratio=1)
        for pod, f in sorted(m.failed.items()):
            failures.add_row(pod, formatting.ago(f.time_ms, now), f.message)
        parts.append(failures)
    parts.append(Text("registry record", style="bold"))
    parts.append(JSON.from_data(record_as_dict(m)))
    return parts

"""Placement: which pod holds which model, live from the etcd watch, with changes lit up.

Columns are the model (with its type, size, rate and last use) and the pods; a cell is a copy,
with its state, its measured size and its age (``● 46M 30m``), or a load that failed on
that pod (``✗ failed 6m``: models whose loads fail have a row too). When a watch batch moves a
copy, the cell flashes (green for a new copy, red ✕ for one that went away) for ``FLASH_S``
seconds. ``s`` cycles the order: by activity (rate now, then last use), by size, by name.
The cursor is a cell: ``u`` unloads that copy (after a confirmation), ``l`` loads the model
on that pod, ``p`` pins or unpins it, ``c`` sets its copies policy; ``enter`` (or ``o``) on a
pod's column opens the pod view. The capacity bars above show used / capacity per pod.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import DataTable, Input, Static

from console import formatting, keymaps
from console.screens.copies import CopyActionsView
from console.screens.dialogs import DetailsScreen
from console.screens.models import model_details
from console.widgets.capacity import PodCapacity
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane import usage
from plane.registry import ModelRecord
from plane.runtimes.types import runtime_label

__all__ = ["PlacementScreen", "FLASH_S", "placement_row", "MODEL_COLUMNS", "SORTS"]

FLASH_S = 4.0
FLASH_TICK_S = 0.5
TICK_S = 10.0  # ages, rates and the activity order are redrawn this often
MARK = {"loaded": ("●", "green"), "loading": ("◐", "yellow")}
MODEL_COLUMNS = (("model", "model"), (".type", "runtime"), (".size", "size"), (".rate", "rate"),
                 (".used", "last used"))
SORTS = (("activity", ".rate", True), ("size", ".size", True), ("name", "model", False))  # (label, column, reverse)
SORT_LABELS = {".rate": "activity", ".size": "size", "model": "name", ".used": "last use", ".type": "runtime"}
FLEX = {"model": 14, ".type": 6}


def placement_row(m: ModelRecord | None, model_id: str, pods: list[str], now: int,
                  flashes: dict[str, str] | None = None) -> tuple[CellSpec, ...]:
    """Cells of one matrix row; ``flashes`` maps pod -> 'added' | 'removed' for lit cells.
    ``m`` is None for a model that just went away (its removed copies still flash)."""
    flashes = flashes or {}
    if m is None:
        cells = [cell(model_id, style="bold"), cell("-"), cell("-", sort=0), cell("-", sort=(0.0, 0)),
                 cell("-", sort=0)]
    else:
        rpm = usage.fresh_rpm(m, now)
        cells = [cell(model_id, style="bold" if flashes else ""),
                 cell(runtime_label(m.type)),
                 cell(formatting.size(m.size), sort=m.size),
                 cell(formatting.rate(rpm), sort=(rpm, m.used_ms)),
                 cell(usage.last_used_text(m, now), sort=m.used_ms)]
    copies = m.copies if m is not None else {}
    for pod in pods:
        c = copies.get(pod)
        flash = flashes.get(pod)
        if c is not None:
            mark, colour = MARK.get(c.state, ("?", ""))
            style = f"bold black on {colour}" if flash else colour
            size = c.size or (m.size if m is not None else 0)
            text = f"{mark} {formatting.short_size(size):>4} {formatting.short_age(c.since_ms, now):>3}"
            cells.append(cell(text, sort=(c.state, size), style=style))
        elif flash == "removed":
            cells.append(cell(" ✕ ", sort=("", 0), style="bold white on red"))
        elif m is not None and pod in m.failed:
            cells.append(cell(f"✗ failed {formatting.short_age(m.failed[pod].time_ms, now)}", sort=("failed", 0),
                              style="bold red"))
        else:
            cells.append(cell("", sort=("", 0)))
    return tuple(cells)


def _copies(m: ModelRecord | None) -> dict[str, str]:
    return {p: c.state for p, c in m.copies.items()} if m is not None else {}


def _has_row(m: ModelRecord | None) -> bool:
    return m is not None and bool(m.copies or m.failed)


class PlacementScreen(CopyActionsView):
    VIEW = "placement"
    VIEW_TITLE = "Placement"
    CSS_PATH = "placement.tcss"
    AUTO_FOCUS = "#placement-table"
    BINDINGS = keymaps.VIEW_KEYS["placement"]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._shown: dict[str, dict[str, str]] = {}  # model -> pod -> state, as last drawn
        self._flashes: dict[str, dict[str, tuple[str, float]]] = {}  # model -> pod -> (kind, until)
        self._pod_flash: dict[str, float] = {}

    def compose_body(self) -> ComposeResult:
        yield PodCapacity(id="placement-pods")
        yield Input(placeholder="/ filter models", id="placement-filter")
        yield Static(id="placement-summary")
        yield KeyedTable(id="placement-table", cursor_type="cell", fixed_columns=1)

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#placement-table", KeyedTable)

    def on_mount(self) -> None:
        self.query_one("#placement-filter").display = False
        self.table.set_flex(FLEX)
        self.table.sort_column, self.table.sort_reverse = SORTS[0][1], SORTS[0][2]
        self.set_interval(FLASH_TICK_S, self._expire_flashes)
        self.set_interval(TICK_S, self._tick)

    def _tick(self) -> None:
        if self.is_current:
            self.full_sync()
            if self.table.sort_column in (".rate", ".used"):
                self.table.apply_sort()  # rates decay and models go idle: keep the order true

    def _pods(self) -> list[str]:
        pods = set(self.plane.pods)
        for m in self._shown:
            pods.update(self._shown[m])
        return sorted(pods)

    def pod_columns(self) -> list[str]:
        return self.table.column_keys[len(MODEL_COLUMNS):]

    def _matches(self, model_id: str) -> bool:
        return not self.filter_text or self.filter_text.lower() in model_id.lower()

    def _now_s(self) -> float:
        return self.now() / 1000

    # -- drawing ------------------------------------------------------------------------------------

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        self._shown = {mid: _copies(m) for mid, m in self.plane.models.items() if _has_row(m)}
        self._draw_all()

    def _row(self, model_id: str, pods: list[str], now: int) -> tuple[CellSpec, ...]:
        flashes = {pod: kind for pod, (kind, _) in self._flashes.get(model_id, {}).items()}
        return placement_row(self.plane.models.get(model_id), model_id, pods, now, flashes)

    def _draw_all(self) -> None:
        pods = self._pods()
        table = self.table
        now = self.now()
        with self.app.batch_update():
            table.define_columns([*MODEL_COLUMNS, *((p, p) for p in pods)])
            wanted = [mid for mid in self._shown if self._matches(mid)]
            wanted += [mid for mid in self._flashes if mid not in self._shown and self._matches(mid)]
            table.sync({mid: self._row(mid, pods, now) for mid in wanted})
            self._draw_pods()
        self._summary()

    def _draw_pods(self) -> None:
        now = self._now_s()
        lit = frozenset(p for p, until in self._pod_flash.items() if until > now)
        pods = sorted(self.plane.pods.values(), key=lambda p: p.pod_id)
        self.query_one("#placement-pods", PodCapacity).show(pods, changed=lit)

    def _summary(self) -> None:
        self.note_selection(self.table.wanted_count > 0)
        placed = sum(1 for copies in self._shown.values() if copies)
        text = Text(f" {placed:,} of {len(self.plane.models):,} models placed on {len(self.plane.pods)} pods",
                    style="bold")
        if self.filter_text:
            text.append(f"  ·  /{self.filter_text}")
        column = self.table.sort_column or ""
        arrow = "↓" if self.table.sort_reverse else "↑"
        text.append(f"  ·  by {SORT_LABELS.get(column, column)} {arrow}   ", style="dim")
        text.append("● loaded ", style="green")
        text.append("◐ loading ", style="yellow")
        text.append("✕ just removed ", style="red")
        text.append("✗ failed", style="bold red")
        self.query_one("#placement-summary", Static).update(text)

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        if not self.is_mounted:
            return
        until = self._now_s() + FLASH_S
        for pod in touched.get("instances", ()):
            self._pod_flash[pod] = until
        changed_models: set[str] = set()
        for mid in touched.get("models", ()):
            before = self._shown.get(mid, {})
            rec = self.plane.models.get(mid)
            after = _copies(rec)
            if mid in self._shown or _has_row(rec):
                changed_models.add(mid)  # its rate, last use or failures may have changed too
            for pod in set(before) | set(after):
                if pod not in after:
                    self._flashes.setdefault(mid, {})[pod] = ("removed", until)
                elif before.get(pod) != after[pod]:
                    self._flashes.setdefault(mid, {})[pod] = ("added", until)
            if _has_row(rec):
                self._shown[mid] = after
            else:
                self._shown.pop(mid, None)
        if set(self._pods()) != set(self.pod_columns()):
            self._draw_all()
            return
        with self.app.batch_update():
            self._redraw_models(changed_models)
            if "instances" in touched:
                self._draw_pods()
        self._summary()

    def _redraw_models(self, model_ids: set[str]) -> None:
        pods = self.pod_columns()
        now = self.now()
        added = 0
        for mid in model_ids:
            if (mid in self._shown or mid in self._flashes) and self._matches(mid):
                added += self.table.upsert(mid, self._row(mid, pods, now)) == "added"
            else:
                self.table.drop(mid)
        if added:
            self.table.apply_sort()

    def _expire_flashes(self) -> None:
        now = self._now_s()
        gone: set[str] = set()
        for mid, lit in list(self._flashes.items()):
            for pod in [p for p, (_, until) in lit.items() if until <= now]:
                del lit[pod]
                gone.add(mid)
            if not lit:
                del self._flashes[mid]
        pods_gone = [p for p, until in self._pod_flash.items() if until <= now]
        for p in pods_gone:
            del self._pod_flash[p]
        if (gone or pods_gone) and self.is_mounted:
            with self.app.batch_update():
                self._redraw_models(gone)
                if pods_gone:
                    self._draw_pods()

    def copy_cell(self, model_id: str, pod: str) -> str:
        """The text of a copy's cell as drawn ("" when the model or the pod has no cell)."""
        spec = self.table.spec(model_id)
        columns = self.table.column_keys
        if spec is None or pod not in columns[len(MODEL_COLUMNS):]:
            return ""
        return spec[columns.index(pod)][0].strip()

    def select_copy(self, model_id: str, pod: str) -> None:
        """Put the cursor on a copy's cell."""
        table = self.table
        if table.spec(model_id) is not None and pod in table.column_keys:
            table.select_key(model_id)
            table.move_cursor(column=table.column_keys.index(pod), animate=False)

    # -- the cursor, sort, pod view, details --------------------------------------------------------

    def selected_copy(self) -> tuple[str | None, str | None]:
        table = self.table
        if not table.row_count or not table.is_valid_coordinate(table.cursor_coordinate):
            return None, None
        key = table.coordinate_to_cell_key(table.cursor_coordinate)
        column = key.column_key.value
        return key.row_key.value, column if column in self.pod_columns() else None

    def action_sort(self) -> None:
        columns = [column for _label, column, _reverse in SORTS]
        current = self.table.sort_column
        nxt = SORTS[(columns.index(current) + 1) % len(SORTS)] if current in columns else SORTS[0]
        self.table.sort_column, self.table.sort_reverse = nxt[1], nxt[2]
        self.table.apply_sort()
        self._summary()

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        self.call_after_refresh(self._summary)

    def on_data_table_cell_selected(self, event: DataTable.CellSelected) -> None:
        if event.cell_key.column_key.value in self.pod_columns():
            self.action_open_pod()
        else:
            self.action_details()

    def action_open_pod(self) -> None:
        _model, pod = self.selected_copy()
        if pod is None:
            self.notify("put the cursor on a pod's column to open its view", severity="warning")
            return
        self.console.open_pod(pod)

    def action_details(self) -> None:
        m = self.selected_model()
        if m is not None:
            self.app.push_screen(DetailsScreen(f"model {m.model_id}", model_details(m, self.now())))

    # -- filter -------------------------------------------------------------------------------------

    def action_filter(self) -> None:
        box = self.query_one("#placement-filter", Input)
        box.display = True
        box.focus()

    def on_input_changed(self, event: Input.Changed) -> None:
        self.filter_text = event.value.strip()
        self._draw_all()

    def on_input_submitted(self) -> None:
        self.table.focus()

    def handle_back(self) -> bool:
        box = self.query_one("#placement-filter", Input)
        if box.display:
            box.value = ""
            box.display = False
            self.filter_text = ""
            self.table.focus()
            self._draw_all()
            return True
        return super().handle_back()

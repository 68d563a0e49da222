"""Placement: which pod holds which model, live from the etcd watch, with changes lit up.

Columns are the pods, rows the models that have a copy somewhere. When a watch batch moves
a copy, the cell flashes (green for a new copy, red ✕ for one that went away) for
``FLASH_S`` seconds. The capacity bars above the matrix show used / capacity per pod.
"""

from __future__ import annotations

from rich.text import Text
from textual.app import ComposeResult
from textual.widgets import Input, Static

from console import keymaps
from console.screens.base import ViewScreen
from console.widgets.capacity import PodCapacity
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane.registry import ModelRecord

__all__ = ["PlacementScreen", "FLASH_S", "placement_row"]

FLASH_S = 4.0
FLASH_TICK_S = 0.5
MARK = {"loaded": ("●", "green"), "loading": ("◐", "yellow")}


def placement_row(model_id: str, copies: dict[str, str], pods: list[str],
                  flashes: dict[str, str] | None = None) -> tuple[CellSpec, ...]:
    """Cells of one matrix row; ``flashes`` maps pod -> 'added' | 'removed' for lit cells."""
    flashes = flashes or {}
    cells = [cell(model_id, style="bold" if flashes else "")]
    for pod in pods:
        state = copies.get(pod)
        flash = flashes.get(pod)
        if state is not None:
            mark, colour = MARK.get(state, ("?", ""))
            style = f"bold black on {colour}" if flash else colour
            cells.append(cell(f" {mark} ", sort=state, style=style))
        elif flash == "removed":
            cells.append(cell(" ✕ ", sort="", style="bold white on red"))
        else:
            cells.append(cell("", sort=""))
    return tuple(cells)


def _copies(m: ModelRecord | None) -> dict[str, str]:
    return {p: c.state for p, c in m.copies.items()} if m is not None else {}


class PlacementScreen(ViewScreen):
    VIEW = "placement"
    VIEW_TITLE = "Placement"
    CSS_PATH = "placement.tcss"
    AUTO_FOCUS = "#placement-table"
    BINDINGS = keymaps.VIEW_KEYS["placement"]

    def __init__(self) -> None:
        super().__init__()
        self.filter_text = ""
        self._shown: dict[str, dict[str, str]] = {}  # model -> pod -> state, as last drawn
        self._flashes: dict[tuple[str, str], tuple[str, float]] = {}  # (model, pod) -> (kind, until)
        self._pod_flash: dict[str, float] = {}

    def compose_body(self) -> ComposeResult:
        yield PodCapacity(id="placement-pods")
        yield Input(placeholder="/ filter models", id="placement-filter")
        yield Static(id="placement-summary")
        yield KeyedTable(id="placement-table", cursor_type="cell")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#placement-table", KeyedTable)

    def on_mount(self) -> None:
        self.query_one("#placement-filter").display = False
        self.set_interval(FLASH_TICK_S, self._expire_flashes)

    def _pods(self) -> list[str]:
        pods = set(self.plane.pods)
        for m in self._shown:
            pods.update(self._shown[m])
        return sorted(pods)

    def _matches(self, model_id: str) -> bool:
        return not self.filter_text or self.filter_text.lower() in model_id.lower()

    def _now_s(self) -> float:
        return self.now() / 1000

    # -- drawing ------------------------------------------------------------------------------------

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        self._shown = {mid: _copies(m) for mid, m in self.plane.models.items() if m.copies}
        self._draw_all()

    def _draw_all(self) -> None:
        pods = self._pods()
        table = self.table
        with self.app.batch_update():
            table.define_columns([("model", "model"), *((p, p) for p in pods)])
            table.sort_column = table.sort_column or "model"
            rows = {mid: placement_row(mid, copies, pods, self._flash_map(mid))
                    for mid, copies in self._shown.items() if self._matches(mid)}
            for (mid, _pod), (kind, _until) in self._flashes.items():
                if kind == "removed" and mid not in rows and self._matches(mid):
                    rows[mid] = placement_row(mid, {}, pods, self._flash_map(mid))
            table.sync(rows)
            self._draw_pods()
        self._summary()

    def _draw_pods(self) -> None:
        now = self._now_s()
        lit = frozenset(p for p, until in self._pod_flash.items() if until > now)
        pods = sorted(self.plane.pods.values(), key=lambda p: p.pod_id)
        self.query_one("#placement-pods", PodCapacity).show(pods, changed=lit)

    def _flash_map(self, model_id: str) -> dict[str, str]:
        return {pod: kind for (mid, pod), (kind, _) in self._flashes.items() if mid == model_id}

    def _summary(self) -> None:
        text = Text(f" {len(self._shown)} of {len(self.plane.models)} models have copies on "
                    f"{len(self.plane.pods)} pods   ", style="bold")
        text.append("● loaded ", style="green")
        text.append("◐ loading ", style="yellow")
        text.append("✕ just removed", style="red")
        if self.filter_text:
            text.append(f"   /{self.filter_text}")
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
            after = _copies(self.plane.models.get(mid))
            if before == after:
                continue
            changed_models.add(mid)
            for pod in set(before) | set(after):
                if pod not in after:
                    self._flashes[(mid, pod)] = ("removed", until)
                elif before.get(pod) != after[pod]:
                    self._flashes[(mid, pod)] = ("added", until)
            if after:
                self._shown[mid] = after
            else:
                self._shown.pop(mid, None)
        if set(self._pods()) != set(self.table.column_keys[1:]):
            self._draw_all()
            return
        with self.app.batch_update():
            self._redraw_models(changed_models)
            if "instances" in touched:
                self._draw_pods()
        self._summary()

    def _redraw_models(self, model_ids: set[str]) -> None:
        pods = self.table.column_keys[1:]
        added = 0
        for mid in model_ids:
            flashes = self._flash_map(mid)
            copies = self._shown.get(mid, {})
            if (copies or flashes) and self._matches(mid):
                added += self.table.upsert(mid, placement_row(mid, copies, pods, flashes)) == "added"
            else:
                self.table.drop(mid)
        if added:
            self.table.apply_sort()

    def _expire_flashes(self) -> None:
        now = self._now_s()
        gone = [k for k, (_, until) in self._flashes.items() if until <= now]
        pods_gone = [p for p, until in self._pod_flash.items() if until <= now]
        if not gone and not pods_gone:
            return
        for k in gone:
            del self._flashes[k]
        for p in pods_gone:
            del self._pod_flash[p]
        if self.is_mounted:
            with self.app.batch_update():
                self._redraw_models({mid for mid, _ in gone})
                if pods_gone:
                    self._draw_pods()

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

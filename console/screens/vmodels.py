"""VModels: virtual model ids (aliases) and the model each one currently serves."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.widgets import Static

from console import formatting, keymaps
from console.screens.base import ViewScreen
from console.screens.dialogs import ConfirmScreen, FormField, FormScreen
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane.registry import VModelRecord

__all__ = ["VModelsScreen", "VMODEL_COLUMNS", "vmodel_row"]

VMODEL_COLUMNS = (("vmodel", "vmodel"), ("status", "status"), ("active", "active model"),
                  ("target", "target model"), ("owner", "owner"), ("updated", "updated"), ("error", "error"))
STATUS_STYLE = {"DEFINED": "green", "TRANSITIONING": "yellow", "TRANSITION_FAILED": "bold red"}


def vmodel_row(v: VModelRecord, now: int) -> tuple[CellSpec, ...]:
    status = v.status()
    return (
        cell(v.vmodel_id),
        cell(status, style=STATUS_STYLE.get(status, "")),
        cell(v.active or "-"),
        cell(v.target or "-"),
        cell(v.owner or "-"),
        cell(formatting.ago(v.updated_ms, now), sort=-v.updated_ms),
        cell(v.failed, style="red"),
    )


class VModelsScreen(ViewScreen):
    VIEW = "vmodels"
    VIEW_TITLE = "VModels"
    CSS_PATH = "vmodels.tcss"
    AUTO_FOCUS = "#vmodels-table"
    BINDINGS = keymaps.VIEW_KEYS["vmodels"]

    def compose_body(self) -> ComposeResult:
        yield Static(id="vmodels-summary")
        yield KeyedTable(id="vmodels-table")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#vmodels-table", KeyedTable)

    def on_mount(self) -> None:
        self.table.define_columns(VMODEL_COLUMNS)
        self.table.sort_column = "vmodel"

    def full_sync(self) -> None:
        if not self.is_mounted:
            return
        now = self.now()
        with self.app.batch_update():
            self.table.sync({k: vmodel_row(v, now) for k, v in self.plane.vmodels.items()})
        self.note_selection(self.table.row_count > 0)
        self.query_one("#vmodels-summary", Static).update(
            Text(f" {len(self.plane.vmodels)} vmodels", style="bold"))

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        if "vmodels" in touched:
            self.full_sync()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action == "delete_vmodel" and self.is_mounted:
            return self.table.selected_key() is not None or None
        return allowed

    def on_data_table_row_highlighted(self) -> None:
        self.note_selection(self.table.row_count > 0)

    def action_set_vmodel(self) -> None:
        if not self.writable():
            return
        current = self.table.selected_key()
        v = self.plane.vmodels.get(current) if current else None
        fields = [
            FormField("vmodel_id", "vmodel id", value=v.vmodel_id if v else ""),
            FormField("target", "target model id", value=v.target if v else "",
                      placeholder="a registered model"),
        ]

        def submit(values: dict[str, Any]) -> str:
            self.require_writable()
            vid, target = (values.get("vmodel_id") or "").strip(), (values.get("target") or "").strip()
            self.client_or_raise().set_vmodel(vid, target)
            return f"vmodel {vid} -> {target}"

        self.app.push_screen(FormScreen("Set a vmodel", fields, submit), self._done)

    def _done(self, message: str | None) -> None:
        if message:
            self.notify(message)

    def action_delete_vmodel(self) -> None:
        key = self.table.selected_key()
        if not key or not self.writable():
            return

        def answer(yes: bool | None) -> None:
            if yes:
                self.delete(key)

        self.app.push_screen(ConfirmScreen(f"Delete vmodel {key}?", confirm_label="Delete"), answer)

    @work(thread=True, exclusive=False, exit_on_error=False, name="delete vmodel")
    def delete(self, key: str) -> None:
        self.require_writable()
        if self.client_or_raise().delete_vmodel(key):
            self.app.call_from_thread(self.notify, f"vmodel {key} deleted")

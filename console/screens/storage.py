"""Storage: the storage configs models are pulled from (secrets shown masked), with a form
to add or edit S3/MinIO and local configs and a test that lists what the storage holds.

Everything shown comes from ``StorageConfig.masked()`` (the live state's storage table) and
from ``PlaneClient.test_storage()`` (redacted messages): no secret and no URL userinfo. The
edit form never shows secrets either; the full config is read only to keep what was left empty
or still masked when the form is saved."""

from __future__ import annotations

from typing import Any

from rich.text import Text
from textual import work
from textual.app import ComposeResult
from textual.containers import Horizontal
from textual.widgets import Input, Label, Static

from console import keymaps
from console.messages import StorageTested
from console.screens.base import ViewScreen
from console.screens.dialogs import ConfirmScreen, FormField, FormScreen
from console.widgets.keyed_table import CellSpec, KeyedTable, cell
from plane import secrets

__all__ = ["StorageScreen", "STORAGE_COLUMNS", "storage_row", "storage_form_fields", "storage_params"]

STORAGE_COLUMNS = (("key", "key"), ("type", "type"), ("where", "endpoint / path"), ("bucket", "bucket"),
                   ("access", "access key"), ("secret", "secret key"))
S3_FIELDS = ("endpoint_url", "default_bucket", "access_key_id", "secret_access_key", "region")
TEST_OBJECTS_SHOWN = 12


def storage_row(cfg: dict[str, Any]) -> tuple[CellSpec, ...]:
    """One table row from a masked config (masked again here: a row never shows a secret)."""
    typ = str(cfg.get("type", ""))
    cfg = {k: v if k in ("key", "type") or (isinstance(v, str) and v.startswith(secrets.MASK))
           else secrets.mask_value(k, v, typ) for k, v in cfg.items()}
    where = (cfg.get("endpoint_url") or cfg.get("url")
             or ("AWS S3" if cfg.get("type") == "s3" else cfg.get("path") or cfg.get("name", "")))
    return (
        cell(cfg["key"]),
        cell(cfg.get("type", "")),
        cell(str(where)),
        cell(str(cfg.get("default_bucket", ""))),
        cell(str(cfg.get("access_key_id", ""))),
        cell(str(cfg.get("secret_access_key", ""))),
    )


def storage_form_fields(existing: dict[str, Any] | None) -> list[FormField]:
    """Fields of the add/edit form. Editing never shows secrets: left empty, they are kept."""
    cfg = existing or {}
    editing = existing is not None
    keep = "leave empty to keep the current one" if editing else ""
    return [
        FormField("key", "key", value=cfg.get("key", ""), placeholder="e.g. default, models-s3"),
        FormField("type", "type", kind="select", options=["s3", "local"], value=cfg.get("type", "s3")),
        FormField("endpoint_url", "endpoint URL (MinIO or other S3; empty for AWS)",
                  value=cfg.get("endpoint_url", ""), placeholder="http://127.0.0.1:9000",
                  when=("type", "s3")),
        FormField("default_bucket", "bucket", value=cfg.get("default_bucket", ""), when=("type", "s3")),
        FormField("access_key_id", "access key id", kind="password", placeholder=keep, when=("type", "s3")),
        FormField("secret_access_key", "secret access key", kind="password", placeholder=keep,
                  when=("type", "s3")),
        FormField("region", "region", value=cfg.get("region", ""), placeholder="us-east-1",
                  when=("type", "s3")),
        FormField("path", "directory holding the models", value=cfg.get("path", ""),
                  placeholder="/srv/models", when=("type", "local")),
    ]


def storage_params(values: dict[str, Any],
                   current_secret: dict[str, Any] | None) -> tuple[str, str, dict[str, Any]]:
    """(key, type, params) from form values; empty secrets take the current config's values."""
    key = (values.get("key") or "").strip()
    typ = values.get("type") or "s3"
    if typ == "local":
        return key, typ, {"path": (values.get("path") or "").strip()}
    params = {name: (values.get(name) or "").strip() for name in S3_FIELDS}
    if current_secret:
        for name in ("access_key_id", "secret_access_key"):
            if not params[name]:
                params[name] = current_secret.get(name, "")
        # the form was filled with the masked endpoint (``http://****@host``): unchanged, keep the real one
        current_url = str(current_secret.get("endpoint_url") or "")
        if current_url and params["endpoint_url"] == secrets.mask_url(current_url):
            params["endpoint_url"] = current_url
        for ref in ("access_key_id_env", "access_key_id_file", "secret_access_key_env", "secret_access_key_file"):
            name = ref.rsplit("_", 1)[0]
            if current_secret.get(ref) and not (values.get(name) or "").strip():
                params[ref] = current_secret[ref]  # the pods read it themselves: keep the reference
                params.pop(name, None)
    return key, typ, params


class StorageScreen(ViewScreen):
    VIEW = "storage"
    VIEW_TITLE = "Storage"
    CSS_PATH = "storage.tcss"
    AUTO_FOCUS = "#storage-table"
    BINDINGS = keymaps.VIEW_KEYS["storage"]

    def compose_body(self) -> ComposeResult:
        yield KeyedTable(id="storage-table")
        with Horizontal(id="storage-test-bar"):
            yield Label("test path prefix ")
            yield Input(placeholder="(optional) models/", id="storage-test-path")
        yield Static(Text("select a config and press t to list what it holds", style="dim"),
                     id="storage-test-result")

    @property
    def table(self) -> KeyedTable:
        return self.query_one("#storage-table", KeyedTable)

    def on_mount(self) -> None:
        self.table.define_columns(STORAGE_COLUMNS)
        self.table.sort_column = "key"

    def full_sync(self) -> None:
        if self.is_mounted:
            with self.app.batch_update():
                self.table.sync({k: storage_row(c) for k, c in self.plane.storage.items()})
            self.note_selection(self.table.row_count > 0)

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        if "storage" in touched:
            self.full_sync()

    def _selected(self) -> str | None:
        return self.table.selected_key()

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        allowed = super().check_action(action, parameters)
        if allowed and action in ("edit", "remove", "test") and self.is_mounted:
            return self._selected() is not None or None
        return allowed

    def on_data_table_row_highlighted(self) -> None:
        self.note_selection(self.table.row_count > 0)

    # -- add / edit / remove ------------------------------------------------------------------------

    def action_add(self) -> None:
        if self.writable():
            self._open_form(None)

    def action_edit(self) -> None:
        key = self._selected()
        if key and self.writable():
            self._open_form(self.plane.storage.get(key))

    def _open_form(self, existing: dict[str, Any] | None) -> None:
        def submit(values: dict[str, Any]) -> str:
            self.require_writable()
            client = self.client_or_raise()
            current = None
            if existing is not None:
                full = client.get_storage(existing["key"])
                current = full.params if full is not None else None
            key, typ, params = storage_params(values, current)
            client.set_storage(key, typ, params)
            if existing is not None and key != existing["key"]:
                client.remove_storage(existing["key"])
            return f"storage {key!r} saved"

        title = f"Edit storage {existing['key']}" if existing else "Add storage"
        self.app.push_screen(FormScreen(title, storage_form_fields(existing), submit), self._done)

    def _done(self, message: str | None) -> None:
        if message:
            self.notify(message)

    def action_remove(self) -> None:
        key = self._selected()
        if not key or not self.writable():
            return
        users = sorted(m.model_id for m in self.plane.models.values() if m.key == key)
        warn = f" {len(users)} registered model(s) use it." if users else ""

        def answer(yes: bool | None) -> None:
            if yes:
                self.remove_config(key)

        question = f"Remove storage config {key!r}?{warn}"
        self.app.push_screen(ConfirmScreen(question, confirm_label="Remove"), answer)

    # not ``remove``: that is Widget.remove(), which Textual calls to take a screen down
    @work(thread=True, exclusive=False, exit_on_error=False, name="remove storage")
    def remove_config(self, key: str) -> None:
        self.require_writable()
        if self.client_or_raise().remove_storage(key):
            self.app.call_from_thread(self.notify, f"storage {key!r} removed")

    # -- test ---------------------------------------------------------------------------------------

    def action_test(self) -> None:
        key = self._selected()
        if key:
            path = self.query_one("#storage-test-path", Input).value.strip()
            self.query_one("#storage-test-result", Static).update(Text(f"testing {key}…", style="yellow"))
            self.test(key, path)

    @work(thread=True, exclusive=True, exit_on_error=False, name="storage test", group="storage-test")
    def test(self, key: str, path: str) -> None:
        result = self.client_or_raise().test_storage(key, path=path)
        self.post_message(StorageTested(key, result))

    def on_storage_tested(self, message: StorageTested) -> None:
        res = message.result
        text = Text()
        text.append("✓ " if res.ok else "✗ ", style="bold green" if res.ok else "bold red")
        text.append(f"{message.key}: ", style="bold")
        text.append(secrets.redact_text(res.message))  # redacted by plane.storage already; never trust a message
        for obj in res.objects[:TEST_OBJECTS_SHOWN]:
            text.append(f"\n  {obj}")
        if len(res.objects) > TEST_OBJECTS_SHOWN:
            text.append(f"\n  … {len(res.objects) - TEST_OBJECTS_SHOWN} more", style="dim")
        self.query_one("#storage-test-result", Static).update(text)

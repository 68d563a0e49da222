"""Modal dialogs: confirmation, forms that apply themselves in a worker, details, keys, ``:``."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any

from rich.console import RenderableType
from rich.table import Table
from textual import on, work
from textual.app import ComposeResult
from textual.binding import Binding
from textual.containers import Horizontal, Vertical, VerticalScroll
from textual.screen import ModalScreen, Screen
from textual.suggester import SuggestFromList
from textual.widgets import Button, Checkbox, Input, Label, Select, Static
from textual.worker import Worker, WorkerState

__all__ = ["ConfirmScreen", "FormField", "FormScreen", "DetailsScreen", "KeysScreen", "CommandBar"]


class ConfirmScreen(ModalScreen[bool]):
    """Yes/no question; ``y`` confirms, ``n``/``esc`` cancels. Cancel has the focus, so a
    stray ``enter`` never confirms an unload or a stop."""

    AUTO_FOCUS = "#no"
    BINDINGS = [Binding("y", "answer(True)", "yes"), Binding("n,escape", "answer(False)", "no")]

    def __init__(self, question: str, *, confirm_label: str = "Yes") -> None:
        super().__init__(classes="dialog-screen")
        self.question = question
        self.confirm_label = confirm_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog"):
            yield Static(self.question, classes="dialog-question")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.confirm_label, variant="error", id="yes")
                yield Button("Cancel", id="no")

    def on_button_pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)


@dataclass
class FormField:
    name: str
    label: str
    kind: str = "text"  # text | password | select | checkbox
    value: Any = ""
    options: Sequence[str] = ()
    placeholder: str = ""
    when: tuple[str, str] | None = None  # shown only when field [0] has value [1]


class FormScreen(ModalScreen[str | None]):
    """A form whose ``submit(values) -> message`` runs in a thread worker. Errors stay in the
    form (so nothing typed is lost); success dismisses it with the message."""

    BINDINGS = [Binding("escape", "cancel", "cancel"), Binding("ctrl+s", "submit", "save")]

    def __init__(self, title: str, fields: Iterable[FormField], submit: Callable[[dict[str, Any]], str],
                 *, submit_label: str = "Save") -> None:
        super().__init__(classes="dialog-screen")
        self.form_title = title
        self.fields = list(fields)
        self.submit = submit
        self.submit_label = submit_label

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog form"):
            yield Label(self.form_title, classes="dialog-title")
            with VerticalScroll(classes="form-fields"):
                for f in self.fields:
                    with Vertical(classes="form-row", id=f"row-{f.name}"):
                        if f.kind != "checkbox":
                            yield Label(f.label, classes="form-label")
                        yield self._widget(f)
            yield Static("", id="form-error")
            with Horizontal(classes="dialog-buttons"):
                yield Button(self.submit_label, variant="primary", id="submit")
                yield Button("Cancel", id="cancel")

    def _widget(self, f: FormField) -> Any:
        wid = f"field-{f.name}"
        if f.kind == "select":
            options = [(o, o) for o in f.options]
            if f.options:
                return Select(options, value=f.value or f.options[0], allow_blank=False, id=wid)
            return Select(options, id=wid)
        if f.kind == "checkbox":
            return Checkbox(f.label, value=bool(f.value), id=wid)
        return Input(str(f.value or ""), placeholder=f.placeholder, password=f.kind == "password", id=wid)

    def on_mount(self) -> None:
        self._apply_conditions()
        self.focus_first_field()

    def focus_first_field(self) -> None:
        """Typing starts in the first field shown (not in the scrolling box around them)."""
        for f in self.fields:
            if self._visible(f):
                self.query_one(f"#field-{f.name}").focus()
                return

    def values(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in self.fields:
            if not self._visible(f):
                continue
            widget = self.query_one(f"#field-{f.name}")
            value = getattr(widget, "value", None)
            out[f.name] = None if value is Select.BLANK else value
        return out

    def _visible(self, f: FormField) -> bool:
        if f.when is None:
            return True
        other = self.query_one(f"#field-{f.when[0]}")
        return getattr(other, "value", None) == f.when[1]

    def _apply_conditions(self) -> None:
        for f in self.fields:
            self.query_one(f"#row-{f.name}").display = self._visible(f)

    @on(Select.Changed)
    def _select_changed(self) -> None:
        self._apply_conditions()

    @on(Input.Submitted)
    def _input_submitted(self) -> None:
        self.action_submit()

    def on_button_pressed(self, event: Button.Pressed) -> None:
        if event.button.id == "submit":
            self.action_submit()
        else:
            self.dismiss(None)

    def action_cancel(self) -> None:
        self.dismiss(None)

    def action_submit(self) -> None:
        self.query_one("#form-error", Static).update("working…")
        self.run_submit(self.values())

    @work(thread=True, exclusive=True, exit_on_error=False, name="form")
    def run_submit(self, values: dict[str, Any]) -> str:
        return self.submit(values)

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        if event.worker.name != "form":
            return
        event.stop()  # the form reports its own errors; the app's handler must not
        if event.state == WorkerState.SUCCESS:
            self.dismiss(str(event.worker.result or ""))
        elif event.state == WorkerState.ERROR:
            self.query_one("#form-error", Static).update(f"[b red]✗[/] {event.worker.error}")


class DetailsScreen(ModalScreen[None]):
    """Read-only details (a model's record, a test result) in a scrollable box."""

    BINDINGS = [Binding("escape,q,i", "close", "close")]

    def __init__(self, title: str, parts: Iterable[RenderableType]) -> None:
        super().__init__(classes="dialog-screen")
        self.details_title = title
        self.parts = list(parts)

    def compose(self) -> ComposeResult:
        with Vertical(classes="dialog details"):
            yield Label(self.details_title, classes="dialog-title")
            with VerticalScroll():
                for part in self.parts:
                    yield Static(part, classes="details-part")
            with Horizontal(classes="dialog-buttons"):
                yield Button("Close", id="close")

    def on_button_pressed(self) -> None:
        self.dismiss(None)

    def action_close(self) -> None:
        self.dismiss(None)


class KeysScreen(ModalScreen[None]):
    """``?``: the keys that work in the view underneath."""

    BINDINGS = [Binding("escape,question_mark,q", "close", "close")]

    def __init__(self, view: Screen, title: str) -> None:
        super().__init__(classes="dialog-screen")
        self.view = view
        self.view_title = title

    def compose(self) -> ComposeResult:
        table = Table(box=None, show_header=True, header_style="bold")
        table.add_column("key")
        table.add_column("action")
        seen: set[str] = set()
        self.rows: list[tuple[str, str]] = []
        for key, active in self.view.active_bindings.items():
            binding = active.binding
            if active.node is not self.view and active.node is not self.app:
                continue  # widget internals (cursor keys of a table) would drown the view's keys
            if not binding.description or binding.action in seen or not active.enabled:
                continue
            seen.add(binding.action)
            shown = binding.key_display or self.app.get_key_display(binding)
            self.rows.append((shown or key, binding.description))
            table.add_row(shown or key, binding.description)
        with Vertical(classes="dialog keys"):
            yield Label(f"Keys of {self.view_title}", classes="dialog-title")
            yield Static(table)
            yield Static("Views: 1-7, or `:` and a name or its start (:plac, :ev; overview install storage "
                         "models vmodels placement events), `:pod NAME` for a pod; ctrl+p opens the command "
                         "palette.", classes="dim")

    def action_close(self) -> None:
        self.dismiss(None)


class CommandBar(ModalScreen[str | None]):
    """k9s-style ``:name`` prompt at the bottom of the screen (a view by any unambiguous
    prefix, ``pod NAME``); the app resolves what was typed (:mod:`console.commands`)."""

    BINDINGS = [Binding("escape", "close", "close")]

    def __init__(self, names: Sequence[str], *, pods: Sequence[str] = ()) -> None:
        super().__init__(classes="command-screen")
        self.names = list(names)
        self.suggestions = [*self.names, *(f"pod {p}" for p in pods)]

    def compose(self) -> ComposeResult:
        yield Input(placeholder=":view  (" + " ".join(self.names) + " NAME)", id="command-input",
                    suggester=SuggestFromList(self.suggestions, case_sensitive=False))

    def on_input_submitted(self, event: Input.Submitted) -> None:
        self.dismiss(event.value.strip().lstrip(":").strip() or None)

    def action_close(self) -> None:
        self.dismiss(None)

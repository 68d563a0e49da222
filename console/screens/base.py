"""What every view shares: the connection bar, the footer, readonly checks, data hooks."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, cast

from textual.app import ComposeResult
from textual.screen import Screen
from textual.widgets import Footer, Input
from textual.worker import Worker, WorkerState

from console.keymaps import MUTATING
from console.state import PlaneState
from console.widgets.status_bar import ConnectionBar

if TYPE_CHECKING:
    from console.app import MeshConsole

__all__ = ["ViewScreen", "ReadOnlyError"]


class ReadOnlyError(RuntimeError):
    """An action that changes the plane was asked for in ``--readonly`` mode."""


class ViewScreen(Screen):
    """Base of the views. Subclasses set ``VIEW``/``VIEW_TITLE``, compose ``compose_body`` and
    implement ``full_sync`` (draw everything from the state, updating by key) and optionally
    ``plane_changed`` (apply only what a watch batch touched)."""

    VIEW = ""
    VIEW_TITLE = ""

    @property
    def console(self) -> MeshConsole:
        return cast("MeshConsole", self.app)

    @property
    def plane(self) -> PlaneState:
        return self.console.state

    def now(self) -> int:
        return self.console.clock()

    def compose(self) -> ComposeResult:
        yield ConnectionBar(self.VIEW_TITLE)
        yield from self.compose_body()
        yield Footer()

    def compose_body(self) -> ComposeResult:
        yield from ()

    def on_screen_resume(self) -> None:
        # Textual resumes a screen twice when it is first shown: redraw only when the state
        # changed (or a second passed, for relative times) since this view last drew it
        stamp = (id(self.plane), self.plane.generation, self.now() // 1000)
        if stamp != getattr(self, "_resumed_at", None):
            self._resumed_at = stamp
            self.full_sync()

    def full_sync(self) -> None:
        """Redraw from ``self.plane``; must update widgets in place (by key)."""

    def plane_changed(self, touched: dict[str, set[str]]) -> None:
        self.full_sync()

    def history_loaded(self) -> None:
        """The event log and the stats were read (after connecting)."""
        self.full_sync()

    def stats_changed(self) -> None:
        """A poll brought new per-minute stats; views that draw them redraw."""

    def note_selection(self, has_rows: bool) -> None:
        """Refresh the footer when the table gains its first row or loses its last one (keys
        that need a selected row appear or disappear); not on every cursor move, which
        would rebuild the footer each time."""
        if getattr(self, "_had_rows", None) != has_rows:
            self._had_rows = has_rows
            self.refresh_bindings()

    def handle_back(self) -> bool:
        """``esc`` pressed: return True when the view used it (closing a filter, leaving an
        input so that single-key bindings work again)."""
        if isinstance(self.focused, Input):
            self.set_focus(None)
            return True
        return False

    def on_worker_state_changed(self, event: Worker.StateChanged) -> None:
        """Every failed worker of a view is shown, never swallowed (their messages do not bubble)."""
        if event.state == WorkerState.ERROR:
            self.console.show_worker_error(event.worker)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action in MUTATING and self.console.readonly:
            return False
        return True

    def writable(self) -> bool:
        """For action methods (UI thread): False, with a notice, in readonly mode."""
        if self.console.readonly:
            self.notify("readonly: changes are disabled", severity="warning")
            return False
        return True

    def require_writable(self) -> None:
        """For workers: raise in readonly mode (a second guard behind the hidden keys)."""
        if self.console.readonly:
            raise ReadOnlyError("the console runs with --readonly: changes are disabled")

    def client_or_raise(self) -> Any:
        return self.console.require_client()

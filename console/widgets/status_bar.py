"""The line at the top of every view: where the console is connected, and in which mode."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Static

__all__ = ["ConnectionBar"]


class ConnectionBar(Static):
    """Shows the view title, the etcd endpoint and its state, and ``readonly``."""

    def __init__(self, title: str) -> None:
        super().__init__(id="connection-bar")
        self.view_title = title

    def on_mount(self) -> None:
        self.watch(self.app, "connection", self._render_bar)
        self.watch(self.app, "connected", self._render_bar)

    def _render_bar(self, _value: object = None) -> None:
        app = self.app
        text = Text()
        text.append(" mesh-console ", style="bold reverse")
        text.append(f" {self.view_title} ", style="bold")
        text.append("│ ")
        ok = getattr(app, "connected", False)
        text.append("● " if ok else "○ ", style="green" if ok else "red")
        text.append(getattr(app, "connection", ""))
        if getattr(app, "readonly", False):
            text.append("  │ ")
            text.append("readonly", style="bold yellow")
        self.update(text)

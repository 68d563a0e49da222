"""Helpers shared by the console tests (a module of its own: several test folders have a
``conftest`` module, so importing from ``conftest`` would depend on collection order)."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

SIZE = (120, 36)
UI_TIMEOUT_S = 15.0


async def wait_for(pilot: Any, condition: Callable[[], Any], *, timeout: float = UI_TIMEOUT_S,
                   what: str = "condition") -> Any:
    """Let the app run until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


def plain(renderable: Any, width: int = 200) -> str:
    """A Rich renderable (a Static's ``content``: Text, Table, ...) as plain text."""
    import io

    from rich.console import Console

    if isinstance(renderable, str):
        return renderable
    console = Console(width=width, record=True, file=io.StringIO(), color_system=None)
    console.print(renderable)
    return console.export_text()


def static_text(widget: Any) -> str:
    """What a Static shows, as plain text."""
    return plain(widget.content)


def screen_lines(app: Any) -> list[str]:
    """The text of the screen as it is drawn now, line by line."""
    return [strip.text for strip in app.screen._compositor.render_strips()]

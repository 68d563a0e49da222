"""What every ``mesh`` command prints with: the consoles, ``--json`` output, progress lines, exit codes.

Exit codes: 0 success, 1 operation failed, 2 bad usage or input, 3 no plane running / registry
unreachable. A command raises :class:`CliError` to stop with a message and one of them.
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.markup import escape

from plane.settings import format_age

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_NO_PLANE", "CliError", "out", "err", "print_json",
           "print_error", "print_warning", "ago", "plain_progress", "ERROR_PREFIX", "WARNING_PREFIX"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_PLANE = 0, 1, 2, 3
ERROR_PREFIX, WARNING_PREFIX = "mesh: error:", "mesh: warning:"

# Not a terminal (pipes, CI logs): a wide fixed width so ids are not cut.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def print_json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def print_error(exc: BaseException | str) -> None:
    """How a failed command reports why, on stderr: ``mesh: error: ...``, argparse's own form
    (:class:`plane.cli.parser.MeshParser` sends argparse's errors here too)."""
    err.print(f"[red]{ERROR_PREFIX}[/] {escape(str(exc))}")


def print_warning(message: str) -> None:
    """Something the operator should know about a command that worked, on stderr."""
    err.print(f"[yellow]{WARNING_PREFIX}[/] {escape(message)}")


def ago(ms: int) -> str:
    return format_age(ms, time.time() * 1000)


def plain_progress() -> Callable[[str, int, int], None]:
    """Progress as lines on stderr (works without a terminal, e.g. in CI logs)."""

    def report(message: str, done: int, total: int) -> None:
        err.print(f"[{done}/{total}] {message}")

    return report

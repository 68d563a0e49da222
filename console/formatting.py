"""How the console writes times, sizes and rates.

Relative times are computed against a clock the app owns (``MeshConsole.clock``), so
snapshot tests and screenshots can pin "now" and get the same text on every run.
"""

from __future__ import annotations

import datetime as dt

from plane.settings import format_age, format_size

__all__ = ["ago", "clock_time", "size", "rate", "bar"]


def ago(then_ms: int, now_ms: int) -> str:
    """``4m ago`` style; ``-`` for a time that was never set."""
    return format_age(then_ms, now_ms)


def clock_time(ms: int, tz: dt.tzinfo | None) -> str:
    """Wall-clock ``HH:MM:SS`` of an epoch-ms time in ``tz`` (local time when None)."""
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=tz or dt.UTC).astimezone(tz).strftime("%H:%M:%S")


def size(num: int) -> str:
    return format_size(num) if num else "-"


def rate(rpm: float) -> str:
    if not rpm:
        return "-"
    return f"{rpm:.0f}/min" if rpm >= 10 else f"{rpm:.1f}/min"


def bar(used: int, total: int, width: int = 20) -> str:
    """A text capacity bar: ``██████░░░░``."""
    if total <= 0:
        return "░" * width
    filled = min(width, round(width * used / total))
    return "█" * filled + "░" * (width - filled)

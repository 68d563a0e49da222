"""How the console writes times, sizes and rates.

Relative times are computed against a clock the app owns (``MeshConsole.clock``), so
snapshot tests and screenshots can pin "now" and get the same text on every run.
"""

from __future__ import annotations

import datetime as dt

from plane.settings import format_age, format_size

__all__ = ["ago", "clock_time", "size", "short_size", "short_age", "rate", "bar", "count"]


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


def short_size(num: int) -> str:
    """A size in at most five characters, for matrix cells: ``512K``, ``46M``, ``1.2G``."""
    if not num:
        return "-"
    n = float(num)
    for unit in ("B", "K", "M", "G", "T"):
        if n < 1024 or unit == "T":
            return f"{n:.0f}{unit}" if n >= 10 or unit == "B" else f"{n:.1f}{unit}"
        n /= 1024
    return f"{n:.0f}T"


def short_age(then_ms: int, now_ms: int) -> str:
    """An age without "ago", for matrix cells: ``5s``, ``4m``, ``3h``, ``2d``."""
    if not then_ms:
        return "-"
    secs = int(max(0, (now_ms - then_ms) // 1000))
    if secs < 60:
        return f"{secs}s"
    if secs < 3600:
        return f"{secs // 60}m"
    if secs < 86400:
        return f"{secs // 3600}h"
    return f"{secs // 86400}d"


def count(n: int, noun: str, plural: str = "") -> str:
    """``1 event``, ``1,234 events`` (``plural`` when it is not noun + s)."""
    return f"{n:,} {noun if n == 1 else plural or noun + 's'}"


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

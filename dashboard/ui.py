"""Small Streamlit helpers shared by the pages."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Iterator

import streamlit as st

from plane.api import NotFound, ValidationError
from plane.registry import RegistryError
from plane.settings import format_age, format_size

__all__ = ["errors_shown", "fmt_time", "fmt_size", "fmt_ago"]


@contextlib.contextmanager
def errors_shown(what: str = "") -> Iterator[None]:
    """Show the plane's errors (bad input, not found, etcd down) as an error box instead of
    a traceback; anything else is a bug and propagates."""
    prefix = f"{what}: " if what else ""
    try:
        yield
    except (ValidationError, NotFound, RegistryError) as exc:
        st.error(prefix + str(exc), icon=":material/error:")
    except TimeoutError as exc:
        st.error(prefix + f"timed out ({exc or 'no answer'})", icon=":material/error:")


def fmt_time(ms: int) -> str:
    if not ms:
        return "-"
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC).strftime("%Y-%m-%d %H:%M:%S")


def fmt_ago(ms: int, now_ms: int) -> str:
    return format_age(ms, now_ms)


def fmt_size(n: int) -> str:
    return format_size(n) if n else "-"

"""Small Streamlit helpers shared by the pages."""

from __future__ import annotations

import contextlib
import datetime as dt
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

import pandas as pd
import streamlit as st

from plane.api import NotFound, ValidationError
from plane.registry import RegistryError
from plane.settings import format_age, format_size

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

__all__ = ["errors_shown", "fmt_time", "fmt_size", "fmt_ago", "fmt_rate", "sortable_table"]


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


def fmt_rate(rpm: float) -> str:
    """A request rate per minute: whole numbers, one decimal below 10, ``0`` when idle."""
    return f"{rpm:.0f}" if rpm >= 10 or rpm == 0 else f"{rpm:.1f}"


def sortable_table(df: pd.DataFrame, shown: Mapping[str, Callable[[Any], str]]) -> pd.DataFrame | Styler:
    """``df`` for ``st.dataframe`` with the columns of ``shown`` read as text but sorted by their
    values (a time sorts as a time, ``never`` = 0 as the oldest): st.dataframe shows a Styler's
    display values and sorts on the data under them. Past pandas' limit of styled cells the
    text replaces the values (still readable; those columns then sort as text)."""
    if df.size > int(pd.get_option("styler.render.max_elements")):
        out = df.copy()
        for column, fmt in shown.items():
            out[column] = out[column].map(fmt)
        return out
    return df.style.format(dict(shown))

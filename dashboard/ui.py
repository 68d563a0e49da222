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
from plane.runtimes.files import check_path_for_type
from plane.runtimes.types import RUNTIMES
from plane.settings import format_age, format_size

if TYPE_CHECKING:
    from pandas.io.formats.style import Styler

__all__ = ["errors_shown", "fmt_time", "fmt_size", "fmt_ago", "fmt_rate", "sortable_table", "paged_table",
           "PAGE_SIZES", "page_bounds", "choices", "CHOICES_MAX", "TYPE_CHOICES", "TYPE_LABELS", "TYPE_OTHER",
           "chosen_type", "suggested_type"]

CHOICES_MAX = 300  # a selectbox lists at most this many model ids (5,000 would be 100 KiB a rerun)

TYPE_OTHER = "other"  # the register form's choice for a ModelMesh spelling typed in a text field
TYPE_CHOICES = (*RUNTIMES, TYPE_OTHER)
TYPE_LABELS = {**{r: r for r in RUNTIMES}, TYPE_OTHER: "other (ModelMesh: mt:…, rt:…)"}

PAGE_SIZES = (25, 50, 100, 250)  # 250 rows of 35 px stay below st.dataframe's 10,000 px "content" cap


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


def page_bounds(n_rows: int, page: int, page_size: int) -> tuple[int, int, int]:
    """(first row, end row, number of pages) of 1-based ``page`` (clamped to the last page)."""
    pages = max(1, -(-n_rows // page_size))
    page = min(max(1, page), pages)
    start = (page - 1) * page_size
    return start, min(n_rows, start + page_size), pages


def paged_table(df: pd.DataFrame, *, key: str, shown: Mapping[str, Callable[[Any], str]] | None = None,
                column_config: Mapping[str, Any] | None = None, page_size: int = 50,
                noun: str = "row") -> pd.DataFrame:
    """``df`` as a full-height table (every row of the page visible, no inner scrolling), one
    page at a time when it is long, with every column shown across the page's width. Sort
    ``df`` before: the order is the table's across pages (a click on a header sorts one page).
    ``shown`` words columns as :func:`sortable_table` does. Returns the page shown."""
    n = len(df)
    size = page_size
    page = 1
    if n > PAGE_SIZES[0]:
        a, b, c = st.columns([1, 1, 4], vertical_alignment="bottom")
        size = a.selectbox("Rows per page", PAGE_SIZES, index=PAGE_SIZES.index(page_size) if page_size in PAGE_SIZES
                           else 1, key=f"{key}_size")
        pages = page_bounds(n, 1, size)[2]
        if int(st.session_state.get(f"{key}_page", 1)) > pages:  # the table got shorter
            st.session_state[f"{key}_page"] = pages
        page = int(b.number_input("Page", min_value=1, max_value=pages, value=1, step=1,
                                  key=f"{key}_page")) if pages > 1 else 1
        start, end, pages = page_bounds(n, page, size)
        c.caption(f"{noun}s {start + 1:,}–{end:,} of {n:,}" + (f" · page {page} of {pages}" if pages > 1 else ""))
    start, end, _ = page_bounds(n, page, size)
    part = df.iloc[start:end]
    data = sortable_table(part, shown) if shown else part
    st.dataframe(data, hide_index=True, height="content", width="stretch", key=key,
                 column_config=dict(column_config or {}))
    return part


def choices(ids: list[str], needle: str = "", *, cap: int = CHOICES_MAX,
            keep: str | None = None) -> tuple[list[str], str]:
    """The ids containing ``needle`` for a selectbox, at most ``cap`` of them (plus ``keep``,
    the current choice), and a note when some were left out ("" when none were)."""
    n = needle.strip().lower()
    matched = [i for i in ids if n in i.lower()] if n else list(ids)
    shown = matched[:cap]
    if keep and keep in matched and keep not in shown:
        shown.append(keep)
    note = f"{cap:,} of {len(matched):,} listed: type in the filter to narrow" if len(matched) > cap else ""
    return shown, note


def chosen_type(choice: str | None, other: str = "") -> str:
    """The model type a register form names: the runtime chosen, or the ModelMesh spelling typed."""
    return (other or "").strip() if choice == TYPE_OTHER else str(choice or RUNTIMES[0])


def suggested_type(current: str, path: str) -> str | None:
    """The runtime a register form's type should switch to for ``path``: the one runtime whose
    files end in its suffix, when ``current`` does not read it; None to keep the choice."""
    if not path.strip() or check_path_for_type(current, path) is None:
        return None
    readers = [r for r in RUNTIMES if check_path_for_type(r, path) is None]
    return readers[0] if len(readers) == 1 else None

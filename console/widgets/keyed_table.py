"""A DataTable that is kept in sync by row key instead of being rebuilt.

Views hand :meth:`KeyedTable.sync` the rows they want: key -> a tuple of cell specs
``(text, sort value, style)`` (see :func:`cell`). Specs are plain tuples, so comparing a
row with what is on screen is cheap; only cells whose spec changed are updated (by row
and column key), and only then is a Rich ``Text`` built.

Large fills are spread over several event-loop turns (``FILL_CHUNK`` rows each) so the
UI keeps answering keys while 10,000 rows go in; many removals at once (a filter) rebuild
the rows instead of removing them one by one, which DataTable does in linear time each.

Columns fit the widget (:meth:`KeyedTable.set_flex`): when the rows are wider than the
table, the flexible columns (a model id, a path, an error) give way, down to a minimum, and
their cells end in an ellipsis; the other columns keep the width of their content. Each
column counts its cells by width as rows come and go, so its widest text is always known
without measuring the rows again.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from rich.cells import cell_len
from rich.text import Text
from textual import events
from textual.geometry import Size
from textual.widgets import DataTable

__all__ = ["KeyedTable", "SortCell", "CellSpec", "cell", "fit_widths", "FILL_CHUNK", "REBUILD_AFTER_REMOVALS"]

FILL_CHUNK = 400  # rows added per event-loop turn
REBUILD_AFTER_REMOVALS = 64  # removing more rows than this at once rebuilds the table

CellSpec = tuple[str, Any, str]  # (text, sort value or None, style)


def cell(text: str, sort: Any = None, style: str = "") -> CellSpec:
    return (text, sort, style)


class SortCell(Text):
    """Text shown in a cell plus the value its column sorts by."""

    def __init__(self, text: str, sort: Any = None, style: str = "") -> None:
        super().__init__(text, style=style, no_wrap=True, overflow="ellipsis")
        self.sort = text if sort is None else sort


def _render(spec: CellSpec) -> SortCell:
    return SortCell(spec[0], spec[1], spec[2])


def _sort_value(value: Any) -> Any:
    sort = getattr(value, "sort", None)
    if sort is not None:
        return sort
    return value.plain if isinstance(value, Text) else str(value)


class KeyedTable(DataTable):
    """DataTable with row-key synchronisation, chunked fills and a remembered sort column."""

    def __init__(self, **kwargs: Any) -> None:
        kwargs.setdefault("cursor_type", "row")
        kwargs.setdefault("zebra_stripes", True)
        super().__init__(**kwargs)
        self._specs: dict[str, tuple[CellSpec, ...]] = {}  # rows in the table
        self._pending: dict[str, tuple[CellSpec, ...]] = {}  # rows waiting to be added
        self._draining = False
        self._column_keys: list[str] = []
        self._labels: dict[str, int] = {}  # column -> width of its label
        self._widths: dict[str, int] = {}  # column -> widest cell text
        self._counts: dict[str, Counter[int]] = {}  # column -> cell width -> how many cells have it
        self._flex: dict[str, int] = {}  # column -> minimum width, for the columns that give way
        self._fit_pending = False
        self.after_fill: Callable[[], None] | None = None  # called when a chunked fill is done
        self._fresh = False  # filling an empty table: the cursor starts on the first row once sorted
        self.sort_column: str | None = None
        self.sort_reverse = False

    # -- columns ----------------------------------------------------------------------------------

    def define_columns(self, columns: Sequence[tuple[str, str]]) -> bool:
        """Set the columns (key, label); returns True when they changed (the rows are dropped)."""
        keys = [k for k, _ in columns]
        if keys == self._column_keys:
            return False
        self.clear(columns=True)
        self._specs.clear()
        self._pending.clear()
        for key, label in columns:
            self.add_column(label, key=key)
        self._column_keys = keys
        self._labels = {key: cell_len(label) for key, label in columns}
        self._reset_widths()
        self._schedule_fit()
        return True

    # -- fitting the columns to the widget --------------------------------------------------------

    def set_flex(self, flex: Mapping[str, int]) -> None:
        """Columns that give way when the rows are wider than the table, the first first:
        key -> minimum width."""
        self._flex = dict(flex)
        self._schedule_fit()

    def _reset_widths(self) -> None:
        self._widths = dict.fromkeys(self._column_keys, 0)
        self._counts = {k: Counter() for k in self._column_keys}

    def _measure(self, specs: tuple[CellSpec, ...]) -> None:
        """Count a row's cells in (it was added to the table or to the pending rows)."""
        widths, counts = self._widths, self._counts
        grew = False
        for key, spec in zip(self._column_keys, specs, strict=False):
            n = cell_len(spec[0])
            counts[key][n] += 1
            if n > widths[key]:
                widths[key] = n
                grew = True
        if grew:
            self._schedule_fit()

    def _forget(self, specs: tuple[CellSpec, ...]) -> None:
        """Count a row's cells out (it was removed or replaced)."""
        widths, counts = self._widths, self._counts
        shrank = False
        for key, spec in zip(self._column_keys, specs, strict=False):
            n = cell_len(spec[0])
            count = counts[key]
            count[n] -= 1
            if count[n] <= 0:
                del count[n]
                if n >= widths[key]:
                    widths[key] = max(count, default=0)
                    shrank = True
        if shrank:
            self._schedule_fit()

    def _schedule_fit(self) -> None:
        if self._flex and not self._fit_pending and self.is_attached:
            self._fit_pending = True
            self.call_after_refresh(self.fit_columns)

    def on_resize(self, event: events.Resize) -> None:
        self._schedule_fit()

    # DataTable measures every new or updated cell with Rich to size its columns; our cells are
    # one line of plain text whose widths are already counted, so the columns take those.
    def _update_column_widths(self, updated_cells: set[Any]) -> None:
        self._require_update_dimensions = True

    def _update_dimensions(self, new_rows: Any) -> None:
        try:
            natural = self.natural_widths()
            for key, column in self.columns.items():
                column.content_width = natural.get(key.value or "", column.content_width)
            width = sum(column.get_render_width(self) for column in self.columns.values())
            height = self._total_row_height + (self.header_height if self.show_header else 0)
            self.virtual_size = Size(width + self._row_label_column_width, height)
        except AttributeError:  # a DataTable of another shape: let it measure
            super()._update_dimensions(new_rows)

    def watch_show_vertical_scrollbar(self, shown: bool) -> None:
        self._schedule_fit()  # the scrollbar takes its width from the columns

    def natural_widths(self) -> dict[str, int]:
        """The width each column needs to show its widest text and its label."""
        return {k: max(self._widths.get(k, 0), self._labels.get(k, 0)) for k in self._column_keys}

    def fit_columns(self) -> None:
        """Fit the widget's width: the flexible columns give way, in their order, each down to
        its minimum; the rest keep their natural width."""
        self._fit_pending = False
        if not self._flex or not self.is_mounted:
            return
        avail = self.scrollable_content_region.width
        if avail <= 0:
            return
        natural = self.natural_widths()
        widths = fit_widths(natural, self._flex, avail - 2 * self.cell_padding * len(natural))
        changed = False
        for key in self._flex:
            column = self.columns.get(key)  # type: ignore[call-overload]  # ColumnKey compares to str
            if column is None:
                continue
            width = widths[key]
            if column.auto_width or column.width != width:
                column.auto_width, column.width = False, width
                changed = True
        if changed:
            self._update_count += 1  # drops the rendered-cell caches
            self._require_update_dimensions = True
            self.refresh()

    @property
    def column_keys(self) -> list[str]:
        return list(self._column_keys)

    # -- rows -------------------------------------------------------------------------------------

    @property
    def filling(self) -> bool:
        """True while rows are still being added in chunks."""
        return bool(self._pending)

    @property
    def wanted_count(self) -> int:
        """Rows shown once filling is done."""
        return len(self._specs) + len(self._pending)

    def has_key(self, key: str) -> bool:
        return key in self._specs or key in self._pending

    def keys(self) -> list[str]:
        return [*self._specs, *self._pending]

    def spec(self, key: str) -> tuple[CellSpec, ...] | None:
        return self._specs.get(key) or self._pending.get(key)

    def upsert(self, key: str, specs: tuple[CellSpec, ...]) -> str:
        """Add or update one row; returns 'added', 'updated' or 'same'."""
        old = self._specs.get(key)
        if old is None:
            if key in self._pending:
                self._forget(self._pending[key])
                self._pending[key] = specs
                self._measure(specs)
                return "updated"
            self.add_row(*map(_render, specs), key=key)
            self._specs[key] = specs
            self._measure(specs)
            return "added"
        if old == specs:
            return "same"
        for col, before, after in zip(self._column_keys, old, specs, strict=False):
            if before != after:
                self.update_cell(key, col, _render(after))
        self._specs[key] = specs
        self._forget(old)
        self._measure(specs)
        return "updated"

    def drop(self, key: str) -> bool:
        specs = self._pending.pop(key, None)
        if specs is None:
            specs = self._specs.pop(key, None)
            if specs is None:
                return False
            self.remove_row(key)
        self._forget(specs)
        return True

    def reset_rows(self) -> None:
        """Remove every row (keeping the columns)."""
        self.clear()
        self._specs.clear()
        self._pending.clear()
        self._reset_widths()

    def sync(self, rows: dict[str, tuple[CellSpec, ...]], *, complete: bool = True) -> tuple[int, int, int]:
        """Make the table show ``rows`` (in their order, for new rows). With ``complete``, rows
        not given are removed. Returns (added, updated, removed)."""
        removed = 0
        if not self._specs and not self._pending and rows:
            self._fresh = True
        if complete:
            gone = [k for k in self._specs if k not in rows]
            if len(gone) > REBUILD_AFTER_REMOVALS:
                removed = len(gone)
                self.clear()
                self._specs.clear()
                self._pending = dict(rows)
                self._reset_widths()
                for specs in rows.values():
                    self._measure(specs)
                self._schedule_fit()
                self._schedule_drain()
                return len(rows), 0, removed
            for key in gone:
                removed += self.drop(key)
            for key in [k for k in self._pending if k not in rows]:
                del self._pending[key]
        added = updated = 0
        for key, specs in rows.items():
            if key in self._specs:
                updated += self.upsert(key, specs) == "updated"
            else:
                if key in self._pending:
                    self._forget(self._pending[key])
                else:
                    added += 1
                self._pending[key] = specs
                self._measure(specs)
        if self._pending:
            if len(self._pending) <= FILL_CHUNK:
                self._drain_once()
            else:
                self._schedule_drain()
        return added, updated, removed

    def _schedule_drain(self) -> None:
        if not self._draining:
            self._draining = True
            self.call_after_refresh(self._drain_step)

    def _drain_step(self) -> None:
        self._draining = False
        if not self.is_mounted:
            return
        self._drain_once()
        if self._pending:
            self._schedule_drain()

    def _drain_once(self) -> None:
        chunk = list(self._pending.items())[:FILL_CHUNK]
        for key, specs in chunk:
            del self._pending[key]
            self.add_row(*map(_render, specs), key=key)
            self._specs[key] = specs
        if not self._pending:
            if self.sort_column:
                self.apply_sort(keep_cursor=not self._fresh)
            self._fresh = False
            if self.after_fill is not None and chunk:
                self.after_fill()

    # -- sorting and cursor -----------------------------------------------------------------------

    def apply_sort(self, *, keep_cursor: bool = True) -> None:
        """Sort by the remembered column; the cursor stays on its row (or, after the first
        fill, goes to the top)."""
        if self.sort_column and self.sort_column in self._column_keys and self.row_count:
            key = self.selected_key() if keep_cursor else None
            self.sort(self.sort_column, key=_sort_value, reverse=self.sort_reverse)
            if key is not None:
                self.select_key(key)
            elif not keep_cursor:
                self.move_cursor(row=0, animate=False)

    def sort_by(self, column: str) -> None:
        """Sort by ``column``; asking again for the same column reverses the order."""
        if self.sort_column == column:
            self.sort_reverse = not self.sort_reverse
        else:
            self.sort_column, self.sort_reverse = column, False
        self.apply_sort()

    def selected_key(self) -> str | None:
        if not self.row_count or not self.is_valid_row_index(self.cursor_row):
            return None
        return self.coordinate_to_cell_key(self.cursor_coordinate).row_key.value

    def select_key(self, key: str) -> None:
        if key in self._specs:
            self.move_cursor(row=self.get_row_index(key), animate=False)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        if event.column_key.value is not None:
            self.sort_by(event.column_key.value)


def fit_widths(natural: Mapping[str, int], flex: Mapping[str, int], budget: int) -> dict[str, int]:
    """Column widths within ``budget`` cells: fixed columns keep their natural width; the
    flexible ones give way in the order ``flex`` lists them (the first is cut down to its
    minimum before the next is touched), never below their minimum. When even the minimums
    do not fit, the minimums are returned (the table scrolls sideways)."""
    widths = dict(natural)
    excess = sum(natural.values()) - budget
    for key, minimum in flex.items():
        if excess <= 0:
            break
        if key not in widths:
            continue
        cut = max(0, min(excess, widths[key] - minimum))
        widths[key] -= cut
        excess -= cut
    return widths

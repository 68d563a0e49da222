"""A DataTable that is kept in sync by row key instead of being rebuilt.

Views hand :meth:`KeyedTable.sync` the rows they want: key -> a tuple of cell specs
``(text, sort value, style)`` (see :func:`cell`). Specs are plain tuples, so comparing a
row with what is on screen is cheap; only cells whose spec changed are updated (by row
and column key), and only then is a Rich ``Text`` built.

Large fills are spread over several event-loop turns (``FILL_CHUNK`` rows each) so the
UI keeps answering keys while 10,000 rows go in; many removals at once (a filter) rebuild
the rows instead of removing them one by one, which DataTable does in linear time each.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from rich.text import Text
from textual.widgets import DataTable

__all__ = ["KeyedTable", "SortCell", "CellSpec", "cell", "FILL_CHUNK", "REBUILD_AFTER_REMOVALS"]

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
        return True

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
                self._pending[key] = specs
                return "updated"
            self.add_row(*map(_render, specs), key=key)
            self._specs[key] = specs
            return "added"
        if old == specs:
            return "same"
        for col, before, after in zip(self._column_keys, old, specs, strict=False):
            if before != after:
                self.update_cell(key, col, _render(after))
        self._specs[key] = specs
        return "updated"

    def drop(self, key: str) -> bool:
        if self._pending.pop(key, None) is not None:
            return True
        if key not in self._specs:
            return False
        self.remove_row(key)
        del self._specs[key]
        return True

    def reset_rows(self) -> None:
        """Remove every row (keeping the columns)."""
        self.clear()
        self._specs.clear()
        self._pending.clear()

    def sync(self, rows: dict[str, tuple[CellSpec, ...]], *, complete: bool = True) -> tuple[int, int, int]:
        """Make the table show ``rows`` (in their order, for new rows). With ``complete``, rows
        not given are removed. Returns (added, updated, removed)."""
        removed = 0
        if complete:
            gone = [k for k in self._specs if k not in rows]
            if len(gone) > REBUILD_AFTER_REMOVALS:
                removed = len(gone)
                self.clear()
                self._specs.clear()
                self._pending = dict(rows)
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
                added += key not in self._pending
                self._pending[key] = specs
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
        if not self._pending and self.sort_column:
            self.apply_sort()

    # -- sorting and cursor -----------------------------------------------------------------------

    def apply_sort(self) -> None:
        if self.sort_column and self.sort_column in self._column_keys and self.row_count:
            key = self.selected_key()
            self.sort(self.sort_column, key=_sort_value, reverse=self.sort_reverse)
            if key is not None:
                self.select_key(key)

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

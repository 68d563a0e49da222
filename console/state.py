"""The console's in-memory copy of the registry, kept current by an etcd watch.

A worker reads every table once (:meth:`PlaneState.from_tables`), then applies the watch's
changes in batches (:meth:`PlaneState.apply`). Records are parsed in the worker thread
(:func:`parse_change`) so the UI thread only swaps dictionary entries. Storage configs are
masked before they get here: secrets never reach the UI.

Nothing here imports Textual, so it is tested and benchmarked without an app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plane.api import Overview, PlacementSnapshot, overview_from
from plane.registry import Event, InstanceRecord, ModelRecord, StorageConfig, VModelRecord

__all__ = ["Change", "PlaneState", "parse_change", "TABLES"]

TABLES = ("models", "instances", "vmodels", "storage", "events")
EVENTS_KEPT = 5000


@dataclass(frozen=True)
class Change:
    """One key of one table changed: ``record`` is the parsed new value, None when deleted."""

    table: str
    name: str
    record: Any


def parse_change(table: str, name: str, value: bytes | None) -> Change | None:
    """Parse a raw registry value into its typed record (storage masked); None for tables
    the console does not show or values it cannot read."""
    if table not in TABLES:
        return None
    if value is None:
        return Change(table, name, None)
    try:
        if table == "models":
            return Change(table, name, ModelRecord.from_json(value))
        if table == "instances":
            return Change(table, name, InstanceRecord.from_json(value))
        if table == "vmodels":
            return Change(table, name, VModelRecord.from_json(value))
        if table == "storage":
            return Change(table, name, StorageConfig.from_json(name, value).masked())
        ev = Event.from_json(value)
        ev.key = name
        return Change(table, name, ev)
    except (ValueError, TypeError, KeyError):
        return None  # a record written by a newer plane: skip it rather than crash the view


@dataclass
class PlaneState:
    models: dict[str, ModelRecord] = field(default_factory=dict)
    pods: dict[str, InstanceRecord] = field(default_factory=dict)
    vmodels: dict[str, VModelRecord] = field(default_factory=dict)
    storage: dict[str, dict[str, Any]] = field(default_factory=dict)
    events: dict[str, Event] = field(default_factory=dict)  # name -> event, names sort by time
    revision: int = 0

    @classmethod
    def from_changes(cls, changes: Iterable[Change], revision: int = 0) -> PlaneState:
        state = cls(revision=revision)
        state.apply(changes)
        state.events = dict(sorted(state.events.items()))
        return state

    @classmethod
    def from_tables(cls, tables: dict[str, list[tuple[str, bytes]]], revision: int = 0) -> PlaneState:
        changes = (parse_change(t, n, v) for t, rows in tables.items() for n, v in rows)
        return cls.from_changes((c for c in changes if c is not None), revision)

    def _table(self, table: str) -> dict[str, Any]:
        tables: dict[str, dict[str, Any]] = {
            "models": self.models,
            "instances": self.pods,
            "vmodels": self.vmodels,
            "storage": self.storage,
            "events": self.events,
        }
        return tables[table]

    def apply(self, changes: Iterable[Change]) -> dict[str, set[str]]:
        """Apply changes; returns the changed names per table."""
        touched: dict[str, set[str]] = {}
        for ch in changes:
            table = self._table(ch.table)
            if ch.record is None:
                table.pop(ch.name, None)
            else:
                table[ch.name] = ch.record
            touched.setdefault(ch.table, set()).add(ch.name)
        if len(self.events) > EVENTS_KEPT:
            for name in list(self.events)[: len(self.events) - EVENTS_KEPT]:
                del self.events[name]
        return touched

    def snapshot(self, now_ms: int) -> PlacementSnapshot:
        return PlacementSnapshot(
            pods=sorted(self.pods.values(), key=lambda p: p.pod_id),
            models=sorted(self.models.values(), key=lambda m: m.model_id),
            vmodels=sorted(self.vmodels.values(), key=lambda v: v.vmodel_id),
            taken_ms=now_ms,
        )

    def overview(self, now_ms: int, *, window_s: int = 300) -> Overview:
        since = now_ms - window_s * 1000
        recent = [e for e in self.events.values() if e.time_ms >= since]
        snap = PlacementSnapshot(list(self.pods.values()), list(self.models.values()), [], now_ms)
        return overview_from(snap, recent, window_s=window_s)

    def event_counts(self, now_ms: int, *, kinds: tuple[str, ...], buckets: int = 30,
                     bucket_s: int = 60) -> list[int]:
        """Events of ``kinds`` per bucket over the last ``buckets * bucket_s`` seconds, oldest first."""
        counts = [0] * buckets
        start = now_ms - buckets * bucket_s * 1000
        for ev in self.events.values():
            if ev.kind in kinds and start <= ev.time_ms <= now_ms:
                counts[min(buckets - 1, (ev.time_ms - start) // (bucket_s * 1000))] += 1
        return counts

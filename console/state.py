"""The console's in-memory copy of the registry, kept current by an etcd watch.

A worker reads every table once (:meth:`PlaneState.from_tables`), then the history: the
newest events of the log and the pods' per-minute stats of the last hour
(:meth:`PlaneState.load_history`), then applies the watch's changes in batches
(:meth:`PlaneState.apply`). Stats live outside the watched prefix, so the app polls them
(:meth:`PlaneState.merge_stats`). Records are parsed in the worker thread (:func:`parse_change`)
so the UI thread only swaps dictionary entries. Storage configs are masked before they get
here: secrets never reach the UI.

The event log is bounded and the console holds only its newest entries, so the count of the
whole log is kept apart: the keys of every event the log holds (``log_keys``), known from the
history read and kept exact by the watch (a put of a new key adds one, a delete removes one).

Nothing here imports Textual, so it is tested and benchmarked without an app.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plane import stats as plane_stats
from plane.api import Overview, PlacementSnapshot, overview_from
from plane.registry import Event, InstanceRecord, ModelRecord, StorageConfig, VModelRecord
from plane.stats import MINUTE_MS, StatsRecord

__all__ = ["Change", "PlaneState", "parse_change", "TABLES", "HISTORY_EVENTS", "STATS_WINDOW_MS"]

TABLES = ("models", "instances", "vmodels", "storage", "events")
EVENTS_KEPT = 5000  # events held in memory (the newest); the log's true size is len(log_keys)
HISTORY_EVENTS = 1000  # the newest events read from the log when the console connects
STATS_WINDOW_MS = 3600_000  # the per-minute stats read on connect: the last hour
STATS_KEPT_MS = STATS_WINDOW_MS + 5 * MINUTE_MS


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
    log_keys: set[str] = field(default_factory=set)  # every event the log holds, as far as known
    stats: dict[str, StatsRecord] = field(default_factory=dict)  # "minute-pod" -> a pod's minute
    history_pending: bool = False  # True from the registry read until the history is in
    history_error: str = ""
    generation: int = 0  # bumped by every change: a view that drew this generation is current

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
        self.generation += 1
        for ch in changes:
            table = self._table(ch.table)
            if ch.record is None:
                table.pop(ch.name, None)
                if ch.table == "events":
                    self.log_keys.discard(ch.name)  # trimmed from the log (or never known: no-op)
            else:
                table[ch.name] = ch.record
                if ch.table == "events":
                    self.log_keys.add(ch.name)  # events are never rewritten: a new key is a new event
            touched.setdefault(ch.table, set()).add(ch.name)
        if len(self.events) > EVENTS_KEPT:
            for name in list(self.events)[: len(self.events) - EVENTS_KEPT]:
                del self.events[name]
        return touched

    # -- history: the event log and the pods' per-minute stats ---------------------------------------

    @property
    def events_in_log(self) -> int:
        """How many events the registry's log holds (not just the ones held here)."""
        return len(self.log_keys)

    def load_history(self, events: list[Event], stats: Iterable[StatsRecord], now_ms: int, *,
                     keep: int = HISTORY_EVENTS) -> None:
        """Take in the whole event log (oldest first; only its newest ``keep`` are held) and
        the stats read after connecting. Events the watch brought meanwhile stay."""
        self.log_keys.update(e.key for e in events)
        merged = {e.key: e for e in events[-keep:] if e.key}
        merged.update(self.events)
        self.events = dict(sorted(merged.items())[-max(keep, EVENTS_KEPT):])
        self.merge_stats(stats, now_ms)
        self.generation += 1
        self.history_pending = False
        self.history_error = ""

    def merge_stats(self, records: Iterable[StatsRecord], now_ms: int) -> int:
        """Add or replace per-minute records (a pod rewrites its current minute at every usage
        flush); drop the ones older than the window. Returns how many records changed."""
        changed = 0
        for rec in records:
            old = self.stats.get(rec.key)
            if old is None or old.counts != rec.counts:
                self.stats[rec.key] = rec
                changed += 1
        cutoff = plane_stats.minute_of(now_ms - STATS_KEPT_MS)
        for key in [k for k, r in self.stats.items() if r.minute_ms < cutoff]:
            del self.stats[key]
            changed += 1
        if changed:
            self.generation += 1
        return changed

    def activity(self, now_ms: int, *, window_s: int, pod: str | None = None) -> dict[str, int]:
        """Counts per kind (plane.stats.KINDS) over the whole minutes of the last ``window_s``."""
        records = self.stats.values() if pod is None else (r for r in self.stats.values() if r.pod == pod)
        return plane_stats.totals(records, since_ms=now_ms - window_s * 1000)

    def per_minute(self, kind: str, now_ms: int, *, minutes: int = 60, pod: str | None = None) -> list[int]:
        """``kind`` per minute over the last ``minutes`` minutes (the current one last), from the
        pods' stats: of one pod, or summed over all."""
        since = now_ms - (minutes - 1) * MINUTE_MS
        if pod is None:
            rows = plane_stats.per_minute(self.stats.values(), kind, since_ms=since, until_ms=now_ms, by_pod=False)
            return [n for _, n in rows["all"]]
        rows = plane_stats.per_minute((r for r in self.stats.values() if r.pod == pod), kind,
                                      since_ms=since, until_ms=now_ms)
        series = rows.get(pod)
        return [n for _, n in series] if series else [0] * minutes

    def snapshot(self, now_ms: int) -> PlacementSnapshot:
        return PlacementSnapshot(
            pods=sorted(self.pods.values(), key=lambda p: p.pod_id),
            models=sorted(self.models.values(), key=lambda m: m.model_id),
            vmodels=sorted(self.vmodels.values(), key=lambda v: v.vmodel_id),
            taken_ms=now_ms,
        )

    def overview(self, now_ms: int, *, window_s: int = 300) -> Overview:
        """The figures of the Overview; activity counts from the pods' stats (exact, however
        many events the bounded log kept), or from the events held when no pod writes stats."""
        since = now_ms - window_s * 1000
        snap = PlacementSnapshot(list(self.pods.values()), list(self.models.values()), [], now_ms)
        if self.stats:
            return overview_from(snap, [], window_s=window_s, totals=self.activity(now_ms, window_s=window_s))
        recent = [e for e in self.events.values() if e.time_ms >= since]
        return overview_from(snap, recent, window_s=window_s)

    def event_counts(self, now_ms: int, *, kinds: tuple[str, ...], minutes: int = 60,
                     pod: str | None = None) -> list[int]:
        """Events of ``kinds`` per minute over the last ``minutes`` minutes (the current one
        last), from the events held: the fallback for a plane whose pods write no stats."""
        counts = [0] * minutes
        first = plane_stats.minute_of(now_ms) - (minutes - 1) * MINUTE_MS
        for ev in self.events.values():
            if ev.kind in kinds and first <= ev.time_ms <= now_ms and (pod is None or ev.pod == pod):
                counts[min(minutes - 1, (ev.time_ms - first) // MINUTE_MS)] += 1
        return counts

    def series(self, kind: str, now_ms: int, *, minutes: int = 60, pod: str | None = None) -> list[int]:
        """Per-minute counts of a stats kind (loads, evictions, unloads, failures, requests):
        from the pods' stats, or counted from the events when there are none."""
        if self.stats:
            return self.per_minute(kind, now_ms, minutes=minutes, pod=pod)
        return self.event_counts(now_ms, kinds=EVENT_KINDS.get(kind, ()), minutes=minutes, pod=pod)


EVENT_KINDS = {"loads": ("loaded",), "evictions": ("evict",), "unloads": ("unload",), "failures": ("load-failed",)}

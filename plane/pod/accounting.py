"""Usage accounting of one pod: request counts, rates, and the weight that orders evictions.

The request path only bumps counters here (no etcd). Every ``usage_flush_s`` the counts reach
the registry in one write per used model (ModelMesh: lastUsed updates are lazy and batched).
Until this pod's view shows a record written at or after a flush, the eviction weight adds the
flushed counts itself, so a count is never missing from both places.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import defaultdict, deque
from typing import Protocol

from plane import stats, usage
from plane.cache import CacheEntry
from plane.records import ModelRecord, RegistryError, now_ms

__all__ = ["Usage", "RPM_WINDOW_S", "rate_of"]

log = logging.getLogger("mesh.pod.accounting")

RPM_WINDOW_S = 60.0


class _Registry(Protocol):
    async def update_model(self, model_id: str, fn, *, create: bool = False) -> ModelRecord | None: ...

    async def put_stats(self, rec: stats.StatsRecord) -> None: ...


class _View(Protocol):
    models: dict[str, ModelRecord]


def rate_of(times: deque[float], now: float) -> float:
    """Requests per minute over the last window, dropping timestamps older than it."""
    cutoff = now - RPM_WINDOW_S
    while times and times[0] < cutoff:
        times.popleft()
    return round(len(times) * 60.0 / RPM_WINDOW_S, 1)


class Usage:
    """Counts since the last flush, per-model and per-pod request times, the eviction weight."""

    def __init__(self, pod_id: str, registry: _Registry, view: _View, *, on_write_failed=None):
        self.pod_id = pod_id
        self.registry = registry
        self.view = view
        self.pending: dict[str, int] = defaultdict(int)  # requests since the last flush
        self.unseen: dict[str, list[tuple[int, int]]] = {}  # flushed, not yet in the view
        self._req_times: deque[float] = deque()
        self._model_times: dict[str, deque[float]] = defaultdict(deque)
        self._on_write_failed = on_write_failed or (lambda op: None)
        # This pod's counts per wall-clock minute (plane.stats), written at every flush.
        self.minutes: dict[int, dict[str, int]] = {}

    # -- the request path --------------------------------------------------------------------------

    def record(self, model_id: str) -> None:
        now = time.monotonic()
        self.pending[model_id] += 1
        self._req_times.append(now)
        self._model_times[model_id].append(now)

    def note(self, kind: str, n: int = 1) -> None:
        """Count a load, eviction, unload or failure in this minute's stats."""
        row = self.minutes.setdefault(stats.minute_of(now_ms()), {})
        row[kind] = row.get(kind, 0) + n

    def pod_rpm(self) -> float:
        return rate_of(self._req_times, time.monotonic())

    # -- eviction order ----------------------------------------------------------------------------

    def weight(self, entry: CacheEntry) -> float:
        """Decayed request count of a copy (registry figure + requests not yet flushed)."""
        model_id = entry.model_id
        rec = self.view.models.get(model_id)
        weight = usage.request_weight(rec, time.time() * 1000) + self.pending.get(model_id, 0)
        pending = self.unseen.get(model_id)
        if pending:
            seen = rec.freq_ms if rec is not None else 0
            pending[:] = [(stamp, n) for stamp, n in pending if stamp > seen]
            weight += sum(n for _, n in pending)
        return weight

    def on_model_change(self, name: str, new: ModelRecord | None) -> None:
        """The view changed a model: forget flushed counts the view now holds."""
        if new is None:
            self.unseen.pop(name, None)
            self.pending.pop(name, None)
            self._model_times.pop(name, None)
            return
        pending = self.unseen.get(name)
        if pending is not None:
            pending[:] = [(stamp, n) for stamp, n in pending if stamp > new.freq_ms]
            if not pending:
                del self.unseen[name]

    # -- flushing ----------------------------------------------------------------------------------

    async def flush_stats(self) -> None:
        """Write this pod's record for every minute counted since the last flush (each minute's
        record holds its whole count, so rewriting it is safe); keep the current minute."""
        current = stats.minute_of(now_ms())
        for minute, counts in sorted(self.minutes.items()):
            try:
                await self.registry.put_stats(stats.StatsRecord(self.pod_id, minute, dict(counts)))
            except RegistryError as exc:
                self._on_write_failed("stats")
                log.warning("stats not written (kept for the next flush): %s", exc)
                return
            if minute < current:
                del self.minutes[minute]

    async def flush(self) -> int:
        """Write last-used times, counts and rates: one CAS per used model. Counts that could
        not be written are kept for the next flush. Returns how many models were written."""
        used, self.pending = self.pending, defaultdict(int)
        if used:
            row = self.minutes.setdefault(stats.minute_of(now_ms()), {})
            row["requests"] = row.get("requests", 0) + sum(used.values())
        if self.minutes:
            await self.flush_stats()
        if not used:
            return 0
        stamp = now_ms()
        for model_id, n in used.items():
            self.unseen.setdefault(model_id, []).append((stamp, n))
        written = 0
        try:
            now = time.monotonic()
            for model_id, n in list(used.items()):
                rpm = rate_of(self._model_times[model_id], now)

                def change(m: ModelRecord, rpm: float = rpm, n: int = n) -> ModelRecord:
                    usage.note_session_start(m, stamp)
                    usage.note_requests(m, n, stamp)
                    m.last_used_ms = max(m.last_used_ms, stamp)
                    usage.note_use(m, stamp)  # the earlier use, for the second-copy rule (before used_ms moves)
                    m.used_ms = max(m.used_ms, stamp)
                    usage.update_rate(m, self.pod_id, rpm, stamp)
                    return m

                await self.registry.update_model(model_id, change)
                used.pop(model_id, None)
                written += 1
        except RegistryError as exc:
            self._on_write_failed("usage")
            log.warning("usage flush incomplete (%d models kept for the next one): %s", len(used), exc)
        finally:
            for model_id, n in used.items():  # not written: count them next time
                pending = self.unseen.get(model_id, [])
                if (stamp, n) in pending:
                    pending.remove((stamp, n))
                self.pending[model_id] += n
        return written

    async def loop(self, interval_s: float) -> None:
        while True:
            await asyncio.sleep(interval_s)
            await self.flush()

"""Per-minute activity counts, kept by the pods themselves: the truth behind every rate and
count the UIs show, however many events there were.

The event log is bounded (``MESH_EVENTS_MAX``), so counting its entries undercounts a busy
plane. Each pod instead counts what it does (loads, evictions, unloads, load failures,
requests) per wall-clock minute and writes its own record for the current minute at every
usage flush, under ``<prefix>.stats/`` — outside the prefix the pods watch, so these writes
cost the pods nothing. A count over any window is the sum of whole minutes. Records older than
``RETENTION_MS`` are trimmed by the leader.

Pure functions over plain records; ``plane.registry`` stores them, ``plane.api`` reads them.
"""

from __future__ import annotations

import dataclasses
import json
from collections import defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field

__all__ = ["StatsRecord", "KINDS", "MINUTE_MS", "RETENTION_MS", "minute_of", "totals", "per_minute",
           "per_pod", "top_models", "TopN"]

MINUTE_MS = 60_000
RETENTION_MS = 24 * 3600 * 1000
KINDS = ("loads", "evictions", "unloads", "failures", "requests")


def minute_of(t_ms: int | float) -> int:
    return int(t_ms // MINUTE_MS * MINUTE_MS)


@dataclass
class StatsRecord:
    """What one pod did in one minute."""

    pod: str
    minute_ms: int
    counts: dict[str, int] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> StatsRecord:
        data = json.loads(raw)
        return cls(pod=str(data.get("pod", "")), minute_ms=int(data.get("minute_ms", 0)),
                   counts={k: int(v) for k, v in (data.get("counts") or {}).items()})

    @property
    def key(self) -> str:
        return f"{self.minute_ms:015d}-{self.pod}"


def _window(stats: Iterable[StatsRecord], since_ms: int, until_ms: int | None) -> list[StatsRecord]:
    lo = minute_of(since_ms)
    return [s for s in stats if s.minute_ms >= lo and (until_ms is None or s.minute_ms < until_ms)]


def totals(stats: Iterable[StatsRecord], *, since_ms: int = 0, until_ms: int | None = None) -> dict[str, int]:
    """Counts per kind over the whole minutes from ``since_ms``'s minute on."""
    out = dict.fromkeys(KINDS, 0)
    for s in _window(stats, since_ms, until_ms):
        for k, n in s.counts.items():
            out[k] = out.get(k, 0) + n
    return out


def per_pod(stats: Iterable[StatsRecord], *, since_ms: int = 0) -> dict[str, dict[str, int]]:
    out: dict[str, dict[str, int]] = defaultdict(lambda: dict.fromkeys(KINDS, 0))
    for s in _window(stats, since_ms, None):
        for k, n in s.counts.items():
            out[s.pod][k] = out[s.pod].get(k, 0) + n
    return dict(out)


def per_minute(stats: Iterable[StatsRecord], kind: str, *, since_ms: int, until_ms: int,
               by_pod: bool = True) -> dict[str, list[tuple[int, int]]]:
    """``{pod (or "all"): [(minute, count), ...]}`` with every minute of the window present
    (0 where nothing happened), oldest first: ready for a chart or a sparkline."""
    minutes = list(range(minute_of(since_ms), minute_of(until_ms) + 1, MINUTE_MS))
    wanted = set(minutes)
    grid: dict[str, dict[int, int]] = defaultdict(lambda: dict.fromkeys(minutes, 0))
    if not by_pod:
        grid["all"]  # noqa: B018 - the row exists even when nothing happened
    for s in stats:
        if s.minute_ms in wanted:
            row = grid[s.pod if by_pod else "all"]
            row[s.minute_ms] += s.counts.get(kind, 0)
    return {name: sorted(row.items()) for name, row in sorted(grid.items())}


@dataclass
class TopN:
    """The first ``n`` items by a key, and what the rest add up to."""

    top: list[object]
    rest_count: int
    rest_total: float


def top_models(models: Sequence[object], n: int, *, key) -> TopN:  # noqa: ANN001 - any callable
    """The ``n`` models with the largest ``key(model)`` (ties by model id, so the order is
    stable between refreshes), and the count and sum of the others."""
    ranked = sorted(models, key=lambda m: (-key(m), getattr(m, "model_id", "")))
    rest = ranked[n:]
    return TopN(ranked[:n], len(rest), float(sum(key(m) for m in rest)))

"""What the Placement page draws, computed from a whole :class:`~plane.api.PlacementSnapshot`.

Pure functions (no Streamlit, no plotly, no etcd). The heatmap shows a *selection*: the top N
placed models by activity (:func:`plane.usage.fresh_rpm`), by the memory their copies hold, or
by name, among those matching a search; the others are summed up in one row ("+4,880 more
models, 61 MiB"). The shown rows keep a stable order (model id), so a refresh never reshuffles
them: a model entering or leaving the top N appears or disappears in its place.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plane import usage
from plane.api import PlacementSnapshot
from plane.registry import ModelRecord
from plane.runtimes.types import runtime_label
from plane.settings import format_age, format_size

__all__ = ["RANK_BY", "Selection", "copy_size", "footprint", "select", "model_copies", "pod_copies",
           "group_small", "pod_columns"]

# What the top N is taken by, and how the page words it.
RANK_BY = {"activity": "requests per minute now", "size": "memory its copies hold", "name": "model id"}


def copy_size(m: ModelRecord, pod: str) -> int:
    """Bytes of the model's copy on ``pod`` (the model's measured size while it still loads)."""
    c = m.copies[pod]
    return c.size or m.size


def footprint(m: ModelRecord) -> int:
    return sum(copy_size(m, p) for p in m.copies)


@dataclass
class Selection:
    """The models the heatmap shows, and what it leaves out."""

    rows: list[ModelRecord]  # shown, in stable order (model id)
    rank: dict[str, int]  # model id -> 1-based rank by ``by`` among the matched models
    rest: list[ModelRecord]  # matched and placed, not shown
    matched: int  # placed models that match the search
    placed: int  # placed models in the registry
    total: int  # models in the registry
    by: str = "activity"
    needle: str = ""
    rest_per_pod: dict[str, tuple[int, int]] = field(default_factory=dict)  # pod -> (bytes, copies)

    @property
    def rest_bytes(self) -> int:
        return sum(b for b, _ in self.rest_per_pod.values())

    @property
    def rest_copies(self) -> int:
        return sum(n for _, n in self.rest_per_pod.values())

    @property
    def rest_label(self) -> str:
        """The summary row's name: ``+4,880 more models, 61 MiB``."""
        return f"+{len(self.rest):,} more model{'s' if len(self.rest) != 1 else ''}, {format_size(self.rest_bytes)}"


def _rank_key(by: str, now: int) -> Callable[[ModelRecord], tuple]:
    if by == "activity":  # the busiest first; idle ones by what they hold
        return lambda m: (-usage.fresh_rpm(m, now), -footprint(m), m.model_id)
    if by == "size":
        return lambda m: (-footprint(m), m.model_id)
    if by == "name":
        return lambda m: (m.model_id,)
    raise ValueError(f"rank by one of {', '.join(RANK_BY)}, not {by!r}")


def select(snap: PlacementSnapshot, *, top: int = 40, by: str = "activity", needle: str = "",
           now: int | None = None) -> Selection:
    """The top ``top`` placed models by ``by`` among those whose id contains ``needle``."""
    now = snap.taken_ms if now is None else now
    placed = [m for m in snap.models if m.copies]
    n = needle.strip().lower()
    matched = [m for m in placed if n in m.model_id.lower()] if n else placed
    ranked = sorted(matched, key=_rank_key(by, now))
    shown, rest = ranked[:top], ranked[top:]
    per_pod: dict[str, tuple[int, int]] = {}
    for m in rest:
        for p in m.copies:
            b, k = per_pod.get(p, (0, 0))
            per_pod[p] = (b + copy_size(m, p), k + 1)
    return Selection(rows=sorted(shown, key=lambda m: m.model_id),
                     rank={m.model_id: i + 1 for i, m in enumerate(ranked)},
                     rest=rest, matched=len(matched), placed=len(placed), total=len(snap.models),
                     by=by, needle=n, rest_per_pod=per_pod)


def pod_columns(snap: PlacementSnapshot, models: list[ModelRecord]) -> tuple[list[str], list[str]]:
    """Pod ids for the heatmap's columns (live pods, then pods that hold copies of ``models``
    but have no instance record) and their labels (those marked ``(gone)``)."""
    live = [p.pod_id for p in snap.pods]
    extra = sorted({p for m in models for p in m.copies} - set(live))
    pods = live + extra
    return pods, [p if p in live else f"{p} (gone)" for p in pods]


def model_copies(snap: PlacementSnapshot, model_id: str, now: int) -> list[dict]:
    """One row per copy of the model: pod, state, size, age, and the pod's capacity share."""
    m = next((x for x in snap.models if x.model_id == model_id), None)
    if m is None:
        return []
    pods = {p.pod_id: p for p in snap.pods}
    rows = []
    for pod_id, c in sorted(m.copies.items()):
        pod = pods.get(pod_id)
        size = copy_size(m, pod_id)
        rows.append({
            "pod": pod_id if pod else f"{pod_id} (gone)",
            "state": c.state,
            "size": size,
            "age": format_age(c.since_ms, now) if c.since_ms else "-",
            "share of pod": (100.0 * size / pod.capacity) if pod and pod.capacity else None,
            "req/min on pod": float(m.pod_rpm.get(pod_id, [0.0, 0])[0]),
        })
    return rows


def pod_copies(snap: PlacementSnapshot, pod_id: str, now: int) -> list[dict]:
    """One row per copy on the pod, biggest first: model, type, state, size, share, age, req/min."""
    pod = next((p for p in snap.pods if p.pod_id == pod_id), None)
    cap = pod.capacity if pod else 0
    rows: list[dict[str, Any]] = []
    for m, size in snap.pod_models(pod_id):
        c = m.copies[pod_id]
        rows.append({
            "model": m.model_id,
            "runtime": runtime_label(m.type),
            "state": c.state,
            "size": size,
            "share of pod": (100.0 * size / cap) if cap else None,
            "age": format_age(c.since_ms, now) if c.since_ms else "-",
            "req/min": usage.fresh_rpm(m, now),
        })
    rows.sort(key=lambda r: (-int(r["size"]), str(r["model"])))
    return rows


def group_small(held: list[tuple[ModelRecord, int]], *, keep: int, min_share: float,
                whole: int) -> tuple[list[tuple[ModelRecord, int]], int, int]:
    """Split a pod's copies (biggest first) into the ``keep`` biggest that hold at least
    ``min_share`` of ``whole`` bytes each, and the rest as (count, bytes): the treemap and the
    pod's bar chart draw the rest as one "other" tile instead of thousands of slivers."""
    floor = min_share * whole
    named = [(m, s) for m, s in held[:keep] if s >= floor]
    others = held[len(named):]
    return named, len(others), sum(s for _, s in others)

"""What the placement views draw: a snapshot of the registry tables read in one pass, and
the overview figures computed from it (plain data; :class:`plane.api.PlaneClient` reads them,
and watchers that keep the raw tables build them with :func:`snapshot_from_tables`)."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any

from plane.records import Event, InstanceRecord, ModelRecord, VModelRecord, now_ms

__all__ = ["PlacementSnapshot", "Overview", "snapshot_from_tables", "overview_from", "record_as_dict"]


@dataclass
class PlacementSnapshot:
    """Everything the placement views draw, read in one pass over the registry."""

    pods: list[InstanceRecord]
    models: list[ModelRecord]
    vmodels: list[VModelRecord]
    taken_ms: int

    def matrix(self) -> dict[str, dict[str, str]]:
        """model id -> {pod id -> 'loaded' | 'loading'} for models that have copies."""
        return {m.model_id: {p: c.state for p, c in m.copies.items()} for m in self.models if m.copies}

    def pod_models(self, pod_id: str) -> list[tuple[ModelRecord, int]]:
        """(model, size of its copy) for every copy on the pod, biggest first."""
        out = [(m, m.copies[pod_id].size or m.size) for m in self.models if pod_id in m.copies]
        return sorted(out, key=lambda x: -x[1])


@dataclass
class Overview:
    pods_ready: int
    pods_total: int
    models_registered: int
    models_loaded: int
    models_failed: int
    capacity: int
    used: int
    loads_recent: int
    evictions_recent: int
    failures_recent: int
    window_s: int


def snapshot_from_tables(tables: dict[str, list[tuple[str, bytes]]]) -> PlacementSnapshot:
    """Build a snapshot from raw registry tables (also used by watchers that keep tables)."""
    return PlacementSnapshot(
        pods=sorted((InstanceRecord.from_json(v) for _, v in tables.get("instances", [])), key=lambda p: p.pod_id),
        models=sorted((ModelRecord.from_json(v) for _, v in tables.get("models", [])), key=lambda m: m.model_id),
        vmodels=sorted((VModelRecord.from_json(v) for _, v in tables.get("vmodels", [])),
                       key=lambda v: v.vmodel_id),
        taken_ms=now_ms(),
    )


def overview_from(snap: PlacementSnapshot, events: list[Event], *, window_s: int = 300,
                  totals: dict[str, int] | None = None) -> Overview:
    """The overview figures; ``totals`` (plane.stats) gives exact activity counts, else they are
    counted from ``events``."""
    live = {p.pod_id for p in snap.pods}
    if totals is None:
        totals = {"loads": sum(1 for e in events if e.kind == "loaded"),
                  "evictions": sum(1 for e in events if e.kind == "evict"),
                  "failures": sum(1 for e in events if e.kind == "load-failed")}
    return Overview(
        pods_ready=sum(1 for p in snap.pods if not p.shutting_down),
        pods_total=len(snap.pods),
        models_registered=len(snap.models),
        models_loaded=sum(1 for m in snap.models if any(p in live for p in m.loaded_on())),
        models_failed=sum(1 for m in snap.models if m.failed and not m.loaded_on()),
        capacity=sum(p.capacity for p in snap.pods),
        used=sum(p.used for p in snap.pods),
        loads_recent=totals.get("loads", 0),
        evictions_recent=totals.get("evictions", 0),
        failures_recent=totals.get("failures", 0),
        window_s=window_s,
    )


def record_as_dict(rec: Any) -> dict[str, Any]:
    """A registry record as plain data (for ``--json`` output and raw views)."""
    return dataclasses.asdict(rec)

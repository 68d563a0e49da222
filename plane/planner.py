"""The leader's plan: which copies to add or drop across the mesh. Pure: records in, actions out.

One pod at a time (elected through etcd) runs :func:`plan` every few seconds over its registry
view and carries out the actions. Rules, in order:

1. **Floors** — pinned models keep at least one copy; ``min_copies`` is honoured.
2. **Caps** — a model with more copies than its ``max_copies`` loses the extras.
3. **Second copy** — a single-copy model used again 7-40 minutes after an earlier use gets a
   second copy on another pod, in free space only (ModelMesh.java ``rateTrackingTask``, "regular
   usage was detected"; the window is SECOND_COPY_MIN/MAX_AGE_SECS = 420/2400, see
   :func:`plane.usage.note_use`). As ModelMesh, only while the mesh keeps at least
   ``second_copy_min_free_fraction`` (10%) of its capacity free, and never past
   ``pressure_fraction``, so rule 5 does not drop the copy it just got. (ModelMesh also adds it
   to a fuller mesh whose oldest copy is over 20 h old; here rule 5 would drop it again.)
4. **Scale up** — a model whose rate per copy exceeds ``scale_up_rpm`` gets another copy
   (ModelMesh's default threshold: 2000 requests/minute per copy), in free space only.
5. **Scale down** — under memory pressure (used / capacity across pods above
   ``pressure_fraction``), extra copies of models whose rate would fit in one copy fewer are dropped.
6. **Preload** — unloaded models are ranked by :func:`plane.usage.use_probability` and loaded
   into *free* space only (keeping ``headroom_fraction`` of each pod free for cache misses), so a
   preload never evicts anything.

Only the floors of rule 1 (an operator's explicit policy) may evict. Every other load is marked
so that the pod that carries it out uses free space only: a stale view of a pod's free space
makes a preload fail, never evict.
"""

from __future__ import annotations

import random
from collections.abc import Iterable
from dataclasses import dataclass

from plane import placement, usage
from plane.records import InstanceRecord, ModelRecord

__all__ = ["Action", "PlannerSettings", "plan"]


@dataclass(frozen=True)
class Action:
    kind: str  # "load" | "unload"
    model_id: str
    pod_id: str
    reason: str
    evicts: bool = False  # a load that may evict other copies (operator floors only)


@dataclass
class PlannerSettings:
    scale_up_rpm: float = 2000.0
    pressure_fraction: float = 0.9
    headroom_fraction: float = 0.1
    preload_threshold: float = 0.3
    horizon_ms: int = 5 * 60 * 1000
    max_actions: int = 8
    size_multiplier: float = 3.0
    failure_expiry_ms: int = 900_000
    second_copy: bool = True  # MeshSettings.second_copy
    second_copy_recent_ms: int = 60_000  # the use that qualifies must be this recent (a few planner rounds)
    second_copy_min_free_fraction: float = 0.1  # ModelMesh: (10 * totalFree) / totalCapacity >= 1



def _size(rec: ModelRecord, s: PlannerSettings) -> int:
    return rec.size or placement.predict_size(rec.file_size, s.size_multiplier)


def plan(
    models: Iterable[ModelRecord],
    pods: Iterable[InstanceRecord],
    *,
    now_ms: int,
    settings: PlannerSettings | None = None,
    rng: random.Random | None = None,
) -> list[Action]:
    s = settings or PlannerSettings()
    rng = rng or random.Random(0)
    live = {p.pod_id: p for p in pods if not p.shutting_down}
    if not live:
        return []
    # Track free space as actions are planned, so two loads do not claim the same bytes.
    free = {p: r.free for p, r in live.items()}
    loading = {p: r.loading for p, r in live.items()}
    actions: list[Action] = []
    models = list(models)

    def pods_view() -> list[InstanceRecord]:
        out = []
        for pid, r in live.items():
            out.append(InstanceRecord(pod_id=pid, endpoint=r.endpoint, capacity=r.capacity,
                                      used=r.capacity - free[pid], count=r.count, lru_ms=r.lru_ms,
                                      loading=loading[pid], max_loads=r.max_loads))
        return out

    def add_copy(rec: ModelRecord, reason: str, *, only_free: bool) -> bool:
        size = _size(rec, s)
        exclude = set(rec.copies) | set(rec.live_failures(now_ms, s.failure_expiry_ms))
        candidates = [p for p in pods_view() if not only_free or free[p.pod_id] >= size]  # free space only
        target = placement.choose_pod_for_load(candidates, size=size, exclude=exclude, rng=rng)
        if target is None or (only_free and free[target.pod_id] < size):
            return False
        free[target.pod_id] -= size
        loading[target.pod_id] += 1
        actions.append(Action("load", rec.model_id, target.pod_id, reason, evicts=not only_free))
        return True

    capacity = sum(r.capacity for r in live.values())

    def second_copy_wanted(rec: ModelRecord) -> bool:
        if not s.second_copy or len(live) < 2 or rec.max_copies == 1 or not capacity:
            return False
        if not usage.second_copy_due(rec, now_ms, s.second_copy_recent_ms):
            return False
        free_after = sum(free.values()) - _size(rec, s)
        return (free_after >= capacity * s.second_copy_min_free_fraction
                and (capacity - free_after) / capacity <= s.pressure_fraction)

    def drop_copy(rec: ModelRecord, holders: list[str], reason: str) -> None:
        # drop the copy on the fullest pod
        victim = min(holders, key=lambda p: free.get(p, 0))
        free[victim] = free.get(victim, 0) + (rec.copies[victim].size or rec.size)
        actions.append(Action("unload", rec.model_id, victim, reason))

    for rec in models:
        holders = [p for p in rec.loaded_on() if p in live]
        pending = [p for p in rec.loading_on() if p in live]
        n = len(holders) + len(pending)
        floor = max(rec.min_copies, 1 if rec.pinned else 0)
        if rec.max_copies:
            floor = min(floor, rec.max_copies)
        if n < floor:
            add_copy(rec, f"{'pinned' if rec.pinned else 'min copies'}: {n} of {floor} copies", only_free=False)
            continue
        if rec.max_copies and len(holders) > rec.max_copies:
            for _ in range(len(holders) - rec.max_copies):
                drop_copy(rec, holders, f"max copies {rec.max_copies}")
                holders.remove(actions[-1].pod_id)
            continue
        if len(holders) == 1 and not pending and second_copy_wanted(rec):
            gap = (rec.used_ms - rec.prev_used_ms) / 60_000
            if add_copy(rec, f"second copy: used again {gap:.0f} min after an earlier use (regular usage)",
                        only_free=True):
                continue
        rpm = usage.fresh_rpm(rec, now_ms)
        if holders and not pending and rpm / len(holders) > s.scale_up_rpm:
            if (not rec.max_copies or len(holders) < rec.max_copies) and len(holders) < len(live):
                # a copy for load, not for an operator's rule: free space only, never evicts
                add_copy(rec, f"rate {rpm:.0f}/min over {len(holders)} copies exceeds "
                              f"{s.scale_up_rpm:.0f} per copy", only_free=True)

    used = capacity - sum(free.values())
    if capacity and used / capacity > s.pressure_fraction:
        for rec in sorted(models, key=lambda m: usage.fresh_rpm(m, now_ms)):
            holders = [p for p in rec.loaded_on() if p in live]
            keep = max(1, rec.min_copies)
            rpm = usage.fresh_rpm(rec, now_ms)
            if len(holders) > keep and rpm / (len(holders) - 1) < s.scale_up_rpm * 0.5:
                drop_copy(rec, holders, f"memory pressure: extra copy is cold ({rpm:.0f}/min)")
                used = capacity - sum(free.values())
                if used / capacity <= s.pressure_fraction:
                    break

    # Preload into free space, most likely first.
    candidates = []
    for rec in models:
        if rec.copies or rec.live_failures(now_ms, s.failure_expiry_ms):
            continue
        p = usage.use_probability(rec, now_ms, horizon_ms=s.horizon_ms)
        if p >= s.preload_threshold:
            candidates.append((p, rec))
    candidates.sort(key=lambda x: -x[0])
    for p, rec in candidates:
        if len(actions) >= s.max_actions:
            break
        size = _size(rec, s)
        target = max(live.values(), key=lambda r: free[r.pod_id])
        headroom = int(target.capacity * s.headroom_fraction)
        if free[target.pod_id] - size < headroom:
            continue
        free[target.pod_id] -= size
        actions.append(Action("load", rec.model_id, target.pod_id, f"preload: use likely soon (p={p:.2f})"))
    return actions

"""The leader's plan: which copies to add or drop across the mesh. Pure: records in, actions out.

One pod at a time (elected through etcd) runs :func:`plan` every few seconds over its registry
view and carries the actions out. Rules, in order:

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
7. **Preload by replacement** (``replace_preload``; off unless the leader carries out
   ``displace``) — an unloaded model whose :func:`plane.usage.near_term_value` (probability of a
   request within ``usage.PREDICT_HORIZON_MS``) reaches ``replace_threshold`` is loaded on a full
   pod in place of resident copies that are each worth at least ``replace_margin`` less by the same
   measure. That measure is the pods' own eviction weight (:func:`plane.usage.request_weight`)
   read as a probability, so the pods would evict those copies first anyway; the plan only acts
   before the request instead of at it. Against thrashing: the margin (a model displaced for
   another can only displace it back after their values have swapped by twice the margin), no
   copy loaded less than ``replace_min_age_ms`` ago is displaced, nor a pinned copy or one its
   ``min_copies`` floor needs, and each copy is displaced at most once per plan. The pod is the one
   whose displaced copies are worth least (then fewest loads under way, fewest copies displaced).

Only the floors of rule 1 (an operator's explicit policy) may evict. Every other load is marked
so that the pod that carries it out uses free space only: a stale view of a pod's free space
makes a preload fail, never evict. Rule 7 frees that space by naming the copies to drop.

**The plan** is a list of :class:`Action`, carried out in order (plain data, JSON-able with
``dataclasses.asdict``)::

    Action(kind="unload", model_id, pod_id, reason)                       # drop that copy
    Action(kind="load", model_id, pod_id, reason, evicts=True)            # rule 1: may evict
    Action(kind="load", model_id, pod_id, reason)                         # free space only
    Action(kind="load", model_id, pod_id, reason, displace=("m1", ...))   # rule 7

A load with ``displace`` (its reason starts with ``"preload"``, like rule 6's, so turning
preloads off drops both) is a planned load (free space only) on ``pod_id`` preceded by unloading
the copies of the named models *on that same pod*. The pod should do it as one step when the load
gets its load slot: (1) keep the named copies that are still loaded, not pinned and serve no
request; (2) if the pod's free space plus their sizes does not fit the model, do nothing (the
load fails as any planned load without room, nothing is unloaded); (3) otherwise unload them
(reason ``"displaced by preload of <model>"``), reserve and load as a planned load. A leader that
cannot pass ``displace`` to the pod may instead unload each named copy (``unload_on``) and then
send the planned load: a request that takes the freed space in between makes the preload fail,
never evict. ``bench/sim_pods.py`` carries out ``displace`` the first way.
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
    displace: tuple[str, ...] = ()  # a load (rule 7): unload these models' copies on pod_id first


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
    replace_preload: bool = False  # rule 7: the leader must carry out Action.displace to turn it on
    replace_threshold: float = 0.6  # near_term_value a model needs to displace anything
    replace_margin: float = 0.2  # ... and by how much it must beat each copy it displaces
    replace_min_age_ms: int = usage.PREDICT_HORIZON_MS  # copies loaded more recently are never displaced


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

    unloaded: list[ModelRecord] = []  # preload candidates (rules 6 and 7)
    multi: list[ModelRecord] = []  # models with more than one copy (rule 5)
    for rec in models:
        if not rec.copies:
            if not rec.pinned and not rec.min_copies:  # nothing of rules 1-4 applies
                unloaded.append(rec)
                continue
        elif len(rec.copies) > 1:
            multi.append(rec)
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
        if not holders or pending:
            continue
        rpm = usage.fresh_rpm(rec, now_ms)
        if rpm / len(holders) > s.scale_up_rpm:
            if (not rec.max_copies or len(holders) < rec.max_copies) and len(holders) < len(live):
                # a copy for load, not for an operator's rule: free space only, never evicts
                add_copy(rec, f"rate {rpm:.0f}/min over {len(holders)} copies exceeds "
                              f"{s.scale_up_rpm:.0f} per copy", only_free=True)

    used = capacity - sum(free.values())
    if capacity and used / capacity > s.pressure_fraction:
        for rec in sorted(multi, key=lambda m: usage.fresh_rpm(m, now_ms)):
            holders = [p for p in rec.loaded_on() if p in live]
            keep = max(1, rec.min_copies)
            rpm = usage.fresh_rpm(rec, now_ms)
            if len(holders) > keep and rpm / (len(holders) - 1) < s.scale_up_rpm * 0.5:
                drop_copy(rec, holders, f"memory pressure: extra copy is cold ({rpm:.0f}/min)")
                used = capacity - sum(free.values())
                if used / capacity <= s.pressure_fraction:
                    break

    # Preload into free space, most likely first.
    unloaded = [rec for rec in unloaded if not rec.failed or not rec.live_failures(now_ms, s.failure_expiry_ms)]
    candidates = [(p, rec) for rec in unloaded if _may_preload(rec, now_ms, s)
                  and (p := usage.use_probability(rec, now_ms, horizon_ms=s.horizon_ms)) >= s.preload_threshold]
    candidates.sort(key=lambda x: -x[0])
    preloaded: set[str] = set()
    target = max(live.values(), key=lambda r: free[r.pod_id])  # the pod with the most free space
    for p, rec in candidates:
        if len(actions) >= s.max_actions:
            break
        size = _size(rec, s)
        headroom = int(target.capacity * s.headroom_fraction)
        if free[target.pod_id] - size < headroom:
            continue
        free[target.pod_id] -= size
        target = max(live.values(), key=lambda r: free[r.pod_id])
        preloaded.add(rec.model_id)
        actions.append(Action("load", rec.model_id, target.pod_id, f"preload: use likely soon (p={p:.2f})"))
    if s.replace_preload and len(actions) < s.max_actions:
        unloading = {(a.model_id, a.pod_id) for a in actions if a.kind == "unload"}
        rest = [rec for rec in unloaded if rec.model_id not in preloaded]
        actions.extend(_replacements(rest, models, live, free, loading, unloading, now_ms, s,
                                     s.max_actions - len(actions)))
    return actions


def _may_preload(rec: ModelRecord, now_ms: int, s: PlannerSettings) -> bool:
    """A cheap bound: whether :func:`usage.use_probability` can reach the threshold at all (a
    fresh rate, a session pattern, or a last use recent enough for the recency term)."""
    if rec.pod_rpm or len(rec.starts) >= usage.PERIODIC_MIN_SESSIONS:
        return True
    if not rec.last_used_ms or s.preload_threshold >= 0.8:
        return False
    idle = now_ms - rec.last_used_ms
    return 0.8 * 0.5 ** (idle / usage.RECENCY_HALF_LIFE_MS) >= s.preload_threshold


REPLACE_MIN_LEAD_MS = 15_000  # a displaced copy is valued over at least this long (a few usage flushes)


def _replacements(unloaded: list[ModelRecord], models: list[ModelRecord], live: dict[str, InstanceRecord],
                  free: dict[str, int], loading: dict[str, int], unloading: set[tuple[str, str]], now_ms: int,
                  s: PlannerSettings, budget: int) -> list[Action]:
    """Rule 7: loads that displace copies worth ``replace_margin`` less (see the module docstring).

    A displaced copy is valued over the time left until the candidate's session is expected
    (at least ``REPLACE_MIN_LEAD_MS``): what displacing it now rather than at the candidate's
    first request costs is its chance of a request in between. So a preload a few minutes early
    displaces only copies that are nearly worthless (a finished session, the far tail), and
    dearer ones only as the session comes close."""
    wanted = []
    for rec in unloaded:
        # Only a predicted session displaces: for the count and the rate, the pods' eviction order
        # already acts, and moving copies between pods on those costs more loads than it saves.
        if not usage.regular(rec) or usage.periodic_probability(rec, now_ms, usage.PREDICT_HORIZON_MS) <= 0:
            continue
        v = usage.near_term_value(rec, now_ms)
        guess = usage.next_expected_start(rec.starts, now_ms)
        if v >= s.replace_threshold and v > s.replace_margin and guess is not None:
            wanted.append((v, max(REPLACE_MIN_LEAD_MS, guess[0] - now_ms), rec))
    if not wanted or budget <= 0:
        return []
    wanted.sort(key=lambda x: (-x[0], x[1], x[2].model_id))
    # Displaceable copies per pod, least valuable first: (weight, since_ms, model_id, size).
    victims: dict[str, list[tuple[float, int, str, int]]] = {p: [] for p in live}
    for rec in models:
        if not rec.copies or rec.pinned:
            continue
        loaded = [(p, c) for p, c in rec.copies.items() if c.state == "loaded" and p in live]
        spare = len(loaded) - rec.min_copies  # copies that may go without breaking the floor
        if spare <= 0:
            continue
        old = [(p, c) for p, c in loaded
               if now_ms - c.since_ms >= s.replace_min_age_ms and (rec.model_id, p) not in unloading]
        if not old:
            continue
        weight = usage.keep_weight(rec, now_ms)
        for p, c in old[:spare]:
            victims[p].append((weight, c.since_ms, rec.model_id, c.size or rec.size))
    for lst in victims.values():
        lst.sort()
    out: list[Action] = []
    for v, lead, rec in wanted:
        if len(out) >= budget:
            break
        size = _size(rec, s)
        limit = usage.probability_to_weight(v - s.replace_margin, lead)  # the dearest copy it may displace
        failed = rec.live_failures(now_ms, s.failure_expiry_ms)
        best = None
        for pid in sorted(live):
            if pid in failed or live[pid].capacity < size:
                continue
            freed, cost, n = free[pid], 0.0, 0
            for weight, _, _, vsize in victims[pid]:
                if freed >= size or weight > limit:
                    break
                freed += vsize
                cost = weight
                n += 1
            if freed < size:
                continue
            key = (round(usage.weight_to_probability(cost, lead), 2), loading[pid], n, -free[pid])
            if best is None or key < best[0]:
                best = (key, pid, n, freed)
        if best is None:
            continue
        (cost, *_), pid, n, freed = best
        taken, victims[pid] = victims[pid][:n], victims[pid][n:]
        free[pid] = freed - size
        loading[pid] += 1
        names = tuple(m for _, _, m, _ in taken)
        what = (f"displacing {len(names)} cop{'y' if len(names) == 1 else 'ies'} with p≤{cost:.2f} of a request "
                f"before then" if names else "into the headroom")
        out.append(Action("load", rec.model_id, pid, f"preload by replacement: session expected in "
                                                     f"{lead / 60_000:.1f} min (p={v:.2f}), {what}", displace=names))
    return out

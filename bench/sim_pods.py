"""The simulated pods and leader of ``bench/cache_sim.py``: :class:`PlaneSim` replays one trace.

What is modelled, and which code of ``plane/pod/`` each step stands for, is in the docstring of
``bench/cache_sim.py``. The cache, placement, usage and planner decisions are the plane's own
functions; only the pods' I/O (etcd, gRPC, model files) is replaced by an event queue.

Imported with ``bench/`` on ``sys.path`` (``cache_sim.py`` puts it there), like ``traces``.
"""

from __future__ import annotations

import heapq
import math
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field

import traces as trace_mod
from sim_policies import ScoredLRU, freq_note, freq_value

from plane import placement, usage
from plane import planner as plane_planner
from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.records import CopyInfo, InstanceRecord, ModelRecord

__all__ = ["T0_MS", "RPM_WINDOW_MS", "MIB", "SimConfig", "SimResult", "SimPod", "PlaneSim", "EVICTIONS"]

T0_MS = 1_750_000_000_000  # simulated wall clock at the start of every trace
RPM_WINDOW_MS = 60_000  # plane/pod/accounting.py RPM_WINDOW_S
MIB = 1024 * 1024
# "plane": usage.request_weight as plane/pod/accounting.py calls it (decayed count, with the periodic
# prediction); "count": the decayed count alone (request_weight(predicted=False), the order before the
# predictor took part); "lru": pure recency (the order before that); "freq": the prototype of the count.
EVICTIONS = ("plane", "count", "lru", "freq")


@dataclass
class SimConfig:
    n_pods: int = 3
    capacity_fraction: float = 0.10  # total capacity / total size of the models
    model_size: int = 64 * MIB  # every model's measured size, unless PlaneSim gets ``sizes``
    load_ms: int = 50
    max_loads: int = 1  # MeshSettings.max_concurrent_loads
    usage_flush_s: float = 2.0
    planner_interval_s: float = 5.0
    planner: bool = True
    eviction: str = "plane"  # one of EVICTIONS
    planner_settings: plane_planner.PlannerSettings = field(default_factory=plane_planner.PlannerSettings)
    seed: int = 0


@dataclass
class SimResult:
    requests: int = 0  # requests measured (after the trace's warm-up)
    hits: int = 0
    loads: int = 0
    planner_loads: int = 0
    planner_unloads: int = 0
    displaced: int = 0  # copies unloaded to make room for a preload by replacement
    planner_failed: int = 0  # planned loads that found no free space when their load slot came
    evictions: int = 0
    failed_loads: int = 0
    first_requests: int = 0  # measured requests the trace tags as the first of a job / session
    first_misses: int = 0
    first_waits_ms: list[int] = field(default_factory=list)  # wait of each first request (0 = hit)
    plan_seconds: list[float] = field(default_factory=list)  # wall time of each planner round
    usage_writes: int = 0  # model-record writes of the usage flushes
    copy_writes: int = 0  # model-record writes of copy changes (load, loaded, evict, unload)
    seconds: float = 0.0

    @property
    def hit_ratio(self) -> float:
        return self.hits / self.requests if self.requests else 0.0


class SimPod:
    def __init__(self, pod_id: str, capacity: int, cfg: SimConfig, key: Callable[[CacheEntry], float] | None):
        self.pod_id = pod_id
        self.cache = WeightedLRU(capacity) if key is None else ScoredLRU(capacity, key)
        self.max_loads = cfg.max_loads
        self.usage: dict[str, int] = defaultdict(int)
        self.model_rpm: dict[str, deque[int]] = defaultdict(deque)
        self.loading: dict[str, int] = {}  # model -> requests waiting for it (load queued or running)
        self.planned: dict[str, tuple[str, ...]] = {}  # queued planned loads -> the copies they displace
        self.queue: deque[str] = deque()  # loads waiting for the load semaphore
        self.active = 0
        self.record = InstanceRecord(pod_id=pod_id, endpoint=pod_id, capacity=capacity, max_loads=cfg.max_loads)

    def instance_record(self, now: int) -> InstanceRecord:
        """The pod's instance record as it would publish it now (one object, updated in place)."""
        r = self.record
        r.used, r.count, r.lru_ms, r.loading, r.updated_ms = (
            self.cache.used, len(self.cache), int(self.cache.lru_time()), len(self.loading), now)
        return r


class PlaneSim:
    """The pods and the leader over one trace. See the module docstring for what is modelled.

    ``sizes`` (bytes per model index) gives models different sizes; then each pod's capacity is
    ``capacity_fraction`` of the total bytes over ``n_pods``. Without it every model has
    ``cfg.model_size`` and the capacity is a whole number of models."""

    def __init__(self, trace: trace_mod.Trace, cfg: SimConfig, sizes: Sequence[int] | None = None):
        self.trace = trace
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        mult = cfg.planner_settings.size_multiplier
        self.names = [trace_mod.model_name(i) for i in range(trace.n_models)]
        sizes = [cfg.model_size] * trace.n_models if sizes is None else [int(x) for x in sizes]
        self.size = dict(zip(self.names, sizes, strict=True))
        self.records = {}
        for n, size in self.size.items():  # a file size whose prediction is the measured size, or just above
            file_size = max(1, math.ceil((size - placement.SESSION_OVERHEAD_BYTES) / mult))
            self.records[n] = ModelRecord(model_id=n, path=f"{n}.onnx", created_ms=T0_MS, file_size=file_size)
        if len(set(sizes)) == 1:
            self.slots = max(1, round(trace.n_models * cfg.capacity_fraction))
            per = [(self.slots // cfg.n_pods + (1 if i < self.slots % cfg.n_pods else 0)) * sizes[0]
                   for i in range(cfg.n_pods)]
        else:
            per = [int(sum(sizes) * cfg.capacity_fraction / cfg.n_pods)] * cfg.n_pods
        self.freq: dict[str, list[float]] = {}
        self.now = T0_MS
        if cfg.eviction not in EVICTIONS:
            raise ValueError(f"unknown eviction {cfg.eviction!r}")
        key = None
        if cfg.eviction == "freq":
            key = lambda e: freq_value(e.model_id, self.now, self.freq)  # noqa: E731
        self.pods = {f"pod-{i}": SimPod(f"pod-{i}", per[i], cfg, key) for i in range(cfg.n_pods)}
        self.pod_list = list(self.pods.values())
        self.events: list[tuple[int, int, str, str, str]] = []
        self._seq = 0
        self.waits: dict[tuple[str, str], list[int]] = {}  # (pod, model) -> times of tagged requests waiting
        self.res = SimResult()

    # event queue
    def _at(self, t: int, kind: str, pod: str = "", model: str = "") -> None:
        self._seq += 1
        heapq.heappush(self.events, (t, self._seq, kind, pod, model))

    # serving a request on a pod: Server.serve touches the copy, Usage.record counts it
    def _serve(self, pod: SimPod, name: str, t: int) -> None:
        pod.cache.touch(name, t)
        pod.usage[name] += 1
        pod.model_rpm[name].append(t)

    def _predicted(self, rec: ModelRecord) -> int:
        return rec.size or placement.predict_size(rec.file_size, self.cfg.planner_settings.size_multiplier)

    # Router.choose_loader
    def _choose_loader(self, rec: ModelRecord) -> SimPod | None:
        recs = [p.instance_record(self.now) for p in self.pod_list]
        choice = placement.choose_pod_for_load(recs, size=self._predicted(rec), rng=self.rng)
        return self.pods[choice.pod_id] if choice else None

    # Copies.ensure_local
    def _ensure_local(self, pod: SimPod, name: str, t: int, waiters: int) -> None:
        entry = pod.cache.get(name)
        if entry is not None and not entry.loading:
            for _ in range(waiters):
                self._serve(pod, name, t)
            return
        if name in pod.loading:
            pod.loading[name] += waiters
            return
        pod.loading[name] = waiters
        if pod.active < pod.max_loads:
            self._start_load(pod, name, t)
        else:
            pod.queue.append(name)

    # Copies._load up to the fetch (inside the load semaphore): Copies._begin
    def _start_load(self, pod: SimPod, name: str, t: int) -> None:
        rec = self.records[name]
        predicted = self._predicted(rec)
        displace = pod.planned.pop(name, None)
        try:
            if displace is not None and not pod.loading.get(name):
                if not self._displace(pod, name, predicted, displace):  # planned: free space only
                    self.res.planner_failed += 1
                    pod.loading.pop(name, None)
                    self._next_load(pod, t)
                    return
            else:  # a request's load (or a planned one a request joined, as its retry would): may evict
                self._make_room(pod, name, predicted)
        except NoRoom:
            self.res.failed_loads += 1
            pod.loading.pop(name, None)
            self.waits.pop((pod.pod_id, name), None)
            self._next_load(pod, t)
            return
        pod.active += 1
        pod.cache.add(name, predicted, t, loading=True, pinned=rec.pinned)
        rec.copies[pod.pod_id] = CopyInfo("loading", t, predicted)
        self.res.loads += 1
        self.res.copy_writes += 1
        self._at(t + self.cfg.load_ms, "loaded", pod.pod_id, name)

    def _displace(self, pod: SimPod, name: str, size: int, displace: tuple[str, ...]) -> bool:
        """A planned load with ``Action.displace``, carried out as the planner's docstring says:
        the named copies still loaded and idle are unloaded if that makes the model fit."""
        gone = [e for m in displace if (e := pod.cache.get(m)) is not None and e.evictable]
        if pod.cache.free + sum(e.size for e in gone) < size:
            return False
        for e in gone:
            self._unload(pod, e.model_id)
            self.res.displaced += 1
        return True

    def _next_load(self, pod: SimPod, t: int) -> None:
        while pod.queue and pod.active < pod.max_loads:
            self._start_load(pod, pod.queue.popleft(), t)

    # Copies._load after the session is created: Copies._admit
    def _loaded(self, pod: SimPod, name: str, t: int) -> None:
        pod.active -= 1
        waiters = pod.loading.pop(name, 0)
        entry = pod.cache.get(name)
        rec = self.records[name]
        waiting = self.waits.pop((pod.pod_id, name), ())
        if entry is None:  # unloaded while loading
            rec.copies.pop(pod.pod_id, None)
        else:
            size = self.size[name]
            pod.cache.resize(name, size)
            entry.loading = False
            rec.copies[pod.pod_id] = CopyInfo("loaded", t, size)
            rec.size = size
            self.res.copy_writes += 1
            for _ in range(waiters):
                self._serve(pod, name, t)
            self.res.first_waits_ms.extend(t - t_req for t_req in waiting)
        self._next_load(pod, t)

    # Copies._make_room (with Usage.weight as the key)
    def _make_room(self, pod: SimPod, name: str, size: int) -> None:
        ev = self.cfg.eviction
        if ev in ("plane", "count"):
            predicted = ev == "plane"

            def weight(e: CacheEntry) -> float:
                rec = self.records.get(e.model_id)
                return usage.request_weight(rec, self.now, predicted=predicted) + pod.usage.get(e.model_id, 0)

            victims = pod.cache.plan_admission(size, exclude=name, key=weight)
        else:
            victims = pod.cache.plan_admission(size, exclude=name)
        for v in victims:
            pod.cache.remove(v.model_id)
            self.records[v.model_id].copies.pop(pod.pod_id, None)
            self.res.evictions += 1
            self.res.copy_writes += 1

    # Copies.unload
    def _unload(self, pod: SimPod, name: str) -> None:
        if name not in pod.cache:
            return
        self.records[name].copies.pop(pod.pod_id, None)
        pod.cache.remove(name)
        self.res.copy_writes += 1

    # Usage.flush (the same calls in the same order)
    def _flush(self, pod: SimPod, t: int) -> None:
        used, pod.usage = pod.usage, defaultdict(int)
        cutoff = t - RPM_WINDOW_MS
        for name, n in used.items():
            times = pod.model_rpm[name]
            while times and times[0] < cutoff:
                times.popleft()
            rpm = round(len(times) * 60_000 / RPM_WINDOW_MS, 1)
            rec = self.records[name]
            usage.note_session_start(rec, t)
            usage.note_requests(rec, n, t)
            rec.last_used_ms = max(rec.last_used_ms, t)
            usage.note_use(rec, t)
            rec.used_ms = max(rec.used_ms, t)
            usage.update_rate(rec, pod.pod_id, rpm, t)
            if self.cfg.eviction == "freq":
                freq_note(rec, n, t, self.freq)
        self.res.usage_writes += len(used)

    # Leader.run_planner
    def _plan(self, t: int) -> None:
        pods = [p.instance_record(t) for p in self.pod_list]
        t0 = time.perf_counter()
        actions = plane_planner.plan(self.records.values(), pods, now_ms=t, settings=self.cfg.planner_settings)
        self.res.plan_seconds.append(time.perf_counter() - t0)
        for a in actions:
            pod = self.pods[a.pod_id]
            if a.kind == "load":
                if a.model_id in pod.cache or a.model_id in pod.loading:
                    continue
                self.res.planner_loads += 1
                if not a.evicts:  # Purpose.PLANNED: free space only (after displacing a.displace)
                    pod.planned[a.model_id] = a.displace
                self._ensure_local(pod, a.model_id, t, 0)
            else:
                self.res.planner_unloads += 1
                self._unload(pod, a.model_id)

    def _handle(self, ev: tuple[int, int, str, str, str]) -> None:
        t, _, kind, pod_id, name = ev
        self.now = t
        if kind == "loaded":
            self._loaded(self.pods[pod_id], name, t)
        elif kind == "flush":
            self._flush(self.pods[pod_id], t)
            self._at(t + int(self.cfg.usage_flush_s * 1000), "flush", pod_id)
        elif kind == "plan":
            self._plan(t)
            self._at(t + int(self.cfg.planner_interval_s * 1000), "plan")

    def run(self) -> SimResult:
        t_start = time.perf_counter()
        flush_ms = int(self.cfg.usage_flush_s * 1000)
        for i, pod in enumerate(self.pod_list):  # pods flush on their own timers
            self._at(T0_MS + flush_ms * (i + 1) // len(self.pod_list), "flush", pod.pod_id)
        if self.cfg.planner:
            self._at(T0_MS + int(self.cfg.planner_interval_s * 1000), "plan")
        events = self.events
        hits = measured = 0
        res = self.res
        warmup = int(self.trace.params.get("warmup_ms", 0))
        names, records, pods, pod_list, rng = self.names, self.records, self.pods, self.pod_list, self.rng
        n_pods = len(pod_list)
        tags = self.trace.tags.tolist() if self.trace.tags is not None else [0] * len(self.trace)
        for t_rel, m, tag in zip(self.trace.times_ms.tolist(), self.trace.models.tolist(), tags, strict=True):
            t = T0_MS + t_rel
            while events and events[0][0] <= t:
                self._handle(heapq.heappop(events))
            self.now = t
            counted = t_rel >= warmup
            measured += counted
            first = tag and counted
            res.first_requests += first
            name = names[m]
            rec = records[name]
            entry_pod = pod_list[rng.randrange(n_pods)] if n_pods > 1 else pod_list[0]
            holders = [p for p, c in rec.copies.items() if c.state == "loaded"]
            if holders:
                hits += counted
                if first:
                    res.first_waits_ms.append(0)
                target = placement.choose_copy(sorted(holders), {}, prefer=entry_pod.pod_id, rng=rng)
                self._serve(pods[target], name, t)
                continue
            res.first_misses += first
            loading = sorted(p for p, c in rec.copies.items() if c.state == "loading")
            if loading:
                pods[loading[0]].loading[name] = pods[loading[0]].loading.get(name, 0) + 1
                if first:
                    self.waits.setdefault((loading[0], name), []).append(t)
                continue
            pod = self._choose_loader(rec)
            if pod is None:
                res.failed_loads += 1
                continue
            if first:
                self.waits.setdefault((pod.pod_id, name), []).append(t)
            self._ensure_local(pod, name, t, 1)
        # loads still running at the end: finish them (for their waiters' waits), no more rounds
        self.events = [e for e in events if e[2] == "loaded"]
        heapq.heapify(self.events)
        while self.events:
            self._handle(heapq.heappop(self.events))
        res.requests = measured
        res.hits = hits
        res.seconds = time.perf_counter() - t_start
        return res

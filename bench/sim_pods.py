"""The simulated pods and leader of ``bench/cache_sim.py``: :class:`PlaneSim` replays one trace.

What is modelled, and which code of ``plane/pod/`` each step stands for, is in the docstring of
``bench/cache_sim.py``. The cache, placement, usage and planner decisions are the plane's own
functions; only the pods' I/O (etcd, gRPC, model files) is replaced by an event queue.

Imported with ``bench/`` on ``sys.path`` (``cache_sim.py`` puts it there), like ``traces``.
"""

from __future__ import annotations

import heapq
import random
import time
from collections import defaultdict, deque
from collections.abc import Callable
from dataclasses import dataclass, field

import traces as trace_mod
from sim_policies import REPLACE_MAX_SCORE, ScoredLRU, freq_note, freq_value

from plane import placement, usage
from plane import planner as plane_planner
from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.registry import CopyInfo, InstanceRecord, ModelRecord

__all__ = ["T0_MS", "RPM_WINDOW_MS", "MIB", "SimConfig", "SimResult", "SimPod", "PlaneSim"]

T0_MS = 1_750_000_000_000  # simulated wall clock at the start of every trace
RPM_WINDOW_MS = 60_000  # plane/pod/accounting.py RPM_WINDOW_S
MIB = 1024 * 1024


# -- the plane simulation -----------------------------------------------------------------------------------


@dataclass
class SimConfig:
    n_pods: int = 3
    capacity_fraction: float = 0.10  # total capacity / total size of the models
    model_size: int = 64 * MIB  # every model has this measured size (its file is sized so the prediction is exact)
    load_ms: int = 50
    max_loads: int = 1  # MeshSettings.max_concurrent_loads
    usage_flush_s: float = 2.0
    planner_interval_s: float = 5.0
    planner: bool = True
    eviction: str = "plane"  # "plane" (shipped: decayed request count, LRU among equals) | "lru" (the
    # order before that change: pure recency) | "freq" (the prototype that led to the change)
    preload_replace: bool = False  # prototype: periodic preloads may replace a cold copy
    planner_settings: plane_planner.PlannerSettings = field(default_factory=plane_planner.PlannerSettings)
    seed: int = 0


@dataclass
class SimResult:
    requests: int = 0
    hits: int = 0
    loads: int = 0
    planner_loads: int = 0
    planner_unloads: int = 0
    evictions: int = 0
    failed_loads: int = 0
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
        self.queue: deque[str] = deque()  # loads waiting for the load semaphore
        self.active = 0

    def instance_record(self, now: int) -> InstanceRecord:
        return InstanceRecord(
            pod_id=self.pod_id, endpoint=self.pod_id, capacity=self.cache.capacity, used=self.cache.used,
            count=len(self.cache), lru_ms=int(self.cache.lru_time()), loading=len(self.loading),
            max_loads=self.max_loads, updated_ms=now,
        )


class PlaneSim:
    """The pods and the leader over one trace. See the module docstring for what is modelled."""

    def __init__(self, trace: trace_mod.Trace, cfg: SimConfig):
        self.trace = trace
        self.cfg = cfg
        self.rng = random.Random(cfg.seed)
        size = cfg.model_size
        mult = cfg.planner_settings.size_multiplier
        file_size = int((size - placement.SESSION_OVERHEAD_BYTES) / mult)
        while placement.predict_size(file_size, mult) < size:
            file_size += 1
        self.names = [trace_mod.model_name(i) for i in range(trace.n_models)]
        self.records = {
            n: ModelRecord(model_id=n, path=f"{n}.onnx", created_ms=T0_MS, file_size=file_size) for n in self.names
        }
        self.slots = max(1, round(trace.n_models * cfg.capacity_fraction))
        per = [self.slots // cfg.n_pods + (1 if i < self.slots % cfg.n_pods else 0) for i in range(cfg.n_pods)]
        self.freq: dict[str, list[float]] = {}
        self.now = T0_MS
        key = None
        if cfg.eviction == "freq":
            key = lambda e: freq_value(e.model_id, self.now, self.freq)  # noqa: E731
        elif cfg.eviction not in ("lru", "plane"):
            raise ValueError(f"unknown eviction {cfg.eviction!r}")
        self.pods = {f"pod-{i}": SimPod(f"pod-{i}", per[i] * size, cfg, key) for i in range(cfg.n_pods)}
        self.pod_list = list(self.pods.values())
        self.events: list[tuple[int, int, str, str, str]] = []
        self._seq = 0
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

    # Router.choose_loader
    def _choose_loader(self, rec: ModelRecord) -> SimPod | None:
        size = rec.size or placement.predict_size(rec.file_size, self.cfg.planner_settings.size_multiplier)
        recs = [p.instance_record(self.now) for p in self.pod_list]
        choice = placement.choose_pod_for_load(recs, size=size, rng=self.rng)
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

    # Copies._load up to the fetch (inside the load semaphore)
    def _start_load(self, pod: SimPod, name: str, t: int) -> None:
        rec = self.records[name]
        predicted = rec.size or placement.predict_size(rec.file_size, self.cfg.planner_settings.size_multiplier)
        try:
            self._make_room(pod, name, predicted)
        except NoRoom:
            self.res.failed_loads += 1
            pod.loading.pop(name, None)
            self._next_load(pod, t)
            return
        pod.active += 1
        pod.cache.add(name, predicted, t, loading=True, pinned=rec.pinned)
        rec.copies[pod.pod_id] = CopyInfo("loading", t, predicted)
        self.res.loads += 1
        self._at(t + self.cfg.load_ms, "loaded", pod.pod_id, name)

    def _next_load(self, pod: SimPod, t: int) -> None:
        while pod.queue and pod.active < pod.max_loads:
            self._start_load(pod, pod.queue.popleft(), t)

    # Copies._load after the session is created
    def _loaded(self, pod: SimPod, name: str, t: int) -> None:
        pod.active -= 1
        waiters = pod.loading.pop(name, 0)
        entry = pod.cache.get(name)
        rec = self.records[name]
        if entry is None:  # unloaded while loading
            rec.copies.pop(pod.pod_id, None)
        else:
            pod.cache.resize(name, self.cfg.model_size)
            entry.loading = False
            rec.copies[pod.pod_id] = CopyInfo("loaded", t, self.cfg.model_size)
            rec.size = self.cfg.model_size
            for _ in range(waiters):
                self._serve(pod, name, t)
        self._next_load(pod, t)

    # Copies._make_room (with Usage.weight as the key)
    def _make_room(self, pod: SimPod, name: str, size: int) -> None:
        if self.cfg.eviction == "plane":
            def weight(e: CacheEntry) -> float:
                return usage.request_weight(self.records.get(e.model_id), self.now) + pod.usage.get(e.model_id, 0)

            victims = pod.cache.plan_admission(size, exclude=name, key=weight)
        else:
            victims = pod.cache.plan_admission(size, exclude=name)
        for v in victims:
            pod.cache.remove(v.model_id)
            self.records[v.model_id].copies.pop(pod.pod_id, None)
            self.res.evictions += 1

    # Copies.unload
    def _unload(self, pod: SimPod, name: str) -> None:
        if name not in pod.cache:
            return
        self.records[name].copies.pop(pod.pod_id, None)
        pod.cache.remove(name)

    # Usage.flush
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
            rec.last_used_ms = max(rec.last_used_ms, t)
            usage.update_rate(rec, pod.pod_id, rpm, t)
            if self.cfg.eviction == "plane":
                usage.note_requests(rec, n, t)
            if self.cfg.eviction == "freq":
                freq_note(rec, n, t, self.freq)

    # Leader.run_planner
    def _plan(self, t: int) -> None:
        pods = [p.instance_record(t) for p in self.pod_list]
        actions = plane_planner.plan(self.records.values(), pods, now_ms=t, settings=self.cfg.planner_settings)
        for a in actions:
            pod = self.pods[a.pod_id]
            if a.kind == "load":
                self.res.planner_loads += 1
                self._ensure_local(pod, a.model_id, t, 0)
            else:
                self.res.planner_unloads += 1
                self._unload(pod, a.model_id)
        if self.cfg.preload_replace:
            self._preload_replace(t, self.cfg.planner_settings.max_actions - len(actions))

    def _preload_replace(self, t: int, budget: int) -> None:
        """Prototype planner rule: a model whose periodic session is due (the predictor's
        ``periodic_probability`` over the planner horizon reaches the preload threshold) is loaded
        even when no pod has free space, replacing the coldest copy (lowest decayed request
        count) provided that copy is nearly unused (count below ``REPLACE_MAX_SCORE``)."""
        s = self.cfg.planner_settings
        busy = set().union(*(p.loading for p in self.pod_list))
        due = []
        for rec in self.records.values():
            if budget <= 0 or rec.copies or rec.model_id in busy or len(rec.starts) < usage.PERIODIC_MIN_SESSIONS:
                continue
            p = usage.periodic_probability(rec, t, s.horizon_ms)
            if p >= s.preload_threshold:
                due.append((p, rec.model_id))
        due.sort(reverse=True)
        for _, name in due[:budget]:
            best = None
            for pod in self.pod_list:
                if pod.active >= pod.max_loads:
                    continue
                for e in pod.cache.entries():
                    if e.evictable:
                        score = freq_value(e.model_id, t, self.freq)
                        if score < REPLACE_MAX_SCORE and (best is None or score < best[0]):
                            best = (score, pod, e.model_id)
            if best is None:
                return
            _, pod, victim = best
            self.res.planner_unloads += 1
            self._unload(pod, victim)
            self.res.planner_loads += 1
            self._ensure_local(pod, name, t, 0)

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
        hits = 0
        names = self.names
        records = self.records
        pods = self.pods
        pod_list = self.pod_list
        rng = self.rng
        n_pods = len(pod_list)
        for t_rel, m in zip(self.trace.times_ms.tolist(), self.trace.models.tolist(), strict=True):
            t = T0_MS + t_rel
            while events and events[0][0] <= t:
                self._handle(heapq.heappop(events))
            self.now = t
            name = names[m]
            rec = records[name]
            entry_pod = pod_list[rng.randrange(n_pods)] if n_pods > 1 else pod_list[0]
            holders = [p for p, c in rec.copies.items() if c.state == "loaded"]
            if holders:
                hits += 1
                target = placement.choose_copy(sorted(holders), {}, prefer=entry_pod.pod_id, rng=rng)
                self._serve(pods[target], name, t)
                continue
            loading = sorted(p for p, c in rec.copies.items() if c.state == "loading")
            if loading:
                pods[loading[0]].loading[name] = pods[loading[0]].loading.get(name, 0) + 1
                continue
            pod = self._choose_loader(rec)
            if pod is None:
                self.res.failed_loads += 1
                continue
            self._ensure_local(pod, name, t, 1)
        self.res.requests = len(self.trace)
        self.res.hits = hits
        self.res.seconds = time.perf_counter() - t_start
        return self.res

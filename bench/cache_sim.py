"""Cache-efficiency benchmark: replay request traces against the plane's own cache policy code.

Discrete-event simulation of N pods (default 3) serving the traces of ``bench/traces.py``. The
policy under test is the code the pods run, driven the way ``plane/pod.py`` drives it:

* each pod owns a :class:`plane.cache.WeightedLRU`; a miss loads the model on the pod chosen by
  :func:`plane.placement.choose_pod_for_load` (``Pod._choose_loader``), which first evicts
  ``plan_admission``'s victims (``Pod._make_room``); a hit is served by the copy chosen by
  :func:`plane.placement.choose_copy` and touches it (``Pod.serve_local``);
* loads take ``load_ms`` and at most ``max_loads`` run at once per pod (``Pod.load_sem``); requests
  that arrive while their model loads wait for it (they are misses);
* every ``usage_flush_s`` (2 s, staggered across pods) each pod writes, for every model it served
  since the last flush, :func:`plane.usage.note_session_start`, ``last_used_ms`` and
  :func:`plane.usage.update_rate` with its 60 s-window rate (``Pod._flush_usage``);
* every ``planner_interval_s`` (5 s) the leader runs :func:`plane.planner.plan` over the
  :class:`~plane.registry.ModelRecord` / :class:`~plane.registry.InstanceRecord` objects and its
  load/unload actions are carried out (``Pod.run_planner``), loads through the same load path.

A request is a **hit** when it finds a loaded copy of its model on any pod (it is served locally
or forwarded to the holder). All models have the same size, so the hit ratio is also the byte hit
ratio and the offline policies below are exact optima for the same total capacity.

Policies compared on each trace:

* **plain LRU** — one ``WeightedLRU`` of the whole capacity, instantaneous loads, no pods, no planner;
* **plane before (LRU eviction order)** — the pods with ``plan_admission``'s pure recency order,
  as the plane shipped before victims were ordered by decayed request count (kept for comparison);
* **plane: eviction only** — the pods as above (victims: lowest decayed request count first,
  ``Pod.eviction_weight``), planner off;
* **plane: eviction + planner** — the pods with the leader's planner (the plane as shipped);
* **static oracle** — the ``k`` most requested models of the whole trace, each kept from its first
  request (a cold miss, as for every policy here) to the end (the best a policy with no knowledge
  of the future order can do on an independent Zipf stream);
* **Belady** — offline optimum (MIN): on a miss, drop the cached model whose next request is
  farthest in the future, or do not keep the requested one if its own next request is farther.

Prototype rows (``--prototype``; not the shipped code, they measure changes proposed for
``plane/``): **proto: frequency eviction** replaces the LRU victim order of ``plan_admission`` by
"lowest decayed request count first" (a count with a 5-minute half-life that the pods would keep
in the model record at each usage flush; :class:`ScoredLRU`, :func:`freq_note`);
**proto: frequency eviction + planner + periodic preload by replacement** adds the shipped
planner plus a rule that loads a model whose periodic session is due even when no pod has free
space, replacing a copy that is nearly unused (:meth:`PlaneSim._preload_replace`).

Usage::

    python bench/cache_sim.py                 # the three standard traces, ~2 min on 2 cores
    python bench/cache_sim.py --scale 0.25    # shorter traces (quarter length)
    python bench/cache_sim.py --prototype     # also the prototype rows (~7 min on 2 cores)
    python bench/cache_sim.py --only periodic-mild   # the slower-drift variant of the periodic trace

Run time is dominated by :func:`plane.planner.plan` (~35 ms per round over 1,000 records on the
reference machine; 2,880 rounds for the 4-hour periodic trace).
"""

from __future__ import annotations

import argparse
import heapq
import os
import platform
import random
import sys
import time
from collections import Counter, defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field, replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import traces as trace_mod  # noqa: E402

from plane import placement, usage
from plane import planner as plane_planner  # noqa: E402
from plane.cache import CacheEntry, NoRoom, WeightedLRU  # noqa: E402
from plane.registry import CopyInfo, InstanceRecord, ModelRecord  # noqa: E402

T0_MS = 1_750_000_000_000  # simulated wall clock at the start of every trace
RPM_WINDOW_MS = 60_000  # plane/pod.py RPM_WINDOW_S
MIB = 1024 * 1024


# -- offline references -----------------------------------------------------------------------------------


def static_oracle_hits(models: Sequence[int], k: int) -> int:
    """Hits of a cache that holds the k most requested models of the whole trace, fixed.

    Like every other policy here it starts cold: the first request of each kept model loads it
    (a miss), so it is one of the policies Belady's optimum is compared with."""
    counts = Counter(models)
    return sum(c - 1 for _, c in counts.most_common(k))


def belady_hits(models: Sequence[int], k: int) -> int:
    """Hits of Belady's MIN (equal sizes, capacity k models, bypass allowed), offline."""
    n = len(models)
    never = n + 1
    next_use = [never] * n
    last: dict[int, int] = {}
    for i in range(n - 1, -1, -1):
        m = models[i]
        next_use[i] = last.get(m, never)
        last[m] = i
    cache: dict[int, int] = {}  # model -> its next use
    heap: list[tuple[int, int]] = []  # (-next use, model), lazily invalidated
    hits = 0
    for i in range(n):
        m, nu = models[i], next_use[i]
        if m in cache:
            hits += 1
            cache[m] = nu
            heapq.heappush(heap, (-nu, m))
            continue
        if len(cache) < k:
            cache[m] = nu
            heapq.heappush(heap, (-nu, m))
            continue
        while cache.get(heap[0][1]) != -heap[0][0]:
            heapq.heappop(heap)
        if nu >= -heap[0][0]:
            continue  # the new model is needed no sooner than any cached one: do not keep it
        _, victim = heapq.heappop(heap)
        del cache[victim]
        cache[m] = nu
        heapq.heappush(heap, (-nu, m))
    return hits


def plain_lru_hits(models: Sequence[int], k: int, size: int = 1) -> int:
    """One WeightedLRU of capacity k models, instantaneous loads, no planner."""
    cache = WeightedLRU(k * size)
    hits = 0
    for t, m in enumerate(models):
        name = trace_mod.model_name(m)
        if name in cache:
            hits += 1
            cache.touch(name, t)
            continue
        for v in cache.plan_admission(size, exclude=name):
            cache.remove(v.model_id)
        cache.add(name, size, t, loading=False)
    return hits


# -- prototype: frequency-ordered eviction ------------------------------------------------------------------

FREQ_HALF_LIFE_MS = 5 * 60 * 1000
REPLACE_MAX_SCORE = 1.0  # prototype preload may evict a copy whose decayed count is below this


def freq_note(rec: ModelRecord, n: int, now_ms: int, table: dict[str, list[float]]) -> None:
    """Prototype of a registry field: decayed request count, updated at each usage flush."""
    v = table.get(rec.model_id)
    if v is None:
        table[rec.model_id] = [float(n), now_ms]
    else:
        v[0] = v[0] * 0.5 ** ((now_ms - v[1]) / FREQ_HALF_LIFE_MS) + n
        v[1] = now_ms


def freq_value(model_id: str, now_ms: int, table: dict[str, list[float]]) -> float:
    v = table.get(model_id)
    if v is None:
        return 0.0
    return v[0] * 0.5 ** ((now_ms - v[1]) / FREQ_HALF_LIFE_MS)


class ScoredLRU(WeightedLRU):
    """Prototype of ``WeightedLRU.plan_admission(size, exclude=, key=)``: victims in ascending
    ``key(entry)`` order (least recently used first among equals) instead of pure LRU order."""

    def __init__(self, capacity: int, key: Callable[[CacheEntry], float]):
        super().__init__(capacity)
        self.key = key

    def plan_admission(self, size: int, *, exclude: str | None = None) -> list[CacheEntry]:
        need = size - self.free
        if need <= 0:
            return []
        order = sorted(
            (e for e in self._entries.values() if e.model_id != exclude and e.evictable),
            key=lambda e: (self.key(e), e.last_used_ms),
        )
        victims, freed = [], 0
        for entry in order:
            victims.append(entry)
            freed += entry.size
            if freed >= need:
                return victims
        raise NoRoom(size, freed + self.free, self.capacity)


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

    # Pod.serve_local + record_use
    def _serve(self, pod: SimPod, name: str, t: int) -> None:
        pod.cache.touch(name, t)
        pod.usage[name] += 1
        pod.model_rpm[name].append(t)

    # Pod._choose_loader
    def _choose_loader(self, rec: ModelRecord) -> SimPod | None:
        size = rec.size or placement.predict_size(rec.file_size, self.cfg.planner_settings.size_multiplier)
        recs = [p.instance_record(self.now) for p in self.pod_list]
        choice = placement.choose_pod_for_load(recs, size=size, rng=self.rng)
        return self.pods[choice.pod_id] if choice else None

    # Pod.ensure_local
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

    # Pod._load up to the fetch (inside the load semaphore)
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

    # Pod._load after the session is created
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

    # Pod._make_room (with Pod.eviction_weight as the key)
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

    # Pod.unload_copy
    def _unload(self, pod: SimPod, name: str) -> None:
        if name not in pod.cache:
            return
        self.records[name].copies.pop(pod.pod_id, None)
        pod.cache.remove(name)

    # Pod._flush_usage
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

    # Pod.run_planner (leader)
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


# -- the benchmark --------------------------------------------------------------------------------------------

POLICIES = {
    "plane before (LRU eviction order), no planner": dict(planner=False, eviction="lru"),
    "plane: eviction only": dict(planner=False),
    "plane: eviction + planner": dict(planner=True),
}
PROTOTYPES = {
    "proto: frequency eviction": dict(planner=False, eviction="freq"),
    "proto: frequency eviction + planner + periodic preload by replacement": dict(
        planner=True, eviction="freq", preload_replace=True),
}

_TRACES: list[trace_mod.Trace] = []


def _run_job(job: tuple[int, str, dict]) -> tuple[int, str, dict]:
    ti, label, overrides = job
    trace = _TRACES[ti]
    k = round(trace.n_models * SimConfig().capacity_fraction)
    t0 = time.perf_counter()
    models = trace.models.tolist()
    if label == "plain LRU":
        hits = plain_lru_hits(models, k)
        extra = {}
    elif label == "static oracle":
        hits = static_oracle_hits(models, k)
        extra = {}
    elif label == "Belady (offline optimum)":
        hits = belady_hits(models, k)
        extra = {}
    else:
        res = PlaneSim(trace, replace(SimConfig(), **overrides)).run()
        hits = res.hits
        extra = dict(loads=res.loads, planner_loads=res.planner_loads, planner_unloads=res.planner_unloads,
                     evictions=res.evictions, failed=res.failed_loads)
    return ti, label, dict(hits=hits, seconds=time.perf_counter() - t0, **extra)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--scale", type=float, default=1.0, help="trace length factor (1.0: 200k requests per Zipf trace)")
    ap.add_argument("--prototype", action="store_true", help="also run the prototype policies (not shipped code)")
    ap.add_argument("--jobs", type=int, default=min(2, os.cpu_count() or 1))
    ap.add_argument("--only", default="",
                    help="comma-separated trace names (zipf-0.8, zipf-1.1, periodic, periodic-mild)")
    ap.add_argument("--json", type=str, default="", help="also write the target checks here (for bench/run_all.py)")
    args = ap.parse_args(argv)

    names = args.only.split(",") if args.only else list(trace_mod.STANDARD)
    _TRACES.extend(trace_mod.named_trace(n, args.scale) for n in names)
    labels = ["plain LRU", *POLICIES, *(PROTOTYPES if args.prototype else {}), "static oracle",
              "Belady (offline optimum)"]
    overrides = {**POLICIES, **PROTOTYPES}
    jobs = [(ti, label, overrides.get(label, {})) for ti in range(len(_TRACES)) for label in labels]
    # longest first, so two workers finish together
    jobs.sort(key=lambda j: 0 if j[1] in overrides else 1)
    t0 = time.perf_counter()
    results: dict[tuple[int, str], dict] = {}
    if args.jobs > 1:
        import multiprocessing

        with ProcessPoolExecutor(args.jobs, mp_context=multiprocessing.get_context("fork")) as ex:
            for ti, label, r in ex.map(_run_job, jobs):
                results[ti, label] = r
    else:
        for job in jobs:
            ti, label, r = _run_job(job)
            results[ti, label] = r
    elapsed = time.perf_counter() - t0

    cfg = SimConfig()
    checks = []
    for ti, trace in enumerate(_TRACES):
        static = results[ti, "static oracle"]["hits"]
        plane = results[ti, "plane: eviction + planner"]["hits"]
        value = round(100 * plane / static, 1)
        if trace.name.startswith("zipf"):
            checks.append({"target": f"{trace.name}: plane hit ratio ≥ 95% of static oracle (%)", "value": value,
                           "limit": 95, "met": value >= 95})
        else:
            checks.append({"target": f"{trace.name}: plane hit ratio > static oracle (%)", "value": value,
                           "limit": 100, "met": value > 100})
    if args.json:
        import json

        with open(args.json, "w") as f:
            json.dump({"bench": "cache_sim", "checks": checks,
                       "results": {f"{_TRACES[ti].name}/{label}": r for (ti, label), r in results.items()}}, f)
    cmd = "python bench/cache_sim.py " + " ".join(sys.argv[1:] if argv is None else argv)
    print(f"# Cache efficiency — {platform.node()} ({platform.machine()}, {os.cpu_count()} CPUs, "
          f"Python {platform.python_version()}), {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, "
          f"`{cmd.strip()}`, {elapsed:.0f} s")
    print()
    print(f"Setup: {cfg.n_pods} pods, total capacity {cfg.capacity_fraction:.0%} of the models (all models the "
          f"same size, {cfg.model_size // MIB} MiB), loads take {cfg.load_ms} ms with {cfg.max_loads} load at a time "
          f"per pod, usage flush every {cfg.usage_flush_s:g} s, planner every {cfg.planner_interval_s:g} s "
          f"(default PlannerSettings). A hit = the request finds a loaded copy on some pod.")
    for ti, trace in enumerate(_TRACES):
        k = round(trace.n_models * cfg.capacity_fraction)
        static = results[ti, "static oracle"]["hits"]
        print()
        print(f"## {trace.name}: {trace.description}; capacity {k} models")
        print()
        print("| policy | hit ratio | / static oracle | loads | planner loads / unloads |")
        print("|---|---:|---:|---:|---:|")
        for label in labels:
            r = results[ti, label]
            loads = str(r["loads"]) if "loads" in r else ""
            pl = f"{r['planner_loads']} / {r['planner_unloads']}" if "planner_loads" in r else ""
            print(f"| {label} | {r['hits'] / len(trace):.2%} | {r['hits'] / static:.1%} | {loads} | {pl} |")
        ev, full = results[ti, "plane: eviction only"], results[ti, "plane: eviction + planner"]
        print()
        print(f"Plane policy: eviction only {ev['hits'] / len(trace):.2%}, eviction + planner "
              f"{full['hits'] / len(trace):.2%} (planner effect {(full['hits'] - ev['hits']) / len(trace):+.2%} "
              f"points; {full['planner_loads']} planner loads, {full['planner_unloads']} planner unloads).")
    print()
    print("Targets (shipped plane policy = eviction + planner):")
    for c in checks:
        print(f"- {c['target']}: {c['value']:g} — {'met' if c['met'] else 'NOT met'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""Cache-efficiency benchmark: replay request traces against the plane's own cache policy code.

Discrete-event simulation of N pods (default 3) serving the traces of ``bench/traces.py``. The
policy under test is the code the pods run, driven the way the pod package ``plane/pod/`` drives it
(its ``copies``, ``routing``, ``accounting`` and ``leader`` modules):

* each pod owns a :class:`plane.cache.WeightedLRU`; a miss loads the model on the pod chosen by
  :func:`plane.placement.choose_pod_for_load` (``Router.choose_loader``), which first evicts
  ``plan_admission``'s victims (``Copies._make_room``); a hit is served by the copy chosen by
  :func:`plane.placement.choose_copy` and touches it (``Server.serve``, ``Usage.record``);
* loads take ``load_ms`` and at most ``max_loads`` run at once per pod (the load semaphore of
  ``Copies``); requests that arrive while their model loads wait for it (they are misses);
* every ``usage_flush_s`` (2 s, staggered across pods) each pod writes, for every model it served
  since the last flush, :func:`plane.usage.note_session_start`, ``last_used_ms`` and
  :func:`plane.usage.update_rate` with its 60 s-window rate (``Usage.flush``);
* every ``planner_interval_s`` (5 s) the leader runs :func:`plane.planner.plan` over the
  :class:`~plane.registry.ModelRecord` / :class:`~plane.registry.InstanceRecord` objects and its
  load/unload actions are carried out (``Leader.run_planner``), loads through the same load path.

A request is a **hit** when it finds a loaded copy of its model on any pod (it is served locally
or forwarded to the holder). All models have the same size, so the hit ratio is also the byte hit
ratio and the offline policies below are exact optima for the same total capacity.

Policies compared on each trace:

* **plain LRU** — one ``WeightedLRU`` of the whole capacity, instantaneous loads, no pods, no planner;
* **plane before (LRU eviction order)** — the pods with ``plan_admission``'s pure recency order,
  as the plane shipped before victims were ordered by decayed request count (kept for comparison);
* **plane: eviction only** — the pods as above (victims: lowest decayed request count first,
  ``Usage.weight``), planner off;
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

The simulated pods and leader are in ``bench/sim_pods.py``, the reference and prototype policies
in ``bench/sim_policies.py``; this file runs them over the traces and writes the report.

Run time is dominated by :func:`plane.planner.plan` (~35 ms per round over 1,000 records on the
reference machine; 2,880 rounds for the 4-hour periodic trace).
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import replace

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

import traces as trace_mod  # noqa: E402
from sim_pods import MIB, RPM_WINDOW_MS, T0_MS, PlaneSim, SimConfig, SimPod, SimResult  # noqa: E402
from sim_policies import (  # noqa: E402
    FREQ_HALF_LIFE_MS,
    REPLACE_MAX_SCORE,
    ScoredLRU,
    belady_hits,
    freq_note,
    freq_value,
    plain_lru_hits,
    static_oracle_hits,
)

__all__ = [  # the simulator's names, as tests/bench/test_cache_sim.py reads them (``cache_sim.X``)
    "FREQ_HALF_LIFE_MS", "MIB", "POLICIES", "PROTOTYPES", "REPLACE_MAX_SCORE", "RPM_WINDOW_MS", "T0_MS", "PlaneSim",
    "ScoredLRU", "SimConfig", "SimPod", "SimResult", "belady_hits", "freq_note", "freq_value", "main",
    "plain_lru_hits", "static_oracle_hits",
]


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

"""The cache-efficiency simulator and its reference policies, on tiny hand-made traces."""

from __future__ import annotations

import itertools
import pathlib
import random
import sys
from dataclasses import replace

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import cache_sim as cs  # noqa: E402
import traces as tr  # noqa: E402


def _trace(models: list[int], *, n_models: int, gap_ms: int = 1000, start: int = 0) -> tr.Trace:
    return tr.Trace("hand", n_models, np.arange(start, len(models) + start, dtype=np.int64) * gap_ms,
                    np.asarray(models, dtype=np.int32))


def _brute_force_optimum(models: list[int], k: int) -> int:
    """Most hits any policy can get (cold start, bypass allowed), by exhausting cache states."""
    def keep(nxt: dict[frozenset, int], state: frozenset, hits: int) -> None:
        if nxt.get(state, -1) < hits:
            nxt[state] = hits

    states = {frozenset(): 0}
    for m in models:
        nxt: dict[frozenset, int] = {}
        for state, hits in states.items():
            if m in state:
                keep(nxt, state, hits + 1)
                continue
            keep(nxt, state, hits)  # bypass
            if len(state) < k:
                keep(nxt, state | {m}, hits)
            else:
                for victim in state:
                    keep(nxt, (state - {victim}) | {m}, hits)
        states = nxt
    return max(states.values())


def test_belady_three_items():
    # capacity 2, a b c a b c: c is needed later than a and b, so MIN does not keep it: a, b hit once.
    assert cs.belady_hits([0, 1, 2, 0, 1, 2], 2) == 2
    # LRU gets nothing on the same cyclic trace
    assert cs.plain_lru_hits([0, 1, 2, 0, 1, 2], 2) == 0
    # a b c b a: c is never needed again, so MIN does not keep it: b and a both hit
    assert cs.belady_hits([0, 1, 2, 1, 0], 2) == 2
    # a b c a c b with room for 2: on c evict b (needed last); a and c hit, b misses
    assert cs.belady_hits([0, 1, 2, 0, 2, 1], 2) == 2
    assert cs.belady_hits([0, 1, 0, 1, 0, 1], 2) == 4


def test_belady_matches_exhaustive_optimum_on_small_traces():
    rng = random.Random(5)
    for _ in range(40):
        n_items, k = rng.randint(2, 5), rng.randint(1, 3)
        models = [rng.randrange(n_items) for _ in range(rng.randint(1, 11))]
        assert cs.belady_hits(models, k) == _brute_force_optimum(models, k), (models, k)


def test_static_oracle_counts():
    # counts: 5 -> 3, 1 -> 2, 2 -> 1, 3 -> 1; keep {5, 1}; cold start: first use of each is a miss
    assert cs.static_oracle_hits([5, 5, 5, 1, 1, 2, 3], 2) == 2 + 1
    assert cs.static_oracle_hits([5, 5, 5, 1, 1, 2, 3], 1) == 2
    assert cs.static_oracle_hits([0, 1, 2], 3) == 0


def test_plain_lru():
    # 0 1 0 2 0 1 with room for 2: 0 hits twice, 1 is evicted by 2 and misses again
    assert cs.plain_lru_hits([0, 1, 0, 2, 0, 1], 2) == 2


def test_oracle_ordering_on_random_traces():
    rng = random.Random(1)
    for _ in range(20):
        models = [min(int(rng.paretovariate(1.0)), 30) for _ in range(300)]
        k = 5
        assert cs.belady_hits(models, k) >= cs.static_oracle_hits(models, k)
        assert cs.belady_hits(models, k) >= cs.plain_lru_hits(models, k)


def test_single_pod_without_planner_is_the_plain_lru():
    """One pod, loads done before the next request, planner off, recency eviction order: exactly
    the WeightedLRU replay (so the simulator adds nothing of its own to the policy)."""
    rng = random.Random(2)
    models = [rng.choice([0, 0, 0, 1, 1, 2, 3, 4, 5, 6, 7, 8, 9]) for _ in range(400)]
    trace = _trace(models, n_models=10)
    cfg = replace(cs.SimConfig(), n_pods=1, capacity_fraction=0.3, planner=False, load_ms=10, eviction="lru")
    res = cs.PlaneSim(trace, cfg).run()
    assert res.requests == 400
    assert res.hits == cs.plain_lru_hits(models, 3)
    assert res.loads == 400 - res.hits


def test_three_pods_keep_registry_and_caches_consistent():
    trace = tr.zipf_trace(0.9, n_models=60, n_requests=3000, rate_per_s=20, seed=4)
    sim = cs.PlaneSim(trace, replace(cs.SimConfig(), n_pods=3, capacity_fraction=0.2))
    res = sim.run()
    k = 12
    assert sum(p.cache.capacity for p in sim.pod_list) == k * sim.cfg.model_size
    assert 0 < res.hits <= cs.belady_hits(trace.models.tolist(), k)
    for pod in sim.pod_list:
        assert pod.cache.used <= pod.cache.capacity
        in_cache = {e.model_id for e in pod.cache.entries()}
        in_registry = {name for name, rec in sim.records.items() if pod.pod_id in rec.copies}
        assert in_cache == in_registry
    # the usage flush updated the records the way the pods do
    used = {tr.model_name(m) for m in trace.models.tolist()}
    assert all(sim.records[n].last_used_ms > cs.T0_MS and sim.records[n].starts for n in used)
    assert any(sim.records[n].rpm > 0 for n in used)


def test_planner_preload_turns_a_miss_into_a_hit():
    """A model the predictor expects (a recent rate in its record) is preloaded into free space by
    the leader's plan; its first request then finds a loaded copy."""
    trace = _trace([1, 2, 3], n_models=20, gap_ms=30_000, start=1)  # first request after the first plan
    for planner_on, hits in ((False, 0), (True, 3)):
        sim = cs.PlaneSim(trace, replace(cs.SimConfig(), n_pods=2, capacity_fraction=0.5, planner=planner_on))
        for m in (1, 2, 3):
            rec = sim.records[tr.model_name(m)]
            rec.rpm, rec.last_used_ms = 6.0, cs.T0_MS
        res = sim.run()
        assert res.hits == hits
        assert res.planner_loads == (3 if planner_on else 0)


@pytest.mark.parametrize("alpha", [0.8, 1.1])
def test_zipf_trace_is_deterministic_and_unaligned(alpha):
    a = tr.zipf_trace(alpha, n_models=100, n_requests=2000, seed=9)
    b = tr.zipf_trace(alpha, n_models=100, n_requests=2000, seed=9)
    assert (a.models == b.models).all() and (a.times_ms == b.times_ms).all()
    assert (np.diff(a.times_ms) >= 0).all()
    counts = np.bincount(a.models, minlength=100)
    assert int(np.argmax(counts)) != 0 or int(np.argsort(counts)[-2]) != 1  # popularity not id order


def test_periodic_trace_has_bursts_at_fixed_offsets():
    t = tr.periodic_trace(n_models=200, duration_s=3600, rate_per_s=2,
                          jobs=(tr.BatchJob(3, 1200, 300, burst_requests=10, burst_s=30, jitter_s=0),), seed=2)
    assert (np.diff(t.times_ms) >= 0).all()
    counts = np.bincount(t.models, minlength=200)
    batch = [m for m in range(200) if counts[m] == 30]
    assert len(batch) >= 3
    m = batch[0]
    times = t.times_ms[t.models == m] / 1000
    for start in (300, 1500, 2700):  # every 20 min at +5 min
        assert ((times >= start) & (times < start + 30)).sum() == 10


def test_freq_prototype_keeps_the_hot_set():
    trace = tr.zipf_trace(0.8, n_models=200, n_requests=3000, rate_per_s=20, seed=3)
    k = 20
    static = cs.static_oracle_hits(trace.models.tolist(), k)
    base = replace(cs.SimConfig(), capacity_fraction=0.1, planner=False)
    lru = cs.PlaneSim(trace, base).run().hits
    freq = cs.PlaneSim(trace, replace(base, eviction="freq")).run().hits
    assert freq > lru
    assert freq > 0.85 * static


def test_belady_on_all_orders_of_three_items():
    # the six orders of three items back to back, room for two
    models = list(itertools.chain.from_iterable(itertools.permutations(range(3))))
    assert cs.belady_hits(models, 2) == _brute_force_optimum(models, 2)


def test_shipped_eviction_order_beats_recency_on_a_skewed_stream():
    """The pods' eviction key (decayed request counts) keeps the popular models that pure recency
    lets the tail push out."""
    trace = tr.zipf_trace(0.8, n_models=200, n_requests=20000, rate_per_s=50, seed=7)
    base = replace(cs.SimConfig(), n_pods=1, capacity_fraction=0.1, planner=False, load_ms=10)
    lru = cs.PlaneSim(trace, replace(base, eviction="lru")).run()
    shipped = cs.PlaneSim(trace, base).run()
    assert shipped.hit_ratio > lru.hit_ratio + 0.05

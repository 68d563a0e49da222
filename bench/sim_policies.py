"""The policies ``bench/cache_sim.py`` compares the plane with, and its frequency-eviction prototype.

* offline references over a list of model ids, all models the same size: the static oracle (the
  ``k`` most requested models, kept from their first request), Belady's MIN, and one plain
  :class:`plane.cache.WeightedLRU` with instantaneous loads;
* the prototype of "lowest decayed request count first" eviction (:func:`freq_note`,
  :func:`freq_value`, :class:`ScoredLRU`) that the simulated pods run with ``eviction="freq"``.

Imported with ``bench/`` on ``sys.path`` (``cache_sim.py`` puts it there), like ``traces``.
"""

from __future__ import annotations

import heapq
from collections import Counter
from collections.abc import Callable, Sequence

import traces as trace_mod

from plane.cache import CacheEntry, NoRoom, WeightedLRU
from plane.registry import ModelRecord

__all__ = ["static_oracle_hits", "belady_hits", "plain_lru_hits", "FREQ_HALF_LIFE_MS", "REPLACE_MAX_SCORE",
           "freq_note", "freq_value", "ScoredLRU"]


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

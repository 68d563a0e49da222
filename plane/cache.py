"""The per-pod model cache: a weighted LRU with capacity in bytes. Pure: no I/O, no clock.

The pod owns one :class:`WeightedLRU` and asks it two questions: "what must go so that a
model of N bytes fits?" (:meth:`WeightedLRU.plan_admission`) and "which copy is least
recently used?" (:meth:`WeightedLRU.lru_time`). Copies with requests in flight, copies
still loading and pinned copies are never chosen as victims.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable, Iterable
from dataclasses import dataclass

__all__ = ["CacheEntry", "WeightedLRU", "NoRoom"]


class NoRoom(Exception):
    """A model cannot fit even after evicting every evictable copy."""

    def __init__(self, needed: int, evictable: int, capacity: int):
        self.needed, self.evictable, self.capacity = needed, evictable, capacity
        super().__init__(
            f"model needs {needed} bytes but only {evictable} can be freed of {capacity} "
            "(the rest is pinned, loading or serving requests)"
        )


@dataclass
class CacheEntry:
    model_id: str
    size: int
    last_used_ms: float
    loading: bool = True
    in_flight: int = 0
    pinned: bool = False

    @property
    def evictable(self) -> bool:
        return not (self.loading or self.pinned or self.in_flight > 0)


class WeightedLRU:
    """Entries ordered from least to most recently used; sizes sum to ``used``."""

    def __init__(self, capacity: int):
        if capacity <= 0:
            raise ValueError("cache capacity must be positive")
        self.capacity = capacity
        self._entries: OrderedDict[str, CacheEntry] = OrderedDict()
        self.used = 0

    def __contains__(self, model_id: str) -> bool:
        return model_id in self._entries

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, model_id: str) -> CacheEntry | None:
        return self._entries.get(model_id)

    def entries(self) -> list[CacheEntry]:
        """Least recently used first."""
        return list(self._entries.values())

    @property
    def free(self) -> int:
        return self.capacity - self.used

    def touch(self, model_id: str, now_ms: float) -> None:
        entry = self._entries.get(model_id)
        if entry is not None:
            entry.last_used_ms = now_ms
            self._entries.move_to_end(model_id)

    def lru_time(self) -> float:
        """Last-used time of the least recently used copy (0 when empty)."""
        for entry in self._entries.values():
            return entry.last_used_ms
        return 0

    def plan_admission(self, size: int, *, exclude: str | None = None,
                       key: Callable[[CacheEntry], float] | None = None) -> list[CacheEntry]:
        """The evictable entries whose removal lets ``size`` bytes fit: least recently used first,
        or, with ``key``, lowest ``key(entry)`` first (least recently used first among equals).
        Raises :class:`NoRoom` when no choice of victims is enough."""
        need = size - self.free
        if need <= 0:
            return []
        victims: list[CacheEntry] = []
        freed = 0
        candidates: Iterable[CacheEntry] = self._entries.values()
        if key is not None:
            # sorted() is stable: entries with equal keys stay in LRU order
            candidates = sorted(candidates, key=key)
        for entry in candidates:
            if entry.model_id == exclude or not entry.evictable:
                continue
            victims.append(entry)
            freed += entry.size
            if freed >= need:
                return victims
        raise NoRoom(size, freed + self.free, self.capacity)

    def add(self, model_id: str, size: int, now_ms: float, *, loading: bool = True, pinned: bool = False) -> CacheEntry:
        if model_id in self._entries:
            raise KeyError(f"{model_id} is already in the cache")
        entry = CacheEntry(model_id, size, now_ms, loading=loading, pinned=pinned)
        self._entries[model_id] = entry
        self.used += size
        return entry

    def resize(self, model_id: str, size: int) -> None:
        entry = self._entries[model_id]
        self.used += size - entry.size
        entry.size = size

    def remove(self, model_id: str) -> CacheEntry | None:
        entry = self._entries.pop(model_id, None)
        if entry is not None:
            self.used -= entry.size
        return entry

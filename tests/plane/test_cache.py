"""The weighted LRU: pure, so every rule is checked directly."""

import pytest

from plane.cache import NoRoom, WeightedLRU


def loaded(cache: WeightedLRU, model_id: str, size: int, t: float) -> None:
    cache.add(model_id, size, t, loading=False)


def test_fits_without_eviction():
    c = WeightedLRU(100)
    loaded(c, "a", 40, 1)
    assert c.plan_admission(60) == []
    assert c.free == 60


def test_evicts_least_recently_used_first():
    c = WeightedLRU(100)
    loaded(c, "a", 40, 1)
    loaded(c, "b", 40, 2)
    c.touch("a", 3)  # a is now the most recent
    victims = c.plan_admission(50)
    assert [v.model_id for v in victims] == ["b"]


def test_evicts_as_many_as_needed_in_lru_order():
    c = WeightedLRU(100)
    for i, name in enumerate("abcd"):
        loaded(c, name, 25, i)
    victims = c.plan_admission(70)
    assert [v.model_id for v in victims] == ["a", "b", "c"]


def test_never_evicts_in_flight_pinned_or_loading():
    c = WeightedLRU(100)
    loaded(c, "busy", 30, 1)
    c.get("busy").in_flight = 1
    c.add("pinned", 30, 2, loading=False, pinned=True)
    c.add("loading", 20, 3, loading=True)
    loaded(c, "idle", 20, 4)
    victims = c.plan_admission(20)
    assert [v.model_id for v in victims] == ["idle"]
    with pytest.raises(NoRoom) as exc:
        c.plan_admission(50)
    assert exc.value.evictable == 20


def test_resize_and_remove_keep_used_consistent():
    c = WeightedLRU(100)
    c.add("a", 10, 1)
    c.resize("a", 35)
    assert c.used == 35
    c.remove("a")
    assert c.used == 0 and len(c) == 0
    assert c.remove("missing") is None


def test_lru_time_is_oldest_use():
    c = WeightedLRU(100)
    assert c.lru_time() == 0
    loaded(c, "a", 1, 10)
    loaded(c, "b", 1, 20)
    assert c.lru_time() == 10
    c.touch("a", 30)
    assert c.lru_time() == 20


def test_excluded_model_is_not_its_own_victim():
    c = WeightedLRU(100)
    loaded(c, "a", 90, 1)
    with pytest.raises(NoRoom):
        c.plan_admission(50, exclude="a")


def test_key_orders_victims_lowest_weight_first_lru_among_equals():
    c = WeightedLRU(100)
    for i, name in enumerate("abcd"):
        loaded(c, name, 25, i)
    weight = {"a": 9.0, "b": 0.5, "c": 0.5, "d": 3.0}
    victims = c.plan_admission(40, key=lambda e: weight[e.model_id])
    assert [v.model_id for v in victims] == ["b", "c"]  # b before c: equal weight, b used earlier


def test_decayed_request_count():
    from plane import usage
    from plane.registry import ModelRecord

    rec = ModelRecord("m")
    usage.note_requests(rec, 10, 0)
    usage.note_requests(rec, 10, usage.FREQ_HALF_LIFE_MS)  # the first 10 are worth 5 by now
    assert rec.freq == 15
    assert usage.request_weight(rec, 2 * usage.FREQ_HALF_LIFE_MS) == 7.5
    assert usage.request_weight(None, 0) == 0.0


def test_pod_eviction_weight_never_loses_a_flushed_count():
    """Between a usage flush and the watch delivering the written record, the view may still hold
    (or be handed back) an older record: the pod must count the flushed requests itself."""
    from types import SimpleNamespace

    from plane.cache import CacheEntry
    from plane.pod.accounting import Usage
    from plane.registry import ModelRecord, now_ms

    view = SimpleNamespace(models={"m": ModelRecord("m")})  # as of before the flush: no requests recorded
    acct = Usage("pod-0", registry=None, view=view)  # no registry needed here
    entry = CacheEntry("m", 10, 0, loading=False)
    stamp = now_ms()
    acct.unseen["m"] = [(stamp, 3)]  # three requests written by a flush stamped now
    assert acct.weight(entry) == 3
    written = ModelRecord("m", freq=3.0, freq_ms=stamp)
    acct.on_model_change("m", written)  # the watch catches up
    view.models["m"] = written
    assert "m" not in acct.unseen
    assert 2.99 < acct.weight(entry) <= 3.0  # counted once, not twice

"""Per-minute stats: pure aggregation over plain records."""

from __future__ import annotations

from plane import stats
from plane.stats import MINUTE_MS, StatsRecord

T0 = 1_700_000_040_000 // MINUTE_MS * MINUTE_MS


def rec(pod: str, minute: int, **counts: int) -> StatsRecord:
    return StatsRecord(pod, T0 + minute * MINUTE_MS, counts)


RECS = [rec("a", 0, loads=3, evictions=1), rec("b", 0, loads=2), rec("a", 2, loads=1, requests=40),
        rec("b", 5, evictions=4)]


def test_totals_over_whole_minutes():
    assert stats.totals(RECS)["loads"] == 6
    assert stats.totals(RECS, since_ms=T0 + MINUTE_MS + 5)["loads"] == 1  # from minute 1 on
    assert stats.totals(RECS, since_ms=T0, until_ms=T0 + 3 * MINUTE_MS)["evictions"] == 1
    assert stats.totals([])["requests"] == 0


def test_per_minute_fills_every_minute_and_keeps_pods_apart():
    rows = stats.per_minute(RECS, "loads", since_ms=T0, until_ms=T0 + 5 * MINUTE_MS)
    assert sorted(rows) == ["a", "b"]
    assert [n for _, n in rows["a"]] == [3, 0, 1, 0, 0, 0]
    assert [n for _, n in rows["b"]] == [2, 0, 0, 0, 0, 0]
    merged = stats.per_minute(RECS, "evictions", since_ms=T0, until_ms=T0 + 5 * MINUTE_MS, by_pod=False)
    assert [n for _, n in merged["all"]] == [1, 0, 0, 0, 0, 4]
    assert stats.per_minute([], "loads", since_ms=T0, until_ms=T0 + MINUTE_MS, by_pod=False)["all"] == \
        [(T0, 0), (T0 + MINUTE_MS, 0)]


def test_records_round_trip_and_sort_by_time():
    r = rec("pod-1", 3, loads=2)
    assert StatsRecord.from_json(r.to_json()) == r
    assert sorted([rec("z", 1).key, rec("a", 2).key]) == [rec("z", 1).key, rec("a", 2).key]


def test_top_models_is_stable_and_summarises_the_rest():
    from types import SimpleNamespace

    models = [SimpleNamespace(model_id=f"m{i}", size=s) for i, s in enumerate([5, 9, 9, 1, 3])]
    got = stats.top_models(models, 2, key=lambda m: m.size)
    assert [m.model_id for m in got.top] == ["m1", "m2"]  # ties by id
    assert (got.rest_count, got.rest_total) == (3, 9.0)

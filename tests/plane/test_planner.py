"""The leader's decisions and the usage predictor, on synthetic registry snapshots."""

from __future__ import annotations

from plane import usage
from plane.planner import PlannerSettings, plan
from plane.registry import CopyInfo, FailureInfo, InstanceRecord, ModelRecord

MiB = 1024**2
NOW = 10_000_000_000
MIN = 60_000
HOUR = 60 * MIN


def pod(pod_id, *, capacity=100 * MiB, used=0, count=0):
    return InstanceRecord(pod_id=pod_id, endpoint=f"h:{pod_id}", capacity=capacity, used=used, count=count)


def model(model_id, *, size=10 * MiB, copies=(), rpm=0.0, last_used=NOW - 6 * HOUR, **kw):
    # the rate as the pods report it (one fresh report), as the planner reads it
    return ModelRecord(model_id=model_id, size=size, rpm=rpm, last_used_ms=last_used,
                       pod_rpm={"reporter": [rpm, NOW]} if rpm else {},
                       copies={p: CopyInfo("loaded", 0, size) for p in copies}, **kw)


def kinds(actions):
    return [(a.kind, a.model_id, a.pod_id) for a in actions]


def test_pinned_and_min_copies_get_loaded():
    pods = [pod("a"), pod("b", used=50 * MiB)]
    actions = plan([model("pin", pinned=True), model("two", min_copies=2, copies=["b"])], pods, now_ms=NOW)
    assert ("load", "pin", "a") in kinds(actions)
    assert ("load", "two", "a") in kinds(actions)


def test_max_copies_drops_extras():
    pods = [pod("a"), pod("b", used=90 * MiB), pod("c")]
    actions = plan([model("m", copies=["a", "b", "c"], max_copies=2)], pods, now_ms=NOW)
    assert kinds(actions) == [("unload", "m", "b")]  # the fullest pod loses its copy


def test_scale_up_when_rate_per_copy_exceeds_threshold():
    pods = [pod("a"), pod("b")]
    hot = model("hot", copies=["a"], rpm=2500, last_used=NOW)
    warm = model("warm", copies=["b"], rpm=1500, last_used=NOW)
    actions = plan([hot, warm], pods, now_ms=NOW, settings=PlannerSettings(scale_up_rpm=2000))
    assert ("load", "hot", "b") in kinds(actions)
    assert not any(a.model_id == "warm" and a.kind == "load" for a in actions)


def test_scale_up_respects_max_copies():
    pods = [pod("a"), pod("b")]
    actions = plan([model("hot", copies=["a"], rpm=9000, max_copies=1, last_used=NOW)], pods, now_ms=NOW)
    assert not [a for a in actions if a.kind == "load"]


def test_cold_extra_copies_go_under_memory_pressure():
    pods = [pod("a", used=95 * MiB), pod("b", used=95 * MiB)]
    cold = model("cold", copies=["a", "b"], rpm=3, last_used=NOW)
    busy = model("busy", copies=["a", "b"], rpm=3500, last_used=NOW)
    actions = plan([cold, busy], pods, now_ms=NOW)
    assert [(a.kind, a.model_id) for a in actions if a.kind == "unload"] == [("unload", "cold")]


def test_no_scale_down_without_pressure():
    pods = [pod("a", used=20 * MiB), pod("b", used=20 * MiB)]
    assert plan([model("cold", copies=["a", "b"], rpm=1, last_used=NOW)], pods, now_ms=NOW) == []


def test_preload_fills_free_space_only_most_likely_first():
    pods = [pod("a", used=70 * MiB)]  # 30 MiB free, 10 MiB headroom: room for two 10 MiB models
    recent = model("recent", last_used=NOW - 2 * MIN)
    older = model("older", last_used=NOW - 15 * MIN)
    stale = model("stale", last_used=NOW - 5 * HOUR)
    oldest_recent = model("third", last_used=NOW - 10 * MIN)
    actions = plan([stale, older, recent, oldest_recent], pods, now_ms=NOW)
    assert [a.model_id for a in actions] == ["recent", "third"]
    assert all(a.reason.startswith("preload") for a in actions)


def test_preload_skips_failed_models_and_never_evicts():
    pods = [pod("a", used=95 * MiB)]
    failed = model("failed", last_used=NOW - MIN, failed={"a": FailureInfo(NOW - MIN, "bad file")})
    recent = model("recent", last_used=NOW - MIN)
    assert plan([failed, recent], pods, now_ms=NOW) == []  # no free space: nothing is pushed out


def test_periodic_job_is_predicted_before_it_starts():
    # an hourly job: sessions started at the top of each of the last 5 hours, idle for 55 minutes now
    starts = [NOW - k * HOUR - 55 * MIN for k in range(4, -1, -1)]
    rec = model("hourly", last_used=NOW - 50 * MIN, starts=starts)
    assert usage.use_probability(rec, NOW, horizon_ms=5 * MIN) > 0.6  # due in 5 minutes
    assert usage.periodic_probability(rec, NOW - 30 * MIN, 5 * MIN) == 0.0  # not due yet then
    # 50 minutes idle, without a pattern, would not be enough to preload it:
    assert usage.use_probability(model("plain", last_used=NOW - 50 * MIN), NOW) < 0.3
    irregular = model("irregular", last_used=NOW - 50 * MIN,
                      starts=[NOW - 300 * MIN, NOW - 290 * MIN, NOW - 150 * MIN, NOW - 55 * MIN])
    assert usage.use_probability(irregular, NOW, horizon_ms=5 * MIN) < 0.3


def test_rate_and_sessions_are_recorded_per_pod():
    rec = model("m", last_used=NOW - HOUR)
    usage.note_session_start(rec, NOW)
    usage.update_rate(rec, "a", 100, NOW)
    usage.update_rate(rec, "b", 50, NOW)
    assert rec.rpm == 150 and rec.starts == [NOW]
    rec.last_used_ms = NOW
    usage.note_session_start(rec, NOW + MIN)  # same session: no new start
    assert rec.starts == [NOW]
    usage.update_rate(rec, "a", 10, NOW + 10 * MIN)  # b's report is stale by now
    assert rec.rpm == 10
    assert usage.use_probability(rec, NOW + 10 * MIN) > 0.9

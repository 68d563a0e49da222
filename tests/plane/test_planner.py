"""The leader's decisions and the usage predictor, on synthetic registry snapshots."""

from __future__ import annotations

from plane import usage
from plane.planner import PlannerSettings, plan
from plane.pod import accounting
from plane.registry import CopyInfo, FailureInfo, InstanceRecord, ModelRecord
from tests.plane.podfakes import FakeRegistry, fake_view

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


# -- the second copy (ModelMesh.java rateTrackingTask: a single-copy model used again 7-40 min
#    after an earlier use gets a second copy on another instance) ---------------------------------

SEC = 1000


def used_at(rec, *stamps):
    """Replay flushes of usage at ``stamps`` as plane.pod.accounting does (note_use, then used_ms)."""
    for t in stamps:
        usage.note_use(rec, t)
        rec.used_ms = max(rec.used_ms, t)
        rec.last_used_ms = max(rec.last_used_ms, t)
    return rec


def second_copies(actions):
    return [a for a in actions if a.reason.startswith("second copy")]


def test_single_copy_model_used_again_after_7_to_40_minutes_gets_a_second_copy():
    pods = [pod("a", used=10 * MiB, count=1), pod("b")]
    rec = used_at(model("regular", copies=["a"]), NOW - 12 * MIN, NOW - 5 * SEC)
    actions = plan([rec], pods, now_ms=NOW)
    assert kinds(second_copies(actions)) == [("load", "regular", "b")]
    assert not actions[0].evicts  # free space only
    assert "12 min" in actions[0].reason


def test_no_second_copy_outside_the_window_or_for_old_uses():
    pods = [pod("a", used=10 * MiB, count=1), pod("b")]
    for gap in (3 * MIN, 6 * MIN, 41 * MIN, 3 * HOUR):
        rec = used_at(model("m", copies=["a"]), NOW - gap, NOW - 5 * SEC)
        assert second_copies(plan([rec], pods, now_ms=NOW)) == [], gap
    # qualified 12 minutes after the earlier use, but that was 5 minutes ago: the moment has passed
    rec = used_at(model("m", copies=["a"]), NOW - 17 * MIN, NOW - 5 * MIN)
    assert second_copies(plan([rec], pods, now_ms=NOW)) == []
    # never used at all (only registered: last_used in the past)
    assert second_copies(plan([model("new", copies=["a"])], pods, now_ms=NOW)) == []


def test_steady_use_never_triggers_it_a_burst_after_an_earlier_use_does():
    rec = model("steady", copies=["a"])
    for t in range(NOW - 30 * MIN, NOW, 2 * SEC):  # a request flushed every 2 s for 30 minutes
        used_at(rec, t)
        assert not usage.second_copy_due(rec, t, 60 * SEC)
    # ModelMesh keeps the earlier use while it is in the window: use, 5 min later, 8 min later
    burst = used_at(model("burst", copies=["a"]), NOW - 8 * MIN, NOW - 3 * MIN)
    assert not usage.second_copy_due(burst, NOW - 3 * MIN, 60 * SEC)
    used_at(burst, NOW)
    assert usage.second_copy_due(burst, NOW, 60 * SEC)  # 8 min after the first use
    assert burst.prev_used_ms == NOW - 8 * MIN
    used_at(burst, NOW + 2 * SEC)  # still due while used on (the earlier use stays in the window)
    assert usage.second_copy_due(burst, NOW + 2 * SEC, 60 * SEC)
    # a flush of another pod with an older stamp is the same use: nothing moves
    before = (burst.prev_used_ms, burst.used_ms)
    usage.note_use(burst, NOW - MIN)
    assert (burst.prev_used_ms, burst.used_ms) == before


def test_second_copy_in_free_space_only_and_not_into_a_full_mesh():
    rec = lambda: used_at(model("m", copies=["a"]), NOW - 10 * MIN, NOW - SEC)  # noqa: E731
    # the other pod has no room for it: nothing (a second copy never evicts)
    assert second_copies(plan([rec()], [pod("a", used=10 * MiB, count=1), pod("b", used=95 * MiB)],
                              now_ms=NOW)) == []
    # room on b, but the mesh would keep less than 10% free (ModelMesh's condition)
    full = [pod("a", used=95 * MiB, count=5), pod("b", used=76 * MiB)]
    assert second_copies(plan([rec()], full, now_ms=NOW)) == []
    # past the pressure line the extra copy would be dropped again at once: not added
    s = PlannerSettings(second_copy_min_free_fraction=0.0, pressure_fraction=0.8)
    near = [pod("a", used=85 * MiB, count=5), pod("b", used=70 * MiB)]  # 155 + 10 of 200: over 0.8
    assert second_copies(plan([rec()], near, now_ms=NOW, settings=s)) == []
    # one pod only, a cap of one copy, or the setting off: nothing
    assert second_copies(plan([rec()], [pod("a", used=10 * MiB)], now_ms=NOW)) == []
    capped = used_at(model("m", copies=["a"], max_copies=1), NOW - 10 * MIN, NOW - SEC)
    assert second_copies(plan([capped], [pod("a", used=10 * MiB), pod("b")], now_ms=NOW)) == []
    off = PlannerSettings(second_copy=False)
    assert second_copies(plan([rec()], [pod("a", used=10 * MiB), pod("b")], now_ms=NOW, settings=off)) == []


def test_second_copy_goes_to_a_pod_with_room_and_not_where_the_load_failed():
    rec = used_at(model("m", copies=["a"], failed={"b": FailureInfo(NOW - MIN, "bad")}),
                  NOW - 20 * MIN, NOW - SEC)
    pods = [pod("a", used=10 * MiB, count=1), pod("b"), pod("c", used=95 * MiB), pod("d", used=40 * MiB)]
    assert kinds(second_copies(plan([rec], pods, now_ms=NOW))) == [("load", "m", "d")]
    # a model that already has two copies (or one loading) gets no more from this rule
    two = used_at(model("m", copies=["a", "d"]), NOW - 20 * MIN, NOW - SEC)
    assert second_copies(plan([two], pods, now_ms=NOW)) == []
    loading = used_at(model("m", copies=["a"]), NOW - 20 * MIN, NOW - SEC)
    loading.copies["d"] = CopyInfo("loading", NOW, 10 * MiB)
    assert second_copies(plan([loading], pods, now_ms=NOW)) == []


async def test_the_usage_flush_keeps_the_earlier_use_for_the_planner(monkeypatch):
    # plane.pod.accounting.Usage.flush calls usage.note_use before used_ms moves: a use 12 minutes
    # after the previous one, flushed by a pod, makes the leader's next plan add a second copy
    registry = FakeRegistry()
    registry.put(model("m", copies=["a"]))
    acct = accounting.Usage("a", registry, fake_view(registry))
    clock = [NOW - 12 * MIN]
    monkeypatch.setattr(accounting, "now_ms", lambda: clock[0])
    for t in (NOW - 12 * MIN, NOW - 12 * MIN + 2 * SEC, NOW):
        clock[0] = t
        acct.record("m")
        assert await acct.flush() == 1
    rec = registry.model("m")
    assert (rec.prev_used_ms, rec.used_ms) == (NOW - 12 * MIN + 2 * SEC, NOW)
    pods = [pod("a", used=10 * MiB, count=1), pod("b")]
    assert kinds(second_copies(plan([rec], pods, now_ms=NOW + 5 * SEC))) == [("load", "m", "b")]

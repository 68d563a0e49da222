"""Placement decisions over synthetic registry snapshots (pure functions, no servers)."""

import random

from plane.placement import choose_copy, choose_pod_for_load, rank_pods_for_load
from plane.registry import InstanceRecord

MiB = 1024**2


def pod(pod_id, *, capacity=100 * MiB, used=0, count=0, lru_ms=0, loading=0, shutting_down=False):
    return InstanceRecord(pod_id=pod_id, endpoint=f"h:{pod_id}", capacity=capacity, used=used, count=count,
                          lru_ms=lru_ms, loading=loading, max_loads=1, shutting_down=shutting_down)


def test_prefers_pod_not_shutting_down():
    pods = [pod("a", shutting_down=True), pod("b", used=90 * MiB)]
    assert choose_pod_for_load(pods, size=5 * MiB).pod_id == "b"


def test_never_chooses_shutting_down_pod():
    assert choose_pod_for_load([pod("a", shutting_down=True)], size=1) is None


def test_prefers_pod_with_room():
    pods = [pod("full", used=99 * MiB), pod("room", used=50 * MiB)]
    assert choose_pod_for_load(pods, size=10 * MiB).pod_id == "room"


def test_when_all_full_prefers_oldest_lru():
    pods = [pod("recent", used=99 * MiB, lru_ms=5000), pod("stale", used=99 * MiB, lru_ms=1000)]
    assert choose_pod_for_load(pods, size=10 * MiB).pod_id == "stale"


def test_prefers_more_free_space():
    pods = [pod("a", used=60 * MiB), pod("b", used=10 * MiB)]
    assert choose_pod_for_load(pods, size=MiB).pod_id == "b"


def test_near_equal_free_space_then_fewer_models():
    pods = [pod("many", used=11 * MiB, count=9), pod("few", used=12 * MiB, count=1)]
    assert choose_pod_for_load(pods, size=MiB).pod_id == "few"


def test_skips_pod_loading_at_its_limit_when_another_can_load():
    pods = [pod("busy", loading=1), pod("idle", used=50 * MiB)]
    assert choose_pod_for_load(pods, size=MiB).pod_id == "idle"


def test_random_among_equals():
    pods = [pod("a"), pod("b"), pod("c")]
    chosen = {choose_pod_for_load(pods, size=MiB, rng=random.Random(seed)).pod_id for seed in range(40)}
    assert chosen == {"a", "b", "c"}


def test_excludes_failed_pods_and_too_small_ones():
    pods = [pod("failed"), pod("tiny", capacity=MiB), pod("ok", used=80 * MiB)]
    assert choose_pod_for_load(pods, size=5 * MiB, exclude={"failed"}).pod_id == "ok"


def test_rank_orders_everything():
    pods = [pod("sd", shutting_down=True), pod("full", used=100 * MiB), pod("free")]
    assert [p.pod_id for p in rank_pods_for_load(pods, size=MiB)] == ["free", "full", "sd"]


def test_choose_copy_prefers_local_then_fewest_in_flight():
    assert choose_copy(["a", "b"], {"a": 5, "b": 0}, prefer="a") == "a"
    assert choose_copy(["a", "b"], {"a": 5, "b": 0}, prefer="z") == "b"
    assert choose_copy([], {}) is None


def test_pods_with_the_same_view_choose_the_same_loader_for_a_model():
    """A request's load breaks ties by the model id, so every pod picks the same one."""
    pods = [pod(p) for p in ("pod-0", "pod-1", "pod-2", "pod-3")]
    for model in ("m1", "m2", "m3", "m4", "m5"):
        picks = {choose_pod_for_load(random.sample(pods, len(pods)), size=MiB, tie=model).pod_id for _ in range(20)}
        assert len(picks) == 1, (model, picks)
    # ... and different models still spread over the pods
    spread = {choose_pod_for_load(pods, size=MiB, tie=f"model-{i}").pod_id for i in range(40)}
    assert spread == {"pod-0", "pod-1", "pod-2", "pod-3"}
    # the preference order still comes first: a fuller pod loses whatever the hash says
    full = [pod("pod-0", used=90 * MiB), pod("pod-1")]
    assert all(choose_pod_for_load(full, size=MiB, tie=f"model-{i}").pod_id == "pod-1" for i in range(20))

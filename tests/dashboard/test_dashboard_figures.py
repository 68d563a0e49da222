"""The figure builders are pure functions of snapshots and events: check what they draw."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard import figures
from plane.api import PlacementSnapshot
from plane.registry import CopyInfo, Event, InstanceRecord, ModelRecord

MIB = 1024 * 1024
NOW = 1_800_000_000_000


def pod(pod_id: str, *, capacity: int = 100 * MIB, used: int = 0, count: int = 0, stopping: bool = False):
    return InstanceRecord(
        pod_id=pod_id,
        endpoint="127.0.0.1:1",
        capacity=capacity,
        used=used,
        count=count,
        shutting_down=stopping,
    )


def model(model_id: str, copies: dict[str, tuple[str, int]] | None = None, size: int = 0) -> ModelRecord:
    placed = {p: CopyInfo(state=s, since_ms=NOW, size=n) for p, (s, n) in (copies or {}).items()}
    return ModelRecord(model_id=model_id, path=f"{model_id}.onnx", size=size, copies=placed)


def snap() -> PlacementSnapshot:
    return PlacementSnapshot(
        pods=[pod("pod-0", used=60 * MIB, count=2), pod("pod-1", used=10 * MIB, count=1)],
        models=[
            model("big", {"pod-0": ("loaded", 50 * MIB), "pod-1": ("loading", 0)}, size=50 * MIB),
            model("small", {"pod-0": ("loaded", 10 * MIB)}),
            model("unplaced"),
            model("orphan", {"pod-9": ("loaded", 5 * MIB)}),
        ],
        vmodels=[],
        taken_ms=NOW,
    )


def test_heatmap_rows_are_placed_models_biggest_first_and_cells_are_loaded_mib():
    rows, cols, z, text = figures.heatmap_data(snap())
    assert rows == ["big", "small", "orphan"]  # 'unplaced' has no copy: not drawn
    assert cols == ["pod-0", "pod-1", "pod-9 (gone)"]  # a pod without an instance record is marked
    assert z[0] == [50.0, 50.0, None]  # a loading copy without a size yet uses the model's size
    assert text[0] == ["loaded", "loading", ""]
    assert z[1] == [10.0, None, None]
    assert z[2] == [None, None, 5.0]


def test_heatmap_figure_and_model_filter_and_cap():
    fig = figures.placement_heatmap(snap())
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    assert list(hm.y) == ["big", "small", "orphan"]
    assert list(hm.x) == ["pod-0", "pod-1", "pod-9 (gone)"]
    only = figures.placement_heatmap(snap(), models=["small"]).data[0]
    assert list(only.y) == ["small"]
    capped = figures.placement_heatmap(snap(), max_models=1).data[0]
    assert list(capped.y) == ["big"]


def test_heatmap_without_copies_says_so():
    empty = PlacementSnapshot(pods=[pod("pod-0")], models=[model("m")], vmodels=[], taken_ms=NOW)
    fig = figures.placement_heatmap(empty)
    assert not fig.data
    assert "no model has a copy" in fig.layout.annotations[0].text


def test_capacity_bars_show_used_and_free_per_pod():
    s = snap()
    s.pods.append(pod("pod-2", stopping=True))
    fig = figures.capacity_bars(s)
    used, free = fig.data
    assert used.name == "used" and free.name == "free"
    assert list(used.y) == ["pod-0", "pod-1", "pod-2 (stopping)"]
    assert list(used.x) == [60.0, 10.0, 0.0]
    assert list(free.x) == [40.0, 90.0, 100.0]
    assert list(used.text) == ["60%", "10%", "0%"]
    assert fig.layout.barmode == "stack"


def test_stacked_memory_has_a_segment_per_model_and_other():
    fig = figures.pod_memory_stacked(snap(), top=1)
    names = [t.name for t in fig.data]
    assert names == ["big", "other"]
    big, other = fig.data
    assert list(big.x) == ["pod-0", "pod-1"]
    assert list(big.y) == [50.0, 50.0]
    assert list(other.y) == [10.0, 0.0]  # 'small' on pod-0; the orphan's pod is not live


def test_treemap_parents_are_the_sum_of_their_parts():
    fig = figures.pod_memory_treemap(snap())
    tm = fig.data[0]
    assert isinstance(tm, go.Treemap)
    values = dict(zip(tm.ids, tm.values, strict=True))
    parents = dict(zip(tm.ids, tm.parents, strict=True))
    assert values["pod-0/big"] == 50.0 and values["pod-0/small"] == 10.0
    assert values["pod-0/(free)"] == 40.0
    for root in ("pod-0", "pod-1"):
        kids = [v for i, v in values.items() if parents[i] == root]
        assert abs(values[root] - sum(kids)) < 1e-6
    assert values["pod-0"] == 100.0


def test_treemap_and_capacity_without_pods():
    none = PlacementSnapshot(pods=[], models=[], vmodels=[], taken_ms=NOW)
    for fn in (figures.pod_memory_treemap, figures.capacity_bars, figures.pod_memory_stacked):
        fig = fn(none)
        assert not fig.data
        assert "no pod" in fig.layout.annotations[0].text


def events() -> list[Event]:
    return [
        Event("load", model="a", pod="pod-0", time_ms=NOW - 50_000),
        Event("loaded", model="a", pod="pod-0", size=8 * MIB, time_ms=NOW - 49_000),
        Event("evict", model="b", pod="pod-1", reason="lru", time_ms=NOW - 30_000),
        Event("load-failed", model="c", pod="pod-1", reason="bad file", time_ms=NOW - 20_000),
        Event("register", model="c", time_ms=NOW - 100_000),
        Event("loaded", model="abc", pod="pod-1", size=MIB, time_ms=NOW - 10_000),
    ]


def test_timeline_has_one_trace_per_kind_on_pod_rows():
    fig = figures.events_timeline(events(), since_ms=NOW - 120_000, until_ms=NOW)
    by_name = {t.name: t for t in fig.data}
    assert set(by_name) == {"load", "loaded", "evict", "load-failed", "register"}
    assert list(by_name["loaded"].y) == ["pod-0", "pod-1"]
    assert list(by_name["evict"].y) == ["pod-1"]
    assert by_name["evict"].marker.symbol == "x"
    assert by_name["load-failed"].customdata[0][2] == "bad file"
    assert list(by_name["register"].y) == ["api"]  # events without a pod come from the API
    assert by_name["loaded"].customdata[0][1] == 8.0
    assert list(fig.layout.yaxis.categoryarray) == ["api", "pod-0", "pod-1"]
    assert fig.layout.xaxis.range is not None


def test_timeline_empty():
    fig = figures.events_timeline([])
    assert not fig.data and "no events" in fig.layout.annotations[0].text


def test_filter_events():
    evs = events()
    bad = figures.filter_events(evs, kinds=["evict", "load-failed"])
    assert [e.kind for e in bad] == ["evict", "load-failed"]
    assert [e.model for e in figures.filter_events(evs, pods=["pod-0"])] == ["a", "a"]
    assert [e.kind for e in figures.filter_events(evs, pods=["api"])] == ["register"]
    assert [e.model for e in figures.filter_events(evs, model_contains="B")] == ["b", "abc"]
    assert len(figures.filter_events(evs, since_ms=NOW - 25_000)) == 2
    assert figures.filter_events(evs, kinds=[], pods=[]) == evs

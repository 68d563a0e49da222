"""The figure builders are pure functions of snapshots and events: check what they draw."""

from __future__ import annotations

import plotly.graph_objects as go

from dashboard import activity, figures, placement_data
from plane.api import PlacementSnapshot
from plane.registry import CopyInfo, Event, InstanceRecord, ModelRecord
from plane.stats import MINUTE_MS, StatsRecord

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


def test_heatmap_rows_are_placed_models_in_a_stable_order_and_cells_are_loaded_mib():
    rows, cols, z, text = figures.heatmap_data(snap())
    assert rows == ["big", "orphan", "small"]  # 'unplaced' has no copy: not drawn; model-id order
    assert cols == ["pod-0", "pod-1", "pod-9 (gone)"]  # a pod without an instance record is marked
    assert z[0] == [50.0, 50.0, None]  # a loading copy without a size yet uses the model's size
    assert text[0] == ["loaded", "loading", ""]
    assert z[1] == [None, None, 5.0]
    assert z[2] == [10.0, None, None]


def test_heatmap_figure_search_and_top_n_with_the_rest_in_one_row():
    fig = figures.placement_heatmap(snap())
    hm = fig.data[0]
    assert isinstance(hm, go.Heatmap)
    assert list(hm.y) == ["big", "orphan", "small"] and len(fig.data) == 1
    assert list(hm.x) == ["pod-0", "pod-1", "pod-9 (gone)"]
    only = figures.placement_heatmap(snap(), placement_data.select(snap(), needle="SMA")).data[0]
    assert list(only.y) == ["small"]
    capped = figures.placement_heatmap(snap(), placement_data.select(snap(), top=1, by="size"))
    (main,) = capped.data
    assert list(main.y) == ["big", "+2 more models, 15.0 MiB"]  # small (10 MiB) and orphan (5 MiB)
    assert list(main.z[1]) == [None, None, None]  # text only: the sum never skews the colours
    assert list(main.text[1]) == ["1 copy, 10.0 MiB", "", "1 copy, 5.0 MiB"]
    assert list(capped.layout.yaxis.categoryarray) == ["big", "+2 more models, 15.0 MiB"]
    band = capped.layout.shapes[0]
    assert (band.y0, band.y1) == (0.5, 1.5)  # the grey band behind the summary row
    assert "1 of 3 placed model(s), top by size" in capped.layout.title.text


def _many(n: int, pods: int = 4, capacity: int = 4096 * MIB) -> PlacementSnapshot:
    return PlacementSnapshot(
        pods=[pod(f"pod-{i}", capacity=capacity) for i in range(pods)],
        models=[model(f"m-{i:04d}", {f"pod-{i % pods}": ("loaded", (1 + i % 7) * MIB)}) for i in range(n)],
        vmodels=[], taken_ms=NOW)


def test_heatmap_at_5000_models_stays_small_and_says_what_it_left_out():
    s = _many(5000)
    sel = placement_data.select(s, top=40, by="size")
    fig = figures.placement_heatmap(s, sel)
    (main,) = fig.data
    assert len(main.y) == 41 and list(main.y[:40]) == sorted(main.y[:40])
    assert main.y[40].startswith("+4,960 more models, ")
    assert sum(n for _, n in sel.rest_per_pod.values()) == 4960
    assert fig.layout.height < 1300


def test_selection_by_activity_ranks_the_busiest_and_keeps_model_id_order():
    s = _many(50)
    s.models[7].pod_rpm = {"pod-3": [80.0, NOW]}
    s.models[31].pod_rpm = {"pod-3": [120.0, NOW]}
    sel = placement_data.select(s, top=5, by="activity", now=NOW)
    assert sel.rank["m-0031"] == 1 and sel.rank["m-0007"] == 2
    assert {"m-0007", "m-0031"} <= {m.model_id for m in sel.rows}
    assert [m.model_id for m in sel.rows] == sorted(m.model_id for m in sel.rows)


def test_treemap_groups_small_copies_into_one_other_tile():
    s = _many(400, pods=1, capacity=1024 * MIB)  # 400 copies of 1-7 MiB fill 1.6 GiB
    tm = figures.pod_memory_treemap(s).data[0]
    kids = [i for i, par in zip(tm.ids, tm.parents, strict=True) if par == "pod-0"]
    assert len(kids) == figures.TREEMAP_KEEP + 1  # the biggest copies and "other" (the pod is full)
    labels = dict(zip(tm.ids, tm.labels, strict=True))
    other = labels["pod-0/(other)"]
    assert other == f"other: {400 - figures.TREEMAP_KEEP} copies"
    values = dict(zip(tm.ids, tm.values, strict=True))
    assert abs(values["pod-0"] - sum(values[k] for k in kids)) < 1e-6
    colors = dict(zip(tm.ids, tm.marker.colors, strict=True))
    assert len({colors[k] for k in kids if k != "pod-0/(other)"}) > 3  # one colour per model, not one blob


def test_pod_copies_bar_draws_the_biggest_and_one_bar_for_the_rest():
    s = _many(100, pods=1)
    bar = figures.pod_copies_bar(s, "pod-0", keep=10).data[0]
    assert len(bar.y) == 11 and bar.y[-1] == "other: 90 copies"
    assert list(bar.x[:10]) == sorted(bar.x[:10], reverse=True)
    assert not figures.pod_copies_bar(s, "pod-7").data


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
    assert names == ["big", "other (2 models)"]
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
    fig = activity.events_timeline(events(), since_ms=NOW - 120_000, until_ms=NOW)
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
    # the API is not a pod
    assert fig.layout.title.text == "Events: 6 from 2 pod(s) and the API"


def test_timeline_counts_thousands_of_events_per_bin_and_says_how_many():
    evs = [Event("loaded" if i % 3 else "evict", model=f"m{i}", pod=f"pod-{i % 4}", time_ms=NOW - 900_000 + i * 300)
           for i in range(3000)]
    fig = activity.events_timeline(evs, since_ms=NOW - 900_000, until_ms=NOW, held=5000)
    assert {t.type for t in fig.data} == {"bar"}
    by_name = {t.name: t for t in fig.data}
    assert sum(by_name["loaded"].y) == 2000 and sum(by_name["evict"].y) == 1000
    assert len(by_name["loaded"].x) <= 90  # bins, not 3,000 marks
    assert fig.layout.title.text == "Events: 3,000 of 5,000 in the log from 4 pod(s), counted per 10 s"


def test_bins_are_round_and_few():
    assert activity.bin_ms_for(60_000) == 5_000
    assert activity.bin_ms_for(15 * 60_000) == 10_000
    assert activity.bin_ms_for(720 * 60_000) == 600_000
    binned = activity.bin_events(events(), bin_ms=60_000)
    assert sum(n for _, n in binned["loaded"]) == 2


def _stats() -> list[StatsRecord]:
    m0 = NOW - NOW % MINUTE_MS
    return [StatsRecord("pod-0", m0 - 2 * MINUTE_MS, {"loads": 900, "evictions": 850}),
            StatsRecord("pod-1", m0 - 2 * MINUTE_MS, {"loads": 783}),
            StatsRecord("pod-1", m0 - MINUTE_MS, {"evictions": 749, "failures": 2, "requests": 40})]


def test_activity_per_minute_counts_every_load_of_every_pod():
    fig = activity.activity_per_minute(_stats(), since_ms=NOW - 300_000, until_ms=NOW)
    by_name = {t.name: t for t in fig.data}
    assert sum(by_name["loads"].y) == 1683 and sum(by_name["evictions"].y) == 1599
    assert sum(by_name["load failures"].y) == 2
    assert len(by_name["loads"].x) == 6  # every minute of the window, idle ones as 0
    assert "1,683 loads, 1,599 evictions, 2 load failures" in fig.layout.title.text


def test_loads_and_evictions_per_minute_per_pod():
    fig = activity.per_pod_per_minute(_stats(), since_ms=NOW - 300_000, until_ms=NOW, pods=["pod-0", "pod-2"])
    loads = {t.name: sum(t.y) for t in fig.data if t.yaxis == "y"}
    evictions = {t.name: sum(t.y) for t in fig.data if t.yaxis == "y2"}
    assert loads == {"pod-0": 900, "pod-1": 783} and evictions == {"pod-0": 850, "pod-1": 749}
    assert [t.showlegend for t in fig.data if t.yaxis == "y2"] == [False, False]
    assert not activity.per_pod_per_minute([], since_ms=0, until_ms=NOW).data


def test_timeline_empty():
    fig = activity.events_timeline([])
    assert not fig.data and "no events" in fig.layout.annotations[0].text


def test_filter_events():
    evs = events()
    bad = activity.filter_events(evs, kinds=["evict", "load-failed"])
    assert [e.kind for e in bad] == ["evict", "load-failed"]
    assert [e.model for e in activity.filter_events(evs, pods=["pod-0"])] == ["a", "a"]
    assert [e.kind for e in activity.filter_events(evs, pods=["api"])] == ["register"]
    assert [e.model for e in activity.filter_events(evs, model_contains="B")] == ["b", "abc"]
    assert len(activity.filter_events(evs, since_ms=NOW - 25_000)) == 2
    assert activity.filter_events(evs, kinds=[], pods=[]) == evs

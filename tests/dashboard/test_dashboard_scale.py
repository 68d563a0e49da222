"""The pages at scale, through AppTest against a real etcd: exact counts from the pods' stats
beyond what the event log holds, the placement heatmap's top N with the rest in one row and a
stable order, drill-downs to a model and a pod, binned events, and tables in pages."""

from __future__ import annotations

import pytest
from dashsupport import MIB, figures_of, metrics, open_page, table
from streamlit.testing.v1 import AppTest

from dashboard import state
from plane.api import ModelSpec
from plane.registry import now_ms


def test_overview_counts_come_from_the_pods_stats_not_the_capped_log(app_env, client, sim):
    sim.add_pod("pod-0")
    sim.add_pod("pod-1")
    for name in ("a", "b"):
        client.register_model(name, path=f"{name}.onnx")  # "register" events: written by the API
    sim.place("a", "pod-0")
    now = now_ms()
    # what three busy minutes look like: far more than the event log holds
    for pod, loads, evictions in (("pod-0", 900, 850), ("pod-1", 783, 749)):
        sim.count(pod, "loads", loads, at_ms=now - 120_000)
        sim.count(pod, "evictions", evictions, at_ms=now - 60_000)
    sim.count("pod-0", "requests", 12_345)
    at = open_page("overview")
    m = metrics(at)
    assert m["Loads (last 5 min)"] == "1,684"  # 1 + 900 + 783: every load the pods counted
    assert m["Evictions (last 5 min)"] == "1,599"
    assert m["Pods ready"] == "2 / 2"  # from the instance records, never the API's events
    caption = next(c.value for c in at.caption if "snapshot" in c.value)
    assert "12,345 request(s)" in caption
    assert "not a sample of the event log" in caption
    activity = next(f for f in figures_of(at) if "Per minute" in f["layout"]["title"]["text"])
    assert "1,684 loads, 1,599 evictions" in activity["layout"]["title"]["text"]
    loads = next(t for t in activity["data"] if t["name"] == "loads")
    assert sum(loads["y"]) == 1684


@pytest.fixture
def many(app_env, client, sim):
    """30 placed models of growing size on two pods, and 5 that are not placed."""
    sim.add_pod("pod-0", capacity=4096 * MIB)
    sim.add_pod("pod-1", capacity=4096 * MIB)
    client.register_models([ModelSpec(f"m-{i:02d}", f"m{i}.onnx") for i in range(35)])
    for i in range(30):
        sim.place(f"m-{i:02d}", f"pod-{i % 2}", size=(i + 1) * MIB)
    return sim


def _heat(at: AppTest) -> tuple[dict, dict | None]:
    """The shown models' rows, and the summary row of the others (None without one)."""
    (trace,) = figures_of(at)[0]["data"]
    if trace["y"][-1].startswith("+"):
        rows = {k: trace[k][:-1] for k in ("y", "z", "text")}
        return rows, {k: trace[k][-1:] for k in ("y", "z", "text")}
    return trace, None


def test_placement_shows_the_top_n_and_sums_up_the_rest_in_one_row(many):
    at = open_page("placement")
    heat, rest = _heat(at)
    assert len(heat["y"]) == 30 and rest is None  # top 40 by default: all of them
    at.selectbox(key="placement_top").set_value(20)
    at.radio(key="placement_by").set_value("size").run()
    heat, rest = _heat(at)
    assert heat["y"] == [f"m-{i:02d}" for i in range(10, 30)]  # the 20 biggest, in model-id order
    # the other 10 placed models (1..10 MiB: 55 MiB) are one row, with their copies per pod
    assert rest["y"] == ["+10 more models, 55.0 MiB"]
    # m-00, m-02 .. m-08 on pod-0; m-01 .. m-09 on pod-1
    assert rest["text"] == [["5 copies, 25.0 MiB", "5 copies, 30.0 MiB"]]
    title = figures_of(at)[0]["layout"]["title"]["text"]
    assert "20 of 30 placed model(s), top by size" in title
    at.text_input(key="placement_filter").input("m-0").run()  # search, then top N among the matches
    heat, rest = _heat(at)
    assert heat["y"] == [f"m-0{i}" for i in range(10)] and rest is None


def test_placement_rows_keep_their_order_across_refreshes(many):
    at = open_page("placement")
    assert at.radio(key="placement_by").value == "activity"
    at.selectbox(key="placement_top").set_value(20).run()
    now = now_ms()
    many.serve("m-03", "pod-1", rpm=90.0, at_ms=now)
    many.serve("m-25", "pod-1", rpm=10.0, at_ms=now)
    state.refresh()  # what the cache's TTL does between two live refreshes
    at.run()
    first, _ = _heat(at)
    assert {"m-03", "m-25"} <= set(first["y"]) and first["y"] == sorted(first["y"])
    many.serve("m-25", "pod-1", rpm=500.0, at_ms=now_ms())  # m-25 becomes the busiest
    state.refresh()
    at.run()
    again, _ = _heat(at)
    assert again["y"] == first["y"]  # the same rows in the same places: no reshuffle on refresh


def test_placement_drill_down_to_a_model_and_to_a_pod(placed):
    at = open_page("placement")
    at.selectbox(key="placement_model").set_value("alpha").run()
    copies = table(at, "placement_model_copies")
    assert list(copies["pod"]) == ["pod-0", "pod-1"]
    assert list(copies["size"]) == [40 * MIB, 40 * MIB]
    assert list(copies["state"]) == ["loaded", "loaded"]
    assert all(a.endswith("s ago") for a in copies["age"])
    at.selectbox(key="placement_pod").set_value("pod-1").run()
    held = table(at, "placement_pod_copies")
    assert list(held["model"]) == ["alpha", "beta"]  # biggest first
    assert list(held["size"]) == [40 * MIB, 24 * MIB]
    assert any("pod-1: 2 copies, 64.0 MiB of 256.0 MiB" in c.value for c in at.caption)
    bar = next(f for f in figures_of(at) if f["layout"]["title"]["text"].startswith("pod-1:"))
    assert bar["data"][0]["y"] == ["alpha", "beta"]
    at.selectbox(key="placement_model").set_value("gamma").run()
    assert any("load failed on pod-0" in w.value and "bad onnx file" in w.value for w in at.warning)


def test_events_say_how_many_the_log_holds_and_count_many_per_bin(placed):
    for i in range(420):  # more than the timeline draws one by one
        placed.event("loaded", f"bulk-{i}", f"pod-{i % 2}", MIB)
    at = open_page("events")
    tl = figures_of(at)[0]
    assert {t["type"] for t in tl["data"]} == {"bar"}
    # the fixture's 4 loads (a "load" and a "loaded" each), 1 eviction and 1 failure, and the bulk
    assert sum(sum(t["y"]) for t in tl["data"]) == 8 + 1 + 1 + 420  # every shown event is counted
    title = tl["layout"]["title"]["text"]
    assert "Events: 430 of 434 in the log" in title and "counted per" in title and "from 2 pod(s)" in title
    caption = next(c.value for c in at.caption if "the log holds" in c.value)
    assert "430 of the 434 event(s) the log holds" in caption  # the 4 registrations are not shown kinds
    assert "the pods counted 4 loads, 1 evictions, 1 load failures" in caption
    df = table(at, "events_table")
    assert len(df) == 50 and df["model"].iloc[0] == "bulk-419"  # the first page, newest first
    assert any("events 1–50 of 430 · page 1 of 9" in c.value for c in at.caption)


def test_models_table_pages_and_sorts_across_pages(app_env, client):
    client.register_models([ModelSpec(f"m-{i:03d}", f"m{i}.onnx") for i in range(120)])
    at = open_page("models")
    assert list(table(at, "models_table")["model"]) == [f"m-{i:03d}" for i in range(50)]
    assert any("models 1–50 of 120 · page 1 of 3" in c.value for c in at.caption)
    at.number_input(key="models_table_page").set_value(3).run()
    assert list(table(at, "models_table")["model"]) == [f"m-{i:03d}" for i in range(100, 120)]
    at.toggle(key="models_desc").set_value(True).run()  # descending, across pages: page 3 is the end
    assert list(table(at, "models_table")["model"]) == [f"m-{i:03d}" for i in range(19, -1, -1)]
    at.selectbox(key="models_table_size").set_value(250).run()
    assert len(table(at, "models_table")) == 120
    at.text_input(key="models_filter").input("m-11").run()  # shorter than the page it was on
    assert list(table(at, "models_table")["model"]) == [f"m-11{i}" for i in range(9, -1, -1)]

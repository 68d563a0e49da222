"""Each page's logic through streamlit.testing.v1.AppTest, against a real etcd.

Placement data is written by simulated pods (real instance records on a real lease, copy
states and events as runtime pods write them); every page reads it back through the
dashboard's cached PlaneClient.
"""

from __future__ import annotations

import pytest
from dashsupport import button, caption_with, errors, figures_of, metrics, open_page, shown_table, table
from streamlit.testing.v1 import AppTest

from plane import local
from plane.registry import now_ms

# -- no plane / etcd down ------------------------------------------------------------------------------


def test_without_a_plane_every_page_says_how_to_start_one(monkeypatch, tmp_path):
    monkeypatch.delenv("MESH_ETCD", raising=False)
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "nothing"))
    for page in ("overview", "placement", "events", "models", "storage"):
        at = open_page(page)
        assert any("no plane is running" in e for e in errors(at)), page
    at = open_page("install")
    assert not errors(at)
    assert any("not running" in i.value for i in at.info)


def test_unreachable_etcd_is_an_error_message_not_a_traceback(monkeypatch, tmp_path):
    monkeypatch.setenv("MESH_ETCD", f"127.0.0.1:{local.free_port()}")
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path))
    at = open_page("placement")
    assert any("cannot reach etcd" in e for e in errors(at))


# -- overview ------------------------------------------------------------------------------------------


def test_overview_shows_the_pulse(placed):
    at = open_page("overview")
    m = metrics(at)
    assert m["Pods ready"] == "2 / 2"
    assert m["Models registered"] == "4"
    assert m["Models loaded"] == "2"
    assert m["Models failed"] == "1"
    assert m["Capacity used"] == "20%"  # (40+40+24) MiB of 2 x 256 MiB
    assert m["Loads (last 5 min)"] == "4"
    assert m["Evictions (last 5 min)"] == "1"
    assert m["Load failures (last 5 min)"] == "1"
    kinds = {t["name"] for f in figures_of(at) for t in f["data"]}
    assert {"used", "free", "loads", "evictions", "load failures"} <= kinds


# -- placement -----------------------------------------------------------------------------------------


def test_placement_heatmap_capacity_and_memory(placed):
    at = open_page("placement")
    assert not errors(at)
    figs = figures_of(at)
    heat = figs[0]["data"][0]
    assert heat["type"] == "heatmap"
    assert heat["y"] == ["alpha", "beta"]
    assert heat["x"] == ["pod-0", "pod-1"]
    assert heat["z"] == [[40.0, 40.0], [None, 24.0]]
    cap = {t["name"]: t for t in figs[1]["data"]}
    assert cap["used"]["x"] == [40.0, 64.0]
    assert figs[2]["data"][0]["type"] == "treemap"
    caption = caption_with(at, "snapshot")
    assert "refreshing every 2 s" in caption and "2 of 4 model(s) placed" in caption
    # loads and evictions per minute per pod, from the pods' stats
    per_pod = figs[3]["data"]
    assert {t["name"] for t in per_pod} == {"pod-0", "pod-1"}
    assert sum(sum(t["y"]) for t in per_pod if t["yaxis"] == "y") == 4  # loads
    assert sum(sum(t["y"]) for t in per_pod if t["yaxis"] == "y2") == 1  # evictions


def test_placement_pause_filter_and_stacked_view(placed):
    at = open_page("placement")
    at.toggle(key="placement_paused").set_value(True)
    at.text_input(key="placement_filter").input("bet")
    at.radio(key="placement_memory").set_value("stacked bars")
    at.run()
    assert "paused" in caption_with(at, "snapshot")
    figs = figures_of(at)
    assert figs[0]["data"][0]["y"] == ["beta"]
    assert [t["name"] for t in figs[2]["data"]] == ["alpha", "beta"]
    assert figs[2]["layout"]["barmode"] == "stack"


# -- events --------------------------------------------------------------------------------------------


def test_events_timeline_table_and_filters(placed):
    at = open_page("events")
    df = table(at, "events_table")
    assert set(df["kind"]) == {"load", "loaded", "evict", "load-failed"}  # register is off by default
    tl = {t["name"]: t for t in figures_of(at)[0]["data"]}
    assert sorted(tl["loaded"]["y"]) == ["pod-0", "pod-0", "pod-1", "pod-1"]
    at.multiselect(key="events_kinds").set_value(["evict", "load-failed"]).run()
    df = table(at, "events_table")
    assert list(df["kind"]) == ["load-failed", "evict"]  # newest first
    at.multiselect(key="events_pods").set_value(["pod-0"]).run()
    at.text_input(key="events_model").input("gam").run()
    df = table(at, "events_table")
    assert list(df["model"]) == ["gamma"]
    assert list(df["reason"]) == ["bad onnx file"]


# -- models --------------------------------------------------------------------------------------------


def register(at: AppTest, model_id: str, path: str, *, load_now: bool = False) -> AppTest:
    at.text_input(key="reg_model_id").input(model_id)
    at.text_input(key="reg_path").input(path)
    at.checkbox(key="reg_load_now").set_value(load_now)
    button(at, "reg_submit").click()
    return at.run()


def test_models_table_and_filters(placed):
    now = now_ms()
    placed.serve("alpha", "pod-0", rpm=60.0, at_ms=now - 1000)  # in use
    placed.serve("beta", "pod-1", rpm=239.0, at_ms=now - 120_000)  # idle for two minutes since
    at = open_page("models")
    df = table(at, "models_table")
    assert list(df["model"]) == ["alpha", "beta", "delta", "gamma"]
    rows = df.set_index("model")
    assert rows.loc["alpha", "status"] == "LOADED"
    assert rows.loc["alpha", "loaded on"] == "pod-0, pod-1"
    assert rows.loc["gamma", "status"] == "LOADING_FAILED"
    assert "bad onnx file" in rows.loc["gamma", "failed"]
    # the rate now and the last real request, worded as the CLI and the console word them ...
    words = shown_table(at, "models_table").set_index("model")
    assert words.loc["beta", "req/min"] == "0" and words.loc["beta", "last used"] == "2m ago"
    assert words.loc["gamma", "last used"] == "never" and words.loc["delta", "last used"] == "never"
    assert 0 < float(words.loc["alpha", "req/min"]) < 60
    assert words.loc["alpha", "last used"].endswith("s ago")
    # ... sorting by their values: a click on "last used" puts never-used models first (oldest)
    assert rows.loc["beta", "last used"] == now - 120_000 and rows.loc["gamma", "last used"] == 0
    assert list(df.sort_values("last used", kind="stable")["model"]) == ["delta", "gamma", "beta", "alpha"]
    assert rows.loc["beta", "req/min"] == 0 and 0 < rows.loc["alpha", "req/min"] < 60
    at.multiselect(key="models_status").set_value(["LOADED"]).run()
    assert list(table(at, "models_table")["model"]) == ["alpha", "beta"]
    at.text_input(key="models_filter").input("alp").run()
    assert list(table(at, "models_table")["model"]) == ["alpha"]


def test_register_through_the_form(app_env, client):
    at = open_page("models")
    register(at, "mnist-v1", "models/mnist.onnx")
    assert not errors(at)
    assert any("registered mnist-v1" in s.value for s in at.success)
    assert "mnist-v1" in list(table(at, "models_table")["model"])
    rec = client.get_model("mnist-v1")
    assert (rec.path, rec.key, rec.type) == ("models/mnist.onnx", "default", "onnx")
    # the same again is fine; the same id with another path is refused with the reason
    register(at, "mnist-v1", "models/other.onnx")
    assert any("already registered" in e for e in errors(at))


@pytest.mark.parametrize(("model_id", "path", "message"), [
    ("bad id!", "m.onnx", "invalid model id"),
    ("ok", "", "model path must not be empty"),
    ("ok", "../escape.onnx", "leaves the storage root"),
])
def test_register_errors_are_shown(app_env, client, model_id, path, message):
    at = open_page("models")
    register(at, model_id, path)
    assert any(message in e for e in errors(at)), errors(at)
    assert client.list_models() == []


def test_load_now_without_pods_registers_and_says_why_it_is_not_loaded(app_env, client):
    at = open_page("models")
    register(at, "eager", "eager.onnx", load_now=True)
    assert any("no runtime pod is running" in e for e in errors(at))
    assert client.get_model("eager") is not None


def test_unregister_asks_for_confirmation(app_env, client):
    client.register_model("keep", path="keep.onnx")
    client.register_model("drop", path="drop.onnx")
    at = open_page("models")
    at.selectbox(key="unreg_model").set_value("drop")
    button(at, "unreg_ask").click().run()
    assert any("Unregister **drop**?" in w.value for w in at.warning)
    button(at, "unreg_cancel").click().run()
    assert client.get_model("drop") is not None
    assert not at.warning
    at.selectbox(key="unreg_model").set_value("drop")
    button(at, "unreg_ask").click().run()
    button(at, "unreg_confirm").click().run()
    assert client.get_model("drop") is None
    assert client.get_model("keep") is not None
    assert any("unregistered drop" in s.value for s in at.success)
    assert list(table(at, "models_table")["model"]) == ["keep"]


def test_set_and_delete_a_vmodel(app_env, client):
    client.register_model("v1", path="v1.onnx")
    at = open_page("models")
    at.text_input(key="vm_id").input("front")
    button(at, "vm_submit").click().run()
    assert any("choose the target model" in e for e in errors(at))
    at.selectbox(key="vm_target").set_value("v1")
    button(at, "vm_submit").click().run()
    assert not errors(at)
    v = client.get_vmodel("front")
    assert (v.active, v.target) == ("v1", "v1")
    assert list(table(at, "vmodels_table")["vmodel"]) == ["front"]
    assert table(at, "models_table").set_index("model").loc["v1", "vmodels"] == "front"
    at.selectbox(key="vm_delete_id").set_value("front")
    button(at, "vm_delete").click().run()
    assert client.get_vmodel("front") is None


def test_vmodel_errors_are_shown(app_env, client):
    client.register_model("v1", path="v1.onnx")
    at = open_page("models")
    at.text_input(key="vm_id").input("no good")
    at.selectbox(key="vm_target").set_value("v1")
    button(at, "vm_submit").click().run()
    assert any("invalid vmodel id" in e for e in errors(at))


# -- install -------------------------------------------------------------------------------------------


def test_install_page_without_a_plane(monkeypatch, tmp_path):
    monkeypatch.delenv("MESH_ETCD", raising=False)
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path / "state"))
    at = open_page("install")
    assert any("not running" in i.value for i in at.info)
    at.text_input(key="up_capacity").input("lots")
    button(at, "up_start").click().run()
    assert any("cannot read size 'lots'" in e for e in errors(at))
    assert local.status(tmp_path / "state") is None
    assert any(s.value == "Kubernetes" for s in at.subheader)


def test_install_page_lists_registered_pods(placed):
    at = open_page("install")
    df = table(at, "install_registered")
    assert list(df["pod"]) == ["pod-0", "pod-1"]

"""The pod view over the demo data (no etcd): copies biggest first, the pod's own request rate
and loads/evictions per minute from the stats, its events only, and the end of its log file
when the state dir records an embedded pod."""

from __future__ import annotations

import os

from tests_console_support import SIZE, static_text, wait_for
from textual.widgets import Log, Sparkline

from console.demo import DEMO_NOW_MS
from console.messages import PlaneChanged
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen
from console.state import Change
from plane import local
from plane.registry import CopyInfo, ModelRecord
from plane.settings import MeshSettings


def order(screen: PodScreen) -> list[str]:
    return [screen.table.coordinate_to_cell_key((i, 0)).row_key.value for i in range(screen.table.row_count)]


async def test_enter_on_a_pod_column_opens_its_view(demo_app):
    app = demo_app(start_view="placement")
    async with app.run_test(size=SIZE) as pilot:
        placement = app.screen
        assert isinstance(placement, PlacementScreen)
        placement.select_copy("sentiment-distil", "pod-1")
        await pilot.press("enter")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, PodScreen) and app.screen, what="the pod view")
        assert screen.pod_id == "pod-1"
        await wait_for(pilot, lambda: screen.query("#pod-log") and screen.table.row_count == 4,
                       what="pod-1's four copies")
        assert order(screen) == ["sentiment-distil", "bert-tiny", "mnist-v1", "churn-lr"]  # by size
        assert screen.table.spec("sentiment-distil")[:5] == (
            ("sentiment-distil", None, ""), ("onnx", None, ""), ("loaded", None, "green"),
            ("92.0 MiB", 92 * 1024**2, ""),
            ("30m ago", -(DEMO_NOW_MS - 30 * 60_000), ""))
        await pilot.press("s")  # by rate here
        assert order(screen)[0] == "mnist-v1"  # 20/min on this pod
        # its request rate and activity per minute come from its own stats
        requests = screen.query_one("#spark-requests", Sparkline).data
        assert requests is not None and len(requests) == 60
        assert sum(requests) == screen.plane.activity(DEMO_NOW_MS, window_s=3600, pod="pod-1")["requests"] > 0
        loads = screen.query_one("#spark-loads", Sparkline).data or []
        assert sum(loads) == sum(r.counts.get("loads", 0) for r in app.state.stats.values() if r.pod == "pod-1")
        events = static_text(screen.query_one("#pod-events"))
        assert "sentiment-distil" in events and "evict" in events  # pod-1's load and eviction
        assert "yolo-nano" not in events  # an event of pod-2
        note = " ".join(screen.query_one("#pod-log", Log).lines)
        assert "no embedded plane" in note  # this state dir records none: it says so
        await pilot.press("escape")
        assert isinstance(app.screen, PlacementScreen)


async def test_the_log_tail_of_an_embedded_pod_is_shown_and_refreshed(demo_app, tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    log = tmp_path / "pod-0.log"
    log.write_text("".join(f"line {i}\n" for i in range(200)))
    plane = local.LocalPlane(state_dir=str(state_dir), etcd_pid=0, etcd_endpoint="127.0.0.1:2379",
                             etcd_prefix="mesh", capacity=1024**2,
                             pods=[local.PodProcess("pod-0", os.getpid(), "127.0.0.1:9001", 9101, str(log))])
    plane.save()
    app = demo_app(settings=MeshSettings(etcd="", state_dir=state_dir))
    async with app.run_test(size=SIZE) as pilot:
        app.open_pod("pod-0")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, PodScreen) and app.screen, what="the pod view")
        await wait_for(pilot, lambda: screen.query("#pod-log"), what="the pod view's widgets")
        widget = screen.query_one("#pod-log", Log)
        await wait_for(pilot, lambda: widget.line_count == 50, what="the last 50 lines")
        assert list(widget.lines)[0] == "line 150" and list(widget.lines)[-1] == "line 199"
        assert screen.log_tail.path == str(log)
        with log.open("a") as f:
            f.write("a new line\n")
        await wait_for(pilot, lambda: list(widget.lines)[-1] == "a new line", timeout=10, what="the refreshed tail")


async def test_the_view_on_screen_follows_the_watch_and_the_one_under_it_catches_up(demo_app):
    app = demo_app(start_view="placement")
    async with app.run_test(size=SIZE) as pilot:
        placement = app.screen
        assert isinstance(placement, PlacementScreen)
        assert placement.copy_cell("bert-tiny", "pod-1").startswith("●")
        app.open_pod("pod-1")
        screen = await wait_for(pilot, lambda: isinstance(app.screen, PodScreen) and app.screen, what="the pod view")
        await wait_for(pilot, lambda: screen.query("#pod-log") and screen.table.has_key("bert-tiny"),
                       what="bert-tiny on pod-1")
        moved = ModelRecord.from_json(app.state.models["bert-tiny"].to_json())
        moved.copies = {"pod-0": CopyInfo("loaded", DEMO_NOW_MS, moved.size)}
        app.post_message(PlaneChanged([Change("models", "bert-tiny", moved)]))
        await wait_for(pilot, lambda: not screen.table.has_key("bert-tiny"), what="the copy gone from the pod view")
        await pilot.press("escape")
        assert app.screen is placement
        await wait_for(pilot, lambda: placement.copy_cell("bert-tiny", "pod-0").startswith("●"),
                       what="Placement redrawn on return")
        assert placement.copy_cell("bert-tiny", "pod-1") == ""

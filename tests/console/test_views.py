"""Pilot tests over the demo data (no etcd): navigation, keys, readonly, filter, sort, details,
and tables updated by row key when watch batches arrive."""

from __future__ import annotations

import io

from rich.console import Console
from tests_console_support import SIZE, wait_for
from textual.command import CommandList

from console.demo import DEMO_NOW_MS
from console.messages import PlaneChanged
from console.screens.dialogs import CommandBar, ConfirmScreen, DetailsScreen, FormScreen, KeysScreen
from console.screens.events import EventsScreen
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from console.state import Change
from plane.registry import CopyInfo, Event, ModelRecord


def render_text(parts) -> str:
    console = Console(width=140, record=True, file=io.StringIO())
    for part in parts:
        console.print(part)
    return console.export_text()


def footer_actions(app) -> set[str]:
    return {b.binding.action for b in app.screen.active_bindings.values() if b.binding.show}


async def test_every_view_by_key_by_colon_and_back_with_esc(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        for key, view in zip("1234567", ("overview", "install", "storage", "models", "vmodels", "placement",
                                          "events"), strict=True):
            await pilot.press(key)
            assert app.current_mode == view
        await pilot.press("colon")
        assert isinstance(app.screen, CommandBar)
        await pilot.press(*"models", "enter")
        assert app.current_mode == "models"
        await pilot.press("escape")
        assert app.current_mode == "events"  # esc goes back to where we came from
        await pilot.press("escape")
        assert app.current_mode == "placement"


async def test_command_palette_lists_the_views(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        titles = [c.title for c in app.get_system_commands(app.screen)]
        assert "View: Placement" in titles
        await pilot.press("ctrl+p")
        await pilot.press(*"View: Placement")

        def placement_highlighted() -> bool:
            results = app.screen.query(CommandList)
            if not results:
                return False
            hit = results.first().highlighted_option
            return hit is not None and "Placement" in str(hit.prompt)

        await wait_for(pilot, placement_highlighted, what="the palette to find the Placement view")
        await pilot.press("enter")
        await wait_for(pilot, lambda: app.current_mode == "placement", what="palette switch")


async def test_question_mark_shows_the_keys_of_this_view(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4", "question_mark")
        assert isinstance(app.screen, KeysScreen)
        described = {desc.lower() for _key, desc in app.screen.rows}
        assert {"register", "unregister", "filter", "sort", "details", "quit"} <= described
        await pilot.press("escape")
        assert isinstance(app.screen, ModelsScreen)


async def test_readonly_hides_and_blocks_changes(demo_app):
    app = demo_app(readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        actions = footer_actions(app)
        assert "filter" in actions and "details" in actions
        assert not actions & {"register", "unregister", "load"}
        await pilot.press("r", "d")
        assert isinstance(app.screen, ModelsScreen)  # no form, no confirmation
        await pilot.press("3")
        assert not footer_actions(app) & {"add", "edit", "remove"}
        assert "test" in footer_actions(app)  # testing storage changes nothing
        await pilot.press("2")
        for button in ("#local-start", "#local-stop", "#kube-install", "#kube-uninstall"):
            assert not app.screen.query_one(button).display
        assert app.screen.query_one("#kube-render").display  # rendering manifests changes nothing


async def test_writable_footer_shows_the_actions(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        assert {"register", "unregister", "load", "filter", "sort"} <= footer_actions(app)
        await pilot.press("r")
        assert isinstance(app.screen, FormScreen)
        await pilot.press("escape")
        assert isinstance(app.screen, ModelsScreen)


async def test_models_filter_sort_and_details(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        table = app.screen.table
        assert table.row_count == 13
        await pilot.press("slash", *"mnist", "enter")
        assert sorted(table.keys()) == ["mnist-v1", "mnist-v2"]
        await pilot.press("escape")  # esc clears the filter first
        assert table.row_count == 13 and app.current_mode == "models"
        table.sort_by("size")
        table.sort_by("size")  # again: biggest first
        assert table.selected_key() is not None
        first = table.coordinate_to_cell_key((0, 0)).row_key.value
        assert first == "sentiment-distil"
        table.select_key("broken-net")
        await pilot.press("i")
        assert isinstance(app.screen, DetailsScreen)
        shown = render_text(app.screen.parts)
        assert "LOADING_FAILED" in shown and "InvalidProtobuf" in shown  # status and the error
        assert '"model_id": "broken-net"' in shown  # the raw registry record


async def test_watch_batches_update_rows_by_key(demo_app, monkeypatch):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        table = app.screen.table
        added, updated = [], []
        monkeypatch.setattr(table, "add_row", lambda *a, **k: added.append(k.get("key")))
        real_update = table.update_cell
        monkeypatch.setattr(table, "update_cell", lambda r, c, v, **k: (updated.append((r, c)),
                                                                         real_update(r, c, v, **k)))
        m = app.state.models["ocr-crnn"]
        moved = ModelRecord.from_json(m.to_json())
        moved.copies = {"pod-2": CopyInfo("loaded", DEMO_NOW_MS, m.size)}
        app.post_message(PlaneChanged([Change("models", "ocr-crnn", moved)]))
        await pilot.pause()
        assert added == []  # nothing rebuilt
        assert {r for r, _ in updated} == {"ocr-crnn"}
        assert {c for _, c in updated} == {"status", "copies"}
        assert table.spec("ocr-crnn")[1][0] == "LOADED"


async def test_placement_lights_up_an_eviction(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("6")
        screen = app.screen
        assert isinstance(screen, PlacementScreen)
        m = ModelRecord.from_json(app.state.models["resnet18"].to_json())
        m.copies.clear()
        ev = Event("evict", model="resnet18", pod="pod-0", reason="evicted for yolo-nano, last used 2m ago",
                   time_ms=DEMO_NOW_MS)
        ev.key = f"{DEMO_NOW_MS * 1000 + 999:020d}-pod-0"
        app.post_message(PlaneChanged([Change("models", "resnet18", m), Change("events", ev.key, ev)]))
        await pilot.pause()
        assert screen.copy_cell("resnet18", "pod-0") == "✕"  # the pod-0 cell, lit red
        row = screen.table.spec("resnet18")
        assert row is not None and "red" in row[screen.table.column_keys.index("pod-0")][2]


async def test_events_follow_and_pause(demo_app):
    app = demo_app()
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("7")
        screen = app.screen
        assert isinstance(screen, EventsScreen)
        before = screen.table.row_count
        await pilot.press("p")  # pause
        ev = Event("evict", model="bert-tiny", pod="pod-1", reason="evicted for x", time_ms=DEMO_NOW_MS)
        ev.key = f"{DEMO_NOW_MS * 1000 + 998:020d}-pod-1"
        app.post_message(PlaneChanged([Change("events", ev.key, ev)]))
        await pilot.pause()
        assert screen.table.row_count == before and screen.pending == 1
        await pilot.press("p")  # follow again
        assert screen.table.row_count == before + 1
        assert screen.table.selected_key() == ev.key  # following: the cursor is on the newest
        await pilot.press("slash", *"kind:evict", "enter")
        assert {screen.table.spec(k)[1][0] for k in screen.table.keys()} == {"evict"}


async def test_kubernetes_manifests_render_with_secrets_masked(demo_app):
    app = demo_app(start_view="install")
    async with app.run_test(size=SIZE) as pilot:
        app.screen.query_one("#kube-namespace").value = "ml-serving"
        app.screen.query_one("#kube-quickstart").value = True
        await pilot.press("m")
        await wait_for(pilot, lambda: isinstance(app.screen, DetailsScreen), what="the manifests dialog")
        text = render_text(app.screen.parts)
        assert "kind: StatefulSet" in text and "namespace: ml-serving" in text
        assert "****" in text  # the quickstart MinIO credentials are masked


async def test_kubernetes_install_without_a_cluster_says_why(demo_app, tmp_path, monkeypatch):
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "no-kubeconfig"))
    app = demo_app(start_view="install")
    async with app.run_test(size=SIZE) as pilot:
        screen = app.screen
        screen.query_one("#kube-context").value = "no-such-context"
        await pilot.press("K")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: screen.busy is False and "✗" in log_text(screen), timeout=30,
                       what="the install to fail")
        assert "cannot load a Kubernetes configuration" in log_text(screen)


def log_text(screen) -> str:
    return "\n".join(str(line.text) for line in screen.query_one("#install-log").lines)


async def test_a_failing_action_is_shown_not_swallowed(demo_app):
    app = demo_app()  # demo data: no etcd connection, so every change fails
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("4")
        app.screen.table.select_key("ocr-crnn")
        await pilot.press("l")
        shown = await wait_for(pilot, lambda: [n for n in app._notifications if n.severity == "error"],
                               what="the error notification")
        assert shown[0].title == "load failed" and "not connected to etcd" in shown[0].message

"""Columns sized to the terminal: every column of Models shows at 120 and at 180 columns,
long ids end in an ellipsis instead of pushing columns off the screen. And the Install view
shows the running plane's real settings, not the defaults."""

from __future__ import annotations

import os

import pytest
from tests_console_support import screen_lines, static_text, wait_for
from textual.widgets import Input

from console.demo import DEMO_NOW_MS
from console.screens.models import MODEL_COLUMNS, ModelsScreen
from console.state import Change, PlaneState
from console.widgets.keyed_table import fit_widths
from plane import local
from plane.registry import CopyInfo, FailureInfo, ModelRecord
from plane.settings import MeshSettings

LONG = "demo-breast-cancer-gradient-boosting-with-a-very-long-name-0042"


def long_state() -> PlaneState:
    models = []
    for i in range(30):
        mid = f"{LONG}-{i:02d}" if i % 3 == 0 else f"m-{i:02d}"
        models.append(ModelRecord(
            mid, path=f"some/deep/storage/prefix/for/{mid}/model.onnx", size=(i + 1) * 1024**2,
            copies={"pod-0": CopyInfo("loaded", DEMO_NOW_MS - 60_000, 1024**2),
                    "pod-1": CopyInfo("loaded", DEMO_NOW_MS - 60_000, 1024**2)},
            failed={"pod-2": FailureInfo(DEMO_NOW_MS - 60_000, "InvalidProtobuf: file is not an ONNX model")},
        ))
    return PlaneState.from_changes(Change("models", m.model_id, m) for m in models)


def test_fit_widths_cuts_the_flexible_columns_in_their_order():
    natural = {"id": 60, "status": 14, "path": 50, "size": 9}
    flex = {"path": 14, "id": 12}  # the path gives way first, the id last
    assert fit_widths(natural, flex, budget=100) == {"id": 60, "status": 14, "path": 17, "size": 9}
    assert fit_widths(natural, flex, budget=80) == {"id": 43, "status": 14, "path": 14, "size": 9}
    assert fit_widths(natural, flex, budget=200) == natural  # room: nothing cut
    assert fit_widths(natural, flex, budget=10) == {**natural, "id": 12, "path": 14}


@pytest.mark.parametrize("width", [120, 180])
async def test_models_shows_every_column_and_ellipsizes_long_ids(demo_app, width):
    app = demo_app(state=long_state(), start_view="models")
    async with app.run_test(size=(width, 30)) as pilot:
        screen = app.screen
        assert isinstance(screen, ModelsScreen)
        await wait_for(pilot, lambda: screen.table.row_count == 30, what="the rows")
        table = screen.table

        def fitted() -> bool:
            used = sum(c.get_render_width(table) for c in table.columns.values())
            return used <= table.scrollable_content_region.width

        await wait_for(pilot, fitted, what="the columns to fit the table")
        await pilot.pause()
        lines = screen_lines(app)
        header = next(line for line in lines if "storage:path" in line)
        for _key, label in MODEL_COLUMNS:
            assert label in header, (label, header)
        row = next(line for line in lines if "demo-breast" in line)
        assert row.rstrip().endswith("…")  # the last column (storage:path) is there, cut first
        if width == 120:
            assert LONG not in row and "demo-breast-cancer" in row  # then the id, with an ellipsis
        else:
            assert f"{LONG}-00" in row  # at 180 the id fits whole: the path gave way
        assert table.virtual_size.width <= table.scrollable_content_region.width  # no sideways scrolling


async def test_install_shows_the_running_plane_settings(demo_app, tmp_path):
    state_dir = tmp_path / "state"
    state_dir.mkdir()
    plane = local.LocalPlane(
        state_dir=str(state_dir), etcd_pid=0, etcd_endpoint="127.0.0.1:23790", etcd_prefix="mesh",
        capacity=1024**2, pods=[local.PodProcess(f"pod-{i}", os.getpid(), f"127.0.0.1:{9001 + i}", 9101 + i)
                                for i in range(2)])
    plane.save()
    settings = MeshSettings(etcd="", state_dir=state_dir, capacity=256 * 1024**2)  # the defaults say 256 MiB
    app = demo_app(settings=settings, start_view="install")
    async with app.run_test(size=(120, 36)) as pilot:
        screen = app.screen
        await wait_for(pilot, lambda: getattr(screen, "local_plane", None) is not None, what="the running plane")
        assert screen.query_one("#local-capacity", Input).value == "1.0MiB"
        assert screen.query_one("#local-pods", Input).value == "2"
        status = static_text(screen.query_one("#local-status"))
        assert "● running" in status and "etcd 127.0.0.1:23790" in status
        assert "127.0.0.1:9002" in status and "metrics :9102" in status
        assert "capacity 1.0 MiB per pod" in status

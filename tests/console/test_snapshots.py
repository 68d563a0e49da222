"""Snapshot tests: every view over the demo data, 120x36, "now" pinned, times in UTC.

Update after an intended change with ``pytest tests/console/test_snapshots.py --snapshot-update``
and look at the SVGs in ``__snapshots__/`` before committing them.
"""

from __future__ import annotations

import pytest
from tests_console_support import SIZE

from console.screens.models import ModelsScreen
from plane.settings import MeshSettings

VIEWS = ["overview", "install", "storage", "models", "vmodels", "placement", "events"]


def settings() -> MeshSettings:
    # explicit values beat MESH_* variables, so the Install view reads the same on every machine
    return MeshSettings(etcd="", etcd_prefix="mesh", state_dir="/nonexistent/mesh-demo", capacity=256 * 1024**2)


@pytest.mark.parametrize("view", VIEWS)
def test_view(snap_compare, demo_app, view):
    assert snap_compare(demo_app(settings=settings(), start_view=view), terminal_size=SIZE)


def test_models_readonly(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="models", readonly=True), terminal_size=SIZE)


def test_models_filtered(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="models"), terminal_size=SIZE,
                        press=["slash", *"mnist", "enter"])


def test_model_details(snap_compare, demo_app):
    async def select(pilot):
        screen = pilot.app.screen
        assert isinstance(screen, ModelsScreen)
        screen.table.select_key("broken-net")
        await pilot.press("i")

    assert snap_compare(demo_app(settings=settings(), start_view="models"), terminal_size=SIZE, run_before=select)


def test_models_wide(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="models"), terminal_size=(180, 36))


def test_pod_view(snap_compare, demo_app):
    async def open_pod(pilot):
        pilot.app.open_pod("pod-1")
        await pilot.pause()

    assert snap_compare(demo_app(settings=settings(), start_view="placement"), terminal_size=SIZE,
                        run_before=open_pod)


def test_copies_form(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="placement"), terminal_size=SIZE, press=["c"])


def test_register_form(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="models"), terminal_size=SIZE, press=["r"])


def test_storage_form(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="storage"), terminal_size=SIZE, press=["a"])


def test_keys_help(snap_compare, demo_app):
    assert snap_compare(demo_app(settings=settings(), start_view="events"), terminal_size=SIZE,
                        press=["question_mark"])

"""Placement's actions and the pod view against a real plane: two runtime pods on the session
etcd. Unload (confirmed), load on a chosen pod, pin, the copies policy, an error that is
shown, ``--readonly`` hiding and refusing all of it, and the pod view's copies and log tail.
Everything the tests wait for comes back through the etcd watch."""

from __future__ import annotations

import contextlib
import pathlib
import uuid

import pytest
from tests_console_support import SIZE, wait_for
from textual.widgets import Input, Log

from console.app import MeshConsole
from console.screens.base import ReadOnlyError
from console.screens.dialogs import ConfirmScreen, FormScreen
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen
from plane import demo, local
from plane.api import PlaneClient
from plane.settings import MeshSettings

pytestmark = pytest.mark.slow

MIB = 1024**2


@pytest.fixture(scope="module")
def plane(etcd_endpoint: str, tmp_path_factory: pytest.TempPathFactory):
    root = tmp_path_factory.mktemp("placement-live")
    models = root / "models"
    for name in ("m0", "m1"):
        demo.make_tiny_model(models / name / "model.onnx")
    demo.make_corrupt_model(models / "broken" / "model.onnx")
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"t-{uuid.uuid4().hex[:10]}", state_dir=root / "state",
                            grpc_port=local.free_port(), capacity=16 * MIB, lease_ttl_s=2, usage_flush_s=0.5,
                            load_timeout_s=30)
    local.up(settings, pods=2)
    client = PlaneClient.connect(settings)
    client.set_storage("default", "local", {"path": str(models)})
    client.register_model("m0", path="m0/model.onnx", load_now=True, sync=True)
    client.register_model("broken", path="broken/model.onnx")
    with contextlib.suppress(Exception):  # fails on purpose: a LOADING_FAILED row
        client.ensure_loaded("broken", sync=True, timeout=30)
    try:
        yield settings, client
    finally:
        client.close()
        local.down(pathlib.Path(settings.state_dir))


async def open_placement(pilot) -> PlacementScreen:
    app = pilot.app
    await wait_for(pilot, lambda: app.connected and not app.state.history_pending, what="the connection")
    await pilot.press("6")
    screen = app.screen
    assert isinstance(screen, PlacementScreen)
    await wait_for(pilot, lambda: screen.copy_cell("m0", "pod-0") or screen.copy_cell("m0", "pod-1"),
                   what="m0 in the matrix")
    return screen


def errors(app) -> list[str]:
    return [f"{n.title}: {n.message}" for n in app._notifications if n.severity == "error"]


async def test_unload_load_pin_and_policy_from_placement(plane):
    settings, client = plane
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_placement(pilot)
        holder = sorted(client.get_model("m0").copies)[0]
        other = "pod-1" if holder == "pod-0" else "pod-0"
        assert screen.copy_cell("m0", holder).startswith("●")  # "● 1.2K 3s": state, size, age

        # load a second copy on the other pod
        screen.select_copy("m0", other)
        assert screen.selected_copy() == ("m0", other)
        await pilot.press("l")
        await wait_for(pilot, lambda: screen.copy_cell("m0", other).startswith("●"), timeout=60,
                       what="the copy loaded on the other pod")
        assert client.get_model("m0").copies[other].state == "loaded"

        # unload the first one, after the confirmation
        screen.select_copy("m0", holder)
        await pilot.press("u")
        confirm = app.screen
        assert isinstance(confirm, ConfirmScreen) and f"from {holder}" in confirm.question
        await pilot.press("y")
        await wait_for(pilot, lambda: holder not in client.get_model("m0").copies, timeout=30,
                       what="the copy gone from the registry")
        await wait_for(pilot, lambda: not screen.copy_cell("m0", holder).startswith("●"), what="the cell cleared")

        # pin, then the copies policy through its form (first field focused)
        await pilot.press("p")
        await wait_for(pilot, lambda: client.get_model("m0").pinned, what="m0 pinned")
        await wait_for(pilot, lambda: app.state.models["m0"].pinned, what="the pin back through the watch")
        await pilot.press("c")
        assert isinstance(app.screen, FormScreen)
        assert app.screen.query_one("#field-pinned").value is True  # the form shows the policy as it is
        form = app.screen
        assert isinstance(form, FormScreen)
        assert form.focused is form.query_one("#field-min_copies", Input)
        form.query_one("#field-min_copies", Input).value = "1"
        form.query_one("#field-max_copies", Input).value = "2"
        await pilot.press("ctrl+s")
        await wait_for(pilot, lambda: app.screen is screen, what="the form to close")
        rec = client.get_model("m0")
        assert (rec.min_copies, rec.max_copies, rec.pinned) == (1, 2, True)

        # an error is shown, not swallowed: loading the corrupt model on a pod fails
        await wait_for(pilot, lambda: screen.table.spec("broken") is not None, what="the failed model's row")
        assert "failed" in (screen.copy_cell("broken", "pod-0") + screen.copy_cell("broken", "pod-1"))
        screen.select_copy("broken", "pod-0")
        await pilot.press("l")
        shown = await wait_for(pilot, lambda: errors(app), timeout=60, what="the load error")
        assert "load copy failed" in shown[0], shown


async def test_readonly_hides_and_refuses_the_actions(plane):
    settings, client = plane
    before = client.get_model("m0")
    app = MeshConsole(settings, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_placement(pilot)
        shown = {b.binding.action for b in screen.active_bindings.values() if b.binding.show}
        assert "sort" in shown and "open_pod" in shown
        assert not shown & {"unload_copy", "load_here", "toggle_pin", "copies_policy"}
        pod = sorted(before.copies)[0]
        screen.select_copy("m0", pod)
        await pilot.press("u", "l", "p", "c")
        assert app.screen is screen  # no confirmation, no form
        assert not [w for w in app.workers if w.name in ("unload copy", "load copy", "model policy")]
        worker = screen.unload("m0", pod)  # the worker refuses too
        await wait_for(pilot, lambda: worker.is_finished, what="the refused worker")
        assert isinstance(worker.error, ReadOnlyError)
        after = client.get_model("m0")
        assert (sorted(after.copies), after.pinned) == (sorted(before.copies), before.pinned)


async def test_the_pod_view_shows_its_copies_and_the_end_of_its_log(plane):
    settings, client = plane
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        screen = await open_placement(pilot)
        pod = sorted(client.get_model("m0").copies)[0]
        screen.select_copy("m0", pod)
        await pilot.press("enter")
        view = await wait_for(pilot, lambda: isinstance(app.screen, PodScreen) and app.screen, what="the pod view")
        assert view.pod_id == pod
        await wait_for(pilot, lambda: view.query("#pod-log") and view.table.spec("m0") is not None,
                       what="m0 among the pod's copies")
        row = view.table.spec("m0")
        assert row[1][0] == "onnx" and row[2][0].startswith("loaded") and row[3][0].endswith(("KiB", " B"))
        await wait_for(pilot, lambda: view.log_tail.lines, timeout=20, what="the log tail")
        assert view.log_tail.path.endswith(f"{pod}.log")
        log = view.query_one("#pod-log", Log)
        assert log.line_count == len(view.log_tail.lines) > 0
        expected = pathlib.Path(view.log_tail.path).read_text().splitlines()[-50:]
        assert view.log_tail.lines[-1] in expected
        await pilot.press("escape")
        assert app.screen is screen

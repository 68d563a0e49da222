"""End-to-end Pilot tests against a real etcd, real runtime pods and a real S3 endpoint.

What a pod writes (copies, evictions, events) reaches the console only through the etcd
watch, so these tests prove the live path: form -> plane.api -> etcd -> watch -> table.
"""

from __future__ import annotations

import pathlib

import pytest
from tests_console_support import SIZE, wait_for
from textual.widgets import Checkbox, Input, Select

from console.app import MeshConsole
from console.screens.dialogs import ConfirmScreen, FormScreen
from console.screens.events import EventsScreen
from console.screens.install import InstallScreen
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from console.screens.storage import StorageScreen
from plane import demo, local
from plane.api import PlaneClient
from plane.settings import MeshSettings

pytestmark = pytest.mark.slow

MIB = 1024**2
POD_CAPACITY = 20 * MIB  # two of the medium models (about 9.3 MiB each) fit; the third evicts the LRU


@pytest.fixture(scope="module")
def medium_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    root = tmp_path_factory.mktemp("console-models")
    for i in range(4):
        (root / f"m{i}").mkdir()
        demo.make_medium_model(root / f"m{i}" / "model.onnx", n_estimators=60, seed=i)
    return root


@pytest.fixture
def live_plane(settings: MeshSettings, medium_models: pathlib.Path):
    """One runtime pod on the session etcd (the test's own prefix), local storage 'default'."""
    s = settings.model_copy(update={"grpc_port": local.free_port(), "capacity": POD_CAPACITY,
                                    "lease_ttl_s": 2, "usage_flush_s": 0.5, "load_timeout_s": 30})
    local.up(s, pods=1)
    client = PlaneClient.connect(s)
    client.set_storage("default", "local", {"path": str(medium_models)})
    try:
        yield s, client
    finally:
        client.close()
        local.down(pathlib.Path(s.state_dir))


async def fill(pilot, field: str, text: str) -> None:
    widget = pilot.app.screen.query_one(f"#field-{field}", Input)
    widget.focus()
    widget.value = ""
    await pilot.press(*text)


async def submit(pilot) -> None:
    """Press the form's save key; fail with the form's own error text if it stays open."""
    form = pilot.app.screen
    await pilot.press("ctrl+s")
    try:
        await wait_for(pilot, lambda: pilot.app.screen is not form, what="the form to close")
    except AssertionError:
        raise AssertionError(f"form stayed open: {form.query_one('#form-error').render()}") from None


async def test_register_through_the_form_then_watch_an_eviction(live_plane):
    settings, client = live_plane
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.connected, what="connection to etcd")
        await wait_for(pilot, lambda: "pod-0" in app.state.pods, what="the pod's instance record")

        # register m0 through the form, with "load now"
        await pilot.press("4", "r")
        assert isinstance(app.screen, FormScreen)
        await fill(pilot, "model_id", "m0")
        await fill(pilot, "path", "m0/model.onnx")
        app.screen.query_one("#field-load_now", Checkbox).value = True
        await submit(pilot)
        models = await wait_for(pilot, lambda: isinstance(app.screen, ModelsScreen) and app.screen,
                                what="the form to close")
        await wait_for(pilot, lambda: (models.table.spec("m0") or [("",)] * 2)[1][0] == "LOADED",
                       timeout=60, what="m0 LOADED in the Models table")
        assert "pod-0" in models.table.spec("m0")[2][0]

        # watch the placement while two more loads push m0 out of the pod
        await pilot.press("6")
        placement = app.screen
        assert isinstance(placement, PlacementScreen)
        await wait_for(pilot, lambda: placement.table.spec("m0") is not None, what="m0 in the matrix")
        for i in (1, 2, 3):  # sizes are measured, so load until m0 has to go
            await pilot.pause(0.6)  # m0 must be the least recently used
            client.register_model(f"m{i}", path=f"m{i}/model.onnx", load_now=True, sync=True)
            if not client.get_model("m0").copies:
                break
        await wait_for(pilot, lambda: placement.copy_cell("m0", "pod-0") == "✕",
                       timeout=30, what="the evicted copy lit up in Placement")
        loaded_now = [m for m in ("m1", "m2", "m3") if placement.copy_cell(m, "pod-0").startswith("●")]
        assert loaded_now, "the model that took m0's place is shown loaded on pod-0"
        capacity = str(placement.query_one("#placement-pods").render())
        assert "pod-0" in capacity

        # and the eviction, with its reason, in Events
        await pilot.press("7")
        events = app.screen
        assert isinstance(events, EventsScreen)

        def evict_rows():
            return [events.table.spec(k) for k in events.table.keys()
                    if events.table.spec(k)[1][0] == "evict"]

        rows = await wait_for(pilot, evict_rows, what="an evict event")
        assert rows[0][2][0] == "m0" and rows[0][3][0] == "pod-0"
        assert rows[0][5][0].startswith("evicted for m")  # e.g. "evicted for m2, last used 1s ago"

        # unregister with confirmation
        await pilot.press("4")
        models = app.screen
        models.table.select_key("m0")
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: not models.table.has_key("m0"), what="m0 gone from the table")
        assert client.get_model("m0") is None


async def test_storage_form_and_test_against_s3(settings, s3_server):
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: app.connected, what="connection to etcd")
        await pilot.press("3", "a")
        assert isinstance(app.screen, FormScreen)
        await fill(pilot, "key", "s3-good")
        assert app.screen.query_one("#field-type", Select).value == "s3"
        await fill(pilot, "endpoint_url", s3_server["endpoint_url"])
        await fill(pilot, "default_bucket", s3_server["bucket"])
        await fill(pilot, "access_key_id", s3_server["access_key_id"])
        await fill(pilot, "secret_access_key", s3_server["secret_access_key"])
        await submit(pilot)
        storage = await wait_for(pilot, lambda: isinstance(app.screen, StorageScreen) and app.screen,
                                 what="the form to close")
        await wait_for(pilot, lambda: storage.table.has_key("s3-good"), what="s3-good in the table")
        shown = " ".join(c[0] for c in storage.table.spec("s3-good"))
        assert s3_server["secret_access_key"] not in shown and "****" in shown

        storage.table.select_key("s3-good")
        await pilot.press("t")
        result = storage.query_one("#storage-test-result")
        await wait_for(pilot, lambda: "✓" in str(result.render()), timeout=30, what="a successful test")
        text = str(result.render())
        assert f"bucket '{s3_server['bucket']}' readable, 2 object(s) listed" in text and "mnist/model.onnx" in text

        # the same endpoint with a wrong secret: the test says the credentials were refused
        client = app.require_client()
        await pilot.pause()
        client_params = {**{k: s3_server[k] for k in ("endpoint_url", "access_key_id")},
                         "default_bucket": s3_server["bucket"], "secret_access_key": "not-the-secret-at-all"}
        client.set_storage("s3-bad", "s3", client_params)
        await wait_for(pilot, lambda: storage.table.has_key("s3-bad"), what="s3-bad in the table")
        storage.table.select_key("s3-bad")
        await pilot.press("t")
        await wait_for(pilot, lambda: "✗" in str(result.render()), timeout=30, what="a failed test")
        assert "refused the credentials" in str(result.render())

        # remove it, with confirmation
        await pilot.press("d")
        assert isinstance(app.screen, ConfirmScreen)
        await pilot.press("y")
        await wait_for(pilot, lambda: not storage.table.has_key("s3-bad"), what="s3-bad removed")

        # edit s3-good: the form never shows secrets, and leaving them empty keeps them
        storage.table.select_key("s3-good")
        await pilot.press("e")
        form = app.screen
        assert isinstance(form, FormScreen)
        assert form.query_one("#field-secret_access_key", Input).value == ""
        await fill(pilot, "region", "eu-west-1")
        await submit(pilot)
        await wait_for(pilot, lambda: (client.get_storage("s3-good").params.get("region") == "eu-west-1"),
                       what="the edit to reach etcd")
        assert client.get_storage("s3-good").params["secret_access_key"] == s3_server["secret_access_key"]


async def test_etcd_down_is_reported_and_the_console_reconnects(tmp_path):
    port = local.free_port()
    proc, endpoint = local.start_etcd(tmp_path / "etcd", port=port)
    app = MeshConsole(MeshSettings(etcd=endpoint, etcd_prefix="down-test", state_dir=tmp_path / "state"))
    try:
        async with app.run_test(size=SIZE) as pilot:
            await wait_for(pilot, lambda: app.connected, what="connection to etcd")
            local.stop_process(proc)
            await wait_for(pilot, lambda: not app.connected and "unavailable" in app.connection,
                           timeout=20, what="the console to notice etcd is gone")
            for key, view in (("4", "models"), ("6", "placement"), ("1", "overview")):
                await pilot.press(key)  # the UI still answers
                assert app.current_mode == view
            proc, _ = local.start_etcd(tmp_path / "etcd", port=port)
            await wait_for(pilot, lambda: app.connected, timeout=30, what="the reconnection")
    finally:
        local.stop_process(proc)


async def test_no_plane_offers_to_start_one_and_readonly_does_not(tmp_path):
    settings = MeshSettings(etcd="", state_dir=tmp_path / "nothing-here")
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: isinstance(app.screen, ConfirmScreen), what="the offer to start")
        assert "No plane is running" in app.screen.question
        await pilot.press("n")
        assert "no plane running" in app.connection
    app = MeshConsole(settings, readonly=True)
    async with app.run_test(size=SIZE) as pilot:
        await wait_for(pilot, lambda: "no plane running" in app.connection, what="the no-plane status")
        assert not isinstance(app.screen, ConfirmScreen)


async def test_install_view_starts_and_stops_the_embedded_plane(tmp_path):
    settings = MeshSettings(etcd="", etcd_prefix="install-test", state_dir=tmp_path / "state",
                            grpc_port=local.free_port(), capacity=64 * MIB)
    app = MeshConsole(settings, offer_start=False, start_view="install")
    try:
        async with app.run_test(size=SIZE) as pilot:
            screen = app.screen
            assert isinstance(screen, InstallScreen)
            screen.query_one("#local-pods", Input).value = "2"
            await pilot.click("#local-start")
            await wait_for(pilot, lambda: app.connected, timeout=90, what="the plane to start and connect")
            await wait_for(pilot, lambda: len(app.state.pods) == 2, timeout=30, what="two pods in etcd")
            await wait_for(pilot, lambda: screen.local_plane is not None, what="the status to show it running")
            await pilot.press("escape", "D")  # esc leaves the input, D asks to stop
            assert isinstance(app.screen, ConfirmScreen)
            await pilot.press("y")
            await wait_for(pilot, lambda: not screen.busy and screen.local_plane is None, timeout=60,
                           what="the plane to stop")
            log = "\n".join(str(line.text) for line in screen.query_one("#install-log").lines)
            assert "plane up: " in log and "plane stopped" in log
    finally:
        local.down(pathlib.Path(settings.state_dir))

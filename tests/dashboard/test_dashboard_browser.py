"""End to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the dashboard server started by ``mesh dashboard --port P``, over a real
embedded plane: runtime pods started by plane.local.up on the session etcd.

It registers a model through the Models form (with "load now"), sees it in the models table
and on the Placement heatmap (read from the plotly figure in the page), checks the other
pages against the same plane, and saves screenshots/dashboard-<page>.png of every page.
"""

from __future__ import annotations

import importlib.util
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import threading
import time
import uuid

import pytest

from dashboard import launch
from plane import demo, local
from plane.api import PlaneClient
from plane.settings import MeshSettings

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
]
ROOT = pathlib.Path(__file__).resolve().parents[2]
# Screenshots go to a scratch folder unless MESH_SCREENSHOT_DIR names one (regenerate the README's
# pictures with MESH_SCREENSHOT_DIR=screenshots), so a test run never rewrites tracked files.
SHOTS = pathlib.Path(os.environ.get("MESH_SCREENSHOT_DIR") or tempfile.gettempdir()) / (
    "" if os.environ.get("MESH_SCREENSHOT_DIR") else "mesh-dashboard-screenshots")
MIB = 1024 * 1024
WAIT_MS = 30_000
ACCESS_KEY = "AKIAE2EDASHBOARDKEY1"
SECRET_KEY = "e2e/secret/never-shown-in-the-browser"


def _chromium_or_skip() -> None:
    if os.path.exists(CHROMIUM):
        return
    if os.environ.get("CI") == "true":
        pytest.fail(f"{CHROMIUM} is missing: CI must `apt-get install -y chromium` before the tests")
    pytest.skip(f"{CHROMIUM} is not installed (apt-get install -y chromium)")


@pytest.fixture(scope="module")
def plane(etcd_endpoint, tmp_path_factory):
    """A real embedded plane (3 runtime pods) on the session etcd, with local storage holding
    a few real ONNX models, four of them loaded."""
    _chromium_or_skip()
    base = tmp_path_factory.mktemp("e2e")
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"e2e-{uuid.uuid4().hex[:8]}",
                            state_dir=base / "state", grpc_port=local.free_port(), capacity="24MiB")
    local.up(settings, pods=3)
    client = PlaneClient.connect(settings)
    try:
        models = base / "models"
        models.mkdir()
        demo.make_tiny_model(models / "tiny.onnx")
        for i, trees in enumerate((8, 16, 24, 32)):
            demo.make_medium_model(models / f"forest-{trees}.onnx", n_estimators=trees, seed=i)
        client.set_storage("default", "local", {"path": str(models)})
        client.set_storage("minio", "s3", {"endpoint_url": "http://minio.example:9000", "bucket": "models",
                                           "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY})
        for trees in (8, 16, 24, 32):
            client.register_model(f"digits-forest-{trees}", path=f"forest-{trees}.onnx", load_now=True,
                                  sync=True)
        client.set_vmodel("digits", "digits-forest-32")
        yield settings, client, base
    finally:
        client.close()
        local.down(settings.state_dir)


def _start_dashboard(settings: MeshSettings, log: pathlib.Path):
    """`mesh dashboard --port P` (python -m plane.cli) when the CLI is there, else dashboard.launch
    directly; returns the process and the URL it printed."""
    if importlib.util.find_spec("plane.cli") is None:
        proc = launch.launch(port=None, settings=settings, log_path=log)
        return proc, launch.wait_until_serving(proc)
    port = local.free_port()
    env = settings.child_env()
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "plane.cli", "dashboard", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    seen = []
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("dashboard: "):
            url = line.split()[1]
            # keep draining its output so the server never blocks on a full pipe
            threading.Thread(target=lambda: log.write_text("".join(seen) + proc.stdout.read()),
                             daemon=True).start()
            return proc, url
    proc.wait(10)
    raise AssertionError("`mesh dashboard` exited without printing its URL:\n" + "".join(seen))


@pytest.fixture(scope="module")
def dashboard_url(plane):
    settings, _, base = plane
    proc, url = _start_dashboard(settings, base / "dashboard.log")
    try:
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


@pytest.fixture(scope="module")
def page(dashboard_url):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1440, "height": 1300})
            pg.set_default_timeout(WAIT_MS)
            yield pg
        finally:
            browser.close()


def goto(page, url: str) -> None:
    page.goto(url)
    page.locator("[data-testid=stMain] h1").first.wait_for()


def settle(page) -> None:
    """Wait until Streamlit is not running the script (then figures have been drawn)."""
    page.wait_for_timeout(300)
    page.locator("[data-testid=stStatusWidget]").wait_for(state="hidden")
    page.wait_for_timeout(700)


def shoot(page, name: str) -> None:
    SHOTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    page.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)


def plot_data(page) -> list[list[dict]]:
    """The data of every plotly figure in the page, as plotly.js holds it."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => (d.data || []).map(
               t => ({type: t.type, name: t.name, x: t.x, y: t.y, z: t.z, text: t.text})))"""
    )


def wait_for(fn, what: str, timeout: float = WAIT_MS / 1000):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def test_register_in_the_browser_then_table_and_heatmap(page, dashboard_url, plane):
    _, client, _ = plane
    goto(page, f"{dashboard_url}/models")
    page.get_by_label("Model id", exact=True).fill("tiny-e2e")
    page.get_by_label("Path inside the storage", exact=True).fill("tiny.onnx")
    page.get_by_text("Load now", exact=True).click()
    page.get_by_role("button", name="Register", exact=True).click()
    page.get_by_text("registered tiny-e2e (default:tiny.onnx)").wait_for()

    # the registry has it, loaded by a real pod
    rec = wait_for(lambda: (r := client.get_model("tiny-e2e")) and r.loaded_on() and r, "tiny-e2e loaded")
    pod = rec.loaded_on()[0]

    # the models table shows it (glide-data-grid keeps an accessible copy of the cells)
    page.locator("td[role=gridcell]", has_text="tiny-e2e").first.wait_for(state="attached")
    shoot(page, "models")

    # the placement heatmap shows it on the pod that loaded it
    goto(page, f"{dashboard_url}/placement")

    def heat():
        figs = plot_data(page)
        heatmaps = [t for f in figs for t in f if t["type"] == "heatmap"]
        return next((t for t in heatmaps if "tiny-e2e" in (t["y"] or [])), None)

    hm = wait_for(heat, "tiny-e2e on the heatmap")
    row = hm["y"].index("tiny-e2e")
    col = hm["x"].index(pod)
    assert hm["text"][row][col] == "loaded"
    assert hm["z"][row][col] > 0
    assert {f"digits-forest-{n}" for n in (8, 16, 24, 32)} & set(hm["y"])
    # the y tick labels drawn in the SVG name it too
    assert page.locator(".js-plotly-plot .ytick text", has_text="tiny-e2e").count() == 1
    shoot(page, "placement")


def test_other_pages_show_the_same_plane(page, dashboard_url, plane):
    _, client, _ = plane
    registered = len(client.list_models())

    goto(page, f"{dashboard_url}/")
    metric = page.locator("[data-testid=stMetric]", has_text="Models registered")
    wait_for(lambda: str(registered) in metric.inner_text(), "the registered count")
    assert "3 / 3" in page.locator("[data-testid=stMetric]", has_text="Pods ready").inner_text()
    shoot(page, "overview")

    goto(page, f"{dashboard_url}/events")
    figs = wait_for(lambda: [f for f in plot_data(page) if f], "the timeline")
    names = {t["name"] for t in figs[0]}
    assert "loaded" in names
    page.locator("td[role=gridcell]", has_text="digits-forest-8").first.wait_for(state="attached")
    shoot(page, "events")

    goto(page, f"{dashboard_url}/storage")
    page.get_by_role("button", name="Test", exact=True).click()
    page.get_by_text("file(s) listed").wait_for()
    page.get_by_text("tiny.onnx").first.wait_for()
    page.locator("td[role=gridcell]", has_text="****er").first.wait_for(state="attached")  # masked
    html = page.content()
    assert SECRET_KEY not in html and ACCESS_KEY not in html
    shoot(page, "storage")

    goto(page, f"{dashboard_url}/install")
    page.get_by_text("Running since").wait_for()
    page.locator("td[role=gridcell]", has_text="pod-2").first.wait_for(state="attached")
    shoot(page, "install")

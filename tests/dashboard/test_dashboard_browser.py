"""End to end in a real headless Chromium (Debian's /usr/bin/chromium, driven by Playwright)
against the dashboard server started by ``mesh dashboard --port P``, over the README's demo:
a real embedded plane (3 runtime pods of 1 MiB) with real ONNX demo models and Zipf traffic
over them, so pods load and evict; a model that cannot load is registered through the form.

Every page is opened by its own URL, and no page may log a console error, fail a request or
make one to any host but the dashboard's. With ``MESH_SCREENSHOT_DIR=screenshots`` it also
writes the README's pictures (the full demo: 50 models, 1,000 requests; otherwise a smaller
one that still evicts).
"""

from __future__ import annotations

import os
import pathlib
import re
import signal
import subprocess
import sys
import tempfile
import threading
import time
import urllib.parse
import uuid

import psutil
import pytest

from plane import demo, local
from plane.api import ModelSpec, PlaneClient
from plane.demo_traffic import send_demo_traffic
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
SCREENSHOTS = bool(os.environ.get("MESH_SCREENSHOT_DIR"))
SHOTS = pathlib.Path(os.environ.get("MESH_SCREENSHOT_DIR") or tempfile.gettempdir()) / (
    "" if SCREENSHOTS else "mesh-dashboard-screenshots")
DEMO_MODELS, DEMO_REQUESTS = (50, 1000) if SCREENSHOTS else (36, 400)  # the README's demo: 50 and 1,000
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
    """`mesh up --pods 3 --capacity 1MiB && mesh demo --models N --requests R` on the session
    etcd, plus a tiny model, a corrupt one and an S3 config with secrets."""
    _chromium_or_skip()
    base = tmp_path_factory.mktemp("e2e")
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"e2e-{uuid.uuid4().hex[:8]}",
                            state_dir=base / "state", grpc_port=local.free_port(), rest_port=local.free_port(),
                            capacity="1MiB")
    local.up(settings, pods=3)
    client = PlaneClient.connect(settings)
    try:
        models_dir = base / "models"
        models = demo.generate_models(models_dir, DEMO_MODELS)
        demo.make_tiny_model(models_dir / "tiny.onnx")
        demo.make_corrupt_model(models_dir / "broken.onnx")
        client.set_storage("default", "local", {"path": str(models_dir)})
        client.set_storage("minio", "s3", {"endpoint_url": "http://minio.example:9000", "bucket": "models",
                                           "access_key_id": ACCESS_KEY, "secret_access_key": SECRET_KEY})
        client.register_models([ModelSpec(m.model_id, m.path, "default") for m in models])
        endpoints = [p.endpoint for p in client.pods()]
        report = send_demo_traffic(endpoints, models, DEMO_REQUESTS, settings=client.settings)
        assert report.errors < DEMO_REQUESTS // 10, report.error_samples
        client.set_vmodel("digits", models[0].model_id)
        # the pods write their counts at their next usage flush: the pictures must show evictions
        wait_for(lambda: (o := client.overview(window_s=3600)).loads_recent > 3 and o.evictions_recent > 0,
                 "the pods' stats to count loads and evictions", timeout=60)
        yield settings, client, models_dir
    finally:
        client.close()
        local.down(settings.state_dir)


@pytest.fixture(scope="module")
def dashboard_url(plane):
    """`mesh dashboard --port P` (python -m plane.cli); stopped with SIGTERM, and nothing of it
    may be left running afterwards."""
    settings, _, models_dir = plane
    port = local.free_port()
    env = settings.child_env()
    env["PYTHONPATH"] = str(ROOT) + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    proc = subprocess.Popen([sys.executable, "-m", "plane.cli", "dashboard", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    seen: list[str] = []
    url = ""
    for line in proc.stdout:
        seen.append(line)
        if line.startswith("dashboard: "):
            url = line.split()[1]
            break
    log = models_dir.parent / "dashboard.log"
    # keep draining its output so the server never blocks on a full pipe
    threading.Thread(target=lambda: log.write_text("".join(seen) + proc.stdout.read()), daemon=True).start()
    tree = [psutil.Process(proc.pid), *psutil.Process(proc.pid).children(recursive=True)] if url else []
    try:
        assert url, "`mesh dashboard` exited without printing its URL:\n" + "".join(seen)
        yield url
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
        _, alive = psutil.wait_procs(tree, timeout=15)
        for p in alive:
            p.kill()
        assert not alive, f"the dashboard left processes behind: {[p.cmdline() for p in alive]}"


@pytest.fixture(scope="module")
def browser_page(dashboard_url):
    """One Chromium page for the module, and what went wrong in it: console errors, failed
    requests, answers >= 400 and requests to any other host."""
    from playwright.sync_api import sync_playwright

    origin = urllib.parse.urlsplit(dashboard_url)
    problems: list[str] = []

    def on_request(req) -> None:
        u = urllib.parse.urlsplit(req.url)
        if u.scheme in ("http", "https", "ws", "wss") and (u.hostname, u.port) != (origin.hostname, origin.port):
            problems.append(f"request to another host: {req.url}")

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)
        try:
            pg = browser.new_page(viewport={"width": 1440, "height": 1300})
            pg.set_default_timeout(WAIT_MS)
            pg.on("console", lambda m: problems.append(f"console {m.type}: {m.text}") if m.type == "error" else None)
            pg.on("pageerror", lambda exc: problems.append(f"page error: {exc}"))
            pg.on("request", on_request)
            pg.on("requestfailed", lambda r: problems.append(f"failed: {r.url} {r.failure}"))
            pg.on("response", lambda r: problems.append(f"HTTP {r.status}: {r.url}") if r.status >= 400 else None)
            yield pg, problems
        finally:
            browser.close()


@pytest.fixture
def page(browser_page):
    pg, problems = browser_page
    problems.clear()
    yield pg
    settle(pg)
    assert not problems, problems


def goto(page, url: str) -> None:
    page.goto(url)
    page.locator("[data-testid=stMain] h1").first.wait_for()


def settle(page) -> None:
    """Wait until Streamlit is not running the script (then figures have been drawn)."""
    page.wait_for_timeout(300)
    page.locator("[data-testid=stStatusWidget]").wait_for(state="hidden")
    page.wait_for_timeout(700)


def shoot(page, name: str) -> None:
    """The whole page: Streamlit scrolls inside its main container (a full-page screenshot would
    stop at the window), so the window grows to the content's height for the picture."""
    SHOTS.mkdir(parents=True, exist_ok=True)
    settle(page)
    size = page.viewport_size
    tall = page.evaluate("""() => Math.max(...Array.from(document.querySelectorAll(
        '[data-testid=stMain], [data-testid=stAppViewContainer]')).map(e => e.scrollHeight))""")
    page.set_viewport_size({"width": size["width"], "height": min(9000, max(size["height"], tall + 20))})
    try:
        settle(page)
        page.screenshot(path=str(SHOTS / f"dashboard-{name}.png"), full_page=True)
    finally:
        page.set_viewport_size(size)


def plot_data(page) -> list[list[dict]]:
    """The data of every plotly figure in the page, as plotly.js holds it."""
    return page.evaluate(
        """() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(d => (d.data || []).map(
               t => ({type: t.type, name: t.name, x: t.x, y: t.y, z: t.z, text: t.text})))"""
    )


def plot_titles(page) -> list[str]:
    # (Streamlit's theme wraps titles in <b>)
    return page.evaluate("""() => Array.from(document.querySelectorAll('.js-plotly-plot')).map(
        d => ((d.layout && d.layout.title && d.layout.title.text) || '').replace(/<[^>]+>/g, ''))""")


def wait_for(fn, what: str, timeout: float = WAIT_MS / 1000):
    deadline = time.monotonic() + timeout
    last = None
    while time.monotonic() < deadline:
        last = fn()
        if last:
            return last
        time.sleep(0.5)
    raise AssertionError(f"timed out waiting for {what}; last seen: {last!r}")


def choose(page, label: str, option: str) -> None:
    """Pick ``option`` in the Streamlit selectbox labelled ``label`` (type to search, Enter)."""
    box = page.locator("[data-testid=stSelectbox]", has_text=label).first
    box.click()
    page.keyboard.type(option)
    page.get_by_role("option", name=option, exact=True).click()


def grid_boxes(page) -> list[dict]:
    """Each table's rendered size, and whether its columns overflow it sideways."""
    return page.evaluate("""() => Array.from(document.querySelectorAll('[data-testid=stDataFrame]')).map(d => {
        const s = d.querySelector('.dvn-scroller');
        return {height: d.getBoundingClientRect().height, right: d.getBoundingClientRect().right,
                overflowX: s ? s.scrollWidth > s.clientWidth + 1 : false,
                overflowY: s ? s.scrollHeight > s.clientHeight + 1 : false};
    })""")


def test_register_in_the_browser_then_table_and_heatmap(page, dashboard_url, plane):
    _, client, _ = plane
    goto(page, f"{dashboard_url}/models")
    page.get_by_label("Model id", exact=True).fill("tiny-e2e")
    page.get_by_label("Path inside the storage", exact=True).fill("tiny.onnx")
    page.get_by_text("Load now", exact=True).click()
    page.get_by_role("button", name="Register", exact=True).click()
    # the page waited for the pod: the message says where it is loaded
    done = page.locator("[data-testid=stAlert]", has_text="registered tiny-e2e (default:tiny.onnx), loaded on pod-")
    done.wait_for()
    rec = wait_for(lambda: (r := client.get_model("tiny-e2e")) and r.loaded_on() and r, "tiny-e2e loaded")
    pod = rec.loaded_on()[0]
    assert pod in done.inner_text()

    # the models table: full height (every row of the first page drawn), every column in view
    rows = min(50, len(client.list_models()))
    box = wait_for(lambda: next((b for b in grid_boxes(page) if b["height"] >= 35 * rows), None), "a full table")
    assert not box["overflowY"] and not box["overflowX"] and box["right"] <= 1440, box
    page.get_by_label("Filter", exact=True).fill("tiny")
    page.keyboard.press("Enter")
    page.locator("td[role=gridcell]", has_text="tiny-e2e").first.wait_for(state="attached")

    # the placement heatmap shows it (searched) on the pod that loaded it
    goto(page, f"{dashboard_url}/placement")
    page.get_by_label("Search models", exact=True).fill("tiny")
    page.keyboard.press("Enter")

    def heat():
        hms = [t for f in plot_data(page) for t in f if t["type"] == "heatmap" and t["name"] == "placement"]
        return next((t for t in hms if t["y"] == ["tiny-e2e"]), None)

    hm = wait_for(heat, "tiny-e2e alone on the heatmap")
    assert hm["text"][0][hm["x"].index(pod)] == "loaded" and hm["z"][0][hm["x"].index(pod)] > 0
    assert page.locator(".js-plotly-plot .ytick text", has_text="tiny-e2e").count() == 1


def test_a_failed_load_says_why_and_is_not_a_success(page, dashboard_url, plane):
    _, client, _ = plane
    goto(page, f"{dashboard_url}/models")
    page.get_by_label("Model id", exact=True).fill("broken-e2e")
    page.get_by_label("Path inside the storage", exact=True).fill("broken.onnx")
    page.get_by_text("Load now", exact=True).click()
    page.get_by_role("button", name="Register", exact=True).click()
    alert = page.locator("[data-testid=stAlert]", has_text="registered broken-e2e")
    alert.wait_for()
    text = alert.inner_text()
    rec = client.get_model("broken-e2e")
    assert rec.status() == "LOADING_FAILED", rec
    assert "but loading it failed" in text
    assert any(f.message[:40] in text for f in rec.failed.values()), (text, rec.failed)
    assert page.locator("[data-testid=stAlertContentError]", has_text="broken-e2e").count() == 1  # red, not green
    assert page.locator("[data-testid=stAlertContentSuccess]", has_text="broken-e2e").count() == 0
    page.locator("td[role=gridcell]", has_text="LOADING_FAILED").first.wait_for(state="attached")
    shoot(page, "models")


def test_placement_top_n_rest_row_and_drill_down(page, dashboard_url, plane):
    _, client, _ = plane
    snap = client.snapshot()
    placed = [m for m in snap.models if m.copies]
    goto(page, f"{dashboard_url}/placement")
    choose(page, "Rows", "top 20")
    titles = wait_for(lambda: [t for t in plot_titles(page) if t.startswith("Placement: 20 of ")], "the top 20")
    found = re.search(r"Placement: 20 of (\d+) placed model\(s\), top by activity, on 3 pod\(s\)", titles[0])
    assert found, titles
    if int(found[1]) > 20:  # the others are summed up in one row (the figure's own count: placement moves)
        rows = wait_for(lambda: [t["y"] for f in plot_data(page) for t in f if t["name"] == "placement"
                                 and len(t["y"]) == 21], "20 rows and the summary row")
        assert re.match(r"\+\d+ more models?, ", rows[0][-1]), rows[0][-1]
        assert page.locator(".js-plotly-plot").first.locator(".ytick text").count() == 21  # every row labelled
    # drill down to the busiest pod's copies and to one model's copies
    pod = max(snap.pods, key=lambda p: p.count).pod_id
    choose(page, "Pod", pod)
    page.get_by_text(f"{pod}: ", exact=False).first.wait_for()
    model = next(m for m in placed if pod in m.copies).model_id
    choose(page, "Model", model)
    page.locator("[data-testid=stMarkdown]", has_text=model).first.wait_for()
    page.locator("td[role=gridcell]", has_text=pod).first.wait_for(state="attached")
    assert any(t.startswith(f"{pod}: ") for t in plot_titles(page))
    assert "Loads and evictions per pod" in plot_titles(page)
    shoot(page, "placement")


def test_the_storage_form_never_overwrites_without_asking(page, dashboard_url, plane):
    _, client, models_dir = plane
    users = sum(1 for m in client.list_models() if m.key == "default")
    goto(page, f"{dashboard_url}/storage")
    key = page.get_by_role("textbox", name="Key", exact=True)
    assert key.count() == 0  # no form before a type is chosen
    page.get_by_text("Local directory", exact=True).click()
    assert key.input_value() == ""  # empty, not "default"
    key.fill("default")
    page.get_by_label("Directory", exact=True).fill("/nowhere")
    page.get_by_role("button", name="Save", exact=True).click()
    page.get_by_text(f"key 'default' exists and {users} models use it — overwrite").wait_for()
    assert client.get_storage("default").params["path"] == str(models_dir)
    shoot(page, "storage")
    page.get_by_role("button", name="Cancel", exact=True).click()
    page.get_by_text("exists and").wait_for(state="detached")
    assert client.get_storage("default").params["path"] == str(models_dir)  # untouched
    # the configs, secrets masked, and a test listing what the storage holds
    page.get_by_role("button", name="Test", exact=True).click()
    page.get_by_text("file(s) listed").wait_for()
    page.get_by_text("tiny.onnx").first.wait_for()
    page.locator("td[role=gridcell]", has_text="****er").first.wait_for(state="attached")  # masked
    html = page.content()
    assert SECRET_KEY not in html and ACCESS_KEY not in html


def test_overview_events_and_install_show_the_same_plane(page, dashboard_url, plane):
    _, client, _ = plane
    registered = len(client.list_models())
    goto(page, f"{dashboard_url}/")
    metric = page.locator("[data-testid=stMetric]", has_text="Models registered")
    wait_for(lambda: str(registered) in metric.inner_text(), "the registered count")
    assert "3 / 3" in page.locator("[data-testid=stMetric]", has_text="Pods ready").inner_text()
    loads = page.locator("[data-testid=stMetric]", has_text="Loads (last 5 min)")
    # exactly what the pods counted (client.overview reads the same stats)
    wait_for(lambda: f"{client.overview(window_s=300).loads_recent:,}" in loads.inner_text(), "the exact loads")
    shoot(page, "overview")

    goto(page, f"{dashboard_url}/events")
    page.get_by_text("Last", exact=True).first.wait_for()
    titles = wait_for(lambda: [t for t in plot_titles(page) if t.startswith("Events: ")], "the timeline")
    assert "from 3 pod(s)" in titles[0], titles
    page.get_by_text("the log holds").first.wait_for()
    page.locator("td[role=gridcell]", has_text="evict").first.wait_for(state="attached")
    shoot(page, "events")

    goto(page, f"{dashboard_url}/install")
    page.get_by_text("Running since").wait_for()
    page.locator("td[role=gridcell]", has_text="pod-2").first.wait_for(state="attached")
    shoot(page, "install")

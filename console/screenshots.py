"""Screenshots of every view, from a scripted run of the README's demo on a real plane.

``python -m console.screenshots`` does what the README's first command does, in a temporary
state dir: ``mesh up --pods 3 --capacity 1MiB`` (etcd and three runtime pods), then ``mesh demo
--models 50 --requests 1000`` (real ONNX models, Zipf traffic: the 1 MiB pods load and evict).
It also registers one corrupt model and asks for it (a LOADING_FAILED row, load-failed
events), two storage configs and a vmodel. Only then does mesh-console open, so what it shows
of the past (the event log, the per-minute stats) is history read on open; while Placement is
on screen a last burst of traffic makes copies load and get evicted live. It saves
``screenshots/console-<view>.svg``, the pod view of the busiest pod and a model's details.
Nothing is faked: what the views show was written into etcd by the pods.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import tempfile
import time

from console.app import MeshConsole
from console.keymaps import VIEWS
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from console.screens.pod import PodScreen
from plane import demo, local
from plane.api import ModelSpec, PlaneClient
from plane.demo import DemoModel
from plane.demo_traffic import send_demo_traffic
from plane.settings import MeshSettings

__all__ = ["prepare_plane", "take_screenshots", "main"]

SIZE = (120, 36)
POD_CAPACITY = 1024**2  # the README's `mesh up --pods 3 --capacity 1MiB`
DEMO_MODELS = 50  # `mesh demo --models 50 --requests 1000`
DEMO_REQUESTS = 1000
LIVE_REQUESTS = 120  # sent while Placement is on screen, flatter than Zipf: the tail loads and evicts
BROKEN = "broken-net"
FLASH_WAIT_S = 30.0
SETTLE_S = 1.0


def log(text: str) -> None:
    print(f"[screenshots] {text}", flush=True)


def prepare_plane(state_dir: pathlib.Path) -> tuple[MeshSettings, PlaneClient, list[DemoModel]]:
    settings = MeshSettings(etcd="", etcd_prefix="mesh", state_dir=state_dir, grpc_port=local.free_port(),
                            capacity=POD_CAPACITY, lease_ttl_s=3, usage_flush_s=0.5)
    local.up(settings, pods=3, progress=lambda msg, done, total: log(f"[{done}/{total}] {msg}"))
    client = PlaneClient.connect(settings)
    models_dir = state_dir / "demo-models"
    log(f"generating {DEMO_MODELS} demo models")
    generated = demo.generate_models(models_dir, DEMO_MODELS, seed=0)
    client.set_storage("default", "local", {"path": str(models_dir)})
    client.set_storage("minio", "s3", {"endpoint_url": "http://minio.mesh.svc:9000", "default_bucket": "models",
                                       "access_key_id": "mesh-demo-access-key",
                                       "secret_access_key": "mesh-demo-secret-key-0123456789"})
    client.register_models([ModelSpec(m.model_id, m.path) for m in generated])
    log(f"sending {DEMO_REQUESTS} requests (Zipf over the models; 1 MiB pods evict)")
    report = send_demo_traffic(_endpoints(client), generated, DEMO_REQUESTS, settings=client.settings)
    log(f"sent {report.requests} requests in {report.seconds:.1f}s, {report.errors} errors")
    demo.make_corrupt_model(models_dir / BROKEN / "model.onnx")
    client.register_model(BROKEN, path=f"{BROKEN}/model.onnx")
    try:
        client.ensure_loaded(BROKEN, sync=True, timeout=30)
    except Exception as exc:  # noqa: BLE001 - this load fails on purpose; say how
        log(f"{BROKEN} failed to load, as meant: {exc}")
    client.set_vmodel("digits", generated[0].model_id, owner="team-vision", sync=True)
    evictions = sum(1 for e in client.events(limit=0) if e.kind == "evict")
    log(f"{len(client.events(limit=0))} events in the log, {evictions} evictions")
    return settings, client, generated


def _endpoints(client: PlaneClient) -> list[str]:
    return [p.endpoint for p in client.pods() if not p.shutting_down]


def _lit_cells(screen: PlacementScreen) -> list[tuple[str, str]]:
    """(model, pod) of the cells lit red: copies that just went away."""
    return [(key, pod) for key in screen.table.keys() for pod in screen.pod_columns()
            if screen.copy_cell(key, pod) == "✕"]


async def _fail_again(app: MeshConsole, client: PlaneClient) -> None:
    """Ask for the corrupt model once more: its failed loads are then the newest events."""
    try:
        await asyncio.to_thread(client.ensure_loaded, BROKEN, sync=True, timeout=30)
    except Exception as exc:  # noqa: BLE001 - this load fails on purpose; say how
        log(f"{BROKEN} failed to load again, as meant: {exc}")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not any(
            e.kind == "load-failed" for e in list(app.state.events.values())[-3:]):
        await asyncio.sleep(0.1)


async def take_screenshots(settings: MeshSettings, client: PlaneClient, generated: list[DemoModel],
                           out: pathlib.Path) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved: list[pathlib.Path] = []

    def save(name: str) -> None:
        saved.append(pathlib.Path(app.save_screenshot(filename=f"console-{name}.svg", path=str(out))))

    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 30
        while not (app.connected and app.state.models and not app.state.history_pending) \
                and time.monotonic() < deadline:
            await pilot.pause(0.1)
        await pilot.pause(6.0)  # one stats poll: the minute that is still being written
        for view in VIEWS:
            await pilot.press(view.key)
            await pilot.pause(SETTLE_S)
            if view.name == "install":
                app.screen.set_focus(None)
            if view.name == "placement" and isinstance(app.screen, PlacementScreen):
                # a burst of traffic while the matrix is on screen: the copies it pushes out light up
                matrix = app.screen
                burst = asyncio.create_task(asyncio.to_thread(
                    send_demo_traffic, _endpoints(client), generated, LIVE_REQUESTS, settings=client.settings,
                    alpha=0.3, seed=5))
                deadline = time.monotonic() + FLASH_WAIT_S
                while len(_lit_cells(matrix)) < 2 and time.monotonic() < deadline and not burst.done():
                    await pilot.pause(0.05)
                lit = _lit_cells(matrix)
                if lit:  # the cursor on the first one: the table scrolls to show it
                    top = min(lit, key=lambda cell: matrix.table.get_row_index(cell[0]))
                    matrix.select_copy(*top)
                await pilot.pause(0.2)
                save(view.name)
                await burst
                await _fail_again(app, client)
                continue
            save(view.name)
        await pilot.press("6")
        await pilot.pause(SETTLE_S)
        busiest = max(app.state.pods.values(), key=lambda p: (p.count, p.pod_id)).pod_id
        app.open_pod(busiest)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and not (isinstance(app.screen, PodScreen) and app.screen.log_tail.lines):
            await pilot.pause(0.1)
        await pilot.pause(SETTLE_S)
        save("pod")
        await pilot.press("4")
        screen = app.screen
        if isinstance(screen, ModelsScreen):
            screen.table.select_key(BROKEN)
            await pilot.press("i")
            await pilot.pause(SETTLE_S)
            save("model-details")
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="screenshots", help="where the SVGs go (default: screenshots/)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mesh-screenshots-") as tmp:
        state_dir = pathlib.Path(tmp)
        try:
            settings, client, generated = prepare_plane(state_dir)
            try:
                for path in asyncio.run(take_screenshots(settings, client, generated, pathlib.Path(args.out))):
                    log(f"saved {path}")
            finally:
                client.close()
        finally:
            local.down(state_dir)


if __name__ == "__main__":
    main()

"""Screenshots of every view, from a scripted run against a real demo plane.

``python -m console.screenshots`` starts the embedded plane (etcd and three runtime pods) in a
temporary state dir, generates demo ONNX models, registers and loads them (enough to make the
pods evict), points a vmodel at one, fails a load on purpose, then drives mesh-console over
it and saves ``screenshots/console-<view>.svg``. Nothing here is faked: what the views show
was written into etcd by the pods.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import pathlib
import tempfile
import time

from console.app import MeshConsole
from console.keymaps import VIEWS
from console.screens.models import ModelsScreen
from console.screens.placement import PlacementScreen
from plane import demo, local
from plane.api import ModelSpec, PlaneClient
from plane.settings import MeshSettings

__all__ = ["prepare_plane", "take_screenshots", "main"]

SIZE = (120, 36)
POD_CAPACITY = 32 * 1024**2
MAX_FORESTS = 12  # forests of a few MB each are loaded until the pods have evicted some
EVICTIONS_WANTED = 2
LIVE_MODEL = "forest-live"
LIVE_MODEL_PATH = "forest-live/model.onnx"
FLASH_WAIT_S = 15.0
SETTLE_S = 1.0


def log(text: str) -> None:
    print(f"[screenshots] {text}", flush=True)


def prepare_plane(state_dir: pathlib.Path) -> tuple[MeshSettings, PlaneClient]:
    settings = MeshSettings(etcd="", etcd_prefix="mesh", state_dir=state_dir, grpc_port=local.free_port(),
                            capacity=POD_CAPACITY, lease_ttl_s=3, usage_flush_s=0.5)
    local.up(settings, pods=3, progress=lambda msg, done, total: log(f"[{done}/{total}] {msg}"))
    client = PlaneClient.connect(settings)
    models_dir = state_dir / "models"
    log("generating demo models")
    generated = demo.generate_models(models_dir, 10, seed=3)
    demo.make_corrupt_model(models_dir / "broken" / "model.onnx")
    client.set_storage("default", "local", {"path": str(models_dir)})
    client.set_storage("minio", "s3", {"endpoint_url": "http://minio.mesh.svc:9000", "default_bucket": "models",
                                       "access_key_id": "mesh-demo-access-key",
                                       "secret_access_key": "mesh-demo-secret-key-0123456789"})
    specs = [ModelSpec(m.model_id, m.path) for m in generated]
    specs.append(ModelSpec("broken-net", "broken/model.onnx"))
    client.register_models(specs)
    log("loading models (the forests push older copies out)")
    for m in generated[:6]:
        client.ensure_loaded(m.model_id, sync=True)
    for i in range(MAX_FORESTS):  # copy sizes are measured, so load until the pods have evicted
        path = f"forest-{i}/model.onnx"
        demo.make_medium_model(models_dir / path, n_estimators=50, seed=i)
        client.register_model(f"forest-{i}", path=path, load_now=True, sync=True)
        time.sleep(0.3)  # distinct last-used times make the LRU order visible
        if sum(1 for e in client.events(limit=0) if e.kind == "evict") >= EVICTIONS_WANTED:
            break
    with contextlib.suppress(Exception):  # this load fails on purpose
        client.ensure_loaded("broken-net", sync=True, timeout=30)
    client.set_vmodel("digits", generated[0].model_id, owner="team-vision", sync=True)
    demo.make_medium_model(models_dir / LIVE_MODEL_PATH, n_estimators=80, seed=99)  # loaded while watching
    return settings, client


def _lit_cells(screen: PlacementScreen) -> int:
    return sum(1 for key in screen.table.keys() for c in (screen.table.spec(key) or ())[1:] if c[0].strip() == "✕")


async def take_screenshots(settings: MeshSettings, client: PlaneClient, out: pathlib.Path) -> list[pathlib.Path]:
    out.mkdir(parents=True, exist_ok=True)
    saved: list[pathlib.Path] = []
    app = MeshConsole(settings)
    async with app.run_test(size=SIZE) as pilot:
        deadline = time.monotonic() + 30
        while not (app.connected and app.state.models) and time.monotonic() < deadline:
            await pilot.pause(0.1)
        for view in VIEWS:
            await pilot.press(view.key)
            await pilot.pause(SETTLE_S)
            if view.name == "install":
                app.screen.set_focus(None)
            if view.name == "placement" and isinstance(app.screen, PlacementScreen):
                # load one more model while the matrix is on screen: the copies it pushes out light up
                matrix = app.screen
                loading = asyncio.create_task(asyncio.to_thread(
                    client.register_model, LIVE_MODEL, path=LIVE_MODEL_PATH, load_now=True, sync=True))
                deadline = time.monotonic() + FLASH_WAIT_S
                while not _lit_cells(matrix) and time.monotonic() < deadline:
                    await pilot.pause(0.05)
                await pilot.pause(0.2)
                saved.append(pathlib.Path(app.save_screenshot(filename=f"console-{view.name}.svg", path=str(out))))
                await loading
                continue
            saved.append(pathlib.Path(app.save_screenshot(filename=f"console-{view.name}.svg", path=str(out))))
        await pilot.press("4")
        screen = app.screen
        if isinstance(screen, ModelsScreen):
            screen.table.select_key("broken-net")
            await pilot.press("i")
            await pilot.pause(SETTLE_S)
            saved.append(pathlib.Path(app.save_screenshot(filename="console-model-details.svg", path=str(out))))
    return saved


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", default="screenshots", help="where the SVGs go (default: screenshots/)")
    args = parser.parse_args(argv)
    with tempfile.TemporaryDirectory(prefix="mesh-screenshots-") as tmp:
        state_dir = pathlib.Path(tmp)
        try:
            settings, client = prepare_plane(state_dir)
            try:
                for path in asyncio.run(take_screenshots(settings, client, pathlib.Path(args.out))):
                    log(f"saved {path}")
            finally:
                client.close()
        finally:
            local.down(state_dir)


if __name__ == "__main__":
    main()

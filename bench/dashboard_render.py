"""Dashboard page render time in Chromium at scale (``python bench/dashboard_render.py [--models 5000]``).

Builds a registry in a real etcd the way a busy plane fills it: N models registered with
``PlaneClient.register_models``, P pods (instance records on a lease), copies on a third of the
models (1–64 MiB, written as pods write them), request rates on some, per-minute stats for the
last hour and a full event log (``MESH_EVENTS_MAX`` events). Starts the dashboard as ``mesh
dashboard`` does (dashboard.launch), opens each page by its URL in Debian's Chromium and times
until the page is drawn: its last element rendered, no placeholder left (Streamlit draws a
skeleton until a widget's code has loaded), every plotly figure drawn, every table painted
and no script running. Prints a table per page: the first open in a new browser
session, and the median of the reloads after it. Nothing is asserted; the goal is 2 s a page.
"""

from __future__ import annotations

import argparse
import asyncio
import pathlib
import random
import statistics
import sys
import tempfile
import time
import uuid

ROOT = pathlib.Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

from dashboard import launch  # noqa: E402
from plane import local, stats  # noqa: E402
from plane.api import ModelSpec, PlaneClient  # noqa: E402
from plane.registry import CopyInfo, Event, InstanceRecord, ModelRecord, now_ms  # noqa: E402
from plane.settings import MeshSettings  # noqa: E402

__all__ = ["build_registry", "measure", "main"]

MIB = 1024 * 1024
CHROMIUM = "/usr/bin/chromium"
# What each page draws last: the page counts as drawn once this is on screen.
PAGES = {
    "overview": ("", "request(s) served"),
    "placement": ("placement", "holds the most copies"),
    "events": ("events", "the log holds"),
    "models": ("models", "Unregister a model"),
    "storage": ("storage", "Test a config"),
    "install": ("install", "Kubernetes"),
}
DRAWN_JS = """(marker) => {
    const main = document.querySelector('[data-testid=stMain]');
    if (!main || !main.querySelector('h1') || !main.innerText.includes(marker)) return false;
    if (document.querySelector('[data-testid=stStatusWidget]')) return false;  // a script runs
    if (main.querySelector('[data-testid=stSkeleton], [data-testid=stSkeletonElement]')) return false;  // loading
    if (main.querySelector('[data-stale=true]')) return false;  // elements of the run before
    const charts = main.querySelectorAll('[data-testid=stPlotlyChart]');
    for (const c of charts) if (!c.querySelector('.main-svg')) return false;
    const grids = main.querySelectorAll('[data-testid=stDataFrame]');
    for (const g of grids) if (!g.querySelector('canvas')) return false;
    return true;
}"""


def build_registry(client: PlaneClient, *, n_models: int, n_pods: int, events: int, seed: int = 7) -> dict:
    """Fill the registry; returns what it wrote (for the report)."""
    rng = random.Random(seed)
    t0 = time.perf_counter()
    client.register_models([ModelSpec(f"model-{i:05d}", f"m/{i}.onnx") for i in range(n_models)])
    reg = client.registry
    lease = client.run_async(reg.client.lease(3600))
    pods = [f"pod-{i}" for i in range(n_pods)]
    now = now_ms()
    plan: dict[str, tuple[dict[str, CopyInfo], int, float]] = {}
    for i in range(n_models):
        if rng.random() < 0.3:
            size = rng.randint(1, 64) * MIB
            copies = {p: CopyInfo("loaded" if rng.random() < 0.97 else "loading", now - rng.randint(0, 3600_000), size)
                      for p in rng.sample(pods, k=rng.choice((1, 1, 2)))}
            plan[f"model-{i:05d}"] = (copies, size, round(rng.random() * 50, 2) if rng.random() < 0.5 else 0.0)

    async def place() -> None:
        def change_for(copies: dict[str, CopyInfo], size: int, rpm: float):
            def change(m: ModelRecord) -> ModelRecord:
                m.copies, m.size = dict(copies), size
                if rpm:
                    m.pod_rpm = {next(iter(copies)): [rpm, now]}
                    m.used_ms = m.last_used_ms = now
                return m
            return change

        items = list(plan.items())
        for k in range(0, len(items), 200):
            await asyncio.gather(*(reg.update_model(mid, change_for(*v)) for mid, v in items[k:k + 200]))
        for p in pods:
            held = [(mid, v[1]) for mid, v in plan.items() if p in v[0]]
            await reg.put_instance(InstanceRecord(p, f"127.0.0.1:{9000 + len(p)}", capacity=8192 * MIB,
                                                  used=sum(s for _, s in held), count=len(held),
                                                  started_ms=now - 7200_000, updated_ms=now), lease)
        minute = stats.minute_of(now)
        await asyncio.gather(*(reg.put_stats(stats.StatsRecord(p, minute - k * stats.MINUTE_MS, {
            "loads": rng.randint(5, 60), "evictions": rng.randint(0, 50), "failures": rng.randint(0, 2),
            "requests": rng.randint(100, 5000)})) for p in pods for k in range(60)))
        kinds = ("load", "loaded", "loaded", "evict", "evict", "load-failed")
        def event() -> Event:
            return Event(rng.choice(kinds), model=f"model-{rng.randrange(n_models):05d}", pod=rng.choice(pods),
                         size=4 * MIB, reason="lru", time_ms=now - rng.randint(0, 3600_000))

        for k in range(0, events, 250):
            await asyncio.gather(*(reg.add_event(event()) for _ in range(min(250, events - k))))

    client.run_async(place(), timeout=600)
    return {"models": n_models, "placed": len(plan), "pods": n_pods, "events": events,
            "seconds": time.perf_counter() - t0}


def measure(url: str, *, reloads: int = 3, pages: list[str] | None = None) -> list[tuple[str, float, float]]:
    """(page, first open s, median reload s) for every page (or those named)."""
    from playwright.sync_api import sync_playwright

    rows = []
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=["--headless", "--no-sandbox", "--disable-gpu"])
        try:
            for name, (path, marker) in PAGES.items():
                if pages is not None and name not in pages:
                    continue
                page = browser.new_context(viewport={"width": 1440, "height": 1300}).new_page()
                times = []
                for _ in range(1 + reloads):
                    t0 = time.perf_counter()
                    page.goto(f"{url}/{path}")
                    page.wait_for_function(DRAWN_JS, arg=marker, timeout=120_000, polling=50)
                    times.append(time.perf_counter() - t0)
                rows.append((name, times[0], statistics.median(times[1:]) if reloads else times[0]))
                page.context.close()
        finally:
            browser.close()
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", type=int, default=5000)
    ap.add_argument("--pods", type=int, default=10)
    ap.add_argument("--events", type=int, default=5000, help="events in the log (its default MESH_EVENTS_MAX)")
    ap.add_argument("--reloads", type=int, default=3)
    ap.add_argument("--pages", nargs="*", choices=list(PAGES), help="only these pages (default: all)")
    ap.add_argument("--keep", action="store_true", help="keep serving after the measurement (Ctrl-C stops)")
    args = ap.parse_args(argv)
    work = pathlib.Path(tempfile.mkdtemp(prefix="dash-bench-"))
    etcd, endpoint = local.start_etcd(work / "etcd", log_path=work / "etcd.log")
    settings = MeshSettings(etcd=endpoint, etcd_prefix=f"bench-{uuid.uuid4().hex[:6]}", state_dir=work / "state",
                            events_max=max(args.events, 1))
    proc = None
    try:
        with PlaneClient.connect(settings) as client:
            built = build_registry(client, n_models=args.models, n_pods=args.pods, events=args.events)
            print(f"registry: {built['models']:,} models ({built['placed']:,} placed) on {built['pods']} pods, "
                  f"{built['events']:,} events, 60 min of stats; built in {built['seconds']:.1f} s", flush=True)
            t0 = time.perf_counter()
            proc = launch.launch(port=None, settings=settings, log_path=work / "dashboard.log")
            url = launch.wait_until_serving(proc)
            warm = measure(url, reloads=0, pages=["storage"])[0][1]  # the server's imports, first connect
            print(f"server start {time.perf_counter() - t0 - warm:.1f} s, then its first page {warm:.1f} s "
                  "(imports, first etcd connection; not counted below)", flush=True)
            rows = measure(url, reloads=args.reloads, pages=args.pages)
        print(f"\n| page ({args.models:,} models, {args.pods} pods) | first open (s) | reload, median of "
              f"{args.reloads} (s) |\n|---|---:|---:|")
        for name, first, warm in rows:
            print(f"| {name} | {first:.2f} | {warm:.2f} |")
        if args.keep:
            print(f"\nserving {url} (Ctrl-C stops)", flush=True)
            try:
                proc.wait()
            except KeyboardInterrupt:
                pass
    finally:
        if proc is not None:
            launch.stop(proc)
        local.stop_process(etcd)
    return 0


if __name__ == "__main__":
    sys.exit(main())

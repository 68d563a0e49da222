"""Shared benchmark plumbing: start servers as processes, drive them with tritonclient, report.

Nothing here asserts; benchmarks print tables whose ratios are measured in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import pathlib
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from plane import local
from plane.settings import MeshSettings

BENCH_DIR = pathlib.Path(__file__).resolve().parent


@dataclass
class LoadResult:
    requests: int
    errors: int
    seconds: float
    latencies_ms: list[float]

    @property
    def rps(self) -> float:
        return self.requests / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]


async def _drive(endpoint: str, model: str, x: np.ndarray, input_name: str, concurrency: int, seconds: float,
                 headers: dict | None) -> LoadResult:
    import tritonclient.grpc.aio as tca

    client = tca.InferenceServerClient(endpoint)
    inp = tca.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await client.infer(model, [inp], headers=headers)
                lat.append((time.perf_counter() - t0) * 1000)
            except Exception:  # noqa: BLE001 - counted
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - t0
    await client.close()
    return LoadResult(len(lat), errors, elapsed, lat)


def drive(endpoint: str, model: str, x: np.ndarray, *, input_name: str = "input", concurrency: int = 1,
          seconds: float = 3.0, warmup_s: float = 0.5, headers: dict | None = None) -> LoadResult:
    """Closed-loop load: ``concurrency`` outstanding requests for ``seconds`` after a warm-up."""
    if warmup_s:
        asyncio.run(_drive(endpoint, model, x, input_name, concurrency, warmup_s, headers))
    return asyncio.run(_drive(endpoint, model, x, input_name, concurrency, seconds, headers))


def median_spread(values: list[float]) -> tuple[float, float]:
    if not values:
        return float("nan"), float("nan")
    med = statistics.median(values)
    return med, (max(values) - min(values)) / 2


@contextlib.contextmanager
def bare_server_process(model_path: pathlib.Path) -> Iterator[tuple[str, int]]:
    """bench/bare_server.py serving ``model_path``: yields its endpoint and pid."""
    port = local.free_port()
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "bare_server.py"), str(model_path), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local.wait_for_port("127.0.0.1", port, 30, proc)
        _wait_ready(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        local.stop_process(proc, timeout=5)


@contextlib.contextmanager
def bare_server(model_path: pathlib.Path) -> Iterator[str]:
    with bare_server_process(model_path) as (endpoint, _pid):
        yield endpoint


def _wait_ready(endpoint: str, timeout: float = 30) -> None:
    import tritonclient.grpc as tc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            if tc.InferenceServerClient(endpoint).is_server_ready():
                return
        time.sleep(0.1)
    raise TimeoutError(f"{endpoint} not ready")


@contextlib.contextmanager
def embedded_plane(pods: int = 1, **overrides) -> Iterator[tuple[local.LocalPlane, MeshSettings]]:
    """A fresh embedded plane (its own etcd) in a temporary state dir."""
    with tempfile.TemporaryDirectory(prefix="mesh-bench-") as tmp:
        settings = MeshSettings(state_dir=pathlib.Path(tmp), grpc_port=local.free_port(), etcd="",
                                **overrides)
        plane = local.up(settings, pods=pods)
        settings = settings.model_copy(update={"etcd": plane.etcd_endpoint})
        try:
            yield plane, settings
        finally:
            local.down(pathlib.Path(tmp))


def machine_line() -> str:
    return (f"{platform.node()} · {os.cpu_count()} cores · Python {platform.python_version()} · "
            f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}")


def table(headers: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(headers)]
    line = "| " + " | ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True)) + " |"
    sep = "|" + "|".join("-" * (w + 2) for w in widths) + "|"
    body = ["| " + " | ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)) + " |" for r in rows]
    return "\n".join([line, sep, *body])

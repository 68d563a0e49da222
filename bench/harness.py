"""Shared benchmark plumbing: start servers as processes, drive them with tritonclient, report.

Nothing here asserts; benchmarks print tables whose ratios are measured in one run.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import pathlib
import platform
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field

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
                 headers: dict | None, outputs: list[str] | None = None) -> LoadResult:
    import tritonclient.grpc.aio as tca

    client = tca.InferenceServerClient(endpoint)
    inp = tca.InferInput(input_name, list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    requested = [tca.InferRequestedOutput(name) for name in outputs] if outputs else None
    lat: list[float] = []
    errors = 0
    stop = time.perf_counter() + seconds

    async def worker() -> None:
        nonlocal errors
        while time.perf_counter() < stop:
            t0 = time.perf_counter()
            try:
                await client.infer(model, [inp], outputs=requested, headers=headers)
                lat.append((time.perf_counter() - t0) * 1000)
            except Exception:  # noqa: BLE001 - counted
                errors += 1

    t0 = time.perf_counter()
    await asyncio.gather(*[worker() for _ in range(concurrency)])
    elapsed = time.perf_counter() - t0
    await client.close()
    return LoadResult(len(lat), errors, elapsed, lat)


def drive(endpoint: str, model: str, x: np.ndarray, *, input_name: str = "input", concurrency: int = 1,
          seconds: float = 3.0, warmup_s: float = 0.5, headers: dict | None = None,
          outputs: list[str] | None = None) -> LoadResult:
    """Closed-loop load: ``concurrency`` outstanding requests for ``seconds`` after a warm-up.
    ``outputs`` names the requested outputs (default: none named, the server's default set)."""
    if warmup_s:
        asyncio.run(_drive(endpoint, model, x, input_name, concurrency, warmup_s, headers, outputs))
    return asyncio.run(_drive(endpoint, model, x, input_name, concurrency, seconds, headers, outputs))


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


# -- MLServer (and other peers) in their own virtualenvs ------------------------------------------------

def cache_dir() -> pathlib.Path:
    """Where benchmarks keep what outlives a run (peer virtualenvs, generated models):
    ``$MESH_BENCH_CACHE`` or ``~/.cache/mesh-plane-bench``."""
    return pathlib.Path(os.environ.get("MESH_BENCH_CACHE") or pathlib.Path.home() / ".cache" / "mesh-plane-bench")


def ensure_venv(name: str, packages: Sequence[str], check: str, *,
                exe: str = "python") -> tuple[pathlib.Path | None, str]:
    """A virtualenv ``cache_dir()/name`` with ``packages`` installed (uv when it is on the PATH or next
    to this Python, else pip), reused when it was made with the same package list and ``check``
    (Python source, e.g. ``"import mlserver"``) runs in it. Returns (path of ``bin/<exe>``, "") or
    (None, why it could not be installed, with the tail of the install log)."""
    venv = cache_dir() / name
    py = venv / "bin" / "python"
    target = venv / "bin" / exe
    marker = venv / "mesh-bench-packages.txt"
    spec = " ".join(packages)
    if target.exists() and marker.exists() and marker.read_text() == spec and subprocess.run(
            [str(py), "-c", check], capture_output=True).returncode == 0:
        return target, ""
    venv.parent.mkdir(parents=True, exist_ok=True)
    log = venv.parent / f"{name.removesuffix('-venv')}-install.log"
    print(f"installing {spec} into {venv} (log: {log}) ...", file=sys.stderr)
    with open(log, "w") as out:
        steps = [[sys.executable, "-m", "venv", str(venv)]]
        uv = shutil.which("uv") or (pathlib.Path(sys.executable).parent / "uv")
        if uv and pathlib.Path(uv).exists():
            steps.append([str(uv), "pip", "install", "--python", str(py), *packages])
        else:
            steps.append([str(py), "-m", "pip", "install", "-q", *packages])
        for step in steps:
            rc = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode
            if rc != 0:
                tail = [ln.strip() for ln in log.read_text(errors="replace").strip().splitlines()[-6:]]
                return None, f"`{' '.join(step[:4])} ...` exited {rc}: {' / '.join(tail)}"
    if not target.exists():
        return None, f"installing {spec} left no `{exe}` in {venv}"
    check_run = subprocess.run([str(py), "-c", check], capture_output=True, text=True)
    if check_run.returncode != 0:
        tail = check_run.stderr.strip().splitlines()[-1:] or ["?"]
        return None, f"`{check}` fails in {venv}: {tail[0]}"
    marker.write_text(spec)
    return target, ""


def cpu_seconds(pid: int) -> float:
    """User + system CPU of a process and its live children (MLServer's inference workers)."""
    import psutil

    total = 0.0
    try:
        proc = psutil.Process(pid)
        for p in [proc, *proc.children(recursive=True)]:
            with contextlib.suppress(psutil.Error):
                t = p.cpu_times()
                total += t.user + t.system
    except psutil.Error:
        pass
    return total


def venv_versions(python: pathlib.Path, distributions: Sequence[str]) -> dict[str, str]:
    """``{distribution: version}`` installed in another virtualenv ("?" when absent), read from the
    package metadata without importing anything."""
    code = ("import importlib.metadata as md, json, sys\nout = {}\nfor d in sys.argv[1:]:\n    try:\n"
            "        out[d] = md.version(d)\n    except md.PackageNotFoundError:\n"
            "        out[d] = '?'\nprint(json.dumps(out))")
    run = subprocess.run([str(python), "-c", code, *distributions], capture_output=True, text=True)
    try:
        return dict(json.loads(run.stdout))
    except ValueError:
        return dict.fromkeys(distributions, "?")


@dataclass
class MLServerProcess:
    grpc_endpoint: str
    http_port: int
    pid: int
    repo: pathlib.Path
    #: with ``require_all=False``: models that failed to load, and MLServer's reason
    not_ready: dict[str, str] = field(default_factory=dict)


@contextlib.contextmanager
def mlserver_process(exe: pathlib.Path, models: dict[str, dict], *, workers: int = 1,
                     pythonpath: Sequence[pathlib.Path] = (), env: dict[str, str] | None = None,
                     timeout: float = 120, require_all: bool = True) -> Iterator[MLServerProcess]:
    """``mlserver start`` on a generated repository: ``settings.json`` (ports, ``parallel_workers``)
    and one ``<name>/model-settings.json`` per entry of ``models`` (its content as given; ``name``
    is filled in). Yields once every model answers ready over gRPC; stops the server and any
    worker processes it left behind. On a failed start the log's tail goes to stderr. With
    ``require_all=False`` it yields once no model is still loading (MLServer's repository index),
    listing the ones that failed in ``not_ready`` with MLServer's reason."""
    with tempfile.TemporaryDirectory(prefix="mesh-bench-mlserver-") as tmp:
        repo = pathlib.Path(tmp)
        grpc_port = local.free_port()
        http_port = local.free_port()
        settings = {
            "host": "127.0.0.1",
            "grpc_port": grpc_port,
            "http_port": http_port,
            "metrics_port": local.free_port(),
            "parallel_workers": workers,
            "debug": False,
            "load_models_at_startup": True,
        }
        (repo / "settings.json").write_text(json.dumps(settings))
        for name, model_settings in models.items():
            (repo / name).mkdir()
            (repo / name / "model-settings.json").write_text(json.dumps({"name": name, **model_settings}))
        full_env = dict(os.environ)
        if pythonpath:
            full_env["PYTHONPATH"] = os.pathsep.join(str(p) for p in pythonpath)
        full_env.pop("VIRTUAL_ENV", None)
        full_env.update(env or {})
        log = open(repo / "mlserver.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(exe), "start", str(repo)], cwd=repo, env=full_env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        endpoint = f"127.0.0.1:{grpc_port}"
        not_ready: dict[str, str] = {}
        try:
            try:
                local.wait_for_port("127.0.0.1", grpc_port, timeout, proc)
                if require_all:
                    for name in models:
                        _wait_model_ready(endpoint, name, proc, timeout)
                else:
                    not_ready = _wait_models_settled(http_port, list(models), proc, timeout)
            except Exception:
                log.flush()
                print((repo / "mlserver.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            yield MLServerProcess(endpoint, http_port, proc.pid, repo, not_ready)
        finally:
            stop_process_tree(proc)
            log.close()


def stop_process_tree(proc: subprocess.Popen, timeout: float = 10) -> None:
    """Stop a server and then any process it started (MLServer's inference workers outlive a
    killed parent)."""
    import psutil

    try:
        children = psutil.Process(proc.pid).children(recursive=True)
    except psutil.Error:
        children = []
    local.stop_process(proc, timeout=timeout)
    for child in children:
        with contextlib.suppress(psutil.Error):  # already gone with its parent
            child.kill()


def _wait_model_ready(endpoint: str, name: str, proc: subprocess.Popen, timeout: float = 90) -> None:
    import tritonclient.grpc as tc

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"server at {endpoint} exited with code {proc.returncode}")
        with contextlib.suppress(Exception):
            if tc.InferenceServerClient(endpoint).is_model_ready(name):
                return
        time.sleep(0.2)
    raise TimeoutError(f"MLServer model {name} not ready at {endpoint}")


def _wait_models_settled(http_port: int, names: list[str], proc: subprocess.Popen, timeout: float) -> dict[str, str]:
    """Poll MLServer's ``POST /v2/repository/index`` until none of ``names`` is loading; return the
    ones not READY with MLServer's state and reason."""
    import urllib.request

    deadline = time.monotonic() + timeout
    states: dict[str, tuple[str, str]] = {}
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"MLServer exited with code {proc.returncode}")
        with contextlib.suppress(Exception):
            req = urllib.request.Request(f"http://127.0.0.1:{http_port}/v2/repository/index", data=b"{}",
                                         headers={"Content-Type": "application/json"}, method="POST")
            with urllib.request.urlopen(req, timeout=5) as resp:
                index = json.loads(resp.read())
            states = {e.get("name", ""): (str(e.get("state", "")), str(e.get("reason", ""))) for e in index}
            if all(n in states and states[n][0] not in ("LOADING", "UNKNOWN", "") for n in names):
                break
        time.sleep(0.3)
    return {n: (f"{states[n][0]}: {states[n][1]}".strip(": ") if n in states else "not in the repository index")
            for n in names if states.get(n, ("",))[0] != "READY"}

"""Many models, a cache for 60% of them: the plane vs Ray Serve multiplexing vs MLServer vs bare.

    python bench/multi_model.py [--models 200] [--requests 10000] [--warmup 2000] [--seconds 60]
                                [--concurrency 8] [--only plane ray mlserver bare] [--skip-install]
                                [--quick] [--plane-pods 1] [--py-spy] [--json out.json]

``--models`` demo ONNX models (``plane.demo.generate_models``, cached between runs under
``$MESH_BENCH_CACHE`` or ``~/.cache/mesh-plane-bench``). Their resident sizes are measured first
by loading every one once on a big plane (``ModelRecord.size``); the plane's pod then gets a
capacity of 60% of the total, and the peers hold K models, K being the number of models the
plane's pod holds at the end of its Zipf run. Two traces, each a fixed sequence of model ids
from a seed (every system gets the same sequence; a closed loop of ``--concurrency`` workers
takes the next request as soon as one returns, so the trace's nominal times are not replayed,
only its order):

* **zipf** — Zipf(alpha=1.0) popularity over a random permutation of the models
  (``bench/traces.py zipf_trace``);
* **periodic** — a group of 10% of the models used together every 10 s of nominal trace time
  (10 requests each within 2 s), plus background Zipf(1.0) over the others at 200 req/s
  (``bench/traces.py periodic_trace`` without popularity shifts).

Each run replays ``--warmup`` requests first (not counted), then the measured ``--requests``,
stopping early after ``--seconds``. Systems, one after another, same client
(tritonclient.grpc.aio, KServe V2 ``ModelInfer``):

* **plane** — ``embedded_plane(pods=P, capacity=60% / P)``, models registered with
  ``PlaneClient.register_models``; loads (misses that loaded) and evictions from the pods'
  per-minute stats (``PlaneClient.stats()``, ``plane.stats.totals``) before and after the
  measured requests; load durations from the pods' ``loaded`` events;
* **ray** — Ray Serve model multiplexing (``@serve.multiplexed(max_num_models_per_replica=K)``,
  one replica) behind Ray Serve's gRPC proxy speaking KServe V2 (bench/ray_multiplex_app.py);
  the model id travels in the ``multiplexed_model_id`` metadata. Installed by this script into
  bench/.venvs/ray, with KServe V2 stubs compiled there from plane/proto/inference.proto;
* **mlserver** — MLServer (installed as bench/mlserver_compare.py does, same venv) with every
  model in its repository, none loaded at start; MLServer does not evict by itself, so the
  benchmark client keeps an LRU of K models and calls ``/v2/repository/models/{name}/unload``
  and ``/load`` (one load at a time) before a request for a model that is not loaded;
* **bare** — bench/bare_multi_server.py, every model resident in one grpc.aio process: the
  ceiling.

Targets (from the multi-model issue): plane p99 <= 40 ms on the Zipf trace; plane throughput
>= 2.5x Ray Serve's. Reported met / not met; nothing here asserts.
"""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import json
import os
import pathlib
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

import traces  # noqa: E402
from harness import _wait_ready, embedded_plane, machine_line, stop_process_tree, table  # noqa: E402
from mlserver_compare import RUNTIME_DIR, cache_dir, cpu_seconds, ensure_mlserver  # noqa: E402

from plane import demo, local, stats  # noqa: E402
from plane.api import ModelSpec, PlaneClient  # noqa: E402

ROOT = BENCH_DIR.parent
VENVS = BENCH_DIR / ".venvs"
RAY_VENV = VENVS / "ray"
RAY_PACKAGES = ["ray[serve]==2.60.0", "onnxruntime", "numpy", "grpcio-tools"]
RAY_APP = BENCH_DIR / "ray_multiplex_app.py"
PROTO = ROOT / "plane" / "proto" / "inference.proto"
SYSTEMS = ("plane", "ray", "mlserver", "bare")
TRACES = ("zipf", "periodic")
MIB = 1024**2


# -- models and traces -------------------------------------------------------------------------------------


def demo_models(n: int, seed: int) -> tuple[pathlib.Path, list[demo.DemoModel]]:
    """``n`` demo models, generated once and kept in the bench cache dir (training 200 takes ~30 s)."""
    out = cache_dir() / "multi-model" / f"n{n}-seed{seed}"
    manifest = out / demo.MANIFEST
    if manifest.exists():
        data = json.loads(manifest.read_text())
        models = [demo.DemoModel(**m) for m in data["models"]]
        if data.get("count") == n and all((out / m.path).exists() for m in models):
            return out, models
    print(f"generating {n} demo models into {out} ...", file=sys.stderr, flush=True)
    return out, demo.generate_models(out, n, seed=seed)


def make_trace(name: str, n_models: int, total: int, seed: int) -> traces.Trace:
    if name == "zipf":
        return traces.zipf_trace(1.0, n_models=n_models, n_requests=total, rate_per_s=200.0, seed=seed)
    group = max(2, n_models // 10)
    job = traces.BatchJob(n_models=group, period_s=10, offset_s=3, burst_requests=10, burst_s=2, jitter_s=1)
    rate = 200.0
    per_s = rate + group * job.burst_requests / job.period_s
    duration = max(20, int(total / per_s) + 2)
    t = traces.periodic_trace(n_models=n_models, duration_s=duration, rate_per_s=rate, alpha=1.0,
                              shift_every_s=duration + 1, jobs=(job,), seed=seed)
    t.models, t.times_ms = t.models[:total], t.times_ms[:total]
    t.description = (f"{group} models used together every {job.period_s} s (nominal trace time; "
                     f"{job.burst_requests} requests each within {job.burst_s} s) + background Zipf(1.0) over the "
                     f"other {n_models - group} at {rate:g} req/s")
    return t


# -- the client ---------------------------------------------------------------------------------------------


@dataclass
class Replay:
    sent: int = 0
    ok: int = 0
    errors: int = 0
    seconds: float = 0.0
    latencies_ms: list[float] = field(default_factory=list)
    error_samples: list[str] = field(default_factory=list)

    @property
    def rps(self) -> float:
        return self.ok / self.seconds if self.seconds else 0.0

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]


class ClientLRU:
    """MLServer has no eviction: the benchmark client keeps the K most recently used models loaded
    through the repository API (unload the least recently used idle model, then load; one load at
    a time, like Ray Serve's multiplexer and the plane's default ``max_concurrent_loads=1``)."""

    def __init__(self, http_base: str, k: int):
        import httpx

        self.http = httpx.AsyncClient(base_url=http_base, timeout=120)
        self.k = k
        self.loaded: collections.OrderedDict[str, None] = collections.OrderedDict()
        self.loading: dict[str, asyncio.Future] = {}
        self.in_flight: collections.Counter[str] = collections.Counter()
        self.lock = asyncio.Lock()
        self.loads = 0
        self.unloads = 0
        self.load_ms: list[float] = []

    async def _post(self, name: str, action: str) -> None:
        r = await self.http.post(f"/v2/repository/models/{name}/{action}")
        if r.status_code >= 400:
            raise RuntimeError(f"{action} {name}: HTTP {r.status_code} {r.text[:200]}")

    async def acquire(self, name: str) -> None:
        while True:
            if name in self.loaded:
                self.loaded.move_to_end(name)
                self.in_flight[name] += 1
                return
            fut = self.loading.get(name)
            if fut is not None:
                await asyncio.shield(fut)
                continue
            fut = asyncio.get_running_loop().create_future()
            self.loading[name] = fut
            try:
                async with self.lock:
                    while len(self.loaded) >= self.k:
                        victim = next((m for m in self.loaded if not self.in_flight[m]), next(iter(self.loaded)))
                        del self.loaded[victim]
                        await self._post(victim, "unload")
                        self.unloads += 1
                    t0 = time.perf_counter()
                    await self._post(name, "load")
                    self.load_ms.append((time.perf_counter() - t0) * 1000)
                    self.loads += 1
                self.loaded[name] = None
                fut.set_result(None)
            except BaseException as exc:
                fut.set_exception(exc)
                fut.exception()  # retrieved
                raise
            finally:
                self.loading.pop(name, None)

    def release(self, name: str) -> None:
        self.in_flight[name] -= 1

    async def reset(self) -> None:
        async with self.lock:
            for name in list(self.loaded):
                del self.loaded[name]
                await self._post(name, "unload")

    async def close(self) -> None:
        await self.http.aclose()


async def _replay(endpoints: list[str], seq: list[str], inputs: dict, *, concurrency: int, seconds: float,
                  headers: Callable[[str], dict] | None = None, lru: ClientLRU | None = None) -> Replay:
    import tritonclient.grpc.aio as tca

    clients = [tca.InferenceServerClient(ep) for ep in endpoints]
    out = Replay()
    pos = 0
    deadline = time.perf_counter() + seconds

    async def worker(w: int) -> None:
        nonlocal pos
        client = clients[w % len(clients)]
        while pos < len(seq) and time.perf_counter() < deadline:
            name = seq[pos]
            pos += 1
            out.sent += 1
            t0 = time.perf_counter()
            try:
                if lru is not None:
                    await lru.acquire(name)
                try:
                    await client.infer(name, [inputs[name]], headers=headers(name) if headers else None,
                                       client_timeout=120)
                finally:
                    if lru is not None:
                        lru.release(name)
                out.latencies_ms.append((time.perf_counter() - t0) * 1000)
                out.ok += 1
            except Exception as exc:  # noqa: BLE001 - counted, first few kept
                out.errors += 1
                if len(out.error_samples) < 3:
                    out.error_samples.append(f"{name}: {str(exc)[:200]}")

    t0 = time.perf_counter()
    await asyncio.gather(*[worker(w) for w in range(concurrency)])
    out.seconds = time.perf_counter() - t0
    for c in clients:
        await c.close()
    return out


class Driver:
    """One event loop for every replay of a system (the MLServer LRU lives across runs)."""

    def __init__(self, models: list[demo.DemoModel], concurrency: int):
        import tritonclient.grpc.aio as tca

        self.loop = asyncio.new_event_loop()
        self.concurrency = concurrency
        by_dataset = {}
        for ds in {m.dataset for m in models}:
            x = demo.sample_input(ds, 1)
            inp = tca.InferInput(demo.INPUT_NAME, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            by_dataset[ds] = inp
        self.inputs = {m.model_id: by_dataset[m.dataset] for m in models}

    def replay(self, endpoints: list[str], seq: list[str], seconds: float, **kw) -> Replay:
        return self.loop.run_until_complete(_replay(endpoints, seq, self.inputs, concurrency=self.concurrency,
                                                    seconds=seconds, **kw))

    def run(self, coro):
        return self.loop.run_until_complete(coro)

    def close(self) -> None:
        self.loop.close()


# -- results ------------------------------------------------------------------------------------------------


@dataclass
class Result:
    system: str
    trace: str
    replay: Replay
    resident: int | None = None  # models held at the end (plane) or K (peers)
    loads: int | None = None
    evictions: int | None = None
    load_ms: list[float] = field(default_factory=list)
    cpu_us: float | None = None  # server CPU per answered request
    note: str = ""
    breakdown: dict | None = None  # plane: mean load time and loading-queue delay (the pods' metrics)

    @property
    def hit_ratio(self) -> float | None:
        if self.loads is None or not self.replay.ok:
            return None
        return max(0.0, 1.0 - self.loads / self.replay.ok)


def _cpu(pids: list[int]) -> float:
    return sum(cpu_seconds(p) for p in pids)


def warm_up(driver: Driver, system: str, trace: str, endpoints: list[str], warm: list[str], args, **kw) -> None:
    if not warm:
        return
    w = driver.replay(endpoints, warm, min(args.seconds, args.warmup_seconds), **kw)
    print(f"  {system}/{trace} warm-up: {w.ok}/{len(warm)} in {w.seconds:.1f}s"
          + (f", {w.errors} errors, e.g. {w.error_samples[:1]}" if w.errors else ""), file=sys.stderr, flush=True)


def measured_run(driver: Driver, system: str, trace: str, endpoints: list[str], warm: list[str],
                 meas: list[str], args, cpu_pids: list[int], **kw) -> tuple[Replay, float]:
    warm_up(driver, system, trace, endpoints, warm, args, **kw)
    cpu0 = _cpu(cpu_pids)
    r = driver.replay(endpoints, meas, args.seconds, **kw)
    cpu_us = (_cpu(cpu_pids) - cpu0) * 1e6 / max(1, r.ok)
    print(f"  {system}/{trace}: {r.ok}/{len(meas)} ok, {r.errors} errors in {r.seconds:.1f}s = {r.rps:,.0f} req/s, "
          f"p50 {r.pct(50):.2f} p99 {r.pct(99):.2f} ms", file=sys.stderr, flush=True)
    if r.errors:
        print(f"    errors e.g. {r.error_samples}", file=sys.stderr)
    return r, cpu_us


# -- the plane ----------------------------------------------------------------------------------------------


def measure_sizes(models_dir: pathlib.Path, models: list[demo.DemoModel]) -> dict[str, int]:
    """Every model loaded once on a pod with room for all: their measured resident sizes."""
    with embedded_plane(pods=1, capacity=4096 * MIB, preload=False) as (plane, settings), \
            PlaneClient.connect(settings) as client:
        client.set_storage("default", "local", {"path": str(models_dir)})
        client.register_models([ModelSpec(m.model_id, m.path) for m in models])
        for m in models:
            client.ensure_loaded(m.model_id, sync=True)
        return {r.model_id: r.size for r in client.list_models()}


def load_path_probe(models_dir: pathlib.Path, models: list[demo.DemoModel], n: int) -> dict:
    """In this process, for ``n`` models: what Ray Serve's loader does (an onnxruntime session + one
    run), what a plane pod does (``plane.runtime.load_session``: session, first run, size
    measurement) and one reading of the allocator's bytes in use (``plane.runtime.memory_in_use``).
    Sessions are kept alive, as in a pod."""
    import onnxruntime as ort

    from plane import runtime

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = opts.inter_op_num_threads = 1
    xs = {ds: demo.sample_input(ds, 1) for ds in {m.dataset for m in models}}
    keep, ort_ms, plane_ms, read_ms = [], [], [], []
    for m in models[:n]:
        path = models_dir / m.path
        t0 = time.perf_counter()
        s = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        s.run(None, {demo.INPUT_NAME: xs[m.dataset]})
        ort_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        keep.append(runtime.load_session(m.model_id, path, intra_threads=1, source="local"))
        plane_ms.append((time.perf_counter() - t0) * 1000)
        t0 = time.perf_counter()
        for _ in range(5):
            runtime.memory_in_use()
        read_ms.append((time.perf_counter() - t0) * 1000 / 5)
    return {"n": len(ort_ms), "ort_ms": statistics.median(ort_ms), "plane_ms": statistics.median(plane_ms),
            "read_ms": statistics.median(read_ms), "repeats": getattr(runtime, "_REPEATS", None),
            "method": runtime.memory_in_use()[1]}


_LOADED_MS = re.compile(r" in ([0-9.]+) ms")
_LOAD_METRICS = ("modelmesh_loadmodel_milliseconds", "modelmesh_loading_queue_delay_milliseconds")


def scrape_load_metrics(ports: list[int]) -> dict[str, tuple[float, float]]:
    """(sum ms, count) of the pods' load time and loading-queue delay histograms, over every model."""
    import urllib.request

    out = {name: (0.0, 0.0) for name in _LOAD_METRICS}
    for port in ports:
        if not port:
            continue
        with contextlib.suppress(OSError):
            text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
            for line in text.splitlines():
                for name in _LOAD_METRICS:
                    for suffix, i in (("_sum", 0), ("_count", 1)):
                        if line.startswith(name + suffix):
                            val = float(line.rsplit(" ", 1)[1])
                            cur = list(out[name])
                            cur[i] += val
                            out[name] = (cur[0], cur[1])
    return out


def run_plane(driver: Driver, models_dir, models, seqs, capacity: int, pods: int, args,
              profile: dict | None) -> list[Result]:
    results = []
    name = "plane" if pods == 1 else f"plane ×{pods}"
    for trace, (warm, meas) in seqs.items():
        with embedded_plane(pods=pods, capacity=capacity // pods) as (plane, settings), \
                PlaneClient.connect(settings) as client:
            client.set_storage("default", "local", {"path": str(models_dir)})
            client.register_models([ModelSpec(m.model_id, m.path) for m in models])
            endpoints = [p.endpoint for p in plane.pods]
            flush = settings.usage_flush_s + 1.0
            warm_up(driver, name, trace, endpoints, warm, args)
            time.sleep(flush)
            before = stats.totals(client.stats())
            since = int(time.time() * 1000)
            ports = [p.metrics_port for p in plane.pods]
            m0 = scrape_load_metrics(ports)
            spy = None
            if profile is not None and trace == "zipf" and pods == 1:
                spy = start_py_spy(plane.pods[0].pid, profile)
            r, cpu_us = measured_run(driver, name, trace, endpoints, [], meas, args,
                                     [p.pid for p in plane.pods] + ([plane.etcd_pid] if plane.etcd_pid else []))
            if spy is not None:
                finish_py_spy(spy, profile)
            m1 = scrape_load_metrics(ports)
            time.sleep(flush)
            after = stats.totals(client.stats())
            load_ms = [float(m.group(1)) for e in client.events(since_ms=since, limit=0)
                       if e.kind == "loaded" and (m := _LOADED_MS.search(e.reason))]
            resident = sum(p.count for p in client.snapshot().pods)
        (ls0, lc0), (qs0, qc0) = (m0[n] for n in _LOAD_METRICS)
        (ls1, lc1), (qs1, qc1) = (m1[n] for n in _LOAD_METRICS)
        n_loads = lc1 - lc0
        breakdown = {"loads": n_loads, "load_ms": (ls1 - ls0) / n_loads if n_loads else None,
                     "queue_ms": (qs1 - qs0) / (qc1 - qc0) if qc1 > qc0 else None}
        res = Result(name, trace, r, resident=resident, loads=after["loads"] - before["loads"],
                     evictions=after["evictions"] - before["evictions"], load_ms=load_ms, cpu_us=cpu_us,
                     note=f"requests counted by the pods: {after['requests'] - before['requests']}")
        res.breakdown = breakdown
        results.append(res)
        if profile is not None and trace == "zipf" and pods == 1:
            profile["loads"], profile["seconds"] = n_loads, r.seconds
    return results


def start_py_spy(pid: int, profile: dict) -> subprocess.Popen | None:
    exe = shutil.which("py-spy") or (RAY_VENV / "bin" / "py-spy")
    if not pathlib.Path(exe).exists():
        profile["error"] = "py-spy not found (pip install py-spy, or install the Ray venv: it brings py-spy)"
        return None
    out = pathlib.Path(tempfile.mkdtemp(prefix="mesh-spy-")) / "pod.txt"
    profile["file"] = out
    return subprocess.Popen([str(exe), "record", "-p", str(pid), "-r", "200", "-f", "raw", "-o", str(out),
                             "--nonblocking"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)


def finish_py_spy(proc: subprocess.Popen, profile: dict) -> None:
    proc.send_signal(signal.SIGINT)
    try:
        _, err = proc.communicate(timeout=30)
    except subprocess.TimeoutExpired:
        proc.kill()
        _, err = proc.communicate()
    path = profile.get("file")
    if not path or not pathlib.Path(path).exists():
        profile["error"] = f"py-spy wrote nothing: {err.decode(errors='replace')[-300:]}"
        return
    profile.update(summarize_py_spy(pathlib.Path(path)))


_OWN = ("plane/", "grpc/", "onnxruntime/", "asyncio/", "aetcd/", "protobuf/")


def summarize_py_spy(path: pathlib.Path) -> dict:
    """Collapsed stacks -> share of samples per function (inclusive, each counted once per stack)
    for the project's own code and a few libraries, and self time per function overall."""
    inclusive: collections.Counter[str] = collections.Counter()
    self_time: collections.Counter[str] = collections.Counter()
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        stack, _, n = line.rpartition(" ")
        if not stack or not n.isdigit():
            continue
        count = int(n)
        total += count
        frames = stack.split(";")
        names = []
        for f in frames:
            m = re.match(r"(.*?) \((.*?)(?::\d+)?\)$", f.strip())
            func, file = (m.group(1), m.group(2)) if m else (f.strip(), "")
            names.append(f"{func} ({_short(file)})")
        for nm in set(names):
            inclusive[nm] += count
        if names:
            self_time[names[-1]] += count
    return {"total": total, "inclusive": inclusive.most_common(), "self": self_time.most_common(12)}


def _short(file: str) -> str:
    for marker in ("/site-packages/", "/work/main/", "/lib/python3"):
        if marker in file:
            return file.split(marker, 1)[1]
    return file


# -- Ray Serve ----------------------------------------------------------------------------------------------


def ensure_ray(skip_install: bool) -> tuple[pathlib.Path | None, str]:
    """Ray Serve in bench/.venvs/ray with KServe V2 stubs (package ``kserve_v2``) compiled there from
    plane/proto/inference.proto. Returns (its python, "") or (None, why not)."""
    py = RAY_VENV / "bin" / "python"
    marker = RAY_VENV / "mesh-bench-packages.txt"
    spec = " ".join(RAY_PACKAGES)
    check = [str(py), "-c", "import ray.serve, onnxruntime, numpy, grpc_tools"]
    installed = py.exists() and marker.exists() and marker.read_text() == spec and \
        subprocess.run(check, capture_output=True).returncode == 0
    if not installed:
        if skip_install:
            return None, f"not installed in {RAY_VENV} (--skip-install)"
        RAY_VENV.parent.mkdir(parents=True, exist_ok=True)
        log = RAY_VENV.parent / "ray-install.log"
        print(f"installing Ray Serve into {RAY_VENV} (log: {log}) ...", file=sys.stderr, flush=True)
        with open(log, "w") as out:
            steps = [[sys.executable, "-m", "venv", str(RAY_VENV)]]
            uv = shutil.which("uv") or str(pathlib.Path(sys.executable).parent / "uv")
            if pathlib.Path(uv).exists():
                steps.append([uv, "pip", "install", "--python", str(py), *RAY_PACKAGES])
            else:
                steps.append([str(py), "-m", "pip", "install", "-q", *RAY_PACKAGES])
            for step in steps:
                rc = subprocess.run(step, stdout=out, stderr=subprocess.STDOUT).returncode
                if rc != 0:
                    tail = log.read_text(errors="replace").strip().splitlines()[-3:]
                    return None, f"`{' '.join(step[:4])} ...` exited {rc}: {' / '.join(tail)}"
        marker.write_text(spec)
    # the stubs: regenerated when the proto is newer than them
    purelib = subprocess.run([str(py), "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"],
                             capture_output=True, text=True).stdout.strip()
    pkg = pathlib.Path(purelib) / "kserve_v2"
    stub = pkg / "inference_pb2_grpc.py"
    if not stub.exists() or stub.stat().st_mtime < PROTO.stat().st_mtime:
        with tempfile.TemporaryDirectory() as tmp:
            (pathlib.Path(tmp) / "kserve_v2").mkdir()
            shutil.copy(PROTO, pathlib.Path(tmp) / "kserve_v2" / "inference.proto")
            proc = subprocess.run([str(py), "-m", "grpc_tools.protoc", "-I", tmp, f"--python_out={purelib}",
                                   f"--grpc_python_out={purelib}", "kserve_v2/inference.proto"],
                                  capture_output=True, text=True)
            if proc.returncode != 0:
                return None, f"grpc_tools.protoc failed: {proc.stderr.strip()[-300:]}"
        (pkg / "__init__.py").touch()
    return py, ""


def _version(py: pathlib.Path, module: str) -> str:
    out = subprocess.run([str(py), "-c", f"import {module}; print({module}.__version__)"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


def _clean_env() -> dict:
    env = dict(os.environ)
    env.pop("VIRTUAL_ENV", None)
    env.pop("PYTHONPATH", None)
    return env


@contextlib.contextmanager
def ray_server(py: pathlib.Path, models_dir: pathlib.Path, k: int) -> Iterator[tuple[str, int, pathlib.Path]]:
    """bench/ray_multiplex_app.py: yields (gRPC endpoint, pid of the app process, its loads log)."""
    tmp = pathlib.Path(tempfile.mkdtemp(prefix="mesh-ray-", dir="/tmp"))  # short: Ray's socket paths
    grpc_port, http_port = local.free_port(), local.free_port()
    loads_log = tmp / "loads.log"
    err = open(tmp / "app.log", "wb")  # noqa: SIM115
    proc = subprocess.Popen([str(py), str(RAY_APP), str(models_dir), "--k", str(k), "--grpc-port", str(grpc_port),
                             "--http-port", str(http_port), "--loads-log", str(loads_log),
                             "--temp-dir", str(tmp / "ray")],
                            stdout=subprocess.PIPE, stderr=err, env=_clean_env(), start_new_session=True, cwd=tmp)
    ready = threading.Event()

    def watch() -> None:
        for line in proc.stdout:
            if line.strip() == b"READY":
                ready.set()

    threading.Thread(target=watch, daemon=True).start()
    endpoint = f"127.0.0.1:{grpc_port}"
    try:
        deadline = time.monotonic() + 240
        while not ready.wait(0.5):
            if proc.poll() is not None or time.monotonic() > deadline:
                err.flush()
                print((tmp / "app.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise RuntimeError(f"Ray Serve app did not become ready (exit {proc.poll()})")
        local.wait_for_port("127.0.0.1", grpc_port, 60, proc)
        yield endpoint, proc.pid, loads_log
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(proc.pid, signal.SIGTERM)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            pass
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # anything of this app's session left behind
        err.close()
        shutil.rmtree(tmp, ignore_errors=True)


def _ray_loads(loads_log: pathlib.Path) -> list[float]:
    if not loads_log.exists():
        return []
    return [float(ln.split()[2]) for ln in loads_log.read_text().splitlines() if len(ln.split()) == 3]


def run_ray(driver: Driver, py, models_dir, seqs, k: int, args) -> list[Result]:
    results = []
    headers = {}

    def hdr(name: str) -> dict:
        h = headers.get(name)
        if h is None:
            h = headers[name] = {"multiplexed_model_id": name}
        return h

    with ray_server(py, models_dir, k) as (endpoint, pid, loads_log):
        for trace, (warm, meas) in seqs.items():
            warm_up(driver, "ray", trace, [endpoint], warm, args, headers=hdr)
            n0 = len(_ray_loads(loads_log))
            r, cpu_us = measured_run(driver, "ray", trace, [endpoint], [], meas, args, [pid], headers=hdr)
            load_ms = _ray_loads(loads_log)[n0:]
            results.append(Result("ray", trace, r, resident=k, loads=len(load_ms), evictions=None, load_ms=load_ms,
                                  cpu_us=cpu_us))
    return results


# -- MLServer -----------------------------------------------------------------------------------------------


@contextlib.contextmanager
def mlserver_repo(exe: pathlib.Path, models_dir: pathlib.Path, models: list[demo.DemoModel], *,
                  workers: int) -> Iterator[tuple[str, str, int]]:
    """MLServer over a repository of every model, none loaded at start: (gRPC endpoint, HTTP base, pid)."""

    with tempfile.TemporaryDirectory(prefix="mesh-bench-mlserver-") as tmp:
        repo = pathlib.Path(tmp)
        grpc_port, http_port = local.free_port(), local.free_port()
        (repo / "settings.json").write_text(json.dumps({
            "host": "127.0.0.1", "grpc_port": grpc_port, "http_port": http_port, "metrics_port": local.free_port(),
            "parallel_workers": workers, "debug": False, "load_models_at_startup": False,
        }))
        for m in models:
            (repo / m.model_id).mkdir()
            (repo / m.model_id / "model-settings.json").write_text(json.dumps({
                "name": m.model_id, "implementation": "onnx_runtime.OnnxRuntime",
                "parameters": {"uri": str((models_dir / m.path).resolve())},
            }))
        env = _clean_env()
        env["PYTHONPATH"] = str(RUNTIME_DIR)
        log = open(repo / "mlserver.log", "wb")  # noqa: SIM115
        proc = subprocess.Popen([str(exe), "start", str(repo)], cwd=repo, env=env, stdout=log,
                                stderr=subprocess.STDOUT, start_new_session=True)
        try:
            try:
                local.wait_for_port("127.0.0.1", grpc_port, 120, proc)
                local.wait_for_port("127.0.0.1", http_port, 60, proc)
                _wait_ready(f"127.0.0.1:{grpc_port}", timeout=60)
            except Exception:
                log.flush()
                print((repo / "mlserver.log").read_text(errors="replace")[-3000:], file=sys.stderr)
                raise
            yield f"127.0.0.1:{grpc_port}", f"http://127.0.0.1:{http_port}", proc.pid
        finally:
            stop_process_tree(proc)
            log.close()


def run_mlserver(driver: Driver, exe, models_dir, models, seqs, k: int, args, notes: list[str]) -> list[Result]:
    import httpx

    results = []
    with mlserver_repo(exe, models_dir, models, workers=args.mlserver_workers) as (endpoint, http, pid):
        lru = ClientLRU(http, k)
        t0 = time.perf_counter()
        httpx.post(f"{http}/v2/repository/index", json={}, timeout=120)
        notes.append(f"MLServer: one `/v2/repository/index` call over the {len(models)}-model repository took "
                     f"{(time.perf_counter() - t0) * 1000:,.0f} ms (a /load call reads the repository the same way).")
        try:
            for trace, (warm, meas) in seqs.items():
                driver.run(lru.reset())
                warm_up(driver, "mlserver", trace, [endpoint], warm, args, lru=lru)
                n0, u0 = lru.loads, len(lru.load_ms)
                r, cpu_us = measured_run(driver, "mlserver", trace, [endpoint], [], meas, args, [pid], lru=lru)
                results.append(Result("mlserver", trace, r, resident=k, loads=lru.loads - n0,
                                      load_ms=lru.load_ms[u0:], cpu_us=cpu_us))
        finally:
            driver.run(lru.close())
    return results


# -- bare ---------------------------------------------------------------------------------------------------


@contextlib.contextmanager
def bare_multi(models_dir: pathlib.Path) -> Iterator[tuple[str, int]]:
    port = local.free_port()
    proc = subprocess.Popen([sys.executable, str(BENCH_DIR / "bare_multi_server.py"), str(models_dir), str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        local.wait_for_port("127.0.0.1", port, 120, proc)
        _wait_ready(f"127.0.0.1:{port}")
        yield f"127.0.0.1:{port}", proc.pid
    finally:
        local.stop_process(proc, timeout=5)


def run_bare(driver: Driver, models_dir, models, seqs, args) -> list[Result]:
    results = []
    with bare_multi(models_dir) as (endpoint, pid):
        for trace, (warm, meas) in seqs.items():
            r, cpu_us = measured_run(driver, "bare", trace, [endpoint], warm, meas, args, [pid])
            results.append(Result("bare", trace, r, resident=len(models), loads=0, load_ms=[], cpu_us=cpu_us))
    return results


# -- report -------------------------------------------------------------------------------------------------


def _f(v: float | None, fmt: str) -> str:
    return "-" if v is None or v != v else format(v, fmt)


def render(results: list[Result], cmd: str, args, info: dict) -> tuple[str, list[dict]]:
    lines = [f"Multi-model: {args.models} models, cache for {args.capacity_fraction:.0%} of their measured size — "
             f"{machine_line()} — `{cmd}`", ""]
    lines.append(f"Measured sizes: {info['sizes']}. Plane capacity {info['capacity_text']}; peers hold "
                 f"K = {info['k']} models ({info['k_source']}). Closed loop, concurrency {args.concurrency}, "
                 f"{args.warmup} warm-up (at most {min(args.seconds, args.warmup_seconds):g} s) + up to "
                 f"{args.requests} measured requests per run (at most {args.seconds:g} s), one run per system "
                 "and trace, systems back to back.")
    for name, desc in info["traces"].items():
        lines.append(f"* `{name}`: {desc}")
    lines.append("")
    rows = []
    checks = []
    plane_notes: list[str] = []
    by = {(r.system, r.trace): r for r in results}
    for trace in info["traces"]:
        ray, bare = by.get(("ray", trace)), by.get(("bare", trace))
        for r in [x for x in results if x.trace == trace]:
            rep = r.replay
            vs_ray = rep.rps / ray.replay.rps if ray and ray.replay.rps else None
            vs_bare = rep.rps / bare.replay.rps if bare and bare.replay.rps else None
            p99_vs_ray = rep.pct(99) / ray.replay.pct(99) if ray and ray.replay.latencies_ms else None
            load = statistics.fmean(r.load_ms) if r.load_ms else None
            b = r.breakdown
            if b and b.get("load_ms") is not None:
                load = b["load_ms"] - (b.get("queue_ms") or 0.0)
                plane_notes.append(
                    f"{r.system}, {trace}: {b['loads']:.0f} loads took {b['load_ms']:.1f} ms on average from the "
                    f"load's start to its session being ready (modelmesh_loadmodel_milliseconds), "
                    f"{b.get('queue_ms') or 0:.1f} ms of it waiting for the pod's load slot "
                    "(modelmesh_loading_queue_delay_milliseconds; max_concurrent_loads=1); "
                    f"{r.evictions} evictions.")
            rows.append([
                trace, r.system, str(r.resident) if r.resident is not None else "-",
                f"{rep.ok:,}" + (f" (+{rep.errors} err)" if rep.errors else ""),
                f"{rep.rps:,.0f}", _f(vs_ray, ".2f") + ("×" if vs_ray else ""),
                _f(vs_bare, ".2f") + ("×" if vs_bare else ""),
                _f(rep.pct(50), ".2f"), _f(rep.pct(99), ".2f"), _f(p99_vs_ray, ".2f") + ("×" if p99_vs_ray else ""),
                str(r.loads) if r.loads is not None else "-",
                _f(r.hit_ratio, ".3f"), _f(load, ".1f"), _f(r.cpu_us, ",.0f"),
            ])
            if r.system.startswith("plane"):
                where = f"{r.system}, {trace}"
                if trace == "zipf":
                    checks.append({"target": f"plane p99 ≤ 40 ms ({where})", "value": round(rep.pct(99), 2),
                                   "met": rep.pct(99) <= 40})
                if vs_ray is not None:
                    checks.append({"target": f"plane throughput ≥ 2.5× Ray Serve's ({where})",
                                   "value": round(vs_ray, 3), "met": vs_ray >= 2.5})
    lines.append(table(["trace", "system", "resident", "requests", "req/s", "×Ray", "×bare", "p50 ms", "p99 ms",
                        "p99 ×Ray", "loads", "hit ratio", "load ms", "server CPU µs/req"], rows))
    lines.append("")
    lines.append("resident: models the plane's pods hold at the end of the run; K for Ray Serve and MLServer; all for "
                 "bare. loads: misses that loaded during the measured requests (plane: the pods' per-minute stats; "
                 "Ray Serve: the multiplexed loader's own log; MLServer: the client LRU's /load calls); hit ratio = "
                 "1 − loads/requests. load ms: mean time of one load, not counting the wait for a load slot (plane: "
                 "the pods' load histogram minus their loading-queue delay; Ray: session creation in the "
                 "multiplexed loader; MLServer: the /load call as the client sees it). server CPU: "
                 "user+system CPU of the server processes (plane: pods + etcd; Ray: the app and every process Ray "
                 "started; MLServer: server + workers) per answered request.")
    if plane_notes:
        lines.append("")
        lines += [f"* {n}" for n in plane_notes]
    probe = info.get("probe")
    if probe:
        lines.append("")
        lines.append(
            f"Load path in isolation (the benchmark process, {probe['n']} of the models, medians): an onnxruntime "
            f"session + one run, what Ray Serve's loader does, {probe['ort_ms']:.2f} ms; "
            f"`plane.runtime.load_session`, what a pod does (session, first run, size measurement by "
            f"{probe['method']}" + (f", a model under 4 MiB built {probe['repeats']} times" if probe["repeats"] else "")
            + f"), {probe['plane_ms']:.2f} ms; one `memory_in_use()` reading {probe['read_ms']:.2f} ms.")
    elif info.get("probe_error"):
        lines += ["", info["probe_error"]]
    for note in info.get("notes", []):
        lines.append("")
        lines.append(note)
    return "\n".join(lines), checks


def render_profile(profile: dict) -> str:
    if "error" in profile:
        return f"py-spy: {profile['error']}"
    total = profile.get("total") or 1
    loads = profile.get("loads") or 0
    rate = 200.0

    def per_load(c: int) -> str:
        return f"{c / rate * 1000 / loads:.1f}" if loads else "-"

    interesting = [(n, c) for n, c in profile["inclusive"] if n.split("(", 1)[-1].startswith("plane/")][:20]
    rows = [[n, f"{100 * c / total:.1f}%", per_load(c)] for n, c in interesting]
    own = table(["function (plane/, inclusive)", "samples", "ms per load"], rows)
    selfrows = [[n, f"{100 * c / total:.1f}%", per_load(c)] for n, c in profile["self"]]
    return ("py-spy record of the plane's pod during its measured Zipf requests (`py-spy record -r 200 -f raw "
            f"--nonblocking`, every thread; {total} samples over {profile.get('seconds', 0):.1f} s, {loads} loads). "
            "ms per load = samples ÷ 200 Hz ÷ loads (meaningful for the load path's functions; a function that "
            "runs for requests as well is charged to loads too):\n\n"
            f"{own}\n\n" + table(["function (self)", "samples", "ms per load"], selfrows))


# -- main ---------------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--requests", type=int, default=10000, help="measured requests per system and trace")
    ap.add_argument("--warmup", type=int, default=2000, help="requests replayed first, not counted")
    ap.add_argument("--seconds", type=float, default=60.0, help="a measured run stops after this many seconds")
    ap.add_argument("--warmup-seconds", type=float, default=30.0, help="a warm-up stops after this many seconds")
    ap.add_argument("--concurrency", type=int, default=8)
    ap.add_argument("--only", nargs="+", choices=SYSTEMS, default=list(SYSTEMS))
    ap.add_argument("--traces", nargs="+", choices=TRACES, default=list(TRACES))
    ap.add_argument("--plane-pods", type=int, nargs="+", default=[1],
                    help="plane sizes to run (capacity split evenly: same total bytes)")
    ap.add_argument("--capacity-fraction", type=float, default=0.6)
    ap.add_argument("--seed", type=int, default=7)
    ap.add_argument("--mlserver-workers", type=int, default=1, help="MLServer parallel_workers (its default 1)")
    ap.add_argument("--skip-install", action="store_true", help="do not install Ray Serve / MLServer; skip them")
    ap.add_argument("--quick", action="store_true",
                    help="shorter: 500 warm-up (8 s cap) + 2000 measured requests (15 s cap)")
    ap.add_argument("--py-spy", action="store_true", help="profile the plane's pod during its measured Zipf run")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()
    if args.quick:
        args.requests, args.warmup = min(args.requests, 2000), min(args.warmup, 500)
        args.seconds, args.warmup_seconds = min(args.seconds, 15.0), min(args.warmup_seconds, 8.0)
    cmd = "python bench/multi_model.py " + " ".join(sys.argv[1:])
    t_start = time.monotonic()

    notes: list[str] = []
    ray_py = mls_exe = None
    if "ray" in args.only:
        ray_py, why = ensure_ray(args.skip_install)
        if ray_py is None:
            notes.append(f"Ray Serve not measured: {why}")
    if "mlserver" in args.only:
        if args.skip_install and not (cache_dir() / "mlserver-venv" / "bin" / "mlserver").exists():
            mls_exe, why = None, "not installed (--skip-install)"
        else:
            mls_exe, why = ensure_mlserver()
        if mls_exe is None:
            notes.append(f"MLServer not measured: {why}")
    for n in notes:
        print(n, file=sys.stderr)

    models_dir, models = demo_models(args.models, args.seed)
    names = [m.model_id for m in models]
    seqs: dict[str, tuple[list[str], list[str]]] = {}
    descs = {}
    for t in args.traces:
        tr = make_trace(t, len(models), args.warmup + args.requests, args.seed)
        seq = [names[i] for i in tr.models.tolist()]
        seqs[t] = (seq[:args.warmup], seq[args.warmup:])
        distinct = len(set(seqs[t][1]))
        descs[t] = f"{tr.description}; {distinct} distinct models in the measured part"

    print("measuring resident sizes (every model loaded once on a big pod) ...", file=sys.stderr, flush=True)
    sizes = measure_sizes(models_dir, models)
    total = sum(sizes.values())
    capacity = int(total * args.capacity_fraction)
    vals = sorted(sizes.values())
    info = {
        "sizes": f"{len(vals)} models, {total / MIB:.1f} MiB in all, {vals[0] // 1024}–{vals[-1] // 1024} KiB each "
                 f"(median {statistics.median(vals) / 1024:.0f} KiB)",
        "capacity_text": f"{capacity / MIB:.1f} MiB",
        "traces": descs, "notes": notes,
    }

    if "plane" in args.only:
        try:
            info["probe"] = load_path_probe(models_dir, models, min(60, len(models)))
        except Exception as exc:  # noqa: BLE001 - plane.runtime may change; the rest still runs
            info["probe_error"] = f"load-path probe failed: {exc}"
    print(f"[{time.monotonic() - t_start:.0f}s] sizes measured; running the systems", file=sys.stderr, flush=True)
    driver = Driver(models, args.concurrency)
    results: list[Result] = []
    profile: dict | None = {} if args.py_spy else None
    k = None
    try:
        if "plane" in args.only:
            for pods in args.plane_pods:
                res = run_plane(driver, models_dir, models, seqs, capacity, pods, args, profile)
                results += res
                if pods == args.plane_pods[0]:
                    held = [r.resident for r in res if r.resident]
                    k = round(statistics.median(held)) if held else None
        info["k"] = k if k else round(args.capacity_fraction * len(models))
        info["k_source"] = ("the median of what the plane's pod held at the end of its runs" if k else
                            f"{args.capacity_fraction:.0%} of the models: the plane was not run")
        k = info["k"]
        if ray_py is not None:
            try:
                results += run_ray(driver, ray_py, models_dir, seqs, k, args)
            except Exception as exc:  # noqa: BLE001 - reported, the other systems still count
                notes.append(f"Ray Serve failed: {exc}")
                print(notes[-1], file=sys.stderr)
        if mls_exe is not None:
            try:
                results += run_mlserver(driver, mls_exe, models_dir, models, seqs, k, args, notes)
            except Exception as exc:  # noqa: BLE001
                notes.append(f"MLServer failed: {exc}")
                print(notes[-1], file=sys.stderr)
        if "bare" in args.only:
            results += run_bare(driver, models_dir, models, seqs, args)
    finally:
        driver.close()

    versions = []
    if ray_py is not None:
        versions.append(f"Ray {_version(ray_py, 'ray')} (bench/.venvs/ray)")
    if mls_exe is not None:
        versions.append(f"MLServer {_version(mls_exe.parent / 'python', 'mlserver')} "
                        f"(parallel_workers={args.mlserver_workers}; no automatic eviction: the client's LRU "
                        "unloads and loads through the repository API)")
    if versions:
        notes.append("Peers: " + "; ".join(versions) + ".")
    notes.append(f"Whole run: {time.monotonic() - t_start:.0f} s.")
    text, checks = render(results, cmd, args, info)
    print(text)
    if profile is not None:
        print()
        print(render_profile(profile))
    if args.json:
        args.json.write_text(json.dumps({
            "bench": "multi_model", "checks": checks,
            "results": [{"system": r.system, "trace": r.trace, "requests": r.replay.ok, "errors": r.replay.errors,
                         "seconds": round(r.replay.seconds, 3), "rps": round(r.replay.rps, 1),
                         "p50_ms": r.replay.pct(50), "p99_ms": r.replay.pct(99), "loads": r.loads,
                         "evictions": r.evictions, "hit_ratio": r.hit_ratio, "resident": r.resident,
                         "cpu_us_per_req": r.cpu_us, "note": r.note} for r in results],
            "k": k, "capacity": capacity, "sizes_total": total,
        }, indent=2))


if __name__ == "__main__":
    main()

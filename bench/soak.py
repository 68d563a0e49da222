"""Soak test (not run in CI): a Zipf workload at a fixed rate for N minutes against an embedded
plane of 3 pods serving demo models; reports errors and latency percentiles per window and the
RSS of every process over time, and flags memory growth after the warm-up.

Run::

    python bench/soak.py --minutes 10 --rate 50 --models 30
    python bench/soak.py --minutes 2 --window 30 --warmup 30     # the short run in docs/reliability.md

The workload is open-loop: request ``i`` is due at ``start + i / rate`` whatever happened to the
requests before it (at most ``--max-in-flight`` outstanding; a request that cannot be sent on
time is counted as ``late``). Latency is measured from the due time, so a stalled plane shows up
as latency rather than as a lower send rate. Model ``k`` (by popularity rank) is chosen with
probability proportional to ``1 / k**s`` (``--zipf-s``), requests go round-robin to the pods.
With ``--capacity`` below what all models need, the tail of the distribution keeps loading and
evicting: the soak then also exercises the load/evict path.

Growth flag: for each process, the RSS just after the warm-up (mean of the first few samples) is
compared with the RSS at the end (mean of the last few); more than ``--growth-mib`` MiB *and*
``--growth-pct`` percent more is flagged. The least-squares slope over the post-warm-up samples
is printed as MiB/hour for information (a short run extrapolates badly, so it does not flag).
Exit code 1 when errors or growth were flagged (so it can gate a nightly job).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import pathlib
import random
import sys
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field

import grpc
import grpc.aio
import numpy as np
import psutil

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))
from harness import embedded_plane, machine_line, table  # noqa: E402

from plane import demo  # noqa: E402
from plane.api import ModelSpec, PlaneClient  # noqa: E402
from plane.proto import inference_pb2 as ipb  # noqa: E402
from plane.proto import inference_pb2_grpc as igrpc  # noqa: E402

MIB = 1024 * 1024


@dataclass
class Window:
    start_s: float
    requests: int = 0
    errors: Counter = field(default_factory=Counter)
    late: int = 0
    latencies_ms: list[float] = field(default_factory=list)

    def pct(self, q: float) -> float:
        if not self.latencies_ms:
            return float("nan")
        data = sorted(self.latencies_ms)
        return data[min(len(data) - 1, int(q / 100 * len(data)))]


@dataclass
class Sample:
    t_s: float
    rss: dict[str, int]


def zipf_weights(n: int, s: float) -> list[float]:
    w = [1.0 / (k**s) for k in range(1, n + 1)]
    total = sum(w)
    return [x / total for x in w]


def build_requests(models: list[demo.DemoModel]) -> dict[str, ipb.ModelInferRequest]:
    out = {}
    for m in models:
        x = demo.sample_input(m.dataset).astype(np.float32)
        req = ipb.ModelInferRequest(model_name=m.model_id)
        req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        req.raw_input_contents.append(x.tobytes())
        out[m.model_id] = req
    return out


class RssSampler:
    def __init__(self, pids: dict[str, int], every_s: float):
        self.procs = {name: psutil.Process(pid) for name, pid in pids.items() if pid}
        self.every_s = every_s
        self.samples: list[Sample] = []

    def sample(self, t_s: float) -> None:
        rss = {}
        for name, proc in self.procs.items():
            try:
                rss[name] = proc.memory_info().rss
            except psutil.Error:
                rss[name] = 0  # the process is gone: shows as 0 (and as an error in the table)
        self.samples.append(Sample(t_s, rss))

    async def run(self, t0: float, stop: asyncio.Event) -> None:
        while not stop.is_set():
            self.sample(time.perf_counter() - t0)
            try:
                await asyncio.wait_for(stop.wait(), self.every_s)
            except TimeoutError:
                pass
        self.sample(time.perf_counter() - t0)


async def drive(endpoints: list[str], requests: dict[str, ipb.ModelInferRequest], weights: list[float],
                args: argparse.Namespace, sampler: RssSampler) -> list[Window]:
    channels = [grpc.aio.insecure_channel(ep) for ep in endpoints]
    stubs = [igrpc.GRPCInferenceServiceStub(ch) for ch in channels]
    ids = list(requests)
    rng = random.Random(args.seed)
    duration = args.minutes * 60
    n_windows = max(1, int(np.ceil(duration / args.window)))
    windows = [Window(i * args.window) for i in range(n_windows)]
    sem = asyncio.Semaphore(args.max_in_flight)
    pending: set[asyncio.Task] = set()
    stop = asyncio.Event()
    t0 = time.perf_counter()
    sampler_task = asyncio.create_task(sampler.run(t0, stop))

    async def one(i: int, due: float, model_id: str) -> None:
        w = windows[min(int((due - t0) / args.window), n_windows - 1)]
        try:
            await stubs[i % len(stubs)].ModelInfer(requests[model_id], timeout=args.timeout)
            w.latencies_ms.append((time.perf_counter() - due) * 1000)
        except grpc.aio.AioRpcError as exc:
            w.errors[exc.code().name] += 1
        except Exception as exc:  # noqa: BLE001 - counted
            w.errors[type(exc).__name__] += 1
        finally:
            w.requests += 1
            sem.release()

    i = 0
    last_report = t0
    while True:
        due = t0 + i / args.rate
        if due - t0 >= duration:
            break
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        if sem.locked():
            windows[min(int((due - t0) / args.window), n_windows - 1)].late += 1
        await sem.acquire()
        model_id = ids[rng.choices(range(len(ids)), weights)[0]]
        task = asyncio.create_task(one(i, due, model_id))
        pending.add(task)
        task.add_done_callback(pending.discard)
        i += 1
        now = time.perf_counter()
        if now - last_report >= 10:
            last_report = now
            print(f"  {now - t0:5.0f}s: {i} requests sent", file=sys.stderr, flush=True)
    if pending:
        await asyncio.wait(pending, timeout=args.timeout + 5)
    stop.set()
    await sampler_task
    for ch in channels:
        await ch.close()
    return windows


def rss_at(samples: list[Sample], t_s: float) -> dict[str, int]:
    """The last sample taken at or before ``t_s`` (the first one if none)."""
    best = samples[0]
    for s in samples:
        if s.t_s <= t_s:
            best = s
    return best.rss


def growth_report(samples: list[Sample], warmup_s: float, args: argparse.Namespace) -> tuple[list[list[str]], bool]:
    rows, flagged = [], False
    after = [s for s in samples if s.t_s >= warmup_s]
    if len(after) < 2:
        return [["-", "run shorter than the warm-up: no growth check", "", "", "", ""]], False
    k = max(1, min(3, len(after) // 3))  # average a few samples at each end: RSS is noisy
    for name in after[0].rss:
        b = sum(s.rss[name] for s in after[:k]) / k
        e = sum(s.rss[name] for s in after[-k:]) / k
        t = np.array([s.t_s for s in after])
        y = np.array([s.rss[name] for s in after], dtype=float)
        slope = float(np.polyfit(t, y, 1)[0]) if len(after) >= 3 else 0.0  # bytes per second
        delta = e - b
        per_hour = slope * 3600  # informative only: short runs extrapolate badly
        grew = delta > args.growth_mib * MIB and delta > b * args.growth_pct / 100
        flagged |= grew
        rows.append([name, f"{b / MIB:.1f}", f"{e / MIB:.1f}", f"{delta / MIB:+.1f}",
                     f"{per_hour / MIB:+.1f}", "GROWTH" if grew else "ok"])
    return rows, flagged


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--minutes", type=float, default=10.0)
    p.add_argument("--rate", type=float, default=50.0, help="requests per second (open loop)")
    p.add_argument("--models", type=int, default=30, help="demo models to generate and register")
    p.add_argument("--zipf-s", type=float, default=1.1, help="Zipf exponent of model popularity")
    p.add_argument("--pods", type=int, default=3)
    p.add_argument("--capacity", default="256MiB", help="model cache per pod (small: loads and evictions)")
    p.add_argument("--window", type=float, default=60.0, help="seconds per table row")
    p.add_argument("--warmup", type=float, default=60.0, help="seconds before RSS growth is measured")
    p.add_argument("--rss-every", type=float, default=5.0, help="seconds between RSS samples")
    p.add_argument("--growth-mib", type=float, default=20.0)
    p.add_argument("--growth-pct", type=float, default=10.0)
    p.add_argument("--max-in-flight", type=int, default=64)
    p.add_argument("--timeout", type=float, default=30.0, help="per-request deadline, seconds")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", help="also write the raw results to this file")
    args = p.parse_args()

    print(machine_line())
    print(f"soak: {args.minutes:g} min at {args.rate:g} req/s, {args.models} demo models, Zipf s={args.zipf_s}, "
          f"{args.pods} pods x {args.capacity}", flush=True)
    with tempfile.TemporaryDirectory(prefix="mesh-soak-models-") as tmp:
        print("generating demo models ...", file=sys.stderr, flush=True)
        models = demo.generate_models(pathlib.Path(tmp), args.models, seed=args.seed)
        with embedded_plane(pods=args.pods, capacity=args.capacity, lease_ttl_s=5, usage_flush_s=2.0) as (lp,
                                                                                                       settings):
            client = PlaneClient.connect(settings)
            client.set_storage("default", "local", {"path": tmp})
            client.register_models([ModelSpec(m.model_id, m.path) for m in models])
            rng = random.Random(args.seed)
            order = models[:]
            rng.shuffle(order)  # popularity rank is independent of the generation order
            requests = build_requests(order)
            pids = {pod.pod_id: pod.pid for pod in lp.pods}
            pids["etcd"] = lp.etcd_pid
            sampler = RssSampler(pids, args.rss_every)
            windows = asyncio.run(drive([pod.endpoint for pod in lp.pods], requests,
                                        zipf_weights(len(order), args.zipf_s), args, sampler))
            overview = client.overview(window_s=int(args.minutes * 60) + 60)
            events = Counter(e.kind for e in client.events(limit=0))
            alive = {name: proc.is_running() for name, proc in sampler.procs.items()}
            client.close()

    names = list(sampler.samples[0].rss)
    headers = ["window", "requests", "errors", "late", "p50 ms", "p90 ms", "p99 ms", "max ms"] + [
        f"{n} RSS MiB" for n in names]
    rows = []
    total_err = 0
    for w in windows:
        rss = rss_at(sampler.samples, w.start_s + args.window)
        n_err = sum(w.errors.values())
        total_err += n_err
        err = str(n_err) + (f" ({', '.join(f'{k} {v}' for k, v in w.errors.items())})" if n_err else "")
        rows.append([f"{w.start_s / 60:.1f}-{(w.start_s + args.window) / 60:.1f} min", str(w.requests), err,
                     str(w.late), f"{w.pct(50):.1f}", f"{w.pct(90):.1f}", f"{w.pct(99):.1f}",
                     f"{max(w.latencies_ms, default=float('nan')):.1f}"]
                    + [f"{rss[n] / MIB:.1f}" for n in names])
    print()
    print(table(headers, rows))
    growth_rows, grew = growth_report(sampler.samples, args.warmup, args)
    print()
    print(f"RSS after the warm-up ({args.warmup:g}s) vs at the end; flagged when > {args.growth_mib:g} MiB and "
          f"> {args.growth_pct:g}%")
    print(table(["process", "after warm-up MiB", "end MiB", "change MiB", "slope MiB/h", "verdict"], growth_rows))
    total = sum(w.requests for w in windows)
    print()
    print(f"total: {total} requests, {total_err} errors, {sum(w.late for w in windows)} late; "
          f"loads {events.get('loaded', 0)}, evictions {events.get('evict', 0)}, "
          f"load failures {events.get('load-failed', 0)}; models loaded at the end {overview.models_loaded}; "
          f"processes alive at the end: {sum(alive.values())}/{len(alive)}")
    if args.json:
        pathlib.Path(args.json).write_text(json.dumps({
            "args": vars(args),
            "windows": [{"start_s": w.start_s, "requests": w.requests, "errors": dict(w.errors), "late": w.late,
                         "p50": w.pct(50), "p90": w.pct(90), "p99": w.pct(99)} for w in windows],
            "rss": [{"t_s": s.t_s, **s.rss} for s in sampler.samples],
            "growth": growth_rows, "events": dict(events),
        }, indent=2))
    return 1 if (total_err or grew or not all(alive.values())) else 0


if __name__ == "__main__":
    sys.exit(main())

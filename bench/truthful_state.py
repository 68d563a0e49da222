"""Truthful state, measured: does the registry equal what the pods hold?

    python bench/truthful_state.py [--models 200] [--requests 3000] [--pause 20] [--json out.json]

One embedded plane (its own etcd, 3 pods x 2 MiB) runs the scenarios the truthful-state issue
describes, and the table reports:

* drift after quiesce: |copies the registry lists for a pod - copies the pod holds|, summed over
  pods, 2 s after Zipf traffic sent to every pod at once stops; and the time until it is 0;
* pods over capacity (bytes the registry charges a pod, and bytes the pod charges itself);
* evictions while idle: 10 s of planner rounds (every 1 s, preloading on) after the traffic;
* same-file size spread: one ONNX file registered under six ids, each loaded, max/min size;
* held copies reloaded after etcd is frozen (SIGSTOP) for ``--pause`` seconds, longer than the
  pods' leases, then resumed with traffic to every pod;
* the largest module of plane/, console/ and dashboard/ in lines.

Nothing here asserts; the same properties are tested in tests/reliability/test_truthful_state.py.
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import random
import signal
import sys
import tempfile
import threading
import time

import grpc

BENCH_DIR = pathlib.Path(__file__).resolve().parent
sys.path.insert(0, str(BENCH_DIR))

from harness import embedded_plane, machine_line, table  # noqa: E402

from plane import demo  # noqa: E402
from plane.api import ModelSpec, PlaneClient  # noqa: E402
from plane.proto import inference_pb2 as ipb  # noqa: E402
from plane.proto import inference_pb2_grpc as igrpc  # noqa: E402
from plane.records import CopyState  # noqa: E402

ROOT = BENCH_DIR.parent
MIB = 1024**2


def per_pod(client: PlaneClient) -> dict[str, dict[str, int]]:
    snap = client.snapshot()
    out = {}
    for pod in snap.pods:
        listed = [m.copies[pod.pod_id] for m in snap.models if pod.pod_id in m.copies]
        out[pod.pod_id] = {"listed": len(listed), "held": pod.count, "listed_bytes": sum(c.size for c in listed),
                           "held_bytes": pod.used, "capacity": pod.capacity,
                           "loading": sum(1 for c in listed if c.state != CopyState.LOADED)}
    return out


def drift_of(state: dict[str, dict[str, int]]) -> int:
    return sum(abs(v["listed"] - v["held"]) + v["loading"] for v in state.values())


def request(model: demo.DemoModel) -> ipb.ModelInferRequest:
    x = demo.sample_input(model.dataset, 1)
    req = ipb.ModelInferRequest(model_name=model.model_id)
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def zipf_traffic(endpoints: list[str], models: list[demo.DemoModel], total: int, per_pod_threads: int = 2) -> int:
    rng = random.Random(1)
    order = list(models)
    rng.shuffle(order)
    picks = rng.choices(order, [1.0 / (r + 1) for r in range(len(order))], k=total)
    workers = [ep for ep in endpoints for _ in range(per_pod_threads)]
    errors = [0]

    def run(k: int, endpoint: str) -> None:
        with grpc.insecure_channel(endpoint) as ch:
            stub = igrpc.GRPCInferenceServiceStub(ch)
            for m in picks[k::len(workers)]:
                try:
                    stub.ModelInfer(request(m), timeout=60)
                except grpc.RpcError:
                    errors[0] += 1

    threads = [threading.Thread(target=run, args=(k, ep)) for k, ep in enumerate(workers)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return errors[0]


def largest_module() -> tuple[str, int]:
    best = ("", 0)
    for pkg in ("plane", "console", "dashboard"):
        for path in (ROOT / pkg).rglob("*.py"):
            if "proto" in path.parts:
                continue  # generated code
            n = len(path.read_text().splitlines())
            if n > best[1]:
                best = (str(path.relative_to(ROOT)), n)
    return best


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=200)
    ap.add_argument("--requests", type=int, default=3000)
    ap.add_argument("--pause", type=float, default=20.0, help="seconds etcd stays frozen")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()

    rows: list[list[str]] = []
    checks: list[dict] = []

    def report(what: str, value: float, target: str, met: bool, shown: str | None = None) -> None:
        rows.append([what, shown if shown is not None else f"{value:g}", target, "met" if met else "**not met**"])
        checks.append({"target": f"{what} {target}", "value": value, "met": met})

    with tempfile.TemporaryDirectory(prefix="mesh-truth-") as tmp:
        models_dir = pathlib.Path(tmp) / "models"
        print(f"generating {args.models} demo models", file=sys.stderr)
        models = demo.generate_models(models_dir, args.models, seed=5)
        same = models_dir / "same" / "model.onnx"
        same.parent.mkdir()
        same.write_bytes((models_dir / models[0].path).read_bytes())
        with embedded_plane(pods=3, capacity=2 * MIB, lease_ttl_s=3, planner_interval_s=1, preload=True,
                            usage_flush_s=1) as (plane, settings):
            client = PlaneClient.connect(settings)
            client.set_storage("default", "local", {"path": str(models_dir)})
            client.register_models([ModelSpec(m.model_id, m.path) for m in models])
            endpoints = [p.endpoint for p in plane.pods]

            print(f"sending {args.requests} Zipf requests to every pod at once", file=sys.stderr)
            errors = zipf_traffic(endpoints, models, args.requests)
            quiet = time.monotonic()
            settled = None
            while time.monotonic() - quiet < 30:
                if drift_of(per_pod(client)) == 0:
                    settled = time.monotonic() - quiet
                    break
                time.sleep(0.1)
            time.sleep(max(0.0, 2 - (time.monotonic() - quiet)))
            state = per_pod(client)
            report("copies of drift 2 s after traffic", drift_of(state), "= 0", drift_of(state) == 0)
            rows.append(["time until registry == pods", f"{settled:.2f} s" if settled is not None else "> 30 s",
                         "", ""])
            over = sum(1 for v in state.values() if max(v["listed_bytes"], v["held_bytes"]) > v["capacity"])
            report("pods over capacity", over, "= 0", over == 0)
            evictions = sum(1 for e in client.events(limit=0) if e.kind == "evict")
            rows.append(["evictions during the traffic", str(evictions), "", ""])
            rows.append(["failed requests during the traffic", str(errors), "", ""])

            idle_from = int(time.time() * 1000)
            time.sleep(10)
            idle = sum(1 for e in client.events(since_ms=idle_from, limit=0) if e.kind == "evict")
            report("evictions on the idle plane (10 s)", idle, "= 0", idle == 0)

            ids = [f"same-file-{i}" for i in range(6)]
            for model_id in ids:
                client.register_model(model_id, path="same/model.onnx", load_now=True, sync=True)
            sizes = [client.get_model(m).size for m in ids]
            spread = max(sizes) / min(sizes)
            report("same-file size spread (6 loads)", round(spread, 3), "<= 1.1", spread <= 1.1,
                   f"{spread:.3f} ({min(sizes)}..{max(sizes)} B)")

            held = {m.model_id: pods for m in client.list_models() if (pods := m.loaded_on())}
            loads_before = sum(1 for e in client.events(limit=0) if e.kind == "load" and e.model in held)
            print(f"freezing etcd for {args.pause:.0f}s with {len(held)} models held", file=sys.stderr)
            os.kill(plane.etcd_pid, signal.SIGSTOP)
            time.sleep(args.pause)
            os.kill(plane.etcd_pid, signal.SIGCONT)
            by_id = {m.model_id: m for m in models}
            for endpoint in endpoints:
                with grpc.insecure_channel(endpoint) as ch:
                    stub = igrpc.GRPCInferenceServiceStub(ch)
                    for model_id in list(held)[:30]:
                        if model_id in by_id:
                            try:
                                stub.ModelInfer(request(by_id[model_id]), timeout=30)
                            except grpc.RpcError as exc:
                                print(f"  {model_id}: {exc.code().name}", file=sys.stderr)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and (len(client.pods()) < 3 or drift_of(per_pod(client))):
                time.sleep(0.2)
            loads_after = sum(1 for e in client.events(limit=0) if e.kind == "load" and e.model in held)
            reloaded = loads_after - loads_before
            report(f"held copies reloaded after a {args.pause:.0f} s etcd pause", reloaded, "= 0", reloaded == 0)
            report("copies of drift after the pause", drift_of(per_pod(client)), "= 0",
                   drift_of(per_pod(client)) == 0)
            client.close()

    name, lines = largest_module()
    report("largest module (lines)", lines, "<= 400", lines <= 400, f"{lines} ({name})")
    print(f"Truthful state · {machine_line()} · `python bench/truthful_state.py --models {args.models} "
          f"--requests {args.requests} --pause {args.pause:g}`\n")
    print(table(["measure", "value", "target", "verdict"], rows))
    if args.json:
        args.json.write_text(json.dumps({"checks": checks}, indent=2))


if __name__ == "__main__":
    main()

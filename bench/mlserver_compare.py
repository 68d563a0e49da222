"""Hit path, three ways in one run: a plane pod, the bare grpc.aio floor, and MLServer.

Throughput and p50/p99 latency of KServe V2 ``ModelInfer`` over gRPC at several
concurrencies, for a small (logistic regression) and a medium (100-tree forest) ONNX model.
All three servers run the same onnxruntime session settings (CPU, 1 intra-op thread) and are
driven by the same client (tritonclient.grpc.aio, closed loop), taking turns within each
repetition so that machine noise hits all of them alike.

MLServer is installed by this script into its own virtualenv under the bench cache dir
(``$MESH_BENCH_CACHE`` or ``~/.cache/mesh-plane-bench``) the first time, and serves the model
with the custom runtime in ``bench/mlserver_runtime/``.

    python bench/mlserver_compare.py [--seconds 3] [--reps 3] [--concurrency 1 8 32]

Targets: mesh >= 0.85x bare throughput; mesh >= 1.5x MLServer throughput; mesh p99 minus
bare p99 <= 1 ms at concurrency 1.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import subprocess
import sys
import tempfile
from collections.abc import Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import (  # noqa: E402
    BENCH_DIR,
    bare_server_process,
    drive,
    embedded_plane,
    machine_line,
    median_spread,
    table,
)

from plane import demo  # noqa: E402
from plane.api import PlaneClient  # noqa: E402

RUNTIME_DIR = BENCH_DIR / "mlserver_runtime"
# uvloop 0.22+ makes asyncio.get_event_loop() raise outside a running loop, which kills
# MLServer 1.7's parallel inference workers at start ("There is no current event loop").
MLSERVER_PACKAGES = ["mlserver", "onnxruntime", "numpy", "uvloop<0.22"]


def cache_dir() -> pathlib.Path:
    return harness.cache_dir()


def ensure_mlserver() -> tuple[pathlib.Path | None, str]:
    """Return (path of the ``mlserver`` executable, "") or (None, why it could not be installed)."""
    return harness.ensure_venv("mlserver-venv", MLSERVER_PACKAGES, "import mlserver, onnxruntime", exe="mlserver")


cpu_seconds = harness.cpu_seconds


@contextlib.contextmanager
def mlserver_server(exe: pathlib.Path, model_path: pathlib.Path, name: str, *,
                    workers: int) -> Iterator[tuple[str, int]]:
    """MLServer serving ``model_path`` as ``name`` with the custom onnxruntime runtime."""
    settings = {"implementation": "onnx_runtime.OnnxRuntime", "parameters": {"uri": str(model_path.resolve())}}
    with harness.mlserver_process(exe, {name: settings}, workers=workers, pythonpath=[RUNTIME_DIR],
                                  timeout=90) as server:
        yield server.grpc_endpoint, server.pid


def fmt_lat(p50: list[float], p99: list[float]) -> str:
    if not p50:
        return "-"
    return f"{median_spread(p50)[0]:.2f} / {median_spread(p99)[0]:.2f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0, help="measured seconds per run")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    ap.add_argument("--mlserver-workers", type=int, default=1,
                    help="MLServer parallel_workers (its default 1: inference in a worker process; 0: in-process)")
    ap.add_argument("--no-mlserver", action="store_true", help="skip MLServer (bare and mesh only)")
    ap.add_argument("--json", type=pathlib.Path, help="also write targets and raw numbers here")
    args = ap.parse_args()

    exe, why = (None, "skipped (--no-mlserver)") if args.no_mlserver else ensure_mlserver()
    if exe is None:
        print(f"MLServer not measured: {why}", file=sys.stderr)

    checks: list[dict] = []
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "medium").mkdir()
        models = demo.generate_models(root / "gen", 1, seed=0)  # logistic regression on digits
        small_path = root / "gen" / models[0].path
        demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
        cases = [("small", "small (logreg, digits)", small_path),
                 ("medium", "medium (forest ×100)", root / "medium" / "model.onnx")]
        x = demo.sample_input("digits", 1)
        with embedded_plane(pods=1, capacity=512 * 1024**2) as (plane, settings):
            endpoint = plane.pods[0].endpoint
            with PlaneClient.connect(settings) as client:
                client.set_storage("default", "local", {"path": str(root)})
                for model_id, label, path in cases:
                    client.register_model(model_id, path=str(path.relative_to(root)))
                    client.ensure_loaded(model_id, sync=True)
                    with contextlib.ExitStack() as stack:
                        bare, bare_pid = stack.enter_context(bare_server_process(path))
                        mls, mls_pid = (stack.enter_context(mlserver_server(exe, path, model_id,
                                                                            workers=args.mlserver_workers))
                                        if exe else (None, 0))
                        for conc in args.concurrency:
                            res: dict[str, dict[str, list[float]]] = {
                                k: {"rps": [], "p50": [], "p99": [], "cpu": []} for k in ("bare", "mesh", "mlserver")
                            }
                            targets = [("bare", bare, "bare", bare_pid),
                                       ("mesh", endpoint, model_id, plane.pods[0].pid)]
                            if mls:
                                targets.append(("mlserver", mls, model_id, mls_pid))
                            for rep in range(args.reps):
                                # rotate the order so that no server always runs first or last
                                order = targets[rep % len(targets):] + targets[:rep % len(targets)]
                                for key, ep, name, pid in order:
                                    drive(ep, name, x, concurrency=conc, seconds=0.5, warmup_s=0)  # warm-up
                                    cpu0 = cpu_seconds(pid)
                                    r = drive(ep, name, x, concurrency=conc, seconds=args.seconds, warmup_s=0)
                                    res[key]["cpu"].append((cpu_seconds(pid) - cpu0) * 1e6 / max(1, r.requests))
                                    if r.errors:
                                        print(f"{key} {label} c={conc}: {r.errors} errors", file=sys.stderr)
                                    res[key]["rps"].append(r.rps)
                                    res[key]["p50"].append(r.pct(50))
                                    res[key]["p99"].append(r.pct(99))
                            b, m, s = res["bare"], res["mesh"], res["mlserver"]
                            vs_bare = [mm / bb for mm, bb in zip(m["rps"], b["rps"], strict=True)]
                            vs_mls = [mm / ss for mm, ss in zip(m["rps"], s["rps"], strict=True)] if s["rps"] else []
                            p99_over = median_spread(m["p99"])[0] - median_spread(b["p99"])[0]
                            rows.append([
                                label, str(conc),
                                "{:,.0f} ±{:,.0f}".format(*median_spread(b["rps"])),
                                "{:,.0f} ±{:,.0f}".format(*median_spread(m["rps"])),
                                "{:,.0f} ±{:,.0f}".format(*median_spread(s["rps"])) if s["rps"] else "-",
                                f"{median_spread(vs_bare)[0]:.2f}×",
                                f"{median_spread(vs_mls)[0]:.2f}×" if vs_mls else "-",
                                fmt_lat(b["p50"], b["p99"]), fmt_lat(m["p50"], m["p99"]),
                                fmt_lat(s["p50"], s["p99"]),
                                f"{p99_over:+.2f}",
                                " / ".join(f"{median_spread(res[k]['cpu'])[0]:,.0f}" if res[k]["cpu"] else "-"
                                           for k in ("bare", "mesh", "mlserver")),
                            ])
                            print(" | ".join(rows[-1]), file=sys.stderr)
                            where = f"{model_id} c={conc}"
                            checks.append({"target": f"mesh/bare throughput ≥ 0.85 ({where})",
                                           "value": round(median_spread(vs_bare)[0], 3),
                                           "met": median_spread(vs_bare)[0] >= 0.85})
                            if vs_mls:
                                checks.append({"target": f"mesh/MLServer throughput ≥ 1.5 ({where})",
                                               "value": round(median_spread(vs_mls)[0], 3),
                                               "met": median_spread(vs_mls)[0] >= 1.5})
                            if conc == 1:
                                checks.append({"target": f"p99 overhead over bare ≤ 1 ms ({where})",
                                               "value": round(p99_over, 3), "met": p99_over <= 1.0})

    title = (f"Hit path: mesh vs bare vs MLServer — {machine_line()} — {args.reps} reps × {args.seconds:g}s, "
             f"median ±half-range — `python bench/mlserver_compare.py --seconds {args.seconds:g} --reps {args.reps}`")
    print(title + "\n")
    print(table(["model", "conc", "bare req/s", "mesh req/s", "MLServer req/s", "mesh/bare", "mesh/MLServer",
                 "bare p50/p99 ms", "mesh p50/p99 ms", "MLServer p50/p99 ms", "mesh−bare p99 ms",
                 "server CPU µs/req bare / mesh / MLServer"], rows))
    if exe is None:
        print(f"\nMLServer not measured: {why}")
    else:
        print(f"\nMLServer {_mlserver_version(exe)}, parallel_workers={args.mlserver_workers}, custom runtime "
              "bench/mlserver_runtime/onnx_runtime.py.")
    print("Server CPU µs/req: user+system CPU of the server process (and MLServer's worker processes) over the "
          "measured seconds, divided by the requests answered; less sensitive to other load on the machine than "
          "req/s.")
    if args.json:
        args.json.write_text(json.dumps({"bench": "mlserver_compare", "title": title, "checks": checks,
                                         "mlserver": why or "measured"}, indent=2))


def _mlserver_version(exe: pathlib.Path) -> str:
    py = exe.parent / "python"
    out = subprocess.run([str(py), "-c", "import mlserver; print(mlserver.__version__)"], capture_output=True,
                         text=True)
    return out.stdout.strip() or "?"


if __name__ == "__main__":
    main()

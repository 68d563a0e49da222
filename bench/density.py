"""Density: a registry of 10,000 models and 2,000 resident copies across 3 pods.

Reports

* batch registration throughput (``PlaneClient.register_models``) of N generated tiny models
  (``y = 2x + 1``; they share a few hundred distinct files), with the spread over its chunks;
* etcd's database size (``status().db_size``) before and after, and the bytes of the
  registry's model records;
* each pod's resident memory (psutil RSS of the pod process): idle with an empty registry,
  idle with N models registered, and with M models resident across the 3 pods;
* the wall time of ``PlaneClient.snapshot()`` (what the console's and the dashboard's
  placement views read) over that registry, median of several, and of building its
  placement matrix.

    python bench/density.py [--models 10000] [--resident 2000] [--reps 5]

Target: registration >= 500 models/s through the batch path.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import psutil  # noqa: E402
from harness import embedded_plane, machine_line, median_spread, table  # noqa: E402

from plane import demo, mgmt_client  # noqa: E402
from plane.api import ModelSpec, PlaneClient  # noqa: E402
from plane.settings import format_size  # noqa: E402


def timed_snapshots(pc: PlaneClient, reps: int) -> tuple[list[float], list[float], str]:
    """Wall ms of ``PlaneClient.snapshot()`` and of its placement matrix; the error if it fails."""
    snap_ms, matrix_ms = [], []
    for _ in range(reps):
        t = time.perf_counter()
        try:
            snap = pc.snapshot()
        except Exception as exc:  # noqa: BLE001 - reported in the table
            return snap_ms, matrix_ms, f"{type(exc).__name__}: {exc}"
        snap_ms.append((time.perf_counter() - t) * 1000)
        t = time.perf_counter()
        snap.matrix()
        matrix_ms.append((time.perf_counter() - t) * 1000)
    return snap_ms, matrix_ms, ""


def raw_read(endpoint: str, prefix: str, reps: int) -> tuple[dict[str, int], list[float], list[float]]:
    """Read the whole registry prefix with a client whose receive limit is 256 MiB (not the
    default 4 MiB): bytes per table, ms of the read, ms of decoding it into a PlacementSnapshot."""
    import asyncio

    import aetcd

    from plane.api import snapshot_from_tables

    host, _, port = endpoint.rpartition(":")

    async def go() -> tuple[dict[str, int], list[float], list[float]]:
        client = aetcd.Client(host, int(port), options={"grpc.max_receive_message_length": 256 * 1024**2})
        sizes: dict[str, int] = {}
        read_ms, decode_ms = [], []
        try:
            for _ in range(reps):
                t = time.perf_counter()
                res = await client.get_prefix(f"{prefix}/".encode())
                read_ms.append((time.perf_counter() - t) * 1000)
                tables: dict[str, list[tuple[str, bytes]]] = {}
                sizes = {}
                for kv in res.kvs:
                    table, _, name = kv.key.decode()[len(prefix) + 1:].partition("/")
                    tables.setdefault(table, []).append((name, kv.value))
                    sizes[table] = sizes.get(table, 0) + len(kv.key) + len(kv.value)
                t = time.perf_counter()
                snapshot_from_tables(tables).matrix()
                decode_ms.append((time.perf_counter() - t) * 1000)
        finally:
            await client.close()
        return sizes, read_ms, decode_ms

    return asyncio.run(go())


def late_pod(settings, root: pathlib.Path, timeout: float = 45) -> str:
    """Start one more pod against the full registry; say whether it becomes ready."""
    import contextlib

    import tritonclient.grpc as tc

    from plane import local

    port = local.free_port()
    log = root / "late-pod.log"
    proc = local.start_pod(settings, port=port, metrics_port=local.free_port(), pod_id="pod-late", log_path=log)
    t0 = time.perf_counter()
    try:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(Exception):
                if tc.InferenceServerClient(f"127.0.0.1:{port}").is_server_ready():
                    return f"ready in {time.perf_counter() - t0:.1f} s"
            time.sleep(0.2)
        tail = [ln for ln in log.read_text(errors="replace").splitlines() if "rror" in ln][-1:]
        state = f"exited {proc.returncode}" if proc.poll() is not None else f"not ready after {timeout:.0f} s"
        return f"**{state}**" + (f": `{tail[0].strip()[:160]}`" if tail else "")
    finally:
        local.stop_process(proc, timeout=5)


def fmt_sizes(sizes: dict[str, int]) -> str:
    total = sum(sizes.values())
    parts = ", ".join(f"{k} {format_size(v)}" for k, v in sorted(sizes.items(), key=lambda kv: -kv[1])[:3])
    return f"**{format_size(total)}** ({parts})"


def snap_cell(snap_ms: list[float], matrix_ms: list[float], err: str) -> str:
    if err:
        return f"**fails**: {err[:150]}"
    return "{:.0f} ms ±{:.0f} (+ matrix {:.1f} ms)".format(*median_spread(snap_ms), statistics.median(matrix_ms))


def rss(pids: list[int]) -> list[int]:
    return [psutil.Process(p).memory_info().rss for p in pids]


def mib(n: float) -> str:
    return f"{n / 1024**2:,.1f} MiB"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=10_000)
    ap.add_argument("--resident", type=int, default=2_000)
    ap.add_argument("--files", type=int, default=200, help="distinct model files the models point at")
    ap.add_argument("--reps", type=int, default=5, help="snapshot timings")
    ap.add_argument("--loaders", type=int, default=3, help="concurrent ensureLoaded calls while loading")
    ap.add_argument("--no-late-pod", dest="late_pod", action="store_false",
                    help="skip starting a 4th pod against the full registry")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()

    rows: list[list[str]] = []
    checks = []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        for i in range(args.files):
            demo.make_tiny_model(root / "tiny" / f"{i:03d}.onnx")
        with embedded_plane(pods=3, capacity=16 * 1024**3, preload=False, scale_up_rpm=1e12) as (plane, st):
            pids = [p.pid for p in plane.pods]
            with PlaneClient.connect(st) as pc:
                pc.set_storage("default", "local", {"path": str(root)})

                def db_size() -> int:
                    return pc.run_async(pc.registry.client.status()).db_size

                time.sleep(2)
                idle_empty = rss(pids)
                db0 = db_size()

                specs = [ModelSpec(f"tiny-{i:05d}", f"tiny/{i % args.files:03d}.onnx") for i in range(args.models)]
                marks: list[tuple[int, float]] = [(0, time.perf_counter())]
                t0 = time.perf_counter()
                created = pc.register_models(specs, progress=lambda done, total: marks.append(
                    (done, time.perf_counter())))
                reg_s = time.perf_counter() - t0
                chunk_rates = [(d1 - d0) / (t1 - s0) for (d0, s0), (d1, t1) in zip(marks, marks[1:], strict=False)]
                rate = created / reg_s
                print(f"registered {created} in {reg_s:.2f}s ({rate:,.0f}/s)", file=sys.stderr)
                time.sleep(3)  # let the pods' watches catch up
                idle_reg = rss(pids)
                db1 = db_size()

                # snapshot over the registry (before loading anything)
                snap_times, matrix_times, snap_err = timed_snapshots(pc, args.reps)
                sizes1, _, _ = raw_read(st.etcd, st.etcd_prefix, 1)

                # load M models across the pods (each call asks a pod; the pod chooses where)
                ids = [s.model_id for s in specs[: args.resident]]
                endpoints = [p.endpoint for p in plane.pods]
                failures: list[str] = []

                def load(i_mid: tuple[int, str]) -> None:
                    i, mid = i_mid
                    try:
                        mgmt_client.ensure_loaded([endpoints[i % len(endpoints)]], mid, sync=True, timeout=120)
                    except Exception as exc:  # noqa: BLE001 - counted
                        failures.append(f"{mid}: {exc}")

                t0 = time.perf_counter()
                with ThreadPoolExecutor(args.loaders) as ex:
                    list(ex.map(load, enumerate(ids)))
                load_s = time.perf_counter() - t0
                print(f"loaded {len(ids) - len(failures)} in {load_s:.1f}s", file=sys.stderr)
                time.sleep(3)
                resident_rss = rss(pids)
                db2 = db_size()
                snap_times2, matrix_times2, snap_err2 = timed_snapshots(pc, args.reps)
                sizes2, read_ms2, decode_ms2 = raw_read(st.etcd, st.etcd_prefix, args.reps)
                # copies per pod as each pod publishes it (its instance record's count)
                per_pod = {p.pod_id: p.count for p in pc.pods()}
                late = late_pod(st, root) if args.late_pod else "not tried"

    checks.append({"target": "batch registration ≥ 500 models/s", "value": round(rate, 1), "met": rate >= 500})
    checks.append({"target": f"snapshot() over {args.models:,} registered + {args.resident:,} resident works "
                             "(no numeric target)", "value": "fails" if snap_err2 else "works",
                   "met": not snap_err2})
    rows = [
        ["registration (batch path)", f"{created:,} models in {reg_s:.2f} s = **{rate:,.0f} models/s** "
                                      f"(per 512-chunk: median {statistics.median(chunk_rates):,.0f}/s, "
                                      f"range {min(chunk_rates):,.0f}–{max(chunk_rates):,.0f})"],
        ["etcd db size", f"{format_size(db0)} empty → {format_size(db1)} with {args.models:,} registered → "
                         f"{format_size(db2)} with {args.resident:,} resident"],
        ["registry bytes (keys + values)", f"{args.models:,} registered: " + fmt_sizes(sizes1) + f" · "
                                           f"{args.resident:,} resident: " + fmt_sizes(sizes2)],
        ["pod RSS idle, empty registry", " / ".join(mib(v) for v in idle_empty)],
        [f"pod RSS idle, {args.models:,} registered", " / ".join(mib(v) for v in idle_reg)],
        [f"pod RSS, {args.resident:,} resident", " / ".join(mib(v) for v in resident_rss)
         + (f" (copies per pod: {' / '.join(str(per_pod[k]) for k in sorted(per_pod))})" if per_pod else "")],
        ["RSS growth per resident copy",
         f"{(sum(resident_rss) - sum(idle_reg)) / max(1, args.resident) / 1024:,.1f} KiB (all pods' growth / copies)"],
        [f"loading {args.resident:,} models ({args.loaders} concurrent ensureLoaded)",
         f"{load_s:.1f} s ({args.resident / load_s:,.0f} loads/s), {len(failures)} failures"],
        [f"snapshot(), {args.models:,} registered, 0 loaded", snap_cell(snap_times, matrix_times, snap_err)],
        [f"snapshot(), {args.models:,} registered, {args.resident:,} loaded",
         snap_cell(snap_times2, matrix_times2, snap_err2)],
        ["same read with a 256 MiB client receive limit",
         f"{statistics.median(read_ms2):.0f} ms read + {statistics.median(decode_ms2):.0f} ms decode "
         f"(median of {len(read_ms2)})"],
        ["a 4th pod started against the full registry", late],
    ]
    title = (f"Density — {machine_line()} — 3 pods, snapshot median ±half-range of {args.reps} — "
             f"`python bench/density.py --models {args.models} --resident {args.resident}`")
    print(title + "\n")
    print(table(["measure", "result"], rows))
    if failures:
        print("\nFirst load failures: " + "; ".join(failures[:5]))
    if args.json:
        args.json.write_text(json.dumps({"bench": "density", "title": title, "checks": checks,
                                         "snapshot_error": snap_err2,
                                         "rss": {"idle_empty": idle_empty, "idle_registered": idle_reg,
                                                 "resident": resident_rss}}, indent=2))


if __name__ == "__main__":
    main()

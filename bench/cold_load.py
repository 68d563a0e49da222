"""Cold load: time from request to response for a model that is registered but not loaded.

Four ways to get one inference out of a model file, per model, in one run:

* **ORT** — the floor: ``onnxruntime.InferenceSession(file)`` plus one ``run`` in this process
  (after a warm-up session, so onnxruntime's one-time set-up is not charged to it);
* **local** — the model is registered on local storage; the first ``ModelInfer`` to the pod
  (tritonclient.grpc) makes it load;
* **S3** — the model is registered on an S3 storage key served by moto's standalone server
  (``python -m moto.server``) on this machine; the first request downloads it;
* **disk cache** — a second registration of the same S3 object on the same pod: the load
  reads the pod's disk cache (the pod's "loaded" event must say ``from disk-cache``).

Each repetition uses fresh model ids (and fresh S3 object paths), so every measured request
is a real cold load. One pod, so the pod receiving the request is the one that loads.

    python bench/cold_load.py [--models 6] [--reps 3]

Target: cold load from local disk (and from the disk cache) <= 1.2 x ORT + 20 ms.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import pathlib
import re
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import embedded_plane, machine_line, median_spread, table  # noqa: E402

from plane import demo, local  # noqa: E402
from plane.api import PlaneClient  # noqa: E402

BUCKET = "mesh-bench"
CREDS = {"access_key_id": "testing", "secret_access_key": "testing"}


@contextlib.contextmanager
def moto_server() -> Iterator[str]:
    port = local.free_port()
    proc = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        local.wait_for_port("127.0.0.1", port, 30, proc)
        yield f"http://127.0.0.1:{port}"
    finally:
        local.stop_process(proc, timeout=5)


def ort_once(path: pathlib.Path, x) -> float:
    """ms for session creation + one inference, the way a pod creates sessions."""
    import onnxruntime as ort

    t0 = time.perf_counter()
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    sess.run(None, {"input": x})
    return (time.perf_counter() - t0) * 1000


def first_request(client, model_id: str, x) -> float:
    import tritonclient.grpc as tc

    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    t0 = time.perf_counter()
    client.infer(model_id, [inp], client_timeout=120)
    return (time.perf_counter() - t0) * 1000


def load_sources(pc: PlaneClient) -> dict[str, str]:
    """model id -> reason of its latest 'loaded' event ('from local in 12 ms')."""
    return {ev.model: ev.reason for ev in pc.events(limit=0) if ev.kind == "loaded"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=6, help="demo models (one per estimator kind) + the medium forest")
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()

    import boto3
    import tritonclient.grpc as tc

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp) / "models"
        print("training demo models ...", file=sys.stderr)
        models = [(m.model_id, m.path, m.estimator, m.dataset) for m in demo.generate_models(root, args.models, seed=7)]
        demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
        models.append(("medium-forest100", "medium/model.onnx", "forest ×100", "digits"))
        inputs = {mid: demo.sample_input(ds, 1) for mid, _, _, ds in models}
        sizes = {mid: (root / rel).stat().st_size for mid, rel, _, _ in models}

        results: dict[str, dict[str, list[float]]] = {mid: {"ort": [], "local": [], "s3": [], "disk": []}
                                                      for mid, *_ in models}
        bad_sources: list[str] = []
        pod_ms: dict[str, list[float]] = {"local": [], "s3": [], "disk": []}  # load time the pod reports
        with moto_server() as s3_url, embedded_plane(pods=1, capacity=2 * 1024**3, preload=False) as (plane, st):
            s3 = boto3.client("s3", endpoint_url=s3_url, aws_access_key_id="testing",
                              aws_secret_access_key="testing", region_name="us-east-1")
            s3.create_bucket(Bucket=BUCKET)
            for rep in range(args.reps + 1):  # rep 0 is a warm-up (connections, imports, page cache)
                for _mid, rel, _, _ in models:
                    s3.upload_file(str(root / rel), BUCKET, f"rep{rep}/{rel}")
            endpoint = plane.pods[0].endpoint
            with PlaneClient.connect(st) as pc:
                pc.set_storage("default", "local", {"path": str(root)})
                pc.set_storage("s3", "s3", {"endpoint_url": s3_url, "bucket": BUCKET, **CREDS})
                client = tc.InferenceServerClient(endpoint)
                ort_once(root / models[0][1], inputs[models[0][0]])  # onnxruntime's one-time set-up
                for rep in range(args.reps + 1):
                    for mid, rel, _, _ in models:
                        x = inputs[mid]
                        ids = {"local": f"loc-r{rep}-{mid}", "s3": f"s3-r{rep}-{mid}", "disk": f"dc-r{rep}-{mid}"}
                        pc.register_model(ids["local"], path=rel)
                        pc.register_model(ids["s3"], path=f"rep{rep}/{rel}", storage_key="s3")
                        pc.register_model(ids["disk"], path=f"rep{rep}/{rel}", storage_key="s3")
                        timings = {
                            "ort": ort_once(root / rel, x),
                            "local": first_request(client, ids["local"], x),
                            "s3": first_request(client, ids["s3"], x),
                            "disk": first_request(client, ids["disk"], x),
                        }
                        if rep:
                            for k, v in timings.items():
                                results[mid][k].append(v)
                        print(f"rep {rep} {mid}: " + " ".join(f"{k}={v:.1f}" for k, v in timings.items()),
                              file=sys.stderr)
                        # Unload what we loaded so the pod's cache stays small (not timed).
                        for model_id in ids.values():
                            pc.unregister_model(model_id)
                    sources = load_sources(pc)
                    for mid, _, _, _ in models:
                        for case, want in (("local", "from local"), ("s3", "from s3"), ("disk", "from disk-cache")):
                            model_id = {"local": f"loc-r{rep}-{mid}", "s3": f"s3-r{rep}-{mid}",
                                        "disk": f"dc-r{rep}-{mid}"}[case]
                            reason = sources.get(model_id)
                            if reason is not None and not reason.startswith(want):
                                bad_sources.append(f"{model_id}: {reason}")
                            match = re.search(r" in ([0-9.]+) ms", reason or "")
                            if rep and match:
                                pod_ms[case].append(float(match.group(1)))
                client.close()

    rows = []
    checks = []
    ratio_local, ratio_disk, ratio_s3 = [], [], []
    met_local: list[bool] = []
    met_disk: list[bool] = []
    for mid, _, kind, _ in models:
        r = results[mid]
        o = statistics.median(r["ort"])
        lo, s3v, dc = (statistics.median(r[k]) for k in ("local", "s3", "disk"))
        ratio_local.append(lo / o)
        ratio_disk.append(dc / o)
        ratio_s3.append(s3v / o)
        rows.append([
            mid, kind, f"{sizes[mid] / 1024:,.0f} KiB",
            "{:.1f} ±{:.1f}".format(*median_spread(r["ort"])),
            "{:.1f} ±{:.1f}".format(*median_spread(r["local"])),
            "{:.1f} ±{:.1f}".format(*median_spread(r["disk"])),
            "{:.1f} ±{:.1f}".format(*median_spread(r["s3"])),
            f"{lo - o:+.1f}", f"{dc - o:+.1f}",
            "yes" if lo <= 1.2 * o + 20 else "NO", "yes" if dc <= 1.2 * o + 20 else "NO",
        ])
        met_local.append(lo <= 1.2 * o + 20)
        met_disk.append(dc <= 1.2 * o + 20)
    med = {k: statistics.median([statistics.median(results[m][k]) for m, *_ in models])
           for k in ("ort", "local", "s3", "disk")}
    rows.append(["**median of models**", "", "", f"{med['ort']:.1f}", f"{med['local']:.1f}", f"{med['disk']:.1f}",
                 f"{med['s3']:.1f}", f"{med['local'] - med['ort']:+.1f}", f"{med['disk'] - med['ort']:+.1f}",
                 "", ""])
    for case, met in (("local disk", met_local), ("disk cache", met_disk)):
        checks.append({"target": f"cold load from {case} ≤ 1.2×ORT + 20 ms (models within it)",
                       "value": f"{sum(met)}/{len(met)}", "met": all(met)})
    title = (f"Cold load — {machine_line()} — {len(models)} models × {args.reps} reps (after a warm-up rep), "
             f"median ±half-range, ms — `python bench/cold_load.py --models {args.models} --reps {args.reps}`")
    print(title + "\n")
    print(table(["model", "kind", "file", "ORT create+run", "mesh local", "mesh disk-cache", "mesh S3 (moto)",
                 "local − ORT", "disk-cache − ORT", "local ≤1.2×+20", "disk ≤1.2×+20"], rows))
    print(f"\nRatios to ORT (median over models): local {statistics.median(ratio_local):.2f}×, "
          f"disk cache {statistics.median(ratio_disk):.2f}×, S3 {statistics.median(ratio_s3):.2f}×.")
    if all(pod_ms.values()):
        print("Load time the pod itself reports in its 'loaded' event (fetch + session + registry updates; "
              "median over all models): " + ", ".join(f"{k} {statistics.median(v):.1f} ms" for k, v in pod_ms.items())
              + "; the rest of 'mesh …' is routing, the request and the answer.")
    if bad_sources:
        print("\nLoads whose event named another source than expected: " + "; ".join(bad_sources[:10]))
    else:
        print("Every load's event named the expected source (local / s3 / disk-cache).")
    if args.json:
        args.json.write_text(json.dumps({"bench": "cold_load", "title": title, "checks": checks,
                                         "medians_ms": med}, indent=2))


if __name__ == "__main__":
    main()

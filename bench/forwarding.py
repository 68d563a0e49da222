"""Forwarding: latency of a request that lands on a pod without the model and is forwarded to
the pod holding it, against the same request sent straight to the holder, same run.

Two pods, A and B. The model is loaded on A only (``PlaneClient.load_on``: A is asked as a
peer would ask it, so it loads the model itself). Then a closed loop of
tritonclient.grpc.aio requests goes to B (which forwards to A) and to A (direct), taking
turns within each repetition. Copy scale-up and preloading are turned off so that B never
gets a copy of its own; the script checks that at the end.

    python bench/forwarding.py [--seconds 3] [--reps 3] [--concurrency 1 8]

Target: forwarded p50 latency <= 1.3 x direct.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import drive, embedded_plane, machine_line, median_spread, table  # noqa: E402

from plane import demo  # noqa: E402
from plane.api import PlaneClient  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()

    rows, checks = [], []
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        small = demo.generate_models(root, 1, seed=0)[0]
        demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
        cases = [("small", "small (logreg, digits)", small.path),
                 ("medium", "medium (forest ×100)", "medium/model.onnx")]
        x = demo.sample_input("digits", 1)
        with embedded_plane(pods=2, capacity=512 * 1024**2, preload=False, scale_up_rpm=1e12) as (plane, st):
            a, b = plane.pods[0], plane.pods[1]
            with PlaneClient.connect(st) as pc:
                pc.set_storage("default", "local", {"path": str(root)})
                for model_id, label, rel in cases:
                    pc.register_model(model_id, path=rel)
                    pc.load_on(model_id, a.pod_id)  # A loads it itself
                    for conc in args.concurrency:
                        direct, fwd = {"p50": [], "p99": [], "rps": []}, {"p50": [], "p99": [], "rps": []}
                        errors = 0
                        for rep in range(args.reps):
                            order = [(direct, a.endpoint), (fwd, b.endpoint)]
                            if rep % 2:
                                order.reverse()
                            for res, ep in order:
                                r = drive(ep, model_id, x, concurrency=conc, seconds=args.seconds)
                                errors += r.errors
                                res["p50"].append(r.pct(50))
                                res["p99"].append(r.pct(99))
                                res["rps"].append(r.rps)
                        ratio50 = [f / d for f, d in zip(fwd["p50"], direct["p50"], strict=True)]
                        ratio99 = [f / d for f, d in zip(fwd["p99"], direct["p99"], strict=True)]
                        r50 = median_spread(ratio50)[0]
                        rows.append([
                            label, str(conc),
                            "{:.2f} / {:.2f}".format(median_spread(direct["p50"])[0], median_spread(direct["p99"])[0]),
                            "{:.2f} / {:.2f}".format(median_spread(fwd["p50"])[0], median_spread(fwd["p99"])[0]),
                            "{:.2f}× ±{:.2f}".format(*median_spread(ratio50)),
                            f"{median_spread(ratio99)[0]:.2f}×",
                            "{:,.0f} / {:,.0f}".format(median_spread(direct["rps"])[0], median_spread(fwd["rps"])[0]),
                            f"{median_spread(fwd['p50'])[0] - median_spread(direct['p50'])[0]:+.2f}",
                        ])
                        if errors:
                            rows[-1][-1] += f" ({errors} errors)"
                        print(" | ".join(rows[-1]), file=sys.stderr)
                        checks.append({"target": f"forwarded/direct p50 ≤ 1.3 ({model_id} c={conc})",
                                       "value": round(r50, 3), "met": r50 <= 1.3})
                snap = pc.snapshot()
                placed = {m.model_id: m.loaded_on() for m in snap.models}
    title = (f"Forwarding — {machine_line()} — {args.reps} reps × {args.seconds:g}s, median ±half-range — "
             f"`python bench/forwarding.py --seconds {args.seconds:g} --reps {args.reps}`")
    print(title + "\n")
    print(table(["model", "conc", "direct (A) p50/p99 ms", "forwarded (B→A) p50/p99 ms", "fwd/direct p50",
                 "fwd/direct p99", "req/s direct / fwd", "added p50 ms"], rows))
    print(f"\nCopies at the end (must be on {a.pod_id} only): "
          + ", ".join(f"{k}: {', '.join(v) or 'none'}" for k, v in sorted(placed.items())))
    if args.json:
        args.json.write_text(json.dumps({"bench": "forwarding", "title": title, "checks": checks,
                                         "placement": placed}, indent=2))


if __name__ == "__main__":
    main()

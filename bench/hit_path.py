"""Hit path: ModelInfer throughput and latency of one plane pod against a bare grpc.aio server
calling the same onnxruntime model, same client (tritonclient.grpc.aio), same run.

    python bench/hit_path.py [--seconds 3] [--reps 3] [--concurrency 1 8 32]

Prints a markdown table; ratios are mesh / bare measured back to back.
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import tempfile

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

from harness import bare_server, drive, embedded_plane, machine_line, median_spread, table  # noqa: E402

from plane import demo  # noqa: E402
from plane.api import PlaneClient  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--reps", type=int, default=3)
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8, 32])
    args = ap.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        (root / "small").mkdir()
        (root / "medium").mkdir()
        models = demo.generate_models(root / "gen", 1, seed=0)  # logistic regression on digits
        small_path = root / "gen" / models[0].path
        demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
        cases = [("small (logreg, digits)", small_path), ("medium (forest x100)", root / "medium" / "model.onnx")]
        x = demo.sample_input("digits", 1)
        rows = []
        with embedded_plane(pods=1, capacity=512 * 1024**2) as (plane, settings):
            endpoint = plane.pods[0].endpoint
            with PlaneClient.connect(settings) as client:
                client.set_storage("default", "local", {"path": str(root)})
                for name, path in cases:
                    model_id = path.parent.name if path.parent.name != "gen" else "small"
                    client.register_model(model_id, path=str(path.relative_to(root)))
                    client.ensure_loaded(model_id, sync=True)
                    with bare_server(path) as bare:
                        for conc in args.concurrency:
                            b_rps, m_rps, b_p50, m_p50, b_p99, m_p99 = [], [], [], [], [], []
                            for _ in range(args.reps):
                                b = drive(bare, "bare", x, concurrency=conc, seconds=args.seconds)
                                m = drive(endpoint, model_id, x, concurrency=conc, seconds=args.seconds)
                                b_rps.append(b.rps)
                                m_rps.append(m.rps)
                                b_p50.append(b.pct(50))
                                m_p50.append(m.pct(50))
                                b_p99.append(b.pct(99))
                                m_p99.append(m.pct(99))
                            (br, bs), (mr, ms) = median_spread(b_rps), median_spread(m_rps)
                            ratios = [m / b for m, b in zip(m_rps, b_rps, strict=True)]
                            rows.append([
                                name, str(conc), f"{br:,.0f} ±{bs:,.0f}", f"{mr:,.0f} ±{ms:,.0f}",
                                f"{median_spread(ratios)[0]:.2f}×",
                                f"{median_spread(b_p50)[0]:.2f} / {median_spread(b_p99)[0]:.2f}",
                                f"{median_spread(m_p50)[0]:.2f} / {median_spread(m_p99)[0]:.2f}",
                                f"{median_spread(m_p99)[0] - median_spread(b_p99)[0]:+.2f}",
                            ])
                            print(" | ".join(rows[-1]), file=sys.stderr)
    print(f"Hit path — {machine_line()} — {args.reps} reps × {args.seconds:.0f}s, median ±half-range\n")
    print(table(["model", "conc", "bare req/s", "mesh req/s", "mesh/bare", "bare p50/p99 ms", "mesh p50/p99 ms",
                 "p99 overhead ms"], rows))


if __name__ == "__main__":
    main()

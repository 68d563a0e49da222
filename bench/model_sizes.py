"""Model sizes: the size the plane predicts before a load against what a load costs.

For N demo models (all estimator kinds × datasets), loaded one at a time on one pod:

* **predicted** — file size × ``size_multiplier`` (default 3.0) + 64 KiB per session
  (``plane.placement.predict_size``): what the pod reserves in its
  cache before the first load (the registry has no measured size yet);
* **measured (registry)** — ``ModelRecord.size`` after the load: the pod's own RSS growth
  across session creation, floored at the file size;
* **measured (RSS, outside)** — the pod process's RSS growth across the whole load as seen by
  this script through psutil (includes request handling, registry bookkeeping, allocator noise).

Each repetition registers the models again under fresh ids, so each is a new session.
Grouped by estimator kind; median per kind.

    python bench/model_sizes.py [--models 50] [--reps 2]

No target: the table shows how good the prediction is per kind.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import tempfile
import time
from collections import defaultdict

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import psutil  # noqa: E402
from harness import embedded_plane, machine_line, table  # noqa: E402

from plane import demo, mgmt_client, placement  # noqa: E402
from plane.api import PlaneClient  # noqa: E402
from plane.settings import MeshSettings  # noqa: E402


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--reps", type=int, default=2)
    ap.add_argument("--multiplier", type=float, default=MeshSettings().size_multiplier,
                    help="size_multiplier of the plane")
    ap.add_argument("--no-medium", dest="medium", action="store_false",
                    help="leave out the 100-tree forest (3.5 MB) measured next to the demo models")
    ap.add_argument("--json", type=pathlib.Path)
    args = ap.parse_args()

    per_model: dict[str, dict] = {}
    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        print(f"training {args.models} demo models ...", file=sys.stderr)
        models = demo.generate_models(root, args.models, seed=3)
        extra = []
        if args.medium:
            size = demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
            extra.append(demo.DemoModel("medium-forest100", "medium/model.onnx", "digits", "forest ×100 (medium)",
                                        64, size))
        with embedded_plane(pods=1, capacity=8 * 1024**3, preload=False,
                            size_multiplier=args.multiplier) as (plane, st):
            pod = psutil.Process(plane.pods[0].pid)
            ep = plane.pods[0].endpoint
            with PlaneClient.connect(st) as pc:
                pc.set_storage("default", "local", {"path": str(root)})
                for m in models + extra:
                    per_model[m.model_id] = {"kind": m.estimator, "file": m.file_size, "registry": [], "rss": []}
                # warm-up: the first loads of a pod pay for imports and allocator growth
                for i, m in enumerate(models[:7]):
                    pc.register_model(f"warm-{i}", path=m.path)
                    mgmt_client.ensure_loaded([ep], f"warm-{i}", sync=True, timeout=120)
                for rep in range(args.reps):
                    for m in models + extra:
                        mid = f"r{rep}-{m.model_id}"
                        pc.register_model(mid, path=m.path)
                        time.sleep(0.05)
                        before = pod.memory_info().rss
                        mgmt_client.ensure_loaded([ep], mid, sync=True, timeout=120)
                        after = pod.memory_info().rss
                        rec = pc.get_model(mid)
                        per_model[m.model_id]["registry"].append(rec.size if rec else 0)
                        per_model[m.model_id]["rss"].append(after - before)
                    print(f"rep {rep} done", file=sys.stderr)

    by_kind: dict[str, list[dict]] = defaultdict(list)
    for d in per_model.values():
        by_kind[d["kind"]].append(d)
    rows = []
    all_ratios = []
    summary = {}
    for kind in [*demo.ESTIMATORS, "forest ×100 (medium)"]:
        items = by_kind.get(kind)
        if not items:
            continue
        files = [d["file"] for d in items]
        pred = [placement.predict_size(int(f), args.multiplier) for f in files]
        reg = [statistics.median(d["registry"]) for d in items]
        out = [statistics.median(d["rss"]) for d in items]
        ratios = [r / p for r, p in zip(reg, pred, strict=True)]
        if kind in demo.ESTIMATORS:
            all_ratios += ratios
        under = sum(1 for r in ratios if r > 1.0)
        summary[kind] = statistics.median(ratios)
        rows.append([
            kind, str(len(items)), kib(statistics.median(files)), kib(statistics.median(pred)),
            kib(statistics.median(reg)), kib(statistics.median([r - f for r, f in zip(reg, files, strict=True)])),
            kib(statistics.median(out)),
            f"{statistics.median(ratios):.2f} ({min(ratios):.2f}–{max(ratios):.2f})",
            f"{under}/{len(items)}",
        ])
    rows.append(["**all demo models**", str(len(all_ratios)), "", "", "", "", "",
                 f"{statistics.median(all_ratios):.2f} ({min(all_ratios):.2f}–{max(all_ratios):.2f})",
                 f"{sum(1 for r in all_ratios if r > 1.0)}/{len(all_ratios)}"])
    if rows[-2][0].startswith("forest ×100"):  # keep the medium model out of the demo summary, after it
        rows[-2], rows[-1] = rows[-1], rows[-2]
    title = (f"Model sizes — {machine_line()} — {args.models} demo models × {args.reps} loads, medians, KiB, "
             f"size_multiplier {args.multiplier:g} — `python bench/model_sizes.py --models {args.models} "
             f"--reps {args.reps}`")
    print(title + "\n")
    print(table(["kind", "models", "file", "predicted", "measured (registry)", "measured − file",
                 "RSS growth (outside)",
                 "measured/predicted (range)", "under-predicted"], rows))
    print("\n'measured (registry)' is the pod's RSS growth across session creation floored at the file size "
          "(plane/runtime.py); 'under-predicted' counts models whose measured size exceeds the prediction.")
    if args.json:
        args.json.write_text(json.dumps({"bench": "model_sizes", "title": title, "checks": [],
                                         "ratio_by_kind": summary}, indent=2))


if __name__ == "__main__":
    main()

"""Model sizes: is the measured size reproducible, and how good is the size predicted before a load?

**Reproducibility** (``plane.runtime.load_session`` called directly, no plane). For one
demo model of each estimator kind, the tiny model (``y = x * 2 + 1``), the 100-tree forest
and the memory-bomb model (a ~260 B file whose session holds 256 MiB): the file size, the
measured ``size`` over ``--loads`` loads in this process (round-robin over the models, the
sessions kept alive as in a pod) and the first load in each of ``--procs`` fresh processes,
and the spread max/min over all of them. Every process calls ``warm_up()`` first, as a pod
does at start.

**Predicted vs measured** (``--no-plane`` leaves it out). For N demo models (all estimator
kinds × datasets), loaded one at a time on one pod:

* **predicted** — file size × ``size_multiplier`` (default 3.0) + 160 KiB per session
  (``plane.placement.predict_size``): what the pod reserves in its
  cache before the first load (the registry has no measured size yet);
* **measured (registry)** — ``ModelRecord.size`` after the load: the pod's own measurement
  (allocator bytes in use across session creation and a first run, plane/runtime.py);
* **measured (RSS, outside)** — the pod process's RSS growth across the whole load as seen by
  this script through psutil (includes request handling, registry bookkeeping, allocator noise).

Each repetition registers the models again under fresh ids, so each is a new session.
Grouped by estimator kind; median per kind.

``--timing`` adds run time per request with onnxruntime's CPU arena on and off
(plane/runtime.py turns it off).

    python bench/model_sizes.py [--models 50] [--reps 2] [--loads 6] [--procs 2] [--no-plane] [--timing]

Target (reproducibility table): spread ≤ 1.1 for every model; the bomb measures ≥ 200 MiB.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import subprocess
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

SPREAD_LIMIT = 1.1
BOMB_LIMIT_MIB = 200
_KEEP_BELOW = 64 << 20  # sessions larger than this are dropped after measuring, to bound memory


def kib(n: float) -> str:
    return f"{n / 1024:,.1f}"


def human(n: float) -> str:
    return f"{n / 1024**2:,.2f} MiB" if n >= 1024**2 else f"{n / 1024:,.1f} KiB"


def command(args) -> str:
    """The command-line flags that shape the tables (not --json), as typed."""
    flags = [f"--models {args.models}", f"--loads {args.loads}", f"--procs {args.procs}"]
    flags += [] if args.plane else ["--no-plane"]
    flags += [f"--reps {args.reps}"] if args.plane else []
    flags += [f for f, on in (("--no-medium", not args.medium), ("--no-bomb", not args.bomb),
                              ("--timing", args.timing)) if on]
    return " ".join(flags)


# --- reproducibility ----------------------------------------------------------------------------

def _load_sizes(paths: list[pathlib.Path], loads: int) -> dict[str, list[int]]:
    """``loads`` round-robin loads of every path in this process; sizes per path."""
    from plane.runtime import load_session, warm_up

    warm_up()
    sizes: dict[str, list[int]] = {str(p): [] for p in paths}
    kept = []
    for rep in range(loads):
        for i, p in enumerate(paths):
            sess = load_session(f"m{i}-r{rep}", p)
            sizes[str(p)].append(sess.size)
            if sess.size < _KEEP_BELOW:
                kept.append(sess)
            del sess
    return sizes


def _fresh_process_sizes(paths: list[pathlib.Path]) -> dict[str, int]:
    cmd = [sys.executable, str(pathlib.Path(__file__).resolve()), "--child", *map(str, paths)]
    out = subprocess.run(cmd, check=True, stdout=subprocess.PIPE, text=True).stdout
    return {k: v[0] for k, v in json.loads(out).items()}


def reproducibility(root: pathlib.Path, models: list[demo.DemoModel], args) -> tuple[str, list[dict]]:
    chosen: list[tuple[str, pathlib.Path, int]] = []
    seen = set()
    for m in models:  # one per estimator kind
        if m.estimator not in seen:
            seen.add(m.estimator)
            chosen.append((m.model_id, root / m.path, m.file_size))
    tiny = root / "tiny" / "model.onnx"
    chosen.append(("tiny (x*2+1)", tiny, demo.make_tiny_model(tiny)))
    if args.medium:
        med = root / "medium" / "model.onnx"  # written by main()
        chosen.append(("medium-forest100", med, med.stat().st_size))
    if args.bomb:
        bomb = root / "bomb" / "model.onnx"
        chosen.append(("memory-bomb", bomb, demo.make_memory_bomb_model(bomb)))
    paths = [p for _, p, _ in chosen]

    print(f"loading {len(paths)} models × {args.loads} in this process ...", file=sys.stderr)
    here = _load_sizes(paths, args.loads)
    fresh: dict[str, list[int]] = defaultdict(list)
    for i in range(args.procs):
        print(f"fresh process {i + 1}/{args.procs} ...", file=sys.stderr)
        for k, v in _fresh_process_sizes(paths).items():
            fresh[k].append(v)

    from plane.runtime import memory_in_use

    method = memory_in_use()[1]
    rows, worst, bomb_size = [], 1.0, None
    for name, p, file_size in chosen:
        h, f = here[str(p)], fresh[str(p)]
        every = h + f
        spread = max(every) / min(every)
        worst = max(worst, spread)
        if name == "memory-bomb":
            bomb_size = statistics.median(every)
        rows.append([name, f"{file_size:,}", human(statistics.median(h)), f"{human(min(h))} – {human(max(h))}",
                     ", ".join(human(v) for v in f) or "-", f"{spread:.3f}"])
    text = (f"Measured model size ({method}) — {machine_line()} — `python bench/model_sizes.py {command(args)}` — "
            f"{args.loads} loads in this process, first load in each of {args.procs} fresh processes\n\n"
            + table(["model", "file (B)", "this process: median", "this process: min – max",
                     "fresh processes", "spread (max/min, all)"], rows))
    checks = [{"target": f"same file, repeated loads and fresh processes: size spread (max/min) ≤ {SPREAD_LIMIT:g}",
               "value": round(worst, 3), "limit": SPREAD_LIMIT, "met": worst <= SPREAD_LIMIT}]
    if bomb_size is not None:
        mib = bomb_size / 1024**2
        checks.append({"target": f"memory-bomb model (~260 B file) measured ≥ {BOMB_LIMIT_MIB} MiB",
                       "value": round(mib, 1), "limit": BOMB_LIMIT_MIB, "met": mib >= BOMB_LIMIT_MIB})
    return text, checks


# --- inference time with and without onnxruntime's CPU arena -------------------------------------

def timing(root: pathlib.Path, models: list[demo.DemoModel], medium: bool, reps: int = 9) -> str:
    import timeit

    import numpy as np
    import onnxruntime as ort

    def session(path: pathlib.Path, arena: bool) -> ort.InferenceSession:
        opts = ort.SessionOptions()
        opts.intra_op_num_threads = opts.inter_op_num_threads = 1
        opts.log_severity_level = 3
        opts.enable_cpu_mem_arena = arena
        return ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])

    cases = [("tiny (x*2+1)", root / "tiny" / "model.onnx", "x", (1, 4))]
    kinds = {"mlp": 0, "forest": 0}
    for m in models:
        if kinds.get(m.estimator) == 0:
            kinds[m.estimator] = 1
            cases.append((m.model_id, root / m.path, "input", (1, m.n_features)))
    if medium:
        cases += [("medium-forest100", root / "medium" / "model.onnx", "input", (1, 64)),
                  ("medium-forest100", root / "medium" / "model.onnx", "input", (256, 64))]
    rows = []
    for name, path, inp, shape in cases:
        feed = {inp: np.zeros(shape, np.float32)}
        best = {True: float("inf"), False: float("inf")}
        number = 200 if shape[0] > 1 else 2000
        for _ in range(reps):  # interleaved, so both settings see the same machine noise
            for arena in (True, False):
                sess = session(path, arena)
                sess.run(None, feed)
                t = timeit.Timer(lambda s=sess, f=feed: s.run(None, f)).timeit(number) / number * 1e6
                best[arena] = min(best[arena], t)
        rows.append([name, "×".join(map(str, shape)), f"{best[True]:.1f}", f"{best[False]:.1f}",
                     f"{best[False] / best[True]:.2f}"])
    return (f"Run time per request, µs (best of {reps} timeit runs), CPU arena on/off — "
            "`python bench/model_sizes.py --timing`\n\n"
            + table(["model", "input", "arena on", "arena off", "off/on"], rows))


# --- predicted vs measured, through a plane -------------------------------------------------------

def plane_table(root: pathlib.Path, models: list[demo.DemoModel], args) -> tuple[str, dict]:
    per_model: dict[str, dict] = {}
    extra = []
    if args.medium:
        size = (root / "medium" / "model.onnx").stat().st_size  # written by main()
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
    text = "\n".join([
        title + "\n",
        table(["kind", "models", "file", "predicted", "measured (registry)", "measured − file",
               "RSS growth (outside)", "measured/predicted (range)", "under-predicted"], rows),
        "\n'measured (registry)' is the pod's measurement: allocator bytes in use across session creation and a "
        "first run, floored at the file size (plane/runtime.py); 'under-predicted' counts models whose measured "
        "size exceeds the prediction.",
    ])
    return text, summary


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", type=int, default=50)
    ap.add_argument("--reps", type=int, default=2, help="loads of every model through the plane")
    ap.add_argument("--multiplier", type=float, default=MeshSettings().size_multiplier,
                    help="size_multiplier of the plane")
    ap.add_argument("--no-medium", dest="medium", action="store_false",
                    help="leave out the 100-tree forest (3.5 MB) measured next to the demo models")
    ap.add_argument("--loads", type=int, default=6, help="loads of every model in this process (reproducibility)")
    ap.add_argument("--procs", type=int, default=2, help="fresh processes that load every model once")
    ap.add_argument("--no-bomb", dest="bomb", action="store_false", help="leave out the 256 MiB memory-bomb model")
    ap.add_argument("--no-plane", dest="plane", action="store_false",
                    help="only the reproducibility table: no plane, no predicted-vs-measured table")
    ap.add_argument("--timing", action="store_true", help="also time inference with the CPU arena on and off")
    ap.add_argument("--json", type=pathlib.Path)
    ap.add_argument("--child", nargs="+", type=pathlib.Path, help=argparse.SUPPRESS)
    args = ap.parse_args()

    if args.child:  # a fresh process: warm up, load every model once, print the sizes
        print(json.dumps(_load_sizes(args.child, 1)))
        return

    with tempfile.TemporaryDirectory() as tmp:
        root = pathlib.Path(tmp)
        print(f"training {args.models} demo models ...", file=sys.stderr)
        models = demo.generate_models(root, args.models, seed=3)
        if args.medium:
            demo.make_medium_model(root / "medium" / "model.onnx", n_estimators=100)
        repro, checks = reproducibility(root, models, args)
        print(repro)
        if args.timing:
            print("\n" + timing(root, models, args.medium))
        summary: dict = {}
        title = repro.splitlines()[0]
        if args.plane:
            text, summary = plane_table(root, models, args)
            title = text.splitlines()[0]
            print("\n" + text)
    if args.json:
        args.json.write_text(json.dumps({"bench": "model_sizes", "title": title, "checks": checks,
                                         "ratio_by_kind": summary}, indent=2))


if __name__ == "__main__":
    main()

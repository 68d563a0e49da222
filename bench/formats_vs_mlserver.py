"""XGBoost, LightGBM and scikit-learn models: the plane's runtimes vs MLServer's, same files, same client.

Three models are trained at run time on scikit-learn's bundled ``digits`` (1,797 rows, 64 features,
10 classes; nothing is downloaded) and saved in the formats both sides load:

* ``fmt-xgboost``  — ``XGBClassifier`` (``--trees`` rounds × 10 classes, depth 4), ``model.json``;
* ``fmt-lightgbm`` — ``LGBMClassifier`` (``--trees`` rounds × 10 classes, 15 leaves), booster text ``model.txt``;
* ``fmt-sklearn``  — ``RandomForestClassifier`` (``--forest-trees`` trees, depth 12), ``joblib.dump`` ``model.joblib``.

The same three files are served by

* **plane** — an embedded plane (``plane.local``: its own etcd + 1 pod), models registered with types
  ``xgboost``/``lightgbm``/``sklearn`` on a ``local`` storage key and loaded before measuring;
* **MLServer** — ``mlserver start`` on a generated repository with one ``model-settings.json`` per model
  (``mlserver_xgboost.XGBoostModel``, ``mlserver_lightgbm.LightGBMModel``, ``mlserver_sklearn.SKLearnModel``,
  ``parameters.uri`` = the file), installed by this script into its own virtualenv
  (``$MESH_BENCH_CACHE`` or ``~/.cache/mesh-plane-bench``, ``mlserver-formats-venv``; reused when present)
  with lower bounds: MLServer and its runtimes >= 1.7, and scikit-learn/XGBoost/LightGBM at least the
  versions that trained the models here (a joblib pickle wants the same scikit-learn).

Threads: the plane runs every model with one thread (``n_jobs=1``/``num_threads=1``); MLServer gets
``OMP_NUM_THREADS=1`` (``--mlserver-threads``), which XGBoost and LightGBM follow, and the forest is pickled
with ``n_jobs=None`` (sequential). MLServer runs inference in ``--mlserver-workers`` worker processes
(default 1, its own default; 0 = in the server process).

Measured, closed loop, ``concurrency`` requests outstanding, 1 row of digits per request, requested output
``predict`` (MLServer's name; the plane answers it as an alias of ``label``; MLServer's lightgbm runtime
always answers the booster's raw ``predict``, the class probabilities):

1. gRPC hit path per model: tritonclient.grpc.aio against both (``harness.drive``);
2. REST for one model (``--rest-model``): the pod's V2 REST and MLServer's V2 REST, both driven by the same
   aiohttp client with the same JSON body, next to both gRPC front doors.

Systems take turns in a rotated order within each repetition; every run is preceded by a warm-up that is not
counted. Ratios are medians of per-repetition ratios measured back to back. Server CPU µs/request: user +
system CPU of the pod process (MLServer: server + workers) during the measured seconds, per answered request.

    python bench/formats_vs_mlserver.py [--seconds 3] [--reps 3] [--concurrency 1 8] [--quick] [--no-write]

``--quick`` (2 reps × 1 s, smaller models) runs in about 1.5 minutes once MLServer is installed. Without
``--no-write`` a full run replaces its section in bench/results.md and its summary in bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import pathlib
import re
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

import numpy as np

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parent))

import harness  # noqa: E402
from harness import BENCH_DIR, LoadResult, embedded_plane, machine_line, median_spread, table  # noqa: E402

NAME = "formats_vs_mlserver"
RESULTS_MD = BENCH_DIR / "results.md"
README_MD = BENCH_DIR / "README.md"
VENV = "mlserver-formats-venv"
INPUT = "input"
DATASET = "digits"
T = TypeVar("T")


@dataclass(frozen=True)
class Format:
    kind: str  # the plane's model type
    file: str
    implementation: str  # MLServer's runtime class
    estimator: str


FORMATS: dict[str, Format] = {
    "xgboost": Format("xgboost", "model.json", "mlserver_xgboost.XGBoostModel", "XGBClassifier"),
    "lightgbm": Format("lightgbm", "model.txt", "mlserver_lightgbm.LightGBMModel", "LGBMClassifier"),
    "sklearn": Format("sklearn", "model.joblib", "mlserver_sklearn.SKLearnModel", "RandomForestClassifier"),
}


@dataclass
class TrainedModel:
    name: str  # model id on both sides
    kind: str
    path: pathlib.Path  # absolute
    rel: str  # relative to the storage root
    description: str
    file_size: int
    n_features: int
    implementation: str


# -- pure parts: arguments, training, tables, sections ---------------------------------------------------

def parse_args(argv: Sequence[str] | None = None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog="See the module docstring (and bench/README.md) for what is measured.")
    ap.add_argument("--seconds", type=float, default=None, help="measured seconds per run (3; --quick 1)")
    ap.add_argument("--warmup", type=float, default=None, help="warm-up seconds before each run (0.5; --quick 0.3)")
    ap.add_argument("--reps", type=int, default=None, help="repetitions (3; --quick 2)")
    ap.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    ap.add_argument("--models", nargs="+", choices=list(FORMATS), default=list(FORMATS))
    ap.add_argument("--rest-model", choices=list(FORMATS), default="xgboost",
                    help="model of the REST comparison (default xgboost)")
    ap.add_argument("--no-rest", action="store_true", help="skip the REST comparison")
    ap.add_argument("--trees", type=int, default=None, help="boosting rounds of XGBoost/LightGBM (100; --quick 30)")
    ap.add_argument("--forest-trees", type=int, default=None, help="trees of the random forest (50; --quick 20)")
    ap.add_argument("--lightgbm-learning-rate", type=float, default=0.05,
                    help="LightGBM's learning rate (0.05; at LightGBM's default 0.1 some classes' last rounds are "
                         "single-leaf trees, see bench/README.md)")
    ap.add_argument("--rows", type=int, default=1, help="rows per request")
    ap.add_argument("--output", default="predict", help="requested output name (default predict)")
    ap.add_argument("--mlserver-workers", type=int, default=1, help="MLServer parallel_workers (default 1)")
    ap.add_argument("--mlserver-threads", type=int, default=1, help="OMP_NUM_THREADS for MLServer (default 1)")
    ap.add_argument("--no-mlserver", action="store_true", help="plane only")
    ap.add_argument("--quick", action="store_true", help="2 reps × 1 s, smaller models: about 1.5 minutes")
    ap.add_argument("--write", action=argparse.BooleanOptionalAction, default=None,
                    help="replace this benchmark's section in bench/results.md and bench/README.md "
                         "(default: on for full runs, off with --quick)")
    ap.add_argument("--json", type=pathlib.Path, help="also write the raw numbers here")
    args = ap.parse_args(argv)
    quick = args.quick
    for name, full, short in (("seconds", 3.0, 1.0), ("warmup", 0.5, 0.3), ("reps", 3, 2), ("trees", 100, 30),
                              ("forest_trees", 50, 20)):
        if getattr(args, name) is None:
            setattr(args, name, short if quick else full)
    if args.write is None:
        args.write = not quick
    if args.reps < 1 or args.seconds <= 0 or args.rows < 1 or min(args.concurrency) < 1:
        ap.error("--reps, --seconds, --rows and --concurrency must be positive")
    return args


def command_line(args: argparse.Namespace) -> str:
    parts = ["python bench/formats_vs_mlserver.py"]
    if args.quick:
        parts.append("--quick")
    parts += [f"--seconds {args.seconds:g}", f"--reps {args.reps}",
              "--concurrency " + " ".join(str(c) for c in args.concurrency)]
    if args.models != list(FORMATS):
        parts.append("--models " + " ".join(args.models))
    mode = parse_args(["--quick"] if args.quick else [])
    for option in ("trees", "forest_trees", "lightgbm_learning_rate", "rows", "output", "rest_model",
                   "mlserver_workers", "mlserver_threads"):
        if getattr(args, option) != getattr(mode, option):
            parts.append(f"--{option.replace('_', '-')} {getattr(args, option)}")
    parts += [f"--{flag.replace('_', '-')}" for flag in ("no_rest", "no_mlserver") if getattr(args, flag)]
    return " ".join(parts)


def train_models(root: pathlib.Path, kinds: Sequence[str] = tuple(FORMATS), *, trees: int = 100,
                 forest_trees: int = 50, lightgbm_learning_rate: float = 0.05, seed: int = 0) -> list[TrainedModel]:
    """Train one classifier per kind on ``digits`` and save it under ``root/<kind>/`` in the format
    both the plane and MLServer load."""
    import joblib
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32)
    out = []
    for kind in kinds:
        fmt = FORMATS[kind]
        (root / kind).mkdir(parents=True, exist_ok=True)
        path = root / kind / fmt.file
        if kind == "xgboost":
            import xgboost as xgb

            est = xgb.XGBClassifier(n_estimators=trees, max_depth=4, n_jobs=1, random_state=seed).fit(x, y)
            est.save_model(path)
            desc = f"XGBClassifier {trees} rounds × 10 classes, depth 4"
        elif kind == "lightgbm":
            import lightgbm as lgb

            est = lgb.LGBMClassifier(n_estimators=trees, num_leaves=15, learning_rate=lightgbm_learning_rate,
                                     n_jobs=1, random_state=seed, verbose=-1).fit(x, y)
            est.booster_.save_model(str(path))
            single = single_leaf_trees(path.read_bytes())
            desc = (f"LGBMClassifier {trees} rounds × 10 classes, 15 leaves, learning rate {lightgbm_learning_rate:g}"
                    f"{f' ({single} single-leaf trees)' if single else ''}")
        else:
            from sklearn.ensemble import RandomForestClassifier

            est = RandomForestClassifier(n_estimators=forest_trees, max_depth=12, random_state=seed).fit(x, y)
            joblib.dump(est, path)
            desc = f"RandomForestClassifier {forest_trees} trees, depth 12"
        out.append(TrainedModel(f"fmt-{kind}", kind, path.resolve(), f"{kind}/{fmt.file}", desc,
                                path.stat().st_size, x.shape[1], fmt.implementation))
    return out


def single_leaf_trees(model_text: bytes) -> int:
    """Trees of a LightGBM text model that have one leaf (no split): LightGBM writes them with empty
    ``leaf_weight=``, which plane/runtimes/lightgbm_text.py refuses at the time of writing."""
    return len(re.findall(rb"^num_leaves=1\r?$", model_text, re.M))


def sample_rows(rows: int) -> np.ndarray:
    from sklearn.datasets import load_digits

    x = load_digits().data.astype(np.float32)
    return np.ascontiguousarray(x[np.arange(rows) % len(x)])


def rest_body(x: np.ndarray, output: str) -> bytes:
    """The KServe V2 JSON request both REST front doors get."""
    return json.dumps({"inputs": [{"name": INPUT, "shape": list(x.shape), "datatype": "FP32",
                                   "data": x.reshape(-1).tolist()}],
                       "outputs": [{"name": output}]}).encode()


def mlserver_model_settings(models: Sequence[TrainedModel]) -> dict[str, dict]:
    return {m.name: {"implementation": m.implementation, "parameters": {"uri": str(m.path)}} for m in models}


@dataclass
class Run:
    rps: float
    p50: float
    p99: float
    cpu_us: float
    errors: int = 0

    @classmethod
    def of(cls, r: LoadResult, cpu_us: float) -> Run:
        return cls(r.rps, r.pct(50), r.pct(99), cpu_us, r.errors)


@dataclass
class Results:
    """Runs by (section, model, system, concurrency), in repetition order."""

    runs: dict[tuple[str, str, str, int], list[Run]] = field(default_factory=dict)

    def add(self, section: str, model: str, system: str, conc: int, run: Run) -> None:
        self.runs.setdefault((section, model, system, conc), []).append(run)

    def get(self, section: str, model: str, system: str, conc: int) -> list[Run]:
        return self.runs.get((section, model, system, conc), [])


def _med(values: list[float]) -> float:
    return median_spread(values)[0]


def fmt_rps(runs: list[Run]) -> str:
    if not runs:
        return "-"
    return "{:,.0f} ±{:,.0f}".format(*median_spread([r.rps for r in runs]))


def fmt_lat(runs: list[Run]) -> str:
    if not runs:
        return "-"
    return f"{_med([r.p50 for r in runs]):.2f} / {_med([r.p99 for r in runs]):.2f}"


def fmt_cpu(runs: list[Run]) -> str:
    return f"{_med([r.cpu_us for r in runs]):,.0f}" if runs else "-"


def ratio(a: list[Run], b: list[Run], attr: str) -> float | None:
    """Median of per-repetition ratios a/b of ``attr`` (pairs by repetition), None when either is missing."""
    pairs = [(getattr(x, attr), getattr(y, attr)) for x, y in zip(a, b, strict=False)]
    vals = [p / q for p, q in pairs if q and q == q and p == p]
    return _med(vals) if vals else None


def fmt_ratio(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}×"


GRPC_HEADERS = ["model", "conc", "plane req/s", "MLServer req/s", "plane/MLServer req/s", "plane p50/p99 ms",
                "MLServer p50/p99 ms", "plane/MLServer p50", "plane/MLServer p99",
                "server CPU µs/req plane / MLServer"]


def grpc_rows(res: Results, models: Sequence[str], concurrency: Sequence[int]) -> list[list[str]]:
    rows = []
    for model in models:
        for conc in concurrency:
            p, m = res.get("grpc", model, "plane", conc), res.get("grpc", model, "mlserver", conc)
            rows.append([model, str(conc), fmt_rps(p), fmt_rps(m), fmt_ratio(ratio(p, m, "rps")), fmt_lat(p),
                         fmt_lat(m), fmt_ratio(ratio(p, m, "p50")), fmt_ratio(ratio(p, m, "p99")),
                         f"{fmt_cpu(p)} / {fmt_cpu(m)}"])
    return rows


REST_SYSTEMS = ("plane-rest", "mlserver-rest", "plane-grpc", "mlserver-grpc")
REST_HEADERS = ["conc", "plane REST req/s", "MLServer REST req/s", "plane gRPC req/s", "MLServer gRPC req/s",
                "plane REST/MLServer REST", "plane REST/plane gRPC", "MLServer REST/MLServer gRPC",
                "p50/p99 ms plane REST · MLServer REST · plane gRPC · MLServer gRPC",
                "server CPU µs/req plane REST · MLServer REST · plane gRPC · MLServer gRPC"]


def rest_rows(res: Results, model: str, concurrency: Sequence[int]) -> list[list[str]]:
    rows = []
    for conc in concurrency:
        got = {s: res.get("rest", model, s, conc) for s in REST_SYSTEMS}
        rows.append([str(conc), *(fmt_rps(got[s]) for s in REST_SYSTEMS),
                     fmt_ratio(ratio(got["plane-rest"], got["mlserver-rest"], "rps")),
                     fmt_ratio(ratio(got["plane-rest"], got["plane-grpc"], "rps")),
                     fmt_ratio(ratio(got["mlserver-rest"], got["mlserver-grpc"], "rps")),
                     " · ".join(fmt_lat(got[s]) for s in REST_SYSTEMS),
                     " · ".join(fmt_cpu(got[s]) for s in REST_SYSTEMS)])
    return rows


def ratio_summary(res: Results, models: Sequence[str], concurrency: Sequence[int], rest_model: str | None) -> list[
        list[str]]:
    """One line per comparison: throughput ratio at each concurrency (the README's summary)."""
    rows = []
    for model in models:
        rows.append([f"{model} gRPC: plane/MLServer",
                     *(fmt_ratio(ratio(res.get("grpc", model, "plane", c), res.get("grpc", model, "mlserver", c),
                                       "rps")) for c in concurrency)])
    if rest_model:
        for a, b, label in (("plane-rest", "mlserver-rest", "REST: plane/MLServer"),
                            ("plane-rest", "plane-grpc", "plane REST/plane gRPC")):
            rows.append([f"{rest_model} {label}",
                         *(fmt_ratio(ratio(res.get("rest", rest_model, a, c), res.get("rest", rest_model, b, c),
                                           "rps")) for c in concurrency)])
    return rows


def load_line(samples: Sequence[tuple[float, float, float]]) -> str:
    if not samples:
        return "load average: ?"
    ones = [s[0] for s in samples]
    first, last = samples[0], samples[-1]
    return (f"load average (1/5/15 min) {first[0]:.2f} / {first[1]:.2f} / {first[2]:.2f} at start, "
            f"{last[0]:.2f} / {last[1]:.2f} / {last[2]:.2f} at end, 1-min range {min(ones):.2f}–{max(ones):.2f}")


def start_marker(name: str = NAME) -> str:
    return f"<!-- {name}:start (written by python bench/{name}.py) -->"


def end_marker(name: str = NAME) -> str:
    return f"<!-- {name}:end -->"


def replace_section(text: str, body: str, *, heading: str, name: str = NAME) -> str:
    """``text`` with the block between this benchmark's markers replaced by ``body``; when the markers
    are absent, ``heading`` + the block are appended at the end. Nothing else is touched."""
    start, end = start_marker(name), end_marker(name)
    block = f"{start}\n\n{body.strip()}\n\n{end}"
    if start in text and end in text:
        before, rest = text.split(start, 1)
        after = rest.split(end, 1)[1]
        return before + block + after
    return text.rstrip("\n") + f"\n\n{heading}\n\n{block}\n"


# -- servers and clients ---------------------------------------------------------------------------------

def _packages() -> list[str]:
    import lightgbm
    import sklearn
    import xgboost

    # uvloop < 0.22: see mlserver_compare.MLSERVER_PACKAGES (MLServer 1.7's workers die with 0.22+).
    return ["mlserver>=1.7", "mlserver-xgboost>=1.7", "mlserver-lightgbm>=1.7", "mlserver-sklearn>=1.7",
            f"scikit-learn>={sklearn.__version__}", f"xgboost>={xgboost.__version__}",
            f"lightgbm>={lightgbm.__version__}", "uvloop<0.22"]


def ensure_mlserver() -> tuple[pathlib.Path | None, str]:
    # Found, not imported: importing MLServer takes 5-30 s on a busy machine; a broken install shows
    # when the server starts (its log is printed).
    check = ("import importlib.util as u, sys; sys.exit(any(u.find_spec(m) is None for m in "
             "('mlserver', 'mlserver_xgboost', 'mlserver_lightgbm', 'mlserver_sklearn', 'sklearn', 'xgboost', "
             "'lightgbm')))")
    return harness.ensure_venv(VENV, _packages(), check, exe="mlserver")


async def _drive_rest(url: str, body: bytes, concurrency: int, seconds: float) -> LoadResult:
    import aiohttp

    lat: list[float] = []
    errors = 0
    first_error: list[str] = []
    stop = time.perf_counter() + seconds
    conn = aiohttp.TCPConnector(limit=concurrency)
    async with aiohttp.ClientSession(connector=conn, headers={"Content-Type": "application/json"}) as session:
        async def worker() -> None:
            nonlocal errors
            while time.perf_counter() < stop:
                t0 = time.perf_counter()
                try:
                    async with session.post(url, data=body) as resp:
                        payload = await resp.read()
                        if resp.status != 200:
                            errors += 1
                            if not first_error:
                                first_error.append(f"HTTP {resp.status}: {payload[:300]!r}")
                            continue
                    lat.append((time.perf_counter() - t0) * 1000)
                except Exception as exc:  # noqa: BLE001 - counted
                    errors += 1
                    if not first_error:
                        first_error.append(repr(exc))

        t0 = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(concurrency)))
        elapsed = time.perf_counter() - t0
    if first_error:
        print(f"# {url}: {errors} errors, first: {first_error[0]}", file=sys.stderr)
    return LoadResult(len(lat), errors, elapsed, lat)


def drive_rest(url: str, body: bytes, *, concurrency: int, seconds: float, warmup_s: float) -> LoadResult:
    if warmup_s:
        asyncio.run(_drive_rest(url, body, concurrency, warmup_s))
    return asyncio.run(_drive_rest(url, body, concurrency, seconds))


def check_answers(targets: dict[str, str], models: Sequence[TrainedModel], x: np.ndarray, output: str,
                  unavailable: dict[str, dict[str, str]]) -> list[str]:
    """Ask every server once per model and compare the class each answers (MLServer's lightgbm
    ``predict`` is the probability matrix: its arg-max)."""
    import tritonclient.grpc as tc

    notes = []
    for m in models:
        labels = {}
        for system, endpoint in targets.items():
            if m.name in unavailable.get(system, {}):
                continue
            client = tc.InferenceServerClient(endpoint)
            inp = tc.InferInput(INPUT, list(x.shape), "FP32")
            inp.set_data_from_numpy(x)
            try:
                got = client.infer(m.name, [inp], outputs=[tc.InferRequestedOutput(output)]).as_numpy(output)
            except Exception as exc:  # noqa: BLE001 - reported
                notes.append(f"{m.name} on {system}: {str(exc).splitlines()[0][:200]}")
                continue
            finally:
                client.close()
            got = np.asarray(got)
            labels[system] = (got.argmax(axis=1) if got.ndim == 2 and got.shape[1] > 1 else got.reshape(-1))
            labels[system] = labels[system].astype(np.int64)
        if len(labels) == 2:
            a, b = labels.values()
            if not np.array_equal(a, b):
                notes.append(f"{m.name}: plane and MLServer answer different classes ({a.tolist()} vs {b.tolist()})")
    return notes


@dataclass(frozen=True)
class Target:
    system: str  # plane, mlserver, plane-rest, ...
    proto: str  # grpc or rest
    where: str  # host:port (gRPC) or http://host:port (REST)
    pid: int  # the server process whose CPU is counted (with its children)

    @property
    def family(self) -> str:
        return self.system.split("-")[0]  # plane or mlserver


def rotated(items: Sequence, k: int) -> list:
    """``items`` starting at ``k`` (mod len): repetition k's order, so no system always goes first."""
    if not items:
        return []
    k %= len(items)
    return [*items[k:], *items[:k]]


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0][:400] if text else type(exc).__name__


def _timed(fn: Callable[[], T]) -> tuple[T, float]:
    t0 = time.monotonic()
    return fn(), time.monotonic() - t0


def _close_started(future: Future, cm: contextlib.AbstractContextManager) -> None:
    """Stop a server whose start ran in a thread, once that start has finished (if it succeeded)."""
    try:
        future.result()
    except Exception:  # noqa: BLE001 - it never started: nothing to stop
        return
    cm.__exit__(None, None, None)


def _measure(results: Results, section: str, kind: str, target: Target, model: str, conc: int,
             args: argparse.Namespace, x: np.ndarray, body: bytes) -> None:
    def once(seconds: float) -> LoadResult:
        if target.proto == "rest":
            return drive_rest(f"{target.where}/v2/models/{model}/infer", body, concurrency=conc, seconds=seconds,
                              warmup_s=0)
        return harness.drive(target.where, model, x, concurrency=conc, seconds=seconds, warmup_s=0,
                             outputs=[args.output])

    if args.warmup:
        once(args.warmup)  # not counted
    cpu0 = harness.cpu_seconds(target.pid)
    r = once(args.seconds)
    cpu_us = (harness.cpu_seconds(target.pid) - cpu0) * 1e6 / max(1, r.requests)
    if r.errors:
        print(f"# {section} {kind} {target.system} c={conc}: {r.errors} errors", file=sys.stderr)
    results.add(section, kind, target.system, conc, Run.of(r, cpu_us))
    print(f"# {section} {kind} {target.system} c={conc}: {r.rps:,.0f} req/s p50 {r.pct(50):.2f} "
          f"p99 {r.pct(99):.2f} ms, {cpu_us:,.0f} µs CPU/req", file=sys.stderr, flush=True)


def run(args: argparse.Namespace) -> tuple[str, str]:
    from plane.api import PlaneClient

    t_start = time.monotonic()
    phases: dict[str, float] = {}
    exe, why = (None, "skipped (--no-mlserver)") if args.no_mlserver else ensure_mlserver()
    phases["MLServer venv check"] = time.monotonic() - t_start
    if exe is None:
        print(f"MLServer not measured: {why}", file=sys.stderr)
    loads = [os.getloadavg()]
    results = Results()
    x = sample_rows(args.rows)
    body = rest_body(x, args.output)
    notes: list[str] = []
    unavailable: dict[str, dict[str, str]] = {"plane": {}, "mlserver": {}}  # family -> model -> why
    with tempfile.TemporaryDirectory(prefix="mesh-bench-formats-") as tmp:
        root = pathlib.Path(tmp)
        t0 = time.monotonic()
        models = train_models(root, args.models, trees=args.trees, forest_trees=args.forest_trees,
                              lightgbm_learning_rate=args.lightgbm_learning_rate)
        phases["training"] = time.monotonic() - t0
        by_name = {m.kind: m for m in models}
        rest_model = None if args.no_rest else by_name.get(args.rest_model)
        with contextlib.ExitStack() as stack, ThreadPoolExecutor(1) as pool:
            mls, mls_future = None, None
            if exe is not None:  # MLServer starts while the plane comes up and loads
                mls_cm = harness.mlserver_process(exe, mlserver_model_settings(models), workers=args.mlserver_workers,
                                                  env={"OMP_NUM_THREADS": str(args.mlserver_threads)}, timeout=240,
                                                  require_all=False)
                mls_future = pool.submit(_timed, mls_cm.__enter__)
                stack.callback(_close_started, mls_future, mls_cm)
            t0 = time.monotonic()
            plane, settings = stack.enter_context(embedded_plane(pods=1, capacity=1024**3))
            phases["plane up"] = time.monotonic() - t0
            pod = plane.pods[0]
            t0 = time.monotonic()
            with PlaneClient.connect(settings) as client:
                client.set_storage("default", "local", {"path": str(root)})
                for m in models:
                    client.register_model(m.name, path=m.rel, type=m.kind)
                    try:
                        client.ensure_loaded(m.name, sync=True)
                    except Exception as exc:  # noqa: BLE001 - reported; the others are still measured
                        unavailable["plane"][m.name] = _first_line(exc)
            phases[f"{len(models)} models loaded on the pod"] = time.monotonic() - t0
            if mls_future is not None:
                try:
                    mls, phases["MLServer ready (started alongside)"] = mls_future.result()
                except Exception as exc:  # noqa: BLE001 - reported, the plane is still measured
                    why = f"MLServer did not start: {_first_line(exc)}"
                    print(why, file=sys.stderr)
                    exe = None
            if mls:
                unavailable["mlserver"].update(mls.not_ready)
            for family, failed in unavailable.items():
                for name, reason in failed.items():
                    notes.append(f"{family} could not load {name}, not measured there: {reason}")
                    print(f"{family} could not load {name}: {reason}", file=sys.stderr)
            grpc_targets = [Target("plane", "grpc", pod.endpoint, pod.pid)]
            if mls:
                grpc_targets.append(Target("mlserver", "grpc", mls.grpc_endpoint, mls.pid))
            t0 = time.monotonic()
            notes += check_answers({t.system: t.where for t in grpc_targets}, models, x, args.output, unavailable)
            rest_targets = [Target("plane-rest", "rest", f"http://127.0.0.1:{pod.rest_port}", pod.pid),
                            Target("plane-grpc", "grpc", pod.endpoint, pod.pid)]
            if mls:
                rest_targets += [Target("mlserver-rest", "rest", f"http://127.0.0.1:{mls.http_port}", mls.pid),
                                 Target("mlserver-grpc", "grpc", mls.grpc_endpoint, mls.pid)]
            rest_targets.sort(key=lambda t: REST_SYSTEMS.index(t.system))
            phases["answer check"] = time.monotonic() - t0
            t0 = time.monotonic()
            for rep in range(args.reps):
                loads.append(os.getloadavg())
                for m in models:
                    for conc in args.concurrency:
                        for target in rotated(grpc_targets, rep):
                            if m.name in unavailable[target.family]:
                                continue
                            _measure(results, "grpc", m.kind, target, m.name, conc, args, x, body)
                if rest_model is not None:
                    for conc in args.concurrency:
                        for target in rotated(rest_targets, rep):
                            if rest_model.name in unavailable[target.family]:
                                continue
                            _measure(results, "rest", rest_model.kind, target, rest_model.name, conc, args, x, body)
            loads.append(os.getloadavg())
            phases["measuring"] = time.monotonic() - t0
            t0 = time.monotonic()
    phases["stopping servers"] = time.monotonic() - t0
    versions = _versions(exe)
    took = time.monotonic() - t_start
    rest_kind = rest_model.kind if rest_model else None
    text = render(args, results, models, rest_kind, loads, versions, why, notes, phases, took)
    if args.json:
        args.json.write_text(json.dumps({
            "bench": NAME, "checks": [], "mlserver": why or "measured",
            "runs": {"/".join(map(str, k)): [vars(r) for r in v] for k, v in results.runs.items()}}, indent=2))
    return text, summary(text.splitlines()[0], results, [m.kind for m in models], args.concurrency, rest_kind)


def _versions(exe: pathlib.Path | None) -> dict[str, dict[str, str]]:
    import lightgbm
    import sklearn
    import xgboost

    ours = {"xgboost": xgboost.__version__, "lightgbm": lightgbm.__version__, "sklearn": sklearn.__version__}
    theirs: dict[str, str] = {}
    if exe is not None:
        theirs = harness.venv_versions(exe.parent / "python", ["mlserver", "mlserver-xgboost", "mlserver-lightgbm",
                                                               "mlserver-sklearn", "xgboost", "lightgbm",
                                                               "scikit-learn"])
    return {"plane": ours, "mlserver": theirs}


def render(args: argparse.Namespace, results: Results, models: Sequence[TrainedModel], rest_model: str | None,
           loads: Sequence[tuple[float, float, float]], versions: dict[str, dict[str, str]], why: str,
           notes: Sequence[str], phases: dict[str, float], took_s: float) -> str:
    kinds = [m.kind for m in models]
    out = [f"XGBoost / LightGBM / scikit-learn: plane vs MLServer — {machine_line()} — {load_line(loads)} — "
           f"{args.reps} reps × {args.seconds:g}s (+{args.warmup:g}s warm-up), median ±half-range, "
           f"{args.rows} row(s) of {DATASET} per request, output `{args.output}` — `{command_line(args)}`", ""]
    out.append(table(["model", "file", "size", "what"],
                     [[m.kind, m.rel.split("/")[-1], f"{m.file_size / 1024:,.0f} KiB", m.description]
                      for m in models]))
    out += ["", "**gRPC hit path** (tritonclient.grpc.aio, same client for both):", ""]
    out.append(table(GRPC_HEADERS, grpc_rows(results, kinds, args.concurrency)))
    if rest_model:
        out += ["", f"**REST vs gRPC**, model `{rest_model}` (REST: one aiohttp client, the same JSON body for both; "
                "gRPC: tritonclient.grpc.aio):", ""]
        out.append(table(REST_HEADERS, rest_rows(results, rest_model, args.concurrency)))
    mv = versions.get("mlserver", {})
    pv = versions["plane"]
    out.append("")
    if why:
        out.append(f"MLServer not measured: {why}")
    else:
        runtimes = ", ".join(f"{d} {mv.get(d, '?')}" for d in ("mlserver-xgboost", "mlserver-lightgbm",
                                                              "mlserver-sklearn"))
        out.append(f"MLServer {mv.get('mlserver', '?')} ({runtimes}; xgboost {mv.get('xgboost', '?')}, lightgbm "
                   f"{mv.get('lightgbm', '?')}, scikit-learn {mv.get('scikit-learn', '?')}), parallel_workers="
                   f"{args.mlserver_workers}, OMP_NUM_THREADS={args.mlserver_threads}; plane: xgboost {pv['xgboost']}, "
                   f"lightgbm {pv['lightgbm']}, scikit-learn {pv['sklearn']}, 1 pod, 1 thread per model.")
    out.append("Ratios are medians of per-repetition ratios (req/s: higher favours the plane; p50/p99: lower does). "
               "Server CPU µs/req: user+system CPU of the pod process (MLServer: server + worker processes) "
               "during the measured seconds per answered request — steadier than req/s on a shared machine.")
    if notes:
        out.append("Notes: " + "; ".join(notes) + ".")
    elif not why:
        out.append("Answer check: plane and MLServer answered the same classes for every model.")
    out.append("Time: " + ", ".join(f"{k} {v:.1f} s" for k, v in phases.items()) + f"; whole run {took_s:.0f} s.")
    return "\n".join(out)


def summary(title: str, res: Results, kinds: Sequence[str], concurrency: Sequence[int],
            rest_model: str | None) -> str:
    """The README's block: the header line and the throughput ratios."""
    rows = ratio_summary(res, kinds, concurrency, rest_model)
    return "\n".join([f"Latest run (full tables in bench/results.md): {title}", "",
                      table(["throughput ratio", *(f"c={c}" for c in concurrency)], rows)])


def write_sections(text: str, readme_block: str) -> None:
    RESULTS_MD.write_text(replace_section(RESULTS_MD.read_text(), text, heading=f"## {NAME}"))
    README_MD.write_text(replace_section(README_MD.read_text(), readme_block,
                                         heading="## formats_vs_mlserver.py — latest results"))


def main(argv: Sequence[str] | None = None) -> None:
    args = parse_args(argv)
    text, readme_block = run(args)
    print(text)
    if args.write:
        write_sections(text, readme_block)
        print(f"wrote the {NAME} sections of {RESULTS_MD} and {README_MD}", file=sys.stderr)


if __name__ == "__main__":
    main()

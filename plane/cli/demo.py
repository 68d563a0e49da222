"""``mesh demo``: generate real demo models, register them, optionally send them traffic."""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import pathlib
import time
from typing import Any

from plane.cli.connect import client_for, settings_for
from plane.cli.output import EXIT_NO_PLANE, EXIT_OK, EXIT_USAGE, CliError, err, out, plain_progress, print_json

__all__ = ["cmd_demo", "DEMO_DESCRIPTION"]

DEMO_DESCRIPTION = (
    "Train small models on scikit-learn's bundled datasets (nothing is downloaded), write them to --out, "
    "register them under the storage key --storage-key (a local directory config is created when the key "
    "does not exist) and, with --requests, send Zipf-distributed requests over them. ONNX models by default; "
    "--formats mixes in scikit-learn (joblib), XGBoost (JSON) and LightGBM (text) models, e.g. "
    "--formats onnx,sklearn,xgboost,lightgbm (equal shares), --formats all, or "
    "--formats onnx=0.5,sklearn=0.2,xgboost=0.15,lightgbm=0.15 (shares are relative weights).")


def cmd_demo(args: argparse.Namespace) -> int:
    from plane import demo
    from plane.api import ModelSpec

    try:
        formats = demo.parse_formats(args.formats) if args.formats else None
    except ValueError as exc:
        raise CliError(f"--formats: {exc}", EXIT_USAGE) from exc
    if args.models < 0 or args.requests < 0:
        raise CliError("--models and --requests must not be negative", EXIT_USAGE)
    settings = settings_for(args)
    target = pathlib.Path(args.out).expanduser() if args.out else settings.state_dir / "demo-models"
    # connect first: a plane that cannot be reached is said before minutes of training
    with (contextlib.nullcontext() if args.no_register else client_for(args)) as client:
        target.mkdir(parents=True, exist_ok=True)
        models = _generate(demo, target, args, formats)
        if client is None:
            out.print(f"{len(models)} demo models written to {target}")
            return EXIT_OK
        existing = {c["key"] for c in client.list_storage()}
        if args.storage_key not in existing:
            client.set_storage(args.storage_key, "local", {"path": str(target)})
            (err if args.json else out).print(f"storage {args.storage_key!r}: local directory {target}")
        report = plain_progress()
        specs = [ModelSpec(m.model_id, m.path, args.storage_key, m.type) for m in models]
        created = client.register_models(specs, progress=lambda d, t: report("registering", d, t))
        traffic = _traffic(client, models, args, report) if args.requests else None
    if args.json:
        print_json({"generated": len(models), "registered": created, "directory": str(target),
                    "models": [dataclasses.asdict(m) for m in models],
                    "traffic": dataclasses.asdict(traffic) if traffic else None})
        return EXIT_OK
    mix = ", ".join(f"{n} {fmt}" for fmt, n in _counts(models).items())
    out.print(f"[green]{len(models)} demo models[/] ({mix}) in {target}; {created} newly registered")
    if traffic:
        out.print(f"sent {traffic.requests} requests in {traffic.seconds:.1f}s, {traffic.errors} errors"
                  + (f" (e.g. {traffic.error_samples[0]})" if traffic.error_samples else "")
                  + "; `mesh events` shows the loads and evictions")
    if models:
        m = models[0]
        out.print(f"try: model_name={m.model_id!r}, input {m.n_features} FP32 features "
                  f"(dataset {m.dataset}); `mesh models list` shows them all")
    return EXIT_OK


def _generate(demo: Any, target: pathlib.Path, args: argparse.Namespace, formats: dict[str, float] | None) -> list:
    report = plain_progress()
    last = [0.0]

    def gen_progress(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] > 1:
            last[0] = time.monotonic()
            report(f"generating demo models in {target}", done, total)

    return demo.generate_models(target, args.models, seed=args.seed, progress=gen_progress, formats=formats)


def _traffic(client: Any, models: list, args: argparse.Namespace, report: Any) -> Any:
    from plane.demo_traffic import send_demo_traffic

    endpoints = [p.endpoint for p in client.pods() if not p.shutting_down]
    if not endpoints:
        raise CliError("no pod is running to send demo traffic to: `mesh up` first", EXIT_NO_PLANE)
    return send_demo_traffic(endpoints, models, args.requests, settings=client.settings,
                             progress=lambda d, t: report("demo traffic (Zipf over the models)", d, t))


def _counts(models: list) -> dict[str, int]:
    counts: dict[str, int] = {}
    for m in models:
        counts[m.type] = counts.get(m.type, 0) + 1
    return counts

"""``mesh demo``: generate real ONNX demo models, register them, optionally send them traffic."""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import time

from plane.cli.connect import client_for, settings_for
from plane.cli.output import EXIT_NO_PLANE, EXIT_OK, CliError, err, out, plain_progress, print_json

__all__ = ["cmd_demo"]


def cmd_demo(args: argparse.Namespace) -> int:
    from plane import demo
    from plane.api import ModelSpec

    settings = settings_for(args)
    target = pathlib.Path(args.out).expanduser() if args.out else settings.state_dir / "demo-models"
    target.mkdir(parents=True, exist_ok=True)
    report = plain_progress()
    last = [0.0]

    def gen_progress(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] > 1:
            last[0] = time.monotonic()
            report(f"generating demo models in {target}", done, total)

    models = demo.generate_models(target, args.models, seed=args.seed, progress=gen_progress)
    if args.no_register:
        out.print(f"{len(models)} demo models written to {target}")
        return EXIT_OK
    with client_for(args) as client:
        existing = {c["key"] for c in client.list_storage()}
        if args.storage_key not in existing:
            client.set_storage(args.storage_key, "local", {"path": str(target)})
            (err if args.json else out).print(f"storage {args.storage_key!r}: local directory {target}")
        specs = [ModelSpec(m.model_id, m.path, args.storage_key) for m in models]
        created = client.register_models(specs, progress=lambda d, t: report("registering", d, t))
        traffic = None
        if args.requests:
            from plane.demo_traffic import send_demo_traffic

            endpoints = [p.endpoint for p in client.pods() if not p.shutting_down]
            if not endpoints:
                raise CliError("no pod is running to send demo traffic to: `mesh up` first", EXIT_NO_PLANE)
            traffic = send_demo_traffic(endpoints, models, args.requests, settings=client.settings,
                                        progress=lambda d, t: report("demo traffic (Zipf over the models)", d, t))
    if args.json:
        print_json({"generated": len(models), "registered": created, "directory": str(target),
               "models": [dataclasses.asdict(m) for m in models],
               "traffic": dataclasses.asdict(traffic) if traffic else None})
    else:
        out.print(f"[green]{len(models)} demo models[/] in {target}; {created} newly registered")
        if traffic:
            out.print(f"sent {traffic.requests} requests in {traffic.seconds:.1f}s, {traffic.errors} errors"
                      + (f" (e.g. {traffic.error_samples[0]})" if traffic.error_samples else "")
                      + "; `mesh events` shows the loads and evictions")
        if models:
            m = models[0]
            out.print(f"try: model_name={m.model_id!r}, input {m.n_features} FP32 features "
                      f"(dataset {m.dataset}); `mesh models list` shows them all")
    return EXIT_OK

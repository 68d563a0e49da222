"""``mesh models``: register, list, inspect, load, set the policy of and unregister models."""

from __future__ import annotations

import argparse
import dataclasses
import time
from typing import Any

from rich.table import Table

from plane.cli.connect import client_for
from plane.cli.output import EXIT_FAILED, EXIT_OK, CliError, ago, out, print_json, print_warning
from plane.settings import format_size

__all__ = ["cmd_models_register", "cmd_models_list", "cmd_models_status", "cmd_models_unregister", "cmd_models_load",
           "cmd_models_policy"]


def _model_json(m: Any, live: set[str] | None = None) -> dict[str, Any]:
    from plane import usage

    d = dataclasses.asdict(m)  # every record field, "used_ms" included (0 = never used)
    d["status"] = m.status()
    d["loaded_on"] = [p for p in m.loaded_on() if live is None or p in live]
    d["rpm_now"] = usage.fresh_rpm(m, int(time.time() * 1000))  # the rate now, 0 a minute after the last request
    return d


def cmd_models_register(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        rec = client.register_model(args.model_id, path=args.path, storage_key=args.storage, type=args.type,
                                    load_now=args.load_now, sync=args.sync, pinned=args.pin,
                                    min_copies=args.min_copies, max_copies=args.max_copies, require_storage=True)
        warning = client.copy_floor_warning(args.min_copies)
    if warning:
        print_warning(warning)
    if args.json:
        print_json(_model_json(rec))
    else:
        out.print(f"registered {rec.model_id} ({rec.key}:{rec.path}) — {rec.status()}")
    return EXIT_OK


def _rate(rpm: float) -> str:
    """A model's request rate as the tables show it: whole numbers, one decimal below 10/min."""
    return f"{rpm:.0f}" if rpm >= 10 or rpm == 0 else f"{rpm:.1f}"


def cmd_models_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        snap = client.snapshot()
    live = {p.pod_id for p in snap.pods}
    models = snap.models
    if args.filter:
        models = [m for m in models if args.filter in m.model_id]
    if args.json:
        print_json([_model_json(m, live) for m in models])
        return EXIT_OK
    from plane import usage

    now = int(time.time() * 1000)
    table = Table("model", "status", "copies", "size", "last used", "req/min", "failures")
    for m in models[: args.limit or None]:
        copies = ", ".join(f"{p}{'' if c.state == 'loaded' else ' (loading)'}" for p, c in sorted(m.copies.items())
                           if p in live) or "-"
        table.add_row(m.model_id, m.status(), copies, format_size(m.size) if m.size else "-",
                      usage.last_used_text(m, now), _rate(usage.fresh_rpm(m, now)),
                      str(len(m.failed)) if m.failed else "")
    out.print(table)
    shown = min(len(models), args.limit) if args.limit else len(models)
    out.print(f"{shown} of {len(models)} models shown")
    return EXIT_OK


def cmd_models_status(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        rec = client.get_model(args.model_id)
        live = {p.pod_id for p in client.pods()}
    if rec is None:
        raise CliError(f"model {args.model_id!r} is not registered", EXIT_FAILED)
    if args.json:
        print_json(_model_json(rec, live))
        return EXIT_OK
    from plane import usage

    now = int(time.time() * 1000)
    out.print(f"[bold]{rec.model_id}[/] — {rec.status()}  ({rec.key}:{rec.path}, type {rec.type})")
    out.print(f"size {format_size(rec.size) if rec.size else 'unknown (not loaded yet)'}, "
              f"last used {usage.last_used_text(rec, now)}, {_rate(usage.fresh_rpm(rec, now))} req/min"
              + (", pinned" if rec.pinned else ""))
    for pod, c in sorted(rec.copies.items()):
        gone = "" if pod in live else " [red](pod gone)[/]"
        out.print(f"  copy on {pod}: {c.state} since {ago(c.since_ms)}, {format_size(c.size)}{gone}")
    for pod, f in sorted(rec.failed.items()):
        out.print(f"  [red]failed on {pod}[/] {ago(f.time_ms)}: {f.message}")
    if rec.io:
        for kind in ("inputs", "outputs"):
            for name, dt, shape in rec.io.get(kind, []):
                out.print(f"  {kind[:-1]} {name}: {dt} {shape}")
    return EXIT_OK


def cmd_models_unregister(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        rec = client.get_model(args.model_id)
        if rec is None:
            raise CliError(f"model {args.model_id!r} is not registered", EXIT_FAILED)
        if rec.refs:
            raise CliError(f"model {args.model_id!r} is the target of vmodel(s) {', '.join(rec.refs)}: "
                           "delete or repoint them first", EXIT_FAILED)
        client.unregister_model(args.model_id)
    if args.json:
        print_json({"unregistered": args.model_id})
    else:
        out.print(f"unregistered {args.model_id}")
    return EXIT_OK


def failure_text(rec: Any) -> str:
    """Why a model's loads failed, each distinct reason once."""
    reasons = list(dict.fromkeys(f.message for _, f in sorted(rec.failed.items())))
    return "; ".join(reasons) or "no reason recorded"


def cmd_models_load(args: argparse.Namespace) -> int:
    """Waits for the outcome (a failed load is exit 1 with its reason: the pod's answer to a
    synchronous ensureLoaded); ``--no-wait`` returns once a pod has started the load."""
    wait = args.wait or args.sync
    with client_for(args) as client:
        rec = client.ensure_loaded(args.model_id, sync=wait, timeout=args.timeout)
        live = {p.pod_id for p in client.pods()}
    if rec.status() == "LOADING_FAILED":  # it has failed already: a load started now would fail the same way
        raise CliError(f"{rec.model_id} failed to load: {failure_text(rec)}", EXIT_FAILED)
    if args.json:
        print_json(_model_json(rec, live))
        return EXIT_OK
    where = [p for p in rec.loaded_on() if p in live] or [p for p in rec.loading_on() if p in live]
    out.print(f"{rec.model_id}: {rec.status()}" + (f" on {', '.join(where)}" if where else
                                                  f" (a pod is starting the load; `mesh models status "
                                                  f"{rec.model_id}` follows it)"))
    return EXIT_OK


def cmd_models_policy(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        rec = client.set_model_policy(args.model_id, pinned=args.pin, min_copies=args.min_copies,
                                      max_copies=args.max_copies)
        warning = client.copy_floor_warning(rec.min_copies) if args.min_copies is not None else ""
    if warning:
        print_warning(warning)
    if args.json:
        print_json(_model_json(rec))
    else:
        out.print(f"{rec.model_id}: pinned={rec.pinned} min_copies={rec.min_copies} max_copies={rec.max_copies}")
    return EXIT_OK

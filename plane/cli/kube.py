"""``mesh install`` and ``mesh uninstall``: the plane on a Kubernetes cluster.

Thin argparse handlers over :mod:`plane.kube` (the console's and dashboard's Install views call
the same functions). Progress goes to stderr through ``rich``; results go to stdout, as a
table or, with ``--json``, as one JSON document. Secret values are never printed: ``--dry-run``
masks them, and only ``--output FILE`` writes them (to a file readable by its owner only).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import sys
from contextlib import contextmanager
from typing import Any

from plane import kube
from plane.cli.output import print_error
from plane.settings import format_size, parse_size

__all__ = ["add_commands", "run_install", "run_uninstall"]


def add_commands(subparsers: Any) -> None:
    """Add ``install`` and ``uninstall`` to an argparse subparsers object."""
    p = subparsers.add_parser(
        "install",
        help="install the plane on a Kubernetes cluster",
        description="Render the plane's manifests and apply them with server-side apply "
        f"(field manager {kube.FIELD_MANAGER!r}), then wait until the pods are ready.",
    )
    _target_args(p)
    p.add_argument("--pods", type=int, default=kube.DEFAULT_PODS, help="runtime pods (default %(default)s)")
    p.add_argument("--capacity", default=f"{kube.DEFAULT_CAPACITY_BYTES // 1024**2}MiB",
                   help="model cache per pod, e.g. 512MiB or 2GiB (default %(default)s); "
                        "the pods' memory request is this plus 256MiB")
    p.add_argument("--image", default=kube.DEFAULT_IMAGE, help="the plane image (default %(default)s)")
    p.add_argument("--storage-from-file", metavar="FILE",
                   help="storage configs (SPEC section 4 JSON/YAML: {key: {type: s3, ...}} or a "
                        "storage-config Secret) for the mesh-storage-config Secret")
    p.add_argument("--etcd", metavar="HOST:PORT",
                   help="use this etcd instead of installing one in the namespace")
    p.add_argument("--quickstart", action="store_true",
                   help="also install MinIO and a Job that uploads and registers 50 demo models")
    p.add_argument("--dry-run", action="store_true",
                   help="print the rendered YAML (Secret values masked) and apply nothing")
    p.add_argument("--output", metavar="FILE",
                   help="with --dry-run: write the YAML, Secret values included, to FILE (mode 0600)")
    p.add_argument("--no-wait", action="store_true", help="apply and return without waiting for the pods")
    p.add_argument("--timeout", type=float, default=kube.ROLLOUT_TIMEOUT_S,
                   help="seconds to wait for the rollout (default %(default)s)")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_install)

    p = subparsers.add_parser(
        "uninstall",
        help="remove the plane from a Kubernetes cluster",
        description="Delete what `mesh install --kubernetes` applied. The etcd volume (models, "
        "vmodels, storage configs) and the namespace stay unless --delete-data.",
    )
    _target_args(p)
    p.add_argument("--delete-data", action="store_true",
                   help="also delete the plane's volumes and the namespace it created (needs --yes)")
    p.add_argument("--yes", action="store_true", help="confirm --delete-data")
    p.add_argument("--json", action="store_true", help="print the result as JSON")
    p.set_defaults(func=run_uninstall)


def _target_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("--kubernetes", action="store_true", help="target a Kubernetes cluster (required)")
    p.add_argument("--context", help="kubeconfig context (default: the current one)")
    p.add_argument("--namespace", "-n", default=kube.DEFAULT_NAMESPACE,
                   help="namespace (default %(default)s)")


def _consoles() -> tuple[Any, Any]:
    from rich.console import Console

    return Console(), Console(stderr=True)


def _fail(err: Any, message: str, code: int, as_json: bool) -> int:
    if as_json:
        print(json.dumps({"ok": False, "error": message}))
    else:
        print_error(message)
    return code


@contextmanager
def _progress_bar(err: Any, enabled: bool):
    """A rich progress bar on stderr; yields a ``progress(message, done, total)`` callback."""
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, SpinnerColumn, TextColumn

    with Progress(SpinnerColumn(), TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=err, transient=True) as bar:
        task = bar.add_task("starting", total=1)

        def progress(message: str, done: int, total: int) -> None:
            bar.update(task, description=message, completed=done, total=max(total, 1))

        yield progress


def run_install(args: argparse.Namespace) -> int:
    out, err = _consoles()
    as_json = bool(getattr(args, "json", False))
    if not args.kubernetes:
        return _fail(err, "mesh install only installs on Kubernetes: add --kubernetes "
                          "(to run the plane on this machine use `mesh up`)", 2, as_json)
    if args.output and not args.dry_run:
        return _fail(err, "--output writes the rendered YAML instead of applying it: add --dry-run",
                     2, as_json)
    try:
        capacity = parse_size(args.capacity)
        storage = kube.load_storage_file(args.storage_from_file) if args.storage_from_file else None
        objects = kube.render_install(
            namespace=args.namespace, pods=args.pods, capacity_bytes=capacity, image=args.image,
            storage_config=storage, etcd_endpoint=args.etcd, quickstart=args.quickstart,
        )
    except ValueError as exc:
        return _fail(err, str(exc), 2, as_json)

    if args.dry_run:
        if args.output:
            path = pathlib.Path(args.output).expanduser()
            # Created owner-only before anything is written: it holds the Secret values.
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
            with os.fdopen(fd, "w") as f:
                f.write(kube.to_yaml(objects, mask=False))
            if as_json:
                print(json.dumps({"ok": True, "written": str(path), "objects": len(objects)}))
            else:
                err.print(f"wrote {len(objects)} objects to {path} (Secret values included: keep it private)")
        else:
            sys.stdout.write(kube.to_yaml(objects))
        return 0

    if not as_json:
        err.print(f"installing mesh-plane in namespace [bold]{args.namespace}[/]: {args.pods} pods x "
                  f"{format_size(capacity)} cache, image {args.image}", highlight=False)
    try:
        with _progress_bar(err, not as_json) as progress:
            result = kube.install(objects, namespace=args.namespace, context=args.context, progress=progress,
                                  wait=not args.no_wait, timeout_s=args.timeout)
    except kube.KubeError as exc:
        return _fail(err, str(exc), 1, as_json)

    if as_json:
        print(json.dumps(_install_json(result), indent=2))
        return 0 if result.ok else 1
    created = sum(1 for a in result.applied.applied if a.created)
    out.print(f"applied {len(result.applied.applied)} objects ({created} created, "
              f"{len(result.applied.applied) - created} updated) with field manager {kube.FIELD_MANAGER}")
    for e in result.applied.errors:
        err.print(f"[red]failed:[/] {e}", highlight=False)
    if result.rollout is not None:
        _print_pods(out, result.rollout)
        colour = "green" if result.rollout.ready else "red"
        out.print(f"[{colour}]{result.rollout.message}[/]", highlight=False)
        if result.rollout.ready:
            out.print(f"inference: {kube.INFERENCE_SERVICE}.{args.namespace}.svc:{kube.GRPC_PORT}; console: "
                      f"kubectl -n {args.namespace} port-forward svc/{kube.ETCD_NAME} 2379 & "
                      "MESH_ETCD=127.0.0.1:2379 mesh-console", highlight=False)
    return 0 if result.ok else 1


def _print_pods(out: Any, rollout: kube.RolloutResult) -> None:
    from rich.table import Table

    if not rollout.pods:
        return
    table = Table(title="pods", title_justify="left")
    for col in ("pod", "ready", "phase", "restarts", "problem"):
        table.add_column(col)
    for p in rollout.pods:
        ready = "[green]yes[/]" if p.ready else "[red]no[/]"
        table.add_row(p.name, ready, p.phase, str(p.restarts), p.reason)
    out.print(table)


def _install_json(result: kube.InstallResult) -> dict[str, Any]:
    doc: dict[str, Any] = {
        "ok": result.ok,
        "applied": [{"object": a.ref, "created": a.created} for a in result.applied.applied],
        "errors": result.applied.errors,
    }
    if result.rollout is not None:
        doc["rollout"] = {
            "ready": result.rollout.ready,
            "message": result.rollout.message,
            "pods": [vars(p) for p in result.rollout.pods],
        }
    return doc


def run_uninstall(args: argparse.Namespace) -> int:
    out, err = _consoles()
    as_json = bool(getattr(args, "json", False))
    if not args.kubernetes:
        return _fail(err, "mesh uninstall only uninstalls from Kubernetes: add --kubernetes "
                          "(to stop the plane on this machine use `mesh down`)", 2, as_json)
    if args.delete_data and not args.yes:
        return _fail(err, "--delete-data deletes the registry (models, vmodels, storage configs) "
                          "and the namespace: add --yes to confirm", 2, as_json)
    try:
        with _progress_bar(err, not as_json) as progress:
            result = kube.uninstall(namespace=args.namespace, context=args.context, progress=progress,
                                    delete_data=args.delete_data)
    except kube.KubeError as exc:
        return _fail(err, str(exc), 1, as_json)
    if as_json:
        print(json.dumps({"ok": result.ok, "deleted": result.deleted, "missing": result.missing,
                          "errors": result.errors}, indent=2))
        return 0 if result.ok else 1
    out.print(f"deleted {len(result.deleted)} objects from namespace {args.namespace} "
              f"({len(result.missing)} were not there)", highlight=False)
    if not args.delete_data:
        out.print(f"kept the etcd volume and namespace {args.namespace}: --delete-data --yes removes them",
                  highlight=False)
    for e in result.errors:
        err.print(f"[red]failed:[/] {e}", highlight=False)
    return 0 if result.ok else 1

"""``mesh controller``: run the KServe controller (InferenceServices and Predictors in ModelMesh mode
into registrations, status back), as the ``mesh-controller`` Deployment does.

It talks to the plane's etcd like every ``mesh`` command (``--etcd``/``MESH_ETCD``, ``--prefix``)
and to the Kubernetes API with the in-cluster configuration, or a kubeconfig context
(``--context``) when run from a workstation. ``--once`` runs one pass, prints what it did and
exits: the way to see what the controller would do, or to run it from a CronJob.
"""

from __future__ import annotations

import argparse
import logging
import os
import signal
import threading
import time
from typing import Any

from plane.cli.output import EXIT_FAILED, EXIT_NO_PLANE, EXIT_OK, CliError, out, print_json

__all__ = ["add_command", "cmd_controller"]

CONNECT_RETRY_S = 180.0


def add_command(sub: Any) -> None:
    """Add ``controller`` to the ``mesh`` subcommands."""
    from plane.controller.runner import RESYNC_S

    p = sub.add_parser("controller", help="reconcile KServe InferenceServices/Predictors (ModelMesh mode) "
                                          "into registrations and write their status")
    p.add_argument("--namespace", "-n", default=os.environ.get("POD_NAMESPACE") or "mesh-plane",
                   help="namespace whose resources are watched (default $POD_NAMESPACE, else mesh-plane)")
    p.add_argument("--context", help="kubeconfig context (default: in-cluster, else the current context)")
    p.add_argument("--etcd", help="etcd endpoint host:port of the plane (MESH_ETCD)")
    p.add_argument("--prefix", help="registry root prefix (MESH_ETCD_PREFIX, default 'mesh')")
    p.add_argument("--state-dir", help=argparse.SUPPRESS)
    p.add_argument("--resync", type=float, default=RESYNC_S,
                   help="seconds between passes when nothing changes (default %(default)s)")
    p.add_argument("--grpc-url", help="URL written to status.url (default grpc://mesh-inference.<namespace>:8033)")
    p.add_argument("--rest-url", default="", help="REST URL written to status.components.predictor.restUrl")
    p.add_argument("--once", action="store_true", help="one pass, then exit")
    p.add_argument("--json", action="store_true", help="with --once: the pass's result as JSON")
    p.set_defaults(func=cmd_controller)


def _connect(args: argparse.Namespace) -> Any:
    """The plane, retried for a while: in a cluster the controller may start before etcd."""
    from plane.api import PlaneClient
    from plane.cli.connect import settings_for
    from plane.registry import RegistryError

    deadline = time.monotonic() + (0 if args.once else CONNECT_RETRY_S)
    while True:
        try:
            return PlaneClient.connect(settings_for(args))
        except (RegistryError, OSError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise CliError(str(exc), EXIT_NO_PLANE) from exc
            logging.getLogger("plane.controller").warning("etcd not reachable yet (%s); retrying", exc)
            time.sleep(3)


def cmd_controller(args: argparse.Namespace) -> int:
    from plane.controller.runner import Controller
    from plane.kube import KubeError
    from plane.kube.cluster import _client

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(message)s")
    try:
        api_client = _client(args.context, None)
    except KubeError as exc:
        raise CliError(str(exc), EXIT_FAILED) from exc
    plane = _connect(args)
    try:
        controller = Controller(plane, api_client, args.namespace, grpc_url=args.grpc_url, rest_url=args.rest_url)
        if args.once:
            controller.sync()
            result = controller.reconcile()
            if args.json:
                print_json({"ok": not result.errors, "actions": result.actions, "errors": result.errors,
                            "patched": result.patched,
                            "states": {k: v.active for k, v in result.states.items()}})
            else:
                for line in result.actions + [f"status of {p} written" for p in result.patched]:
                    out.print(line)
                for line in result.errors:
                    out.print(f"[red]error:[/] {line}")
            return EXIT_OK if not result.errors else EXIT_FAILED
        stop = threading.Event()
        signal.signal(signal.SIGTERM, lambda *_: stop.set())
        logging.getLogger("plane.controller").info("watching InferenceServices and Predictors in %s", args.namespace)
        try:
            controller.run(stop, resync_s=args.resync)
        except KeyboardInterrupt:
            stop.set()
        return EXIT_OK
    finally:
        plane.close()

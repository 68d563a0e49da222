"""The plane a command talks to: settings from ``--state-dir``/``--etcd``/``--prefix`` and ``MESH_*``."""

from __future__ import annotations

import argparse
import pathlib
from typing import Any

from plane.cli.output import EXIT_NO_PLANE, CliError
from plane.settings import MeshSettings

__all__ = ["settings_for", "client_for"]


def settings_for(args: argparse.Namespace) -> MeshSettings:
    update: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        update["state_dir"] = pathlib.Path(args.state_dir).expanduser()
    if getattr(args, "etcd", None):
        update["etcd"] = args.etcd
    if getattr(args, "prefix", None):
        update["etcd_prefix"] = args.prefix
    from plane import local

    return local.with_embedded_tls(MeshSettings().model_copy(update=update))


def client_for(args: argparse.Namespace):
    from plane.api import PlaneClient
    from plane.registry import RegistryError

    try:
        return PlaneClient.connect(settings_for(args))
    except RegistryError as exc:
        raise CliError(str(exc), EXIT_NO_PLANE) from exc

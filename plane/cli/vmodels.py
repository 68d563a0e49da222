"""``mesh vmodels``: aliases that point at a model."""

from __future__ import annotations

import argparse
import dataclasses
from typing import Any

from rich.table import Table

from plane.cli.connect import client_for
from plane.cli.output import EXIT_FAILED, EXIT_OK, CliError, out, print_json

__all__ = ["cmd_vmodels_set", "cmd_vmodels_list", "cmd_vmodels_delete"]


def _vmodel_json(v: Any) -> dict[str, Any]:
    d = dataclasses.asdict(v)
    d["status"] = v.status()
    return d


def cmd_vmodels_set(args: argparse.Namespace) -> int:
    from plane.mgmt_client import ManagementError

    with client_for(args) as client:
        existed = client.get_vmodel(args.vmodel_id) is not None
        try:
            rec = client.set_vmodel(args.vmodel_id, args.target, auto_delete=args.auto_delete, owner=args.owner,
                                    sync=args.sync, shadow_model=args.force)
        except ManagementError as exc:
            if not args.sync:
                raise
            kept = "kept as it was" if existed else "not created"
            raise CliError(f"{exc} (vmodel {args.vmodel_id!r} {kept})", EXIT_FAILED) from exc
    if args.json:
        print_json(_vmodel_json(rec))
    else:
        out.print(f"vmodel {rec.vmodel_id}: active {rec.active}, target {rec.target} — {rec.status()}")
    return EXIT_OK


def cmd_vmodels_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        vms = client.list_vmodels()
    if args.json:
        print_json([_vmodel_json(v) for v in vms])
        return EXIT_OK
    table = Table("vmodel", "active", "target", "status", "owner")
    for v in vms:
        table.add_row(v.vmodel_id, v.active, v.target, v.status(), v.owner)
    out.print(table)
    return EXIT_OK


def cmd_vmodels_delete(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        ok = client.delete_vmodel(args.vmodel_id)
    if not ok:
        raise CliError(f"vmodel {args.vmodel_id!r} does not exist", EXIT_FAILED)
    if args.json:
        print_json({"deleted": args.vmodel_id})
    else:
        out.print(f"deleted vmodel {args.vmodel_id}")
    return EXIT_OK

"""``mesh storage``: where model files come from (secrets are masked in every output)."""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
from typing import Any

from rich.table import Table

from plane.cli.connect import client_for
from plane.cli.output import EXIT_FAILED, EXIT_OK, EXIT_USAGE, CliError, out, print_json

__all__ = ["cmd_storage_set", "cmd_storage_list", "cmd_storage_test", "cmd_storage_remove"]


def _secret_value(args: argparse.Namespace) -> str | None:
    if args.secret_access_key_env:
        value = os.environ.get(args.secret_access_key_env)
        if not value:
            raise CliError(f"environment variable {args.secret_access_key_env} is empty or unset", EXIT_USAGE)
        return value
    if args.secret_access_key_file:
        try:
            return pathlib.Path(args.secret_access_key_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.secret_access_key_file}: {exc.strerror}", EXIT_USAGE) from exc
    return args.secret_access_key


def _headers(args: argparse.Namespace) -> dict[str, str]:
    """``--header 'Name: value'`` and ``--header-env Name=VAR`` (the value read from this
    process's environment variable VAR, so it never shows in the command line). Values are
    secrets: never echoed, not even in an error."""
    headers: dict[str, str] = {}
    for item in getattr(args, "header", None) or []:
        name, sep, value = item.partition(":")
        if not sep or not name.strip():
            raise CliError("--header takes 'Name: value': one of them has no ':' (it is not shown: a header "
                           "may hold a secret)", EXIT_USAGE)
        headers[name.strip()] = value.strip()
    for item in getattr(args, "header_env", None) or []:
        name, sep, var = item.partition("=")
        if not sep or not name.strip() or not var.strip():
            raise CliError(f"--header-env takes Name=VARIABLE (got {item[:40]!r})", EXIT_USAGE)
        value = os.environ.get(var.strip())
        if not value:
            raise CliError(f"environment variable {var.strip()} (for header {name.strip()!r}) is empty or unset",
                           EXIT_USAGE)
        headers[name.strip()] = value
    return headers


def cmd_storage_set(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    typ = args.type
    if args.from_file:
        try:
            data = json.loads(pathlib.Path(args.from_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read storage config {args.from_file}: {exc}", EXIT_USAGE) from exc
        if not isinstance(data, dict):
            raise CliError(f"{args.from_file} must hold one JSON object (the SPEC storage-config format)", EXIT_USAGE)
        typ = typ or data.pop("type", None)
        params.update(data)
    if not typ:
        raise CliError("give --type local|s3|http|pvc (or a --from-file with a 'type')", EXIT_USAGE)
    for name in ("path", "endpoint_url", "bucket", "region", "access_key_id", "url"):
        value = getattr(args, name, None)
        if value:
            params[name] = value
    if getattr(args, "pvc_name", None):
        params["name"] = args.pvc_name
    headers = _headers(args)
    if headers:
        given = params.get("headers")
        params["headers"] = {**(given if isinstance(given, dict) else {}), **headers}
    secret = _secret_value(args)
    if secret:
        params["secret_access_key"] = secret
    if args.secret_from_pod_env:
        params["secret_access_key_env"] = args.secret_from_pod_env
    if args.secret_from_pod_file:
        params["secret_access_key_file"] = args.secret_from_pod_file
    with client_for(args) as client:
        cfg = client.set_storage(args.key, typ, params)
        masked = cfg.masked()
    if args.json:
        print_json(masked)
    else:
        out.print(f"storage {cfg.key!r} ({cfg.type}) saved: " + ", ".join(
            f"{k}={v}" for k, v in masked.items() if k not in ("key", "type")))
    return EXIT_OK


def cmd_storage_list(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        configs = client.list_storage()
    if args.json:
        print_json(configs)
        return EXIT_OK
    table = Table("key", "type", "settings (secrets masked)")
    for c in configs:
        table.add_row(c["key"], c["type"], ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("key", "type")))
    out.print(table)
    return EXIT_OK


def cmd_storage_test(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        result = client.test_storage(args.key, path=args.path or "")
    if args.json:
        print_json(dataclasses.asdict(result))
    else:
        colour = "green" if result.ok else "red"
        out.print(f"[{colour}]{'ok' if result.ok else 'failed'}[/]: {result.message}")
        for obj in result.objects:
            out.print(f"  {obj}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_storage_remove(args: argparse.Namespace) -> int:
    """Refused (exit 2, naming the models) while registered models use the key, unless --force."""
    with client_for(args) as client:
        ok = client.remove_storage_unused(args.key, force=bool(getattr(args, "force", False)))
    if not ok:
        raise CliError(f"no storage config named {args.key!r}", EXIT_FAILED)
    if args.json:
        print_json({"removed": args.key})
    else:
        out.print(f"removed storage {args.key!r}")
    return EXIT_OK

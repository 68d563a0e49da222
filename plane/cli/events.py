"""``mesh events``: the event log (loads, evictions, failures)."""

from __future__ import annotations

import argparse
import dataclasses
import time

from rich.table import Table

from plane.cli.connect import client_for
from plane.cli.output import EXIT_OK, out, print_json
from plane.settings import format_size

__all__ = ["cmd_events"]


def cmd_events(args: argparse.Namespace) -> int:
    with client_for(args) as client:
        since = int(time.time() * 1000 - args.minutes * 60_000) if args.minutes else 0
        events = client.events(since_ms=since, limit=0)
        if args.kind:
            events = [e for e in events if e.kind == args.kind]
        if args.model:
            events = [e for e in events if e.model == args.model]
        if args.limit:
            events = events[-args.limit:]
    if args.json:
        print_json([{k: v for k, v in dataclasses.asdict(e).items() if k != "key"} for e in events])
        return EXIT_OK
    table = Table("time", "kind", "model", "pod", "size", "reason")
    for e in events:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(e.time_ms / 1000)), e.kind, e.model, e.pod,
                      format_size(e.size) if e.size else "", e.reason)
    out.print(table)
    return EXIT_OK

"""``mesh``: the operator's command line.

Every command is a thin layer over :mod:`plane.api` and :mod:`plane.local`; ``--json`` output
is a stable contract documented in docs/cli-json.md. Exit codes: 0 success, 1 operation
failed, 2 bad usage or input, 3 no plane running / registry unreachable.

The parser and :func:`main` are in :mod:`plane.cli.parser`; the commands, one module per group,
beside it; what they print with in :mod:`plane.cli.output`. ``mesh = "plane.cli:main"`` is the
console script, and ``python -m plane.cli`` runs the same.
"""

from __future__ import annotations

from plane.cli.output import EXIT_FAILED, EXIT_NO_PLANE, EXIT_OK, EXIT_USAGE, CliError
from plane.cli.parser import build_parser, main

__all__ = ["main", "build_parser", "CliError", "EXIT_OK", "EXIT_FAILED", "EXIT_USAGE", "EXIT_NO_PLANE"]

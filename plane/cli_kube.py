"""The old name of :mod:`plane.cli.kube` (``mesh install`` / ``mesh uninstall --kubernetes``), kept importable."""

from __future__ import annotations

from plane.cli.kube import add_commands, run_install, run_uninstall

__all__ = ["add_commands", "run_install", "run_uninstall"]

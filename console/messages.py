"""Typed messages that workers post to the app and its screens."""

from __future__ import annotations

from dataclasses import dataclass

from textual.message import Message

from console.state import Change, PlaneState
from plane.api import StorageTestResult
from plane.registry import Event
from plane.stats import StatsRecord

__all__ = [
    "PlaneConnected",
    "PlaneChanged",
    "PlaneLost",
    "HistoryLoaded",
    "StatsUpdated",
    "NoPlane",
    "InstallProgress",
    "InstallFinished",
    "StorageTested",
]


@dataclass
class PlaneConnected(Message):
    """The registry was read in full; changes follow as :class:`PlaneChanged`."""

    endpoint: str
    state: PlaneState


@dataclass
class PlaneChanged(Message):
    """A batch of changes from the etcd watch."""

    changes: list[Change]


@dataclass
class HistoryLoaded(Message):
    """The event log (all of it, oldest first) and the last hour of per-minute stats, read
    right after the registry; ``error`` says why not when they could not be read."""

    events: list[Event]
    stats: list[StatsRecord]
    error: str = ""


@dataclass
class StatsUpdated(Message):
    """A poll of the pods' per-minute stats (they live outside the watched prefix)."""

    records: list[StatsRecord]
    error: str = ""


@dataclass
class PlaneLost(Message):
    """etcd could not be reached (or stopped answering); the app retries in ``retry_s``."""

    reason: str
    retry_s: float


@dataclass
class NoPlane(Message):
    """No etcd is configured and no embedded plane runs in the state dir."""

    reason: str


@dataclass
class InstallProgress(Message):
    """A step of starting or stopping the plane (from ``local.up``/``down`` or kube)."""

    text: str
    done: int
    total: int
    target: str = "local"  # "local" (embedded plane) or "kube"


@dataclass
class InstallFinished(Message):
    ok: bool
    text: str
    target: str = "local"


@dataclass
class StorageTested(Message):
    key: str
    result: StorageTestResult

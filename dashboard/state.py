"""Shared state of the dashboard: one PlaneClient per plane, short-lived cached reads.

The client is created once per (etcd endpoint, prefix) with ``st.cache_resource`` and
closed when Streamlit drops it. Snapshots, the event log and the pods' per-minute stats are
cached for a second or two so that several figures, and several browser sessions, share one
registry read. They are cached as shared read-only objects (``st.cache_resource`` with a TTL),
not copied on every read as ``st.cache_data`` would: a copy of a 5,000-model snapshot costs
0.2 s. Callers must not change what they get.

Every figure is computed from the whole registry or from server-side aggregates: models and
pods from :meth:`PlaneClient.snapshot` (every record), activity counts and per-minute charts
from :meth:`PlaneClient.stats` (exact counts the pods write), and the event log whole (it holds
at most ``MESH_EVENTS_MAX`` entries; :func:`events_max` says how many). Everything goes through
:class:`plane.api.PlaneClient`: the dashboard never talks to etcd its own way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import streamlit as st

from plane import local
from plane.api import PlacementSnapshot, PlaneClient
from plane.registry import Event, InstanceRecord, RegistryError
from plane.settings import MeshSettings
from plane.stats import StatsRecord, minute_of

__all__ = [
    "PlaneTarget",
    "settings",
    "target",
    "client",
    "require_client",
    "snapshot",
    "pods",
    "events",
    "stats",
    "events_max",
    "refresh",
    "SNAPSHOT_TTL_S",
    "EVENTS_TTL_S",
    "REFRESH_S",
]

SNAPSHOT_TTL_S = float(os.environ.get("MESH_DASHBOARD_SNAPSHOT_TTL_S", "2.0"))  # = the live refresh
EVENTS_TTL_S = float(os.environ.get("MESH_DASHBOARD_EVENTS_TTL_S", "2.0"))
REFRESH_S = float(os.environ.get("MESH_DASHBOARD_REFRESH_S", "2.0"))


@dataclass(frozen=True)
class PlaneTarget:
    """Which plane the dashboard shows: the etcd endpoint(s) and the registry prefix."""

    etcd: str
    prefix: str
    embedded: bool  # found through the embedded plane's state dir rather than MESH_ETCD


def settings() -> MeshSettings:
    """MESH_* settings, read anew on each script run (cheap; lets tests change the env)."""
    return MeshSettings()


def target(cfg: MeshSettings | None = None) -> PlaneTarget | None:
    """The plane to show, or None when MESH_ETCD is unset and no embedded plane runs."""
    cfg = cfg or settings()
    if cfg.etcd_endpoints():
        return PlaneTarget(cfg.etcd, cfg.etcd_prefix, False)
    plane = local.status(cfg.state_dir)
    if plane is None:
        return None
    return PlaneTarget(plane.etcd_endpoint, plane.etcd_prefix or cfg.etcd_prefix, True)


def _release(c: PlaneClient) -> None:
    c.close()


@st.cache_resource(show_spinner=False, max_entries=8, on_release=_release)
def _client_for(etcd: str, prefix: str) -> PlaneClient:
    cfg = settings().model_copy(update={"etcd": etcd, "etcd_prefix": prefix})
    return PlaneClient.connect(cfg, timeout=3.0)


def client(tgt: PlaneTarget | None = None) -> PlaneClient:
    """The shared client of the current plane. Raises RegistryError when there is none."""
    tgt = tgt or target()
    if tgt is None:
        raise RegistryError(
            "no plane is running: start one on the Install page (or `mesh up`), or set MESH_ETCD=host:port"
        )
    return _client_for(tgt.etcd, tgt.prefix)


def require_client() -> PlaneClient:
    """The client, or an error box and ``st.stop()`` when the plane cannot be reached."""
    try:
        return client()
    except RegistryError as exc:
        st.error(str(exc), icon=":material/cloud_off:")
        st.page_link("views/install.py", label="Open the Install page", icon=":material/play_arrow:")
        st.stop()
        raise  # unreachable: st.stop raises


def _drop_client(tgt: PlaneTarget) -> None:
    _client_for.clear(tgt.etcd, tgt.prefix)


@st.cache_resource(ttl=SNAPSHOT_TTL_S, show_spinner=False, max_entries=8)
def _snapshot(etcd: str, prefix: str) -> PlacementSnapshot:
    return _client_for(etcd, prefix).snapshot()


@st.cache_resource(ttl=EVENTS_TTL_S, show_spinner=False, max_entries=16)
def _events(etcd: str, prefix: str, since_bucket_ms: int, limit: int) -> list[Event]:
    return _client_for(etcd, prefix).events(since_ms=since_bucket_ms, limit=limit)


@st.cache_resource(ttl=SNAPSHOT_TTL_S, show_spinner=False, max_entries=8)
def _pods(etcd: str, prefix: str) -> list[InstanceRecord]:
    return _client_for(etcd, prefix).pods()


@st.cache_resource(ttl=EVENTS_TTL_S, show_spinner=False, max_entries=16)
def _stats(etcd: str, prefix: str, since_minute_ms: int) -> list[StatsRecord]:
    return _client_for(etcd, prefix).stats(since_ms=since_minute_ms)


def _guarded(fn, tgt: PlaneTarget, *args):
    try:
        return fn(tgt.etcd, tgt.prefix, *args)
    except RegistryError:
        # The cached client may point at an etcd that went away and came back: reconnect once.
        _drop_client(tgt)
        return fn(tgt.etcd, tgt.prefix, *args)


def snapshot() -> PlacementSnapshot:
    """The placement snapshot, at most SNAPSHOT_TTL_S old."""
    tgt = target()
    client(tgt)  # raises the 'no plane' error in words
    assert tgt is not None
    return _guarded(_snapshot, tgt)


def events(*, window_s: int, limit: int = 0) -> list[Event]:
    """Events of the last ``window_s`` seconds, oldest first: every one the log holds unless
    ``limit`` (the start is rounded to 5 s so that the cache key stays stable between
    refreshes; callers filter the exact window), at most EVENTS_TTL_S old."""
    tgt = target()
    client(tgt)
    assert tgt is not None
    since = int(time.time() * 1000) - window_s * 1000
    since -= since % 5000
    return _guarded(_events, tgt, since, limit)


def pods() -> list[InstanceRecord]:
    """The live pods' instance records only (cheaper than a snapshot of every model)."""
    tgt = target()
    client(tgt)
    assert tgt is not None
    return _guarded(_pods, tgt)


def stats(*, window_s: int) -> list[StatsRecord]:
    """Every pod's per-minute counts (plane.stats) of the whole minutes from the minute
    ``window_s`` seconds ago on, at most EVENTS_TTL_S old: exact, however busy the plane."""
    tgt = target()
    client(tgt)
    assert tgt is not None
    return _guarded(_stats, tgt, minute_of(time.time() * 1000 - window_s * 1000))


def events_max() -> int:
    """How many events the plane's log keeps (older ones are trimmed)."""
    return int(settings().events_max)


def refresh() -> None:
    """Forget cached reads (after this session changed something, or in tests)."""
    _snapshot.clear()
    _pods.clear()
    _events.clear()
    _stats.clear()


def forget_clients() -> None:
    """Close and drop every cached client (after the plane was stopped or restarted)."""
    _client_for.clear()
    refresh()

"""Shared state of the dashboard: one PlaneClient per plane, short-lived cached reads.

The client is created once per (etcd endpoint, prefix) with ``st.cache_resource`` and
closed when Streamlit drops it. Snapshots and event lists are cached for a second or two
with ``st.cache_data`` so that several figures, and several browser sessions, share one
registry read. Everything goes through :class:`plane.api.PlaneClient`: the dashboard never
talks to etcd its own way.
"""

from __future__ import annotations

import os
import time
from dataclasses import dataclass

import streamlit as st

from plane import local
from plane.api import PlacementSnapshot, PlaneClient
from plane.registry import Event, RegistryError
from plane.settings import MeshSettings

__all__ = [
    "PlaneTarget",
    "settings",
    "target",
    "client",
    "require_client",
    "snapshot",
    "events",
    "refresh",
    "SNAPSHOT_TTL_S",
    "EVENTS_TTL_S",
    "REFRESH_S",
]

SNAPSHOT_TTL_S = float(os.environ.get("MESH_DASHBOARD_SNAPSHOT_TTL_S", "1.0"))
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


@st.cache_data(ttl=SNAPSHOT_TTL_S, show_spinner=False, max_entries=8)
def _snapshot(etcd: str, prefix: str) -> PlacementSnapshot:
    return _client_for(etcd, prefix).snapshot()


@st.cache_data(ttl=EVENTS_TTL_S, show_spinner=False, max_entries=16)
def _events(etcd: str, prefix: str, since_bucket_ms: int, limit: int) -> list[Event]:
    return _client_for(etcd, prefix).events(since_ms=since_bucket_ms, limit=limit)


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


def events(*, window_s: int, limit: int = 2000) -> list[Event]:
    """Events of the last ``window_s`` seconds (the start is rounded to 5 s so that the
    cache key stays stable between refreshes), at most EVENTS_TTL_S old."""
    tgt = target()
    client(tgt)
    assert tgt is not None
    since = int(time.time() * 1000) - window_s * 1000
    since -= since % 5000
    return _guarded(_events, tgt, since, limit)


def refresh() -> None:
    """Forget cached reads (after this session changed something)."""
    _snapshot.clear()
    _events.clear()


def forget_clients() -> None:
    """Close and drop every cached client (after the plane was stopped or restarted)."""
    _client_for.clear()
    refresh()

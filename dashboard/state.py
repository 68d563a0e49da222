"""Shared state of the dashboard: one PlaneClient per plane, short-lived cached reads.

The client is created once per (etcd endpoint, prefix) with ``st.cache_resource`` and
closed when Streamlit drops it. Snapshots, the event log and the pods' per-minute stats are
cached for a second or two so that several figures, and several browser sessions, share one
registry read. They are cached as shared read-only objects, not copied on every read as
``st.cache_data`` would: a copy of a 5,000-model snapshot costs 0.2 s. Callers must not change
what they get. Past its TTL a read is still served for a few seconds (``MESH_DASHBOARD_STALE_S``)
while one background thread reads it again (:class:`Fresh`), so a page does not wait half a
second for etcd on every other open; :func:`refresh` forgets them all (after a change).

Every figure is computed from the whole registry or from server-side aggregates: models and
pods from :meth:`PlaneClient.snapshot` (every record), activity counts and per-minute charts
from :meth:`PlaneClient.stats` (exact counts the pods write), and the event log whole (it holds
at most ``MESH_EVENTS_MAX`` entries; :func:`events_max` says how many). Everything goes through
:class:`plane.api.PlaneClient`: the dashboard never talks to etcd its own way.
"""

from __future__ import annotations

import math
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

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
    "STALE_S",
    "Fresh",
]

SNAPSHOT_TTL_S = float(os.environ.get("MESH_DASHBOARD_SNAPSHOT_TTL_S", "2.0"))  # = the live refresh
EVENTS_TTL_S = float(os.environ.get("MESH_DASHBOARD_EVENTS_TTL_S", "2.0"))
REFRESH_S = float(os.environ.get("MESH_DASHBOARD_REFRESH_S", "2.0"))
# how much older than its TTL a read may be shown while a newer one is read in the background
STALE_S = float(os.environ.get("MESH_DASHBOARD_STALE_S", "10.0"))
T = TypeVar("T")


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


class Fresh(Generic[T]):
    """A registry read kept ``ttl`` seconds and then, for up to ``stale`` seconds more, served as
    it is while one background thread reads it again: a page never waits on etcd for a value
    that is only a little old (the pages show when their snapshot was taken). Older than that,
    or never read, or after :meth:`clear`, the caller reads it. A read started before a
    :meth:`clear` is not kept, so a page never shows what was there before its own change."""

    def __init__(self, *, ttl: float, stale: float) -> None:
        self.ttl, self.stale = ttl, stale
        self._lock = threading.Lock()
        self._value: T | None = None
        self._at = -math.inf
        self._generation = 0
        self._reading = False

    def get(self, read: Callable[[], T]) -> T:
        with self._lock:
            age = time.monotonic() - self._at
            value, generation = self._value, self._generation
            if value is not None and age < self.ttl:
                return value
            if value is not None and age < self.ttl + self.stale:
                if not self._reading:
                    self._reading = True
                    threading.Thread(target=self._again, args=(read, generation), daemon=True,
                                     name="dashboard-read").start()
                return value
        value = read()  # nothing to show yet: the caller waits (errors are the caller's)
        self._keep(value, generation)
        return value

    def _again(self, read: Callable[[], T], generation: int) -> None:
        try:
            self._keep(read(), generation)
        except Exception:  # noqa: BLE001 - the next page read reads again and shows the error
            pass
        finally:
            with self._lock:
                self._reading = False

    def _keep(self, value: T, generation: int) -> None:
        with self._lock:
            if generation == self._generation:
                self._value, self._at = value, time.monotonic()

    def clear(self) -> None:
        with self._lock:
            self._value, self._at = None, -math.inf
            self._generation += 1


_reads: dict[tuple, Fresh[Any]] = {}
_reads_lock = threading.Lock()


def _fresh(kind: str, tgt: PlaneTarget, args: tuple, read: Callable[[PlaneClient], T], ttl: float) -> T:
    key = (kind, tgt.etcd, tgt.prefix, *args)
    with _reads_lock:
        entry = _reads.get(key)
        if entry is None:
            entry = _reads[key] = Fresh(ttl=ttl, stale=STALE_S)
    c = _client_for(tgt.etcd, tgt.prefix)
    try:
        return entry.get(lambda: read(c))
    except RegistryError:
        # The cached client may point at an etcd that went away and came back: reconnect once.
        _drop_client(tgt)
        c = _client_for(tgt.etcd, tgt.prefix)
        return entry.get(lambda: read(c))


def _target() -> PlaneTarget:
    tgt = target()
    client(tgt)  # raises the 'no plane' error in words
    assert tgt is not None
    return tgt


def snapshot() -> PlacementSnapshot:
    """The placement snapshot: at most SNAPSHOT_TTL_S old, or STALE_S more while a newer one is read."""
    return _fresh("snapshot", _target(), (), lambda c: c.snapshot(), SNAPSHOT_TTL_S)


def events(*, window_s: int, limit: int = 0) -> list[Event]:
    """Events of the last ``window_s`` seconds when read (every one the log holds unless
    ``limit``), oldest first, at most EVENTS_TTL_S (+ STALE_S) old: callers filter the exact window."""

    def read(c: PlaneClient) -> list[Event]:
        return c.events(since_ms=int(time.time() * 1000) - window_s * 1000, limit=limit)

    return _fresh("events", _target(), (window_s, limit), read, EVENTS_TTL_S)


def pods() -> list[InstanceRecord]:
    """The live pods' instance records only (cheaper than a snapshot of every model)."""
    return _fresh("pods", _target(), (), lambda c: c.pods(), SNAPSHOT_TTL_S)


def stats(*, window_s: int) -> list[StatsRecord]:
    """Every pod's per-minute counts (plane.stats) of the whole minutes from the minute
    ``window_s`` seconds before the read on, at most EVENTS_TTL_S (+ STALE_S) old: exact,
    however busy the plane (callers count from the minute they mean)."""

    def read(c: PlaneClient) -> list[StatsRecord]:
        return c.stats(since_ms=minute_of(time.time() * 1000 - window_s * 1000))

    return _fresh("stats", _target(), (window_s,), read, EVENTS_TTL_S)


def events_max() -> int:
    """How many events the plane's log keeps (older ones are trimmed)."""
    return int(settings().events_max)


def refresh() -> None:
    """Forget cached reads (after this session changed something, or in tests)."""
    with _reads_lock:
        entries = list(_reads.values())
    for entry in entries:
        entry.clear()


def forget_clients() -> None:
    """Close and drop every cached client (after the plane was stopped or restarted)."""
    _client_for.clear()
    refresh()

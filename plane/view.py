"""A pod's local copy of the registry, kept current by an etcd watch.

The request path reads only this in-memory view: no etcd round trip per request. On any
watch failure (etcd restarted, compaction) the view re-lists everything and watches again
from the new revision; until then it keeps serving from what it had.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from typing import Any

from plane.registry import InstanceRecord, ModelRecord, Registry, StorageConfig, VModelRecord

__all__ = ["RegistryView"]

log = logging.getLogger("mesh.view")

RESYNC_BACKOFF_S = (0.2, 0.5, 1.0, 2.0, 5.0)

ChangeHook = Callable[[str, str, object | None, object | None], None]  # table, name, old, new


class RegistryView:
    """models / vmodels / instances / storage dicts mirrored from etcd."""

    def __init__(self, registry: Registry):
        self.registry = registry
        self.models: dict[str, ModelRecord] = {}
        self.vmodels: dict[str, VModelRecord] = {}
        self.instances: dict[str, InstanceRecord] = {}
        self.storage: dict[str, StorageConfig] = {}
        self.revision = 0
        self.synced = asyncio.Event()
        self.connected = False
        self.hooks: list[ChangeHook] = []
        self._task: asyncio.Task | None = None

    def start(self) -> None:
        self._task = asyncio.create_task(self._run(), name="registry-view")

    async def stop(self) -> None:
        if self._task:
            self._task.cancel()
            try:
                await self._task
            except (asyncio.CancelledError, Exception):  # noqa: BLE001
                pass

    def _decode(self, table: str, name: str, value: bytes) -> object | None:
        try:
            if table == "models":
                return ModelRecord.from_json(value)
            if table == "vmodels":
                return VModelRecord.from_json(value)
            if table == "instances":
                return InstanceRecord.from_json(value)
            if table == "storage":
                return StorageConfig.from_json(name, value)
        except Exception:  # noqa: BLE001 - a bad record must not stop the watch
            log.warning("ignoring unreadable %s record %s", table, name)
        return None

    def _table(self, table: str) -> dict[str, Any] | None:
        tables: dict[str, dict[str, Any]] = {"models": self.models, "vmodels": self.vmodels,
                                             "instances": self.instances, "storage": self.storage}
        return tables.get(table)

    def apply(self, table: str, name: str, value: bytes | None) -> None:
        target = self._table(table)
        if target is None:
            return
        old = target.get(name)
        if value is None:
            target.pop(name, None)
            new = None
        else:
            new = self._decode(table, name, value)
            if new is None:
                return
            target[name] = new
        for hook in self.hooks:
            try:
                hook(table, name, old, new)
            except Exception:  # noqa: BLE001
                log.exception("view hook failed for %s/%s", table, name)

    async def resync(self) -> None:
        tables, rev = await self.registry.snapshot_with_revision()
        seen: dict[str, set[str]] = {t: set() for t in ("models", "vmodels", "instances", "storage")}
        for table, rows in tables.items():
            for name, value in rows:
                if table in seen:
                    seen[table].add(name)
                    self.apply(table, name, value)
        for table, names in seen.items():
            target = self._table(table)
            assert target is not None
            for gone in set(target) - names:
                self.apply(table, gone, None)
        self.revision = rev

    async def _run(self) -> None:
        attempt = 0
        while True:
            try:
                await self.resync()
                self.connected = True
                self.synced.set()
                attempt = 0
                async for table, name, value, rev in self.registry.watch(start_revision=self.revision + 1):
                    self.revision = max(self.revision, rev)
                    self.apply(table, name, value)
                raise ConnectionError("watch ended")
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # noqa: BLE001 - etcd down: keep the view, retry
                self.connected = False
                delay = RESYNC_BACKOFF_S[min(attempt, len(RESYNC_BACKOFF_S) - 1)]
                attempt += 1
                log.warning("registry watch lost (%s); resyncing in %.1fs", exc, delay)
                await asyncio.sleep(delay)

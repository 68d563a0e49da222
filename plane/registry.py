"""The registry: the plane's shared state in etcd, as typed records with JSON values.

Layout under the root prefix ``P`` (``MESH_ETCD_PREFIX``)::

    P/models/<model id>        ModelRecord    what to serve, where copies are, failures
    P/vmodels/<vmodel id>      VModelRecord   alias -> active / target model
    P/instances/<pod id>       InstanceRecord one per live pod, bound to the pod's lease
    P/storage/<key>            StorageConfig  SPEC section 4 format
    P/events/<ns>-<pod>        Event          bounded log of load/unload/evict/load-failed

Every read-modify-write goes through :meth:`Registry.update`, a compare-and-swap on the
key's mod revision retried on conflict, so two pods updating one model never lose a
write. Nothing here decides anything; decisions live in ``placement`` and ``cache``.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.utils

from plane.etcd_dial import dial
from plane.records import (
    EVENT_KINDS,
    Conflict,
    CopyInfo,
    CopyState,
    EtcdUnavailable,
    Event,
    FailureInfo,
    InstanceRecord,
    ModelRecord,
    RegistryError,
    StorageConfig,
    VModelRecord,
    mask_secret,
    now_ms,
)
from plane.stats import StatsRecord

__all__ = [
    "CopyState",
    "mask_secret",
    "ModelRecord",
    "CopyInfo",
    "FailureInfo",
    "VModelRecord",
    "InstanceRecord",
    "StorageConfig",
    "Event",
    "Registry",
    "RegistryError",
    "EtcdUnavailable",
    "Conflict",
    "now_ms",
    "EVENT_KINDS",
]

CAS_MAX_ATTEMPTS = 64
EVENT_TRIM_EVERY = 50


T = TypeVar("T")


class Registry:
    """Async access to the registry tables of one etcd (one root prefix).

    ``Registry.connect`` opens the client; every method raises :class:`EtcdUnavailable`
    with an actionable message when etcd cannot be reached.
    """

    def __init__(self, client: aetcd.Client, prefix: str, *, endpoint: str = "", events_max: int = 5000):
        self.client = client
        self.prefix = prefix.strip("/")
        self.endpoint = endpoint
        self.events_max = events_max
        self._events_written = 0
        self._event_seq = 0
        # Several processes write events; a token per client keeps two writes in one millisecond
        # from sharing a key (and one replacing the other).
        self._event_token = uuid.uuid4().hex[:8]

    # -- connection ---------------------------------------------------------------------------------

    @classmethod
    async def connect(
        cls,
        endpoints: list[tuple[str, int]],
        prefix: str,
        *,
        username: str | None = None,
        password: str | None = None,
        timeout: float = 5.0,
        events_max: int = 5000,
        tls: tuple[Any, Any, Any] | None = None,
    ) -> Registry:
        """Connect to the first endpoint that answers. ``tls`` is (ca, cert, key) file paths."""
        client, endpoint = await dial(endpoints, username=username, password=password, timeout=timeout, tls=tls)
        return cls(client, prefix, endpoint=endpoint, events_max=events_max)

    @classmethod
    async def from_settings(cls, settings: Any, endpoints: list[tuple[str, int]] | None = None,
                            *, timeout: float = 5.0) -> Registry:
        """Connect with everything ``MeshSettings`` says (endpoints, prefix, auth, TLS)."""
        tls = (settings.etcd_ca_file, settings.etcd_cert_file, settings.etcd_key_file)
        return await cls.connect(
            endpoints if endpoints is not None else settings.etcd_endpoints(),
            settings.etcd_prefix,
            username=settings.etcd_username,
            password=settings.etcd_password,
            timeout=timeout,
            events_max=settings.events_max,
            tls=tls if any(tls) else None,
        )

    async def close(self) -> None:
        await self.client.close()

    # -- keys -----------------------------------------------------------------------------------------

    def key(self, table: str, name: str = "") -> bytes:
        return f"{self.prefix}/{table}/{name}".encode()

    def table_prefix(self, table: str) -> bytes:
        return f"{self.prefix}/{table}/".encode()

    def name_of(self, table: str, key: bytes) -> str:
        return key.decode()[len(self.prefix) + len(table) + 2 :]

    async def _call(self, coro: Awaitable[T]) -> T:
        try:
            return await coro
        except aetcd.exceptions.ConnectionFailedError as exc:
            raise EtcdUnavailable(
                f"etcd at {self.endpoint} is unavailable ({exc}); check that it runs (`mesh status`)"
            ) from exc
        except aetcd.exceptions.ConnectionTimeoutError as exc:
            raise EtcdUnavailable(f"etcd at {self.endpoint} timed out; check that it runs (`mesh status`)") from exc
        except aetcd.exceptions.ClientError as exc:
            raise RegistryError(f"etcd error: {exc}") from exc

    # -- generic reads/writes -------------------------------------------------------------------------

    async def get_raw(self, key: bytes) -> tuple[bytes | None, int]:
        res = await self._call(self.client.get(key))
        if res is None:
            return None, 0
        return res.value, res.mod_revision

    async def list_raw(self, table: str) -> list[tuple[str, bytes, int]]:
        res = await self._call(self.client.get_prefix(self.table_prefix(table)))
        return [(self.name_of(table, kv.key), kv.value, kv.mod_revision) for kv in res.kvs]

    async def revision(self) -> int:
        """etcd's current revision (one small range read; the header carries it, keys or not)."""
        res = await self._call(self.client.get_prefix(self.key("meta", ""), keys_only=True))
        return res.header.revision

    async def create(self, key: bytes, value: bytes) -> bool:
        """Put only if absent. Returns False when the key already exists."""
        tx = self.client.transactions
        ok, _ = await self._call(
            self.client.transaction(compare=[tx.version(key) == 0], success=[tx.put(key, value)], failure=[])
        )
        return bool(ok)

    async def update(
        self,
        key: bytes,
        fn: Callable[[bytes | None], bytes | None],
        *,
        lease: Any = None,
    ) -> bytes | None:
        """Compare-and-swap loop: ``fn(old_value) -> new_value`` (None deletes; returning the
        old value unchanged writes nothing). Retried when another writer got there first."""
        tx = self.client.transactions
        for _ in range(CAS_MAX_ATTEMPTS):
            old, rev = await self.get_raw(key)
            new = fn(old)
            if new == old:
                return new
            compare = [tx.mod(key) == rev] if rev else [tx.version(key) == 0]
            if new is None:
                ops = [tx.delete(key)]
            else:
                ops = [tx.put(key, new, lease=lease)] if lease is not None else [tx.put(key, new)]
            ok, _ = await self._call(self.client.transaction(compare=compare, success=ops, failure=[]))
            if ok:
                return new
        raise Conflict(f"too many concurrent updates of {key.decode()}; try again")

    # -- models ---------------------------------------------------------------------------------------

    async def get_model(self, model_id: str) -> ModelRecord | None:
        raw, _ = await self.get_raw(self.key("models", model_id))
        return ModelRecord.from_json(raw) if raw else None

    async def list_models(self) -> list[ModelRecord]:
        return [ModelRecord.from_json(v) for _, v, _ in await self.list_raw("models")]

    async def create_model(self, rec: ModelRecord) -> bool:
        return await self.create(self.key("models", rec.model_id), rec.to_json())

    async def put_models(self, recs: list[ModelRecord], *, batch: int = 64) -> int:
        """Create many models in few transactions (the batch registration path).
        Existing ids are left alone; returns how many were created."""
        tx = self.client.transactions
        created = 0
        for i in range(0, len(recs), batch):
            chunk = recs[i : i + batch]
            ok, _ = await self._call(
                self.client.transaction(
                    compare=[tx.version(self.key("models", r.model_id)) == 0 for r in chunk],
                    success=[tx.put(self.key("models", r.model_id), r.to_json()) for r in chunk],
                    failure=[],
                )
            )
            if ok:
                created += len(chunk)
            else:
                for r in chunk:
                    created += int(await self.create_model(r))
        return created

    async def update_model(
        self, model_id: str, fn: Callable[[ModelRecord], ModelRecord | None], *, create: bool = False
    ) -> ModelRecord | None:
        """CAS-update a model record. ``fn`` gets a copy and returns it changed (or None to
        delete). A missing model is skipped (returns None) unless ``create``."""

        def apply(old: bytes | None) -> bytes | None:
            if old is None and not create:
                return None
            rec = ModelRecord.from_json(old) if old else ModelRecord(model_id=model_id)
            new = fn(rec)
            return None if new is None else new.to_json()

        out = await self.update(self.key("models", model_id), apply)
        return ModelRecord.from_json(out) if out else None

    async def delete_model(self, model_id: str) -> bool:
        res = await self._call(self.client.delete(self.key("models", model_id)))
        return bool(res and res.deleted)

    # -- vmodels --------------------------------------------------------------------------------------

    async def get_vmodel(self, vmodel_id: str) -> VModelRecord | None:
        raw, _ = await self.get_raw(self.key("vmodels", vmodel_id))
        return VModelRecord.from_json(raw) if raw else None

    async def list_vmodels(self) -> list[VModelRecord]:
        return [VModelRecord.from_json(v) for _, v, _ in await self.list_raw("vmodels")]

    async def update_vmodel(
        self, vmodel_id: str, fn: Callable[[VModelRecord | None], VModelRecord | None]
    ) -> VModelRecord | None:
        def apply(old: bytes | None) -> bytes | None:
            new = fn(VModelRecord.from_json(old) if old else None)
            return None if new is None else new.to_json()

        out = await self.update(self.key("vmodels", vmodel_id), apply)
        return VModelRecord.from_json(out) if out else None

    async def delete_vmodel(self, vmodel_id: str) -> bool:
        res = await self._call(self.client.delete(self.key("vmodels", vmodel_id)))
        return bool(res and res.deleted)

    # -- instances ------------------------------------------------------------------------------------

    async def list_instances(self) -> list[InstanceRecord]:
        return [InstanceRecord.from_json(v) for _, v, _ in await self.list_raw("instances")]

    async def put_instance(self, rec: InstanceRecord, lease: Any) -> None:
        await self._call(self.client.put(self.key("instances", rec.pod_id), rec.to_json(), lease=lease))

    async def delete_instance(self, pod_id: str) -> None:
        await self._call(self.client.delete(self.key("instances", pod_id)))

    # -- storage --------------------------------------------------------------------------------------

    async def get_storage(self, key: str) -> StorageConfig | None:
        raw, _ = await self.get_raw(self.key("storage", key))
        return StorageConfig.from_json(key, raw) if raw else None

    async def list_storage(self) -> list[StorageConfig]:
        return [StorageConfig.from_json(k, v) for k, v, _ in await self.list_raw("storage")]

    async def put_storage(self, cfg: StorageConfig) -> None:
        await self._call(self.client.put(self.key("storage", cfg.key), cfg.to_json()))

    async def delete_storage(self, key: str) -> bool:
        res = await self._call(self.client.delete(self.key("storage", key)))
        return bool(res and res.deleted)

    # -- events ---------------------------------------------------------------------------------------

    async def add_event(self, ev: Event) -> None:
        """Append to the event log; every few writes, trim it to ``events_max`` entries."""
        ev.time_ms = ev.time_ms or now_ms()
        self._event_seq = (self._event_seq + 1) % 1000
        name = f"{ev.time_ms * 1000 + self._event_seq:020d}-{ev.pod or 'api'}-{self._event_token}"
        await self._call(self.client.put(self.key("events", name), ev.to_json()))
        self._events_written += 1
        if self._events_written % EVENT_TRIM_EVERY == 0:
            await self.trim_events()

    async def trim_events(self) -> int:
        res = await self._call(self.client.get_prefix(self.table_prefix("events"), keys_only=True))
        keys = sorted(kv.key for kv in res.kvs)
        excess = len(keys) - self.events_max
        if excess <= 0:
            return 0
        await self._call(self.client.delete_range(self.table_prefix("events"), keys[excess]))
        return excess

    async def list_events(self, *, since_ms: int = 0, limit: int = 1000) -> list[Event]:
        res = await self._call(self.client.get_prefix(self.table_prefix("events")))
        # Event.key is the name inside the events table (as the watch yields it), not the etcd key.
        events = [Event.from_json(kv.value, self.name_of("events", kv.key)) for kv in res.kvs]
        events.sort(key=lambda e: e.key)
        if since_ms:
            events = [e for e in events if e.time_ms >= since_ms]
        return events[-limit:] if limit else events

    # -- per-minute stats (outside the watched prefix: see plane.stats) -----------------------------

    def _stats_prefix(self) -> bytes:
        return f"{self.prefix}.stats/".encode()

    async def put_stats(self, rec: StatsRecord) -> None:
        await self._call(self.client.put(self._stats_prefix() + rec.key.encode(), rec.to_json()))

    async def list_stats(self, *, since_ms: int = 0) -> list[StatsRecord]:
        start = self._stats_prefix() + f"{since_ms:015d}".encode()
        res = await self._call(self.client.get_range(start, aetcd.utils.prefix_range_end(self._stats_prefix())))
        return [StatsRecord.from_json(kv.value) for kv in res.kvs]

    async def trim_stats(self, *, before_ms: int) -> None:
        await self._call(self.client.delete_range(self._stats_prefix(),
                                                  self._stats_prefix() + f"{before_ms:015d}".encode()))

    # -- watching -------------------------------------------------------------------------------------

    async def watch(self, *, start_revision: int | None = None) -> AsyncIterator[tuple[str, str, bytes | None, int]]:
        """Yield ``(table, name, value or None when deleted, revision)`` for every change under
        the root prefix. Ends (raises) when etcd goes away; callers re-list and re-watch."""
        root = f"{self.prefix}/".encode()
        watch = await self._call(self.client.watch_prefix(root, start_revision=start_revision))
        try:
            async for ev in watch:
                key = ev.kv.key.decode()[len(self.prefix) + 1 :]
                table, _, name = key.partition("/")
                deleted = ev.kind == "DELETE"
                yield table, name, (None if deleted else ev.kv.value), ev.kv.mod_revision
        finally:
            await watch.cancel()

    async def snapshot_with_revision(self) -> tuple[dict[str, list[tuple[str, bytes]]], int]:
        """All tables but the event log in one consistent read, with the revision to watch from.
        ("events" sorts before every other table name, so one range starting after it covers
        instances, leader, models, storage and vmodels.)"""
        root = f"{self.prefix}/".encode()
        res = await self._call(self.client.get_range(root + b"events0", aetcd.utils.prefix_range_end(root)))
        tables: dict[str, list[tuple[str, bytes]]] = {}
        for kv in res.kvs:
            key = kv.key.decode()[len(self.prefix) + 1 :]
            table, _, name = key.partition("/")
            tables.setdefault(table, []).append((name, kv.value))
        return tables, res.header.revision

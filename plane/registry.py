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

import asyncio
import contextlib
import dataclasses
import json
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

import aetcd
import aetcd.exceptions
import aetcd.utils

__all__ = [
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
ETCD_MAX_MESSAGE_BYTES = 1024**3
EVENT_TRIM_EVERY = 50
EVENT_KINDS = ("register", "unregister", "load", "loaded", "unload", "evict", "load-failed", "vmodel", "leader", "plan")


def now_ms() -> int:
    return int(time.time() * 1000)


class RegistryError(Exception):
    """A registry operation could not be done; the message says what to do."""


class EtcdUnavailable(RegistryError):
    """etcd did not answer."""


class Conflict(RegistryError):
    """A compare-and-swap kept failing, or a create found the key already there."""


def _clean(cls: type, data: dict[str, Any]) -> dict[str, Any]:
    names = {f.name for f in dataclasses.fields(cls)}
    return {k: v for k, v in data.items() if k in names}


@dataclass
class CopyInfo:
    """One copy of a model on one pod."""

    state: str = "loading"  # "loading" | "loaded"
    since_ms: int = 0
    size: int = 0


@dataclass
class FailureInfo:
    time_ms: int
    message: str


@dataclass
class ModelRecord:
    """A registered model. ``copies`` maps pod id to the state of the copy there."""

    model_id: str
    type: str = "onnx"
    path: str = ""
    key: str = "default"
    created_ms: int = 0
    last_used_ms: int = 0
    size: int = 0  # measured memory of a loaded copy (0 until first load)
    file_size: int = 0
    copies: dict[str, CopyInfo] = field(default_factory=dict)
    failed: dict[str, FailureInfo] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)  # vmodels pointing here
    pinned: bool = False
    min_copies: int = 0
    max_copies: int = 0  # 0 = no cap
    rpm: float = 0.0  # requests per minute across pods (sum of fresh pod_rpm entries)
    pod_rpm: dict[str, list[float]] = field(default_factory=dict)  # pod -> [rpm, reported at ms]
    rpm_avg: float = 0.0  # slow moving average of rpm: the baseline a trend is measured against
    starts: list[int] = field(default_factory=list)  # start times of recent use sessions (after idle gaps)
    freq: float = 0.0  # request count decayed with a half-life (usage.FREQ_HALF_LIFE_MS), as of freq_ms
    freq_ms: int = 0
    # tensor metadata learned at first load: {"inputs": [[name, datatype, shape]], "outputs": [...]}
    io: dict[str, list] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    def live_failures(self, now: int, expiry_ms: int) -> dict[str, FailureInfo]:
        return {p: f for p, f in self.failed.items() if now - f.time_ms < expiry_ms}

    @classmethod
    def from_json(cls, raw: bytes | str) -> ModelRecord:
        data = json.loads(raw)
        rec = cls(**_clean(cls, data))
        rec.copies = {p: CopyInfo(**_clean(CopyInfo, c)) for p, c in (data.get("copies") or {}).items()}
        rec.failed = {p: FailureInfo(**_clean(FailureInfo, f)) for p, f in (data.get("failed") or {}).items()}
        return rec

    def loaded_on(self) -> list[str]:
        return sorted(p for p, c in self.copies.items() if c.state == "loaded")

    def loading_on(self) -> list[str]:
        return sorted(p for p, c in self.copies.items() if c.state == "loading")

    def status(self) -> str:
        """NOT_LOADED / LOADING / LOADED / LOADING_FAILED, as ModelMesh reports it."""
        if self.loaded_on():
            return "LOADED"
        if self.loading_on():
            return "LOADING"
        if self.failed:
            return "LOADING_FAILED"
        return "NOT_LOADED"


@dataclass
class VModelRecord:
    vmodel_id: str
    active: str = ""
    target: str = ""
    owner: str = ""
    auto_delete: bool = False
    failed: str = ""  # message of a failed transition
    updated_ms: int = 0

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> VModelRecord:
        return cls(**_clean(cls, json.loads(raw)))

    def status(self) -> str:
        if self.failed:
            return "TRANSITION_FAILED"
        if self.target and self.target != self.active:
            return "TRANSITIONING"
        return "DEFINED"


@dataclass
class InstanceRecord:
    """A live pod. Bound to the pod's lease: it vanishes when the pod dies."""

    pod_id: str
    endpoint: str  # host:port of the gRPC server
    metrics_endpoint: str = ""
    capacity: int = 0
    used: int = 0
    count: int = 0
    lru_ms: int = 0  # last-used time of the least recently used copy (0 = empty)
    loading: int = 0
    max_loads: int = 1
    rpm: float = 0.0
    in_flight: int = 0
    shutting_down: bool = False
    started_ms: int = 0
    updated_ms: int = 0
    pid: int = 0
    labels: dict[str, str] = field(default_factory=dict)

    def to_json(self) -> bytes:
        return json.dumps(dataclasses.asdict(self), separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str) -> InstanceRecord:
        return cls(**_clean(cls, json.loads(raw)))

    @property
    def free(self) -> int:
        return max(0, self.capacity - self.used)


@dataclass
class StorageConfig:
    """One storage key, in the ``storage-config`` secret format of SPEC section 4."""

    key: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)

    SECRET_FIELDS = ("secret_access_key", "access_key_id", "headers", "password", "token", "sas_token")

    def to_json(self) -> bytes:
        return json.dumps({"type": self.type, **self.params}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes | str) -> StorageConfig:
        data = json.loads(raw)
        typ = data.pop("type", "")
        return cls(key=key, type=typ, params=data)

    def masked(self) -> dict[str, Any]:
        """The config as a dict safe to print: secrets reduced to a hint."""
        out: dict[str, Any] = {"key": self.key, "type": self.type}
        for name, value in self.params.items():
            out[name] = mask_secret(value) if name in self.SECRET_FIELDS else value
        return out


def mask_secret(value: Any) -> str:
    """``AKIA...XYZ`` style: never more than the last 2 characters, never short secrets."""
    if value is None or value == "":
        return ""
    text = value if isinstance(value, str) else json.dumps(value)
    if len(text) < 12:
        return "****"
    return "****" + text[-2:]


@dataclass
class Event:
    kind: str
    model: str = ""
    pod: str = ""
    size: int = 0
    reason: str = ""
    time_ms: int = 0
    key: str = ""  # the etcd key (filled on read)

    def to_json(self) -> bytes:
        data = dataclasses.asdict(self)
        data.pop("key")
        return json.dumps(data, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, raw: bytes | str, key: str = "") -> Event:
        ev = cls(**_clean(cls, json.loads(raw)))
        ev.key = key
        return ev


T = TypeVar("T")


class _TLSClient(aetcd.Client):
    """aetcd's client over a TLS channel (aetcd itself only dials plaintext)."""

    def __init__(self, *args: Any, credentials: Any, **kwargs: Any):
        super().__init__(*args, **kwargs)
        self._credentials = credentials

    async def connect(self) -> None:
        if self._connected.is_set():
            return
        if self._is_connecting:  # type: ignore[has-type]
            await asyncio.wait_for(self._connected.wait(), self._connect_wait_timeout)
            return
        from aetcd import rpc, watcher

        try:
            self._is_connecting = True
            self.channel = rpc.secure_channel(f"{self._host}:{self._port}", self._credentials,
                                              options=self._options.items())
            if self._username is not None and self._password is not None:
                self.auth_stub = rpc.AuthStub(self.channel)
                try:
                    resp = await self.auth_stub.Authenticate(
                        rpc.AuthenticateRequest(name=self._username, password=self._password),
                        timeout=self._timeout)
                except rpc.AioRpcError as exc:
                    aetcd.exceptions._handle_exception(exc)
                self.metadata = (("token", resp.token),)
            self.kvstub = rpc.KVStub(self.channel)
            self.clusterstub = rpc.ClusterStub(self.channel)
            self.leasestub = rpc.LeaseStub(self.channel)
            self.maintenancestub = rpc.MaintenanceStub(self.channel)
            self._watcher = watcher.Watcher(rpc.WatchStub(self.channel), timeout=self._timeout,
                                            metadata=self.metadata)
            self._connected.set()
        finally:
            self._is_connecting = False


def _etcd_credentials(tls: tuple[Any, Any, Any] | None) -> Any:
    if not tls or not any(tls):
        return None
    import grpc

    ca, cert, key = (open(p, "rb").read() if p else None for p in tls)
    return grpc.ssl_channel_credentials(root_certificates=ca, private_key=key, certificate_chain=cert)


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
        if not endpoints:
            raise RegistryError("no etcd endpoint: set MESH_ETCD=host:port or start the plane with `mesh up`")
        last: Exception | None = None
        # aetcd speaks to one endpoint; try each in turn until one answers.
        credentials = _etcd_credentials(tls)
        # A registry of many thousand models is read in one range: gRPC's default 4 MiB limit on
        # received messages would make that read (and a pod's start) fail.
        options = {"grpc.max_receive_message_length": ETCD_MAX_MESSAGE_BYTES,
                   "grpc.max_send_message_length": ETCD_MAX_MESSAGE_BYTES}
        for host, port in endpoints:
            if credentials is not None:
                client: aetcd.Client = _TLSClient(host=host, port=port, username=username, password=password,
                                                  timeout=timeout, credentials=credentials, options=options)
            else:
                client = aetcd.Client(host=host, port=port, username=username, password=password, timeout=timeout,
                                      options=options)
            try:
                await client.connect()
                await asyncio.wait_for(client.get(b"\0"), timeout)
                return cls(client, prefix, endpoint=f"{host}:{port}", events_max=events_max)
            except Exception as exc:  # noqa: BLE001 - any failure means 'try the next endpoint'
                last = exc
                with contextlib.suppress(Exception):
                    await client.close()
                text = str(exc).lower()
                if "authentication failed" in text or "invalid auth" in text or "user name is empty" in text:
                    raise RegistryError(
                        f"etcd at {host}:{port} refused the credentials: check MESH_ETCD_USERNAME and "
                        "MESH_ETCD_PASSWORD"
                    ) from None
        where = ", ".join(f"{h}:{p}" for h, p in endpoints)
        raise EtcdUnavailable(
            f"cannot reach etcd at {where} ({type(last).__name__}: {last}); "
            "start it with `mesh up` or point MESH_ETCD at a running etcd"
        )

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

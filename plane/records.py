"""The registry's records: plain dataclasses with JSON forms, and the enums of their states.

Pure data, no I/O: the pods, the planner, the UIs and the tests all build and read these.
``plane.registry`` stores them in etcd; ``plane.operations`` holds the rules that change them.
"""

from __future__ import annotations

import dataclasses
import json
import time
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

from plane import secrets

__all__ = [
    "CopyState",
    "CopyInfo",
    "FailureInfo",
    "ModelRecord",
    "VModelRecord",
    "InstanceRecord",
    "StorageConfig",
    "Event",
    "RegistryError",
    "EtcdUnavailable",
    "Conflict",
    "mask_secret",
    "now_ms",
    "EVENT_KINDS",
]

EVENT_KINDS = ("register", "unregister", "load", "loaded", "unload", "evict", "load-failed", "vmodel", "leader", "plan",
               "pod")


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


class CopyState(StrEnum):
    """The state of one copy as the registry records it (a JSON string on the wire)."""

    LOADING = "loading"
    LOADED = "loaded"


@dataclass
class CopyInfo:
    """One copy of a model on one pod."""

    state: str = CopyState.LOADING  # a CopyState value
    since_ms: int = 0
    size: int = 0


@dataclass
class FailureInfo:
    """A load that failed on one pod. ``needs``/``capacity`` are set when the copy did not fit:
    such a pod is not asked again until the failure expires or its capacity changes."""

    time_ms: int
    message: str
    needs: int = 0
    capacity: int = 0

    def excludes(self, pod_capacity: int) -> bool:
        """Whether this failure still rules the pod out for a load, whatever its age."""
        return bool(self.needs) and self.capacity == pod_capacity and self.needs > pod_capacity


@dataclass
class ModelRecord:
    """A registered model. ``copies`` maps pod id to the state of the copy there."""

    model_id: str
    type: str = "onnx"
    path: str = ""
    key: str = "default"
    created_ms: int = 0
    last_used_ms: int = 0  # eviction/placement order; set in the past at registration (ModelMesh rule)
    used_ms: int = 0  # time of the last real request (0 = never used): what the UIs show
    # ModelMesh's earlierUseIteration: the earlier use the second-copy rule compares with (usage.note_use)
    prev_used_ms: int = 0
    size: int = 0  # measured memory of a loaded copy (0 until first load)
    file_size: int = 0
    copies: dict[str, CopyInfo] = field(default_factory=dict)
    failed: dict[str, FailureInfo] = field(default_factory=dict)
    refs: list[str] = field(default_factory=list)  # vmodels pointing here
    auto_delete: bool = False  # owned by a vmodel (setVModel with modelInfo + autoDeleteTargetModel)
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
        return sorted(p for p, c in self.copies.items() if c.state == CopyState.LOADED)

    def loading_on(self) -> list[str]:
        return sorted(p for p, c in self.copies.items() if c.state == CopyState.LOADING)

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
    rest_endpoint: str = ""  # host:port of the KServe V2 REST server ("" when it has none)
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
    """One storage key, in the ``storage-config`` secret format of SPEC section 4.

    ``repr()`` shows the masked form, so a config that ends up in a log line or a traceback
    never prints its secrets; ``params`` holds them in full (for the pods)."""

    key: str
    type: str
    params: dict[str, Any] = field(default_factory=dict)

    # the secret fields of every storage type: see plane.secrets (URL userinfo is masked too)
    SECRET_FIELDS = tuple(sorted(secrets.GENERIC_SECRET_FIELDS.union(*secrets.SECRET_FIELDS.values())))

    def to_json(self) -> bytes:
        return json.dumps({"type": self.type, **self.params}, separators=(",", ":")).encode()

    @classmethod
    def from_json(cls, key: str, raw: bytes | str) -> StorageConfig:
        data = json.loads(raw)
        typ = data.pop("type", "")
        return cls(key=key, type=typ, params=data)

    def masked(self) -> dict[str, Any]:
        """The config as a dict safe to print: secrets reduced to a hint, URLs without userinfo."""
        return {"key": self.key, "type": self.type, **secrets.mask_params(self.params, self.type)}

    def redact(self, text: str) -> str:
        """``text`` with this config's secrets (and any URL userinfo) removed."""
        return secrets.redact(text, self.params, self.type)

    def __repr__(self) -> str:
        return f"StorageConfig(key={self.key!r}, type={self.type!r}, params={secrets.mask_params(self.params)!r})"


mask_secret = secrets.mask_secret  # ``****XY``: never more than the last 2 characters, nothing of short secrets


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



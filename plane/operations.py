"""The registry's rules, written once: every front door (CLI, console, dashboard, the pods'
management API) changes models, vmodels and copies through these coroutines.

Each rule lives here and nowhere else: what a valid registration is, that a model a vmodel
still targets cannot be unregistered, how a vmodel's references are kept, how a pod's copy
entry is written. ``plane.api`` runs them for synchronous callers; the pods await them.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass

from plane.records import (
    Conflict,
    CopyInfo,
    Event,
    FailureInfo,
    ModelRecord,
    VModelRecord,
    now_ms,
)
from plane.registry import Registry

__all__ = [
    "ValidationError",
    "NotFound",
    "InUse",
    "ModelSpec",
    "validate_model_id",
    "check_spec",
    "record_for",
    "register",
    "unregister",
    "set_vmodel_direct",
    "add_ref",
    "remove_ref",
    "delete_vmodel",
    "write_copy",
    "drop_copies",
    "peer_token",
    "REGISTER_LAST_USED_OFFSET_MS",
    "REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS",
    "SERVED_TYPES",
]

# ModelMesh gives new registrations a last-used time in the past so they never push out
# models that were used in the last hour.
REGISTER_LAST_USED_OFFSET_MS = 6 * 3600 * 1000
REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS = 3600 * 1000
SERVED_TYPES = ("onnx", "onnxruntime")
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,252}$")


class ValidationError(ValueError):
    """Bad input from the operator; the message says what is wrong and how to fix it."""


class NotFound(KeyError):
    """The named model, vmodel or storage key does not exist."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0]) if self.args else "not found"


class InUse(ValidationError):
    """The thing is still referenced (a model that vmodels target)."""


def validate_model_id(model_id: str, *, what: str = "model id") -> str:
    if not isinstance(model_id, str) or not _ID_RE.match(model_id):
        raise ValidationError(
            f"invalid {what} {model_id!r}: use 1-253 letters, digits and . _ : @ + - "
            "(starting with a letter or digit)"
        )
    return model_id


@dataclass
class ModelSpec:
    """What an operator registers."""

    model_id: str
    path: str
    storage_key: str = "default"
    type: str = "onnx"
    pinned: bool = False
    min_copies: int = 0
    max_copies: int = 0


def check_spec(spec: ModelSpec) -> None:
    validate_model_id(spec.model_id)
    if not spec.type:
        raise ValidationError("model type must not be empty (use 'onnx')")
    if spec.type.lower() not in SERVED_TYPES:
        raise ValidationError(f"model type {spec.type!r} is not served here: only 'onnx' models are")
    if not spec.path:
        raise ValidationError("model path must not be empty: give the file's path inside the storage")
    from plane import storage

    try:
        storage.check_relative_path(spec.path)
    except storage.StorageError as exc:
        raise ValidationError(str(exc)) from exc
    if spec.min_copies < 0 or spec.max_copies < 0:
        raise ValidationError("copy counts must not be negative")
    if spec.max_copies and spec.min_copies > spec.max_copies:
        raise ValidationError("min copies must not exceed max copies")


def record_for(spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0) -> ModelRecord:
    now = now_ms()
    offset = REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS if load_now else REGISTER_LAST_USED_OFFSET_MS
    return ModelRecord(
        model_id=spec.model_id,
        type=spec.type.lower(),
        path=spec.path,
        key=spec.storage_key or "default",
        created_ms=now,
        last_used_ms=last_used_ms or now - offset,
        pinned=spec.pinned,
        min_copies=spec.min_copies,
        max_copies=spec.max_copies,
    )


async def register(registry: Registry, spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0,
                   writer: str = "") -> ModelRecord:
    """Create the model, or return the existing one when it is the same model. Raises
    ValidationError for bad input or a different model under the id, Conflict on a race."""
    check_spec(spec)
    rec = record_for(spec, load_now=load_now, last_used_ms=last_used_ms)
    if await registry.create_model(rec):
        await registry.add_event(Event("register", model=spec.model_id, pod=writer,
                                       reason=f"{spec.storage_key}:{spec.path}"))
        return rec
    existing = await registry.get_model(spec.model_id)
    if existing is None:  # deleted in between: try once more
        if await registry.create_model(rec):
            return rec
        raise Conflict(f"model {spec.model_id!r} is being changed concurrently; try again")
    if (existing.path, existing.key, existing.type) != (rec.path, rec.key, rec.type):
        raise ValidationError(
            f"model {spec.model_id!r} is already registered with {existing.key}:{existing.path}; "
            "unregister it first or choose another id"
        )
    return existing


async def unregister(registry: Registry, model_id: str, *, writer: str = "") -> bool:
    """Remove a model (pods holding copies unload them when the watch tells them). Refused
    while a vmodel targets it. False when it did not exist."""
    rec = await registry.get_model(model_id)
    if rec is None:
        return False
    if rec.refs:
        raise InUse(f"model {model_id!r} is the target of vmodel(s) {', '.join(rec.refs)}: "
                    "delete or repoint them first")
    ok = await registry.delete_model(model_id)
    if ok:
        await registry.add_event(Event("unregister", model=model_id, pod=writer, reason="unregistered"))
    return ok


async def set_vmodel_direct(registry: Registry, vmodel_id: str, target: str, auto_delete: bool,
                            owner: str) -> VModelRecord | None:
    """Point a vmodel at a model at once (no pod to load the target first)."""

    def change(v: VModelRecord | None) -> VModelRecord:
        v = v or VModelRecord(vmodel_id=vmodel_id, owner=owner)
        v.active = target
        v.target = target
        v.auto_delete = auto_delete
        v.failed = ""
        v.updated_ms = now_ms()
        return v

    rec = await registry.update_vmodel(vmodel_id, change)
    await add_ref(registry, target, vmodel_id)
    return rec


async def add_ref(registry: Registry, model_id: str, vmodel_id: str) -> None:
    def change(m: ModelRecord) -> ModelRecord:
        if vmodel_id not in m.refs:
            m.refs = sorted({*m.refs, vmodel_id})
        return m

    await registry.update_model(model_id, change)


async def remove_ref(registry: Registry, model_id: str, vmodel_id: str) -> ModelRecord | None:
    def change(m: ModelRecord) -> ModelRecord:
        m.refs = [r for r in m.refs if r != vmodel_id]
        return m

    return await registry.update_model(model_id, change)


async def delete_vmodel(registry: Registry, vmodel_id: str, *, writer: str = "") -> bool:
    rec = await registry.get_vmodel(vmodel_id)
    if rec is None:
        return False
    await registry.delete_vmodel(vmodel_id)
    for model_id in {rec.active, rec.target} - {""}:
        await remove_ref(registry, model_id, vmodel_id)
    await registry.add_event(Event("vmodel", model=rec.active, pod=writer, reason=f"vmodel {vmodel_id} deleted"))
    return True


CopyFn = Callable[[ModelRecord], None]


async def write_copy(registry: Registry, model_id: str, pod_id: str, desired: Callable[[], CopyInfo | None], *,
                     extra: CopyFn | None = None, failure: FailureInfo | None = None) -> ModelRecord | None:
    """Make the model's entry for ``pod_id`` equal ``desired()``, evaluated inside the
    compare-and-swap: whatever order concurrent writes land in, the last one carries the
    pod's state as of its own write, so the registry converges on the truth. ``extra`` changes
    other fields in the same write; ``failure`` records a failed load for the pod."""

    def change(m: ModelRecord) -> ModelRecord:
        want = desired()
        have = m.copies.get(pod_id)
        if want is None:
            m.copies.pop(pod_id, None)
        elif have is None or (have.state, have.size) != (want.state, want.size):
            m.copies[pod_id] = want
        if failure is not None:
            m.failed[pod_id] = failure
        if extra is not None:
            extra(m)
        return m

    return await registry.update_model(model_id, change)


async def drop_copies(registry: Registry, model_id: str, pods: set[str]) -> ModelRecord | None:
    """Remove the copies of ``pods`` (pods that are gone) from the model's record."""

    def change(m: ModelRecord) -> ModelRecord:
        for p in pods:
            m.copies.pop(p, None)
        return m

    return await registry.update_model(model_id, change)


async def peer_token(registry: Registry) -> str:
    """The plane's secret for pod-to-pod calls, created by the first pod that asks. It lives in
    etcd, so exactly the processes that may change the registry can make internal calls."""
    import secrets

    key = registry.key("meta", "peer-token")
    await registry.create(key, secrets.token_urlsafe(32).encode())
    raw, _ = await registry.get_raw(key)
    if not raw:
        raise Conflict("the plane's peer token could not be read back; try again")
    return raw.decode()

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
from plane.runtimes import types as runtime_types

__all__ = [
    "ValidationError",
    "AlreadyExists",
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
    "release",
    "owner_mismatch",
    "check_owner",
    "differs",
    "get_vmodel",
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
SERVED_TYPES = runtime_types.SERVED_TYPES  # plain names; ModelMesh's mt:/rt: forms too (plane.runtimes.types)
_ID_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,252}$")


class ValidationError(ValueError):
    """Bad input from the operator; the message says what is wrong and how to fix it."""


class AlreadyExists(ValidationError):
    """The id is taken: a model registered with other info, or a vmodel of another owner.
    ModelMesh answers ALREADY_EXISTS for both (ModelMeshApi.java ``toStatus``: "Model already
    exists with different attribute values"; VModelManager.java ``updateVModel``: "vmodel ...
    already exists with different owner"). A ValidationError, so callers that catch that keep
    working; the pods' gRPC edge maps it to ALREADY_EXISTS."""


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
    if not spec.type or not spec.type.strip():
        raise ValidationError("model type must not be empty (use onnx, sklearn, xgboost, lightgbm, or ModelMesh's "
                              "mt:<format> / rt:<runtime>)")
    try:
        runtime_types.parse_type(spec.type)  # accepted exactly when a pod has a runtime for it
    except runtime_types.UnknownType as exc:
        raise ValidationError(str(exc)) from exc
    if not spec.path:
        raise ValidationError("model path must not be empty: give the file's path inside the storage")
    from plane import storage

    try:
        storage.check_relative_path(spec.path)
    except storage.StorageError as exc:
        raise ValidationError(str(exc)) from exc
    from plane.admission import check_copies

    check_copies(spec.min_copies, spec.max_copies)


def record_for(spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0) -> ModelRecord:
    now = now_ms()
    offset = REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS if load_now else REGISTER_LAST_USED_OFFSET_MS
    return ModelRecord(
        model_id=spec.model_id,
        type=spec.type.strip(),  # as given (ModelMesh's ModelInfo.type); pods resolve it with parse_type
        path=spec.path,
        key=spec.storage_key or "default",
        created_ms=now,
        last_used_ms=last_used_ms or now - offset,
        pinned=spec.pinned,
        min_copies=spec.min_copies,
        max_copies=spec.max_copies,
    )


async def register(registry: Registry, spec: ModelSpec, *, load_now: bool, last_used_ms: int = 0,
                   writer: str = "", auto_delete: bool = False) -> ModelRecord:
    """Create the model, or return the existing one when it is the same model.

    As ModelMesh's ``registerModel`` (ModelMesh.java): an id already registered with the same
    type, path and key is idempotent (the record comes back as it is, ``auto_delete`` included;
    without ``load_now`` its last-used time moves up when the new one is over
    ``REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS`` = LASTUSED_AGE_ON_ADD_MS later); other info raises
    :class:`AlreadyExists`. ``auto_delete`` marks a model a vmodel creates and owns
    (VModelManager.java ``updateVModel``: ``new ModelRecord(type, key, path, autoDelete)``): it
    is deleted when its last vmodel reference goes (:func:`release`). Raises ValidationError for
    bad input, Conflict on a race."""
    check_spec(spec)
    rec = record_for(spec, load_now=load_now, last_used_ms=last_used_ms)
    rec.auto_delete = auto_delete
    existing: ModelRecord | None = None
    for _ in range(2):  # created, or read back; once more if it was deleted in between
        if await registry.create_model(rec):
            await registry.add_event(Event("register", model=spec.model_id, pod=writer,
                                           reason=f"{spec.storage_key}:{spec.path}"))
            return rec
        existing = await registry.get_model(spec.model_id)
        if existing is not None:
            break
    if existing is None:
        raise Conflict(f"model {spec.model_id!r} is being changed concurrently; try again")
    if differs(existing, rec):
        raise AlreadyExists(
            f"model {spec.model_id!r} is already registered with {existing.key}:{existing.path} "
            f"(type {existing.type}); unregister it first or choose another id"
        )
    stamp = rec.last_used_ms
    if not load_now and stamp > existing.last_used_ms + REGISTER_LOAD_NOW_LAST_USED_OFFSET_MS:

        def bump(m: ModelRecord) -> ModelRecord:
            m.last_used_ms = max(m.last_used_ms, stamp)
            return m

        existing = await registry.update_model(spec.model_id, bump) or existing
    return existing


def differs(existing: ModelRecord, new: ModelRecord) -> bool:
    """Whether a registration names another model than the one registered under its id (the
    attributes ModelMesh compares: type, path, key)."""
    return (existing.path, existing.key, existing.type) != (new.path, new.key, new.type)


async def unregister(registry: Registry, model_id: str, *, writer: str = "") -> bool:
    """Remove a model (pods holding copies unload them when the watch tells them). Refused
    (InUse: FAILED_PRECONDITION) while a vmodel targets it. An id that is not registered is
    already done: ModelMesh's ``deleteModel`` (ModelMesh.java, "fine if not found") answers OK,
    so the pods do too; the result is False then, for the CLI's message."""
    if not model_id:
        raise ValidationError("give the id of the model to unregister")  # ModelMeshApi.validateModelId
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


# -- vmodels -----------------------------------------------------------------------------------------
# ModelMesh keeps a reference count on each model (VModelManager.java: ``incRefCount`` when a
# vmodel starts to target it, ``decModelRefsInTxn`` when it stops); here ``refs`` lists the
# vmodels, so adding a reference twice is harmless. A reference is added before the vmodel
# names the model and removed after it stops naming it, so a model a vmodel names always has it
# in ``refs`` and cannot be unregistered under it.


def owner_mismatch(rec: VModelRecord, owner: str) -> bool:
    """ModelMesh's ``absentOrOwnerMismatch`` (VModelManager.java), for a vmodel that exists: an
    empty owner matches any vmodel, a given one only a vmodel of exactly that owner (a vmodel
    without owner included: it does not match a named owner)."""
    return bool(owner) and rec.owner != owner


def check_owner(rec: VModelRecord | None, owner: str) -> None:
    """``setVModel`` on another owner's vmodel fails with ALREADY_EXISTS (VModelManager.java
    ``updateVModel``); this is what modelmesh-serving's predictor controller reads as "already
    exists with the same name from a different source"."""
    if rec is not None and owner_mismatch(rec, owner):
        raise AlreadyExists(f"vmodel {rec.vmodel_id!r} already exists with a different owner "
                            f"({rec.owner or 'none'!r}, not {owner!r})")


async def get_vmodel(registry: Registry, vmodel_id: str, *, owner: str = "") -> VModelRecord | None:
    """The vmodel as ``owner`` sees it: another owner's vmodel is not found (VModelManager.java
    ``getVModelStatus`` returns the empty status, NOT_FOUND, on an owner mismatch)."""
    rec = await registry.get_vmodel(vmodel_id)
    return None if rec is None or owner_mismatch(rec, owner) else rec


async def set_vmodel_direct(registry: Registry, vmodel_id: str, target: str, auto_delete: bool,
                            owner: str, *, writer: str = "") -> VModelRecord | None:
    """Point a vmodel at a model at once (no pod to load the target first). Another owner's
    vmodel raises AlreadyExists; the models it stops naming are released (:func:`release`), the
    old active one deleted when unreferenced and ``auto_delete`` asks for it."""
    check_owner(await registry.get_vmodel(vmodel_id), owner)
    added = await add_ref(registry, target, vmodel_id)
    old: list[str] = []

    def change(v: VModelRecord | None) -> VModelRecord:
        check_owner(v, owner)
        v = v or VModelRecord(vmodel_id=vmodel_id, owner=owner, active=target, target=target)
        old[:] = [v.active, v.target]
        v.active = target
        v.target = target
        v.auto_delete = auto_delete
        v.failed = ""
        v.updated_ms = now_ms()
        return v

    try:
        rec = await registry.update_vmodel(vmodel_id, change)
    except AlreadyExists:
        if added:
            await release(registry, target, vmodel_id, writer=writer)
        raise
    active, pending = old
    if pending not in ("", target, active):
        await release(registry, pending, vmodel_id, writer=writer, why=f"vmodel {vmodel_id} no longer targets it")
    if active not in ("", target):
        await release(registry, active, vmodel_id, delete_unowned=auto_delete, writer=writer,
                      why=f"vmodel {vmodel_id} moved to {target}")
    return rec


async def add_ref(registry: Registry, model_id: str, vmodel_id: str, *, last_used_ms: int = 0) -> bool:
    """Record that ``vmodel_id`` targets the model. True when the reference is new. Raises
    NotFound when the model is not registered (VModelManager.java: "Target model ... not
    found"). ``last_used_ms``: a transition target takes the active model's last-used time
    when that is later (VModelManager.java ``updateVModel``: ``newLastUsedTime``)."""
    added: list[bool] = []

    def change(m: ModelRecord) -> ModelRecord:
        added[:] = [vmodel_id not in m.refs]
        m.refs = sorted({*m.refs, vmodel_id})
        m.last_used_ms = max(m.last_used_ms, last_used_ms)
        return m

    if await registry.update_model(model_id, change) is None:
        raise NotFound(f"target model {model_id!r} is not registered")
    return bool(added and added[0])


async def remove_ref(registry: Registry, model_id: str, vmodel_id: str) -> ModelRecord | None:
    def change(m: ModelRecord) -> ModelRecord:
        m.refs = [r for r in m.refs if r != vmodel_id]
        return m

    return await registry.update_model(model_id, change)


async def release(registry: Registry, model_id: str, vmodel_id: str, *, delete_unowned: bool = False,
                  writer: str = "", why: str = "") -> bool:
    """Drop ``vmodel_id``'s reference to the model and, in the same compare-and-swap, delete the
    model when that was its last reference and a vmodel owns it (``auto_delete``), or
    ``delete_unowned`` asks for it (the plane's ``--auto-delete`` switch: see
    docs/modelmesh-compat.md). ModelMesh's rule: VModelManager.java ``decModelRefsInTxn``
    ("decrement its refcount and delete if appropriate": ``decRefCount() == 0 && isAutoDelete()``),
    used when a vmodel is deleted, when it switches away from its active model and when a
    pending target is superseded. True when the model was deleted."""
    deleted: list[bool] = []

    def change(m: ModelRecord) -> ModelRecord | None:
        held = vmodel_id in m.refs
        m.refs = [r for r in m.refs if r != vmodel_id]
        deleted[:] = [held and not m.refs and (m.auto_delete or delete_unowned)]
        return None if deleted[0] else m

    await registry.update_model(model_id, change)
    if not (deleted and deleted[0]):
        return False
    await registry.add_event(Event("unregister", model=model_id, pod=writer,
                                   reason=f"auto-deleted: {why or f'vmodel {vmodel_id} released it'}"))
    return True


async def delete_vmodel(registry: Registry, vmodel_id: str, *, owner: str = "", writer: str = "") -> bool:
    """Delete a vmodel and release the models it names (an owned one that nothing else
    references is deleted with it). As VModelManager.java ``deleteVModel``: a vmodel that does
    not exist, or belongs to another owner, is left alone and the call succeeds ("all good");
    the result is False then. The delete is a compare-and-swap on the record read, so a
    concurrent change of the vmodel is seen before its models are released."""
    gone: list[VModelRecord] = []

    def change(v: VModelRecord | None) -> VModelRecord | None:
        gone.clear()
        if v is None or owner_mismatch(v, owner):
            return v
        gone.append(v)
        return None

    await registry.update_vmodel(vmodel_id, change)
    if not gone:
        return False
    rec = gone[0]
    for model_id in dict.fromkeys((rec.active, rec.target)):
        if model_id:
            await release(registry, model_id, vmodel_id, writer=writer, why=f"vmodel {vmodel_id} was deleted")
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

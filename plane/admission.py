"""What an operator's change must pass before the plane writes it, written once for every
front door that goes through :class:`plane.api.PlaneClient` (the CLI, ``mesh-console``, the
dashboard, the KServe controller).

:mod:`plane.operations` holds the rules ModelMesh itself has (valid ids, types and paths,
idempotent registration, vmodel references); :func:`check_copies` is one of them too (every
registration passes it). The others are checks an operator's tool adds on top, which the pods'
management API does not make because ModelMesh does not:

- a model names a storage key that exists (ModelMesh's ``registerModel`` takes any key and the
  load fails later; :class:`UnknownStorage` says so at once and lists the keys there are);
- a vmodel does not take the id of a registered model (a request's name is read as a vmodel
  first, so such a vmodel would silently take over the model's traffic: :class:`ShadowsModel`);
- a copy floor that a plane of fixed size cannot meet is refused: a model has at most one copy
  per pod, and an embedded plane (``mesh up``) keeps the pod count it was started with. Where
  pods can be added (any other plane, e.g. a Kubernetes StatefulSet) the floor is accepted with
  a warning, and the planner meets it as far as the pods there are allow.

Each check raises a :class:`~plane.operations.ValidationError` (the CLI's exit 2), and
:func:`undo_set_vmodel` takes back a vmodel change whose target failed to load.
"""

from __future__ import annotations

import contextlib
import pathlib

from plane import operations
from plane.operations import NotFound, ValidationError
from plane.records import VModelRecord, now_ms
from plane.registry import Registry

__all__ = ["check_copies", "UnknownStorage", "ShadowsModel", "check_storage_key", "check_vmodel_id",
           "copy_floor_warning", "fixed_pod_count", "undo_set_vmodel"]


class UnknownStorage(ValidationError):
    """A model names a storage key that has no config."""


class ShadowsModel(ValidationError):
    """A vmodel would take the id of a registered model."""


def check_copies(min_copies: int, max_copies: int) -> None:
    """A copy policy's counts (part of every registration, :func:`plane.operations.check_spec`):
    not negative, and a floor not above the cap (0: no cap)."""
    if min_copies < 0 or max_copies < 0:
        raise ValidationError(f"copy counts must not be negative (min copies {min_copies}, max copies {max_copies})")
    if max_copies and min_copies > max_copies:
        raise ValidationError(f"min copies ({min_copies}) must not exceed max copies ({max_copies}; 0 = no cap)")


async def check_storage_key(registry: Registry, key: str) -> None:
    """Raise :class:`UnknownStorage`, naming the keys there are, when ``key`` has no config."""
    key = key or "default"
    if await registry.get_storage(key) is not None:
        return
    known = sorted(c.key for c in await registry.list_storage())
    there = f"known keys: {', '.join(known)}" if known else "no storage config exists yet"
    raise UnknownStorage(f"unknown storage key {key!r} ({there}); add it with `mesh storage set {key} --type ...` "
                         "or name one of those with --storage")


async def check_vmodel_id(registry: Registry, vmodel_id: str, *, shadow_model: bool = False) -> None:
    """Raise :class:`ShadowsModel` when a model is registered under ``vmodel_id`` (unless
    ``shadow_model``: the operator means it)."""
    if shadow_model or await registry.get_model(vmodel_id) is None:
        return
    raise ShadowsModel(f"{vmodel_id!r} is a registered model id: a vmodel of that name would take over every "
                       "request for that model (a name is read as a vmodel first); choose another vmodel id, "
                       "or force it (mesh vmodels set --force) to shadow the model on purpose")


def fixed_pod_count(state_dir: pathlib.Path | str, etcd_endpoint: str, etcd_prefix: str) -> int | None:
    """The pod count of the embedded plane recorded in ``state_dir`` when it is the plane at
    ``etcd_endpoint``/``etcd_prefix`` (its size is fixed until `mesh down` and `mesh up --pods`),
    else None: pods may join (Kubernetes, pods started by hand)."""
    from plane import local

    plane = local.status(pathlib.Path(state_dir))
    if plane is None or (plane.etcd_endpoint, plane.etcd_prefix) != (etcd_endpoint, etcd_prefix):
        return None
    return len(plane.pods)


def copy_floor_warning(min_copies: int, *, pods: int, fixed: bool) -> str:
    """'' when ``min_copies`` copies can be had from ``pods`` pods (one copy per pod at most).
    Otherwise, raise ValidationError on a plane of ``fixed`` size, or return the warning to show."""
    if min_copies <= pods:
        return ""
    if fixed:
        raise ValidationError(f"min copies {min_copies} cannot be met: only {pods} pods exist and a model has at "
                              f"most one copy per pod; use at most {pods}, or restart the plane with more pods "
                              f"(mesh down; mesh up --pods {min_copies})")
    return (f"min copies {min_copies} is more than the {pods} pods running: the plane keeps {pods} copies until "
            "more pods join (scale the pods up to meet it)")


async def undo_set_vmodel(registry: Registry, vmodel_id: str, target: str, before: VModelRecord | None, *,
                          owner: str = "", writer: str = "") -> None:
    """Take back a ``setVModel`` whose target failed to load: a vmodel it created is deleted, one
    that existed gets its previous active model and target back; either way the failed target
    loses the vmodel's reference (it stays registered: the command did not register it)."""
    if before is None:
        await operations.delete_vmodel(registry, vmodel_id, owner=owner, writer=writer)
        return
    for model_id in dict.fromkeys((before.active, before.target)):
        if model_id:  # references the switch may have dropped (a pending target it superseded)
            with contextlib.suppress(NotFound):
                await operations.add_ref(registry, model_id, vmodel_id)

    def restore(v: VModelRecord | None) -> VModelRecord | None:
        if v is None or v.target != target:
            return v  # deleted or changed again since: not ours to undo
        v.active, v.target, v.auto_delete, v.failed = before.active, before.target, before.auto_delete, before.failed
        v.updated_ms = now_ms()
        return v

    await registry.update_vmodel(vmodel_id, restore)
    if target not in (before.active, before.target):
        await operations.release(registry, target, vmodel_id, writer=writer,
                                 why=f"vmodel {vmodel_id} kept {before.active}: {target} failed to load")

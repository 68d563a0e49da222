"""The controller's decisions as pure functions over plain objects: what to register, what to remove,
and (re-exported from :mod:`plane.controller.status`) what status to write.

:func:`plan` takes the Predictors (parsed from InferenceServices and Predictor resources by
:mod:`plane.controller.kserve`), the storage Secret's documents, and a :class:`RegistryView` of the
registry, and returns the actions that make the registry match, in order, plus the problems it
found per resource. :mod:`plane.controller.runner` carries the actions out through
:class:`plane.api.PlaneClient` (every registration rule stays in :mod:`plane.operations`), then asks
:func:`model_state` and :func:`inference_service_status` / :func:`predictor_status` what to write.

The registrations are modelmesh-serving's (controllers/predictor_controller.go ``setVModel``): one
vmodel per resource, named after it and owned by its source (``isvc`` or ``ksp``), targeting a
concrete model whose id changes with the spec, with ``autoDeleteTargetModel``; a spec change is a
vmodel transition, a deleted resource deletes its vmodel (``handlePredictorNotFound``) and its
concrete models go with it. ``loadNow`` is set for a new registration, as modelmesh-serving sets it
for a Predictor still ``Pending``, and a target that failed to load everywhere is asked to load
again (:class:`EnsureLoaded`), as modelmesh-serving sets ``loadNow`` for one in ``FailedToLoad``;
at most every :data:`LOAD_RETRY_MS`, so a model that cannot load is not retried in a tight loop
(the quickstart's model file, for one, may be uploaded after the controller first asked for it).

Runtimes: a resource that names a ``runtime`` needs a multi-model, enabled ServingRuntime or
ClusterServingRuntime of that name (modelmesh-serving's ``rt:<name>`` label), else its status says
``RuntimeNotRecognized``. Recognised without one: ModelMesh's own runtime names (mlserver-1.x,
ovms-1.x, triton-2.x, torchserve-0.x, which modelmesh-serving installs as ClusterServingRuntimes)
and any runtime the plane stands in for (it accepts ``rt:<name>``: plane/runtimes/types.py). The
model type is the first of :func:`~plane.controller.kserve.type_candidates` the plane accepts
(``accepts_type``: the plane's own registration rule, ``operations.check_spec``): modelmesh-serving's
label, else ``mt:<format>``, else the plain format, so a runtime the plane cannot stand in for
(``rt:ovms-1.x`` for an ONNX model) still serves the model by its format. None accepted:
``NoSupportingRuntime``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

from plane.controller.kserve import (
    SOURCES,
    Predictor,
    concrete_model_id,
    parse_concrete_model_id,
    type_candidates,
    type_label,
)
from plane.controller.status import INVALID_SPEC_REASON as INVALID_SPEC_REASON
from plane.controller.status import MODEL_LOAD_FAILED as MODEL_LOAD_FAILED
from plane.controller.status import NO_SUPPORTING_RUNTIME as NO_SUPPORTING_RUNTIME
from plane.controller.status import RUNTIME_NOT_RECOGNIZED as RUNTIME_NOT_RECOGNIZED
from plane.controller.status import ModelState as ModelState
from plane.controller.status import Problem as Problem
from plane.controller.status import inference_service_status as inference_service_status
from plane.controller.status import model_state as model_state
from plane.controller.status import predictor_status as predictor_status
from plane.controller.status import status_patch as status_patch
from plane.controller.storage import StorageChoice, StorageError, is_derived_key, resolve_storage
from plane.records import InstanceRecord, ModelRecord, VModelRecord

MODELMESH_RUNTIMES = frozenset({"mlserver-1.x", "ovms-1.x", "triton-2.x", "torchserve-0.x"})
LOAD_RETRY_MS = 30_000
CONFLICT_MESSAGE = "Predictor already exists with the same name from a different source"


# -- actions, in the order the runner carries them out ---------------------------------------------


@dataclass(frozen=True)
class PutStorage:
    key: str
    type: str
    params: dict[str, Any]
    refs: tuple[tuple[str, str], ...]  # the resources that need it (a failure is theirs)


@dataclass(frozen=True)
class Register:
    model_id: str
    path: str
    storage_key: str
    type: str
    ref: tuple[str, str]


@dataclass(frozen=True)
class SetVModel:
    vmodel_id: str
    model_id: str
    owner: str
    ref: tuple[str, str]
    load_now: bool = False


@dataclass(frozen=True)
class EnsureLoaded:
    model_id: str
    ref: tuple[str, str]


@dataclass(frozen=True)
class DeleteVModel:
    vmodel_id: str


@dataclass(frozen=True)
class Unregister:
    model_id: str


@dataclass(frozen=True)
class RemoveStorage:
    key: str


Action = PutStorage | Register | SetVModel | EnsureLoaded | DeleteVModel | Unregister | RemoveStorage


@dataclass(frozen=True)
class RegistryView:
    """What :func:`plan` reads of the registry (from ``PlaneClient.snapshot()`` and ``list_storage()``)."""

    models: dict[str, ModelRecord] = field(default_factory=dict)
    vmodels: dict[str, VModelRecord] = field(default_factory=dict)
    storage_keys: frozenset[str] = frozenset()
    pods: tuple[InstanceRecord, ...] = ()


@dataclass
class Plan:
    actions: list[Action] = field(default_factory=list)
    problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    targets: dict[tuple[str, str], str] = field(default_factory=dict)  # resource -> its concrete model


def runtime_catalog(objects: Iterable[dict[str, Any]]) -> frozenset[str]:
    """Names of the ServingRuntimes/ClusterServingRuntimes a Predictor may name: multi-model and
    enabled (modelmesh-serving considers no other)."""
    out = set()
    for obj in objects:
        spec = obj.get("spec") or {}
        if spec.get("multiModel") and not spec.get("disabled"):
            out.add(str((obj.get("metadata") or {}).get("name", "")))
    return frozenset(out)


def runtime_problem(p: Predictor, runtimes: frozenset[str] | None,
                    accepts_type: Callable[[str], bool] = lambda t: False) -> Problem | None:
    """``RuntimeNotRecognized`` when ``p`` names a runtime nobody provides; None when the runtimes
    could not be listed (no definition installed, no right to read them): then nothing is checked."""
    if not p.runtime or runtimes is None or p.runtime in runtimes or p.runtime in MODELMESH_RUNTIMES:
        return None
    if accepts_type(f"rt:{p.runtime}"):
        return None  # a runtime this plane stands in for
    return Problem(RUNTIME_NOT_RECOGNIZED, "Specified runtime name not recognized")


def choose_type(p: Predictor, accepts_type: Callable[[str], bool]) -> str | None:
    return next((t for t in type_candidates(p) if accepts_type(t)), None)


def _desired(p: Predictor, docs: dict[str, dict[str, Any]], registry: RegistryView, claimed: set[str],
             accepts_type: Callable[[str], bool], runtimes: frozenset[str] | None
             ) -> tuple[Problem | None, StorageChoice | None, str | None]:
    vm = registry.vmodels.get(p.name)
    if p.name in claimed or (vm is not None and vm.owner != p.source):
        return Problem(INVALID_SPEC_REASON, CONFLICT_MESSAGE), None, None
    claimed.add(p.name)
    if p.error:
        return Problem(INVALID_SPEC_REASON, p.error), None, None
    problem = runtime_problem(p, runtimes, accepts_type)
    if problem is not None:
        return problem, None, None
    model_type = choose_type(p, accepts_type)
    if model_type is None:
        return Problem(NO_SUPPORTING_RUNTIME, "No ServingRuntime supports specified model type and/or protocol "
                                              f"({type_label(p)})"), None, None
    try:
        choice = resolve_storage(p, docs)
    except StorageError as exc:
        return Problem(MODEL_LOAD_FAILED, str(exc)), None, None
    return None, choice, model_type


def _load_retry(rec: ModelRecord | None, registry: RegistryView, now_ms: int) -> bool:
    """A registered model with no copy whose loads all failed, the last one LOAD_RETRY_MS ago or more."""
    if rec is None or rec.copies or not rec.failed or not now_ms:
        return False
    if not any(not pod.shutting_down for pod in registry.pods):
        return False
    return now_ms - max(f.time_ms for f in rec.failed.values()) >= LOAD_RETRY_MS


def plan(predictors: Iterable[Predictor], docs: dict[str, dict[str, Any]], registry: RegistryView, *,
         accepts_type: Callable[[str], bool], runtimes: frozenset[str] | None = None, now_ms: int = 0) -> Plan:
    """The actions that make the registry serve ``predictors`` (and nothing else of theirs).

    ``predictors`` must be *all* the resources of the watched namespace, invalid ones included
    (an invalid one keeps its current registration): whatever vmodel of ``isvc``/``ksp`` has no
    resource is deleted, with the concrete models and derived storage keys only it used.
    ``now_ms`` (0: never) times the retries of failed loads."""
    out = Plan()
    present = set()
    storage: dict[str, tuple[StorageChoice, list[tuple[str, str]]]] = {}
    registers: list[Action] = []
    vmodels: list[Action] = []
    claimed: set[str] = set()
    # InferenceServices first, then Predictors (a name both use goes to the InferenceService)
    for p in sorted(predictors, key=lambda p: (SOURCES.index(p.source), p.name)):
        present.add(p.ref)
        problem, choice, model_type = _desired(p, docs, registry, claimed, accepts_type, runtimes)
        if problem is not None:
            out.problems[p.ref] = problem
            continue
        assert choice is not None and model_type is not None
        model_id = concrete_model_id(p, storage_key=choice.key)
        out.targets[p.ref] = model_id
        storage.setdefault(choice.key, (choice, []))[1].append(p.ref)
        new_model = model_id not in registry.models
        if new_model:
            registers.append(Register(model_id, p.path, choice.key, model_type, p.ref))
        vm = registry.vmodels.get(p.name)
        if vm is None or vm.target != model_id:
            vmodels.append(SetVModel(p.name, model_id, p.source, p.ref, load_now=new_model and vm is None))
        elif _load_retry(registry.models.get(model_id), registry, now_ms):
            vmodels.append(EnsureLoaded(model_id, p.ref))
    out.actions += [PutStorage(key, c.type, c.params, tuple(refs)) for key, (c, refs) in storage.items()]
    out.actions += registers + vmodels
    # What no resource asks for any more
    kept_vmodels = {}
    for vid, vm in registry.vmodels.items():
        if vm.owner in SOURCES and (vm.owner, vid) not in present:
            out.actions.append(DeleteVModel(vid))
        else:
            kept_vmodels[vid] = vm
    used = set(out.targets.values()) | {m for vm in kept_vmodels.values() for m in (vm.active, vm.target) if m}
    gone = sorted(m for m in registry.models if parse_concrete_model_id(m) and m not in used)
    out.actions += [Unregister(m) for m in gone]
    keys_in_use = set(storage) | {rec.key for mid, rec in registry.models.items() if mid not in gone}
    out.actions += [RemoveStorage(k) for k in sorted(registry.storage_keys)
                    if is_derived_key(k) and k not in keys_in_use]
    return out


def needs_attention(states: Iterable[ModelState]) -> bool:
    """Whether any state is still moving (loading, transitioning, waiting for a pod): the runner then
    looks again sooner, as modelmesh-serving requeues a Loading Predictor after one second."""
    return any(s.active == "Loading" or s.target in ("Loading", "Pending") or s.transition == "InProgress"
               for s in states)

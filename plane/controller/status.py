"""Status written back to InferenceServices and Predictors (pure: registry records in, status dicts out).

Followed from kserve/modelmesh-serving (commit 9c7a2b7):

* ``controllers/predictor_controller.go`` ``updatePredictorStatusFromVModel`` and ``decodeModelState``:
  ModelMesh's model status maps to a model state (NOT_LOADED -> ``Standby``, LOADING -> ``Loading``,
  LOADED -> ``Loaded``, LOADING_FAILED -> ``FailedToLoad``; no vmodel -> ``Pending``), the vmodel's
  status to ``transitionStatus`` (DEFINED -> ``UpToDate``, TRANSITIONING -> ``InProgress``,
  TRANSITION_FAILED -> ``BlockedByFailedLoad``), a separate ``targetModelState`` only while the
  target differs from the active model, ``lastFailureInfo`` from the target's failed copy
  (``ModelLoadFailed``, its pod as ``location``, its time) or ``RuntimeUnhealthy`` "Waiting for
  runtime Pod to become available" when no runtime pod runs, ``failedCopies``/``totalCopies``,
  and ``available`` = a state other than FailedToLoad and not waiting for a runtime;
* ``pkg/predictor_source/inferenceservice_registry.go`` ``UpdateStatus``: the InferenceService shape
  (kserve/kserve pkg/apis/serving/v1beta1/inference_service_status.go): ``status.modelStatus``
  {``transitionStatus``, ``states``: {``activeModelState``, ``targetModelState``}, ``copies``,
  ``lastFailureInfo`` with ``modelRevisionName``}, and only when available ``status.url`` and
  ``status.components.predictor`` {``url``, ``grpcUrl``, ``restUrl``} (the gRPC URL is the URL, as
  in ``grpc://modelmesh-serving.<ns>:8033``); knative conditions ``PredictorReady`` and ``Ready``.

Differences: ``available`` is also false before the model is registered (modelmesh-serving's
formula counts ``Pending`` as available); failed conditions carry the failure's reason and
message; a failure's time and a condition's ``lastTransitionTime`` are kept from the previous
status while nothing changed, so writing the status never triggers another write.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any

from plane.controller.kserve import Predictor
from plane.records import InstanceRecord, ModelRecord, VModelRecord

RUNTIME_UNHEALTHY = "RuntimeUnhealthy"
MODEL_LOAD_FAILED = "ModelLoadFailed"
INVALID_SPEC_REASON = "InvalidPredictorSpec"
NO_SUPPORTING_RUNTIME = "NoSupportingRuntime"
RUNTIME_NOT_RECOGNIZED = "RuntimeNotRecognized"
WAITING_FOR_RUNTIME = "Waiting for runtime Pod to become available"
FAILURE_EXPIRY_MS = 900_000  # plane.settings failure_expiry_s: a failure older than this no longer counts
_TRANSITIONS = {"DEFINED": "UpToDate", "TRANSITIONING": "InProgress", "TRANSITION_FAILED": "BlockedByFailedLoad"}
ISVC_STATUS_KEYS = ("modelStatus", "conditions", "url", "components")
PREDICTOR_STATUS_KEYS = ("available", "transitionStatus", "activeModelState", "targetModelState",
                         "lastFailureInfo", "grpcEndpoint", "httpEndpoint", "totalCopies", "failedCopies")


@dataclass(frozen=True)
class Problem:
    """A failure the controller itself found (a FailureReason of KServe's and a message)."""

    reason: str
    message: str
    model_id: str = ""


@dataclass(frozen=True)
class Failure:
    reason: str
    message: str
    model_id: str = ""
    location: str = ""
    time_ms: int = 0


@dataclass(frozen=True)
class ModelState:
    """One Predictor's state, before it is shaped as an InferenceService or a Predictor status."""

    available: bool
    transition: str
    active: str
    target: str = ""
    failure: Failure | None = None
    total_copies: int = 0
    failed_copies: int = 0


def _live_failures(rec: ModelRecord, now_ms: int, expiry_ms: int) -> dict[str, Any]:
    return rec.live_failures(now_ms, expiry_ms)


def decode_state(rec: ModelRecord | None, now_ms: int, expiry_ms: int = FAILURE_EXPIRY_MS) -> str:
    if rec is None:
        return "Pending"
    if rec.loaded_on():
        return "Loaded"
    if rec.loading_on():
        return "Loading"
    return "FailedToLoad" if _live_failures(rec, now_ms, expiry_ms) else "Standby"


def model_state(p: Predictor, vmodel: VModelRecord | None, records: dict[str, ModelRecord],
                pods: list[InstanceRecord], *, problem: Problem | None = None, now_ms: int,
                expiry_ms: int = FAILURE_EXPIRY_MS) -> ModelState:
    """The state of ``p`` from its vmodel (``p.name``, owned by ``p.source``) and the records."""
    if p.error:
        problem = Problem(INVALID_SPEC_REASON, p.error)
    waiting = not any(not pod.shutting_down for pod in pods)
    vm = vmodel if vmodel is not None and vmodel.owner == p.source else None
    if vm is None:
        hard = problem is not None and problem.reason not in (INVALID_SPEC_REASON, RUNTIME_UNHEALTHY)
        failure = Failure(problem.reason, problem.message, problem.model_id) if problem else None
        if failure is None and waiting:
            failure = Failure(RUNTIME_UNHEALTHY, WAITING_FOR_RUNTIME)
        return ModelState(False, "InvalidSpec" if p.error else "UpToDate",
                          "FailedToLoad" if hard else "Pending", failure=failure)
    active_rec, target_rec = records.get(vm.active), records.get(vm.target)
    active = decode_state(active_rec, now_ms, expiry_ms)
    target = "" if vm.active == vm.target else decode_state(target_rec, now_ms, expiry_ms)
    transition = _TRANSITIONS.get(vm.status(), "UpToDate")
    failure = None
    total = failed = 0
    if target_rec is not None:
        failures = _live_failures(target_rec, now_ms, expiry_ms)
        failed = len(failures)
        total = len(set(target_rec.copies) | set(failures))
        if failures and not target_rec.loaded_on():
            pod, info = max(failures.items(), key=lambda kv: kv[1].time_ms)
            failure = Failure(MODEL_LOAD_FAILED, info.message, vm.target, pod, info.time_ms)
    if failure is None and vm.failed:
        failure = Failure(MODEL_LOAD_FAILED, vm.failed, vm.target)
    if problem is not None:
        failure = Failure(problem.reason, problem.message, problem.model_id or vm.target)
    elif waiting and active != "Loaded":
        failure = Failure(RUNTIME_UNHEALTHY, WAITING_FOR_RUNTIME, vm.target)
    if p.error:
        transition = "InvalidSpec"
    elif problem is not None and problem.reason != RUNTIME_UNHEALTHY:
        transition = "BlockedByFailedLoad"  # the new spec cannot load: the active model keeps serving
    unhealthy = failure is not None and failure.reason == RUNTIME_UNHEALTHY
    available = active not in ("", "Pending", "FailedToLoad") and not unhealthy and active_rec is not None
    return ModelState(available, transition, active, target, failure, total, failed)


def rfc3339(ms: int) -> str:
    return datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _failure_time(failure: Failure, previous: dict[str, Any] | None, model_key: str, now_ms: int) -> str:
    if previous and (previous.get("reason"), previous.get("message"), previous.get(model_key)) == (
            failure.reason, failure.message, failure.model_id) and previous.get("time"):
        return str(previous["time"])
    return rfc3339(failure.time_ms or now_ms)


def _failure_info(failure: Failure, previous: dict[str, Any] | None, model_key: str, now_ms: int) -> dict[str, Any]:
    info: dict[str, Any] = {}
    if failure.location:
        info["location"] = failure.location
    info["reason"] = failure.reason
    info["message"] = failure.message
    if failure.model_id:
        info[model_key] = failure.model_id
    info["time"] = _failure_time(failure, previous, model_key, now_ms)
    return info


def _conditions(state: ModelState, previous: list[dict[str, Any]] | None, now_ms: int) -> list[dict[str, Any]]:
    before = {c.get("type"): c for c in previous or [] if isinstance(c, dict)}
    status = "True" if state.available else "False"
    out = []
    for kind in ("PredictorReady", "Ready"):  # knative's order: by type
        old = before.get(kind) or {}
        cond: dict[str, Any] = {"type": kind, "status": status}
        cond["lastTransitionTime"] = (old["lastTransitionTime"] if old.get("status") == status
                                      and old.get("lastTransitionTime") else rfc3339(now_ms))
        if not state.available and state.failure is not None:
            cond["reason"] = state.failure.reason
            cond["message"] = state.failure.message
        out.append(cond)
    return out


def inference_service_status(state: ModelState, *, grpc_url: str, rest_url: str = "",
                             previous: dict[str, Any] | None = None, now_ms: int) -> dict[str, Any]:
    """``status`` of an InferenceService (the fields this controller owns)."""
    previous = previous or {}
    prev_model = previous.get("modelStatus") or {}
    states = {"activeModelState": state.active}
    if state.target:
        states["targetModelState"] = state.target
    copies: dict[str, int] = {"failedCopies": state.failed_copies}
    if state.total_copies:
        copies["totalCopies"] = state.total_copies
    model_status: dict[str, Any] = {"transitionStatus": state.transition, "states": states, "copies": copies}
    if state.failure is not None:
        model_status["lastFailureInfo"] = _failure_info(state.failure, prev_model.get("lastFailureInfo"),
                                                         "modelRevisionName", now_ms)
    status: dict[str, Any] = {"modelStatus": model_status,
                              "conditions": _conditions(state, previous.get("conditions"), now_ms)}
    if state.available:
        component = {"url": grpc_url, "grpcUrl": grpc_url, **({"restUrl": rest_url} if rest_url else {})}
        status["url"] = grpc_url
        status["components"] = {"predictor": component}
    return status


def predictor_status(state: ModelState, *, grpc_url: str, rest_url: str = "",
                     previous: dict[str, Any] | None = None, now_ms: int) -> dict[str, Any]:
    """``status`` of a Predictor (modelmesh-serving's PredictorStatus)."""
    status: dict[str, Any] = {
        "available": state.available,
        "transitionStatus": state.transition,
        "activeModelState": state.active,
        "targetModelState": state.target,
        "grpcEndpoint": grpc_url,
        "httpEndpoint": rest_url,
        "totalCopies": state.total_copies,
        "failedCopies": state.failed_copies,
    }
    if state.failure is not None:
        status["lastFailureInfo"] = _failure_info(state.failure, (previous or {}).get("lastFailureInfo"),
                                                  "modelId", now_ms)
    return status


def _merge_diff(current: Any, desired: Any) -> Any:
    if isinstance(current, dict) and isinstance(desired, dict):
        out = {k: _merge_diff(current.get(k), v) for k, v in desired.items() if current.get(k) != v}
        out.update({k: None for k in current if k not in desired})
        return out
    return desired


def status_patch(current: dict[str, Any] | None, desired: dict[str, Any], owned: tuple[str, ...]
                 ) -> dict[str, Any] | None:
    """A JSON merge patch (RFC 7386) of ``status`` that makes the ``owned`` fields equal ``desired``;
    None when they already are. Fields of ``status`` this controller does not own are left alone."""
    mine = {k: v for k, v in (current or {}).items() if k in owned}
    patch = _merge_diff(mine, desired)
    return patch or None

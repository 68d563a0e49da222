"""The controller's I/O around the pure decisions: read the cluster and the registry, carry out
:func:`plane.controller.reconcile.plan` through :class:`plane.api.PlaneClient`, write status back.

One :meth:`Controller.reconcile` pass is level-triggered: it reads the whole state (the cached
InferenceServices and Predictors, both storage Secrets, a registry snapshot), so a missed event
costs only latency. :meth:`Controller.run` keeps the cache with one list-then-watch thread per
resource kind (an informer, as controller-runtime gives modelmesh-serving) and runs a pass when a
resource's spec or annotations change, and otherwise every ``resync_s`` (every ``fast_s`` while a
model is loading or transitioning: the model's state lives in etcd, not in the resource, just as
modelmesh-serving requeues a Loading Predictor after a second). No pass runs before both kinds
have been listed once, so a slow list never reads as "every resource was deleted".

Storage: ``storage-config`` (ModelMesh's Secret) and ``mesh-storage-config`` (the plane's) are read
on every pass, the plane's winning on a key in both, and the keys the resources use are written to
the registry when they differ from it: a Secret edit takes effect without restarting a pod.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plane.controller import kserve, kube_io
from plane.controller.kube_io import CLUSTER_SERVING_RUNTIMES, INFERENCE_SERVICES, PREDICTORS, SERVING_RUNTIMES
from plane.controller.reconcile import (
    MODEL_LOAD_FAILED,
    DeleteVModel,
    EnsureLoaded,
    ModelState,
    Plan,
    Problem,
    PutStorage,
    Register,
    RegistryView,
    RemoveStorage,
    SetVModel,
    Unregister,
    inference_service_status,
    model_state,
    needs_attention,
    plan,
    predictor_status,
    runtime_catalog,
    status_patch,
)
from plane.controller.status import ISVC_STATUS_KEYS, PREDICTOR_STATUS_KEYS
from plane.kube.defaults import GRPC_PORT, INFERENCE_SERVICE, MODELMESH_STORAGE_SECRET, STORAGE_SECRET
from plane.kube.storage_config import parse_storage_documents, secret_data
from plane.records import now_ms

log = logging.getLogger("plane.controller")
RESYNC_S = 10.0
FAST_RESYNC_S = 1.0
WATCH_TIMEOUT_S = 300
NOT_SERVED_RETRY_S = 60.0
ERROR_BACKOFF_S = 5.0
KINDS = (INFERENCE_SERVICES, PREDICTORS)


def plane_accepts_type(model_type: str) -> bool:
    """Whether the plane registers models of this type: its own rule (``operations.check_spec``)."""
    from plane import operations

    try:
        operations.check_spec(operations.ModelSpec("type-probe", "type-probe", "default", model_type))
    except operations.ValidationError:
        return False
    return True


@dataclass
class PassResult:
    actions: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    patched: list[str] = field(default_factory=list)
    states: dict[str, ModelState] = field(default_factory=dict)


def _name(obj: dict[str, Any]) -> str:
    return str((obj.get("metadata") or {}).get("name", ""))


class Controller:
    """Reconciles one namespace's InferenceServices and Predictors into one plane's registry."""

    def __init__(self, plane: Any, api_client: Any, namespace: str, *, grpc_url: str | None = None,
                 rest_url: str = "", accepts_type: Callable[[str], bool] = plane_accepts_type,
                 clock: Callable[[], int] = now_ms):
        self.plane = plane
        self.api_client = api_client
        self.namespace = namespace
        self.grpc_url = grpc_url or f"grpc://{INFERENCE_SERVICE}.{namespace}:{GRPC_PORT}"
        self.rest_url = rest_url
        self.accepts_type = accepts_type
        self.clock = clock
        self.objects: dict[kube_io.Resource, dict[str, dict[str, Any]]] = {k: {} for k in KINDS}
        self.served: dict[kube_io.Resource, bool] = {k: False for k in KINDS}
        self.failure_expiry_ms = int(getattr(plane.settings, "failure_expiry_s", 900) * 1000)

    # -- reading -------------------------------------------------------------------------------------

    def sync(self) -> None:
        """List both kinds into the cache (a kind whose definition is not installed is empty)."""
        for res in KINDS:
            try:
                items, _ = kube_io.list_objects(self.api_client, res, self.namespace)
                self.replace(res, items, served=True)
            except kube_io.NotServed:
                self.replace(res, [], served=False)

    def replace(self, res: kube_io.Resource, items: list[dict[str, Any]], *, served: bool) -> None:
        self.objects[res] = {_name(o): o for o in items}
        self.served[res] = served

    def predictors(self) -> list[tuple[kube_io.Resource, dict[str, Any], kserve.Predictor]]:
        out = []
        for obj in self.objects[INFERENCE_SERVICES].values():
            p = kserve.from_inference_service(obj)
            if p is not None:
                out.append((INFERENCE_SERVICES, obj, p))
        out += [(PREDICTORS, obj, kserve.from_predictor(obj)) for obj in self.objects[PREDICTORS].values()]
        return out

    def storage_documents(self) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
        docs: dict[str, dict[str, Any]] = {}
        errors: dict[str, str] = {}
        for name in (MODELMESH_STORAGE_SECRET, STORAGE_SECRET):  # the plane's own Secret last: it wins
            secret = kube_io.read_secret(self.api_client, self.namespace, name)
            if secret is not None:
                found, bad = parse_storage_documents(secret_data(secret))
                docs.update(found)
                errors.update(bad)
        return docs, errors

    def runtimes(self) -> frozenset[str] | None:
        from kubernetes.client.exceptions import ApiException

        objects: list[dict[str, Any]] = []
        try:
            for res in (SERVING_RUNTIMES, CLUSTER_SERVING_RUNTIMES):
                objects += kube_io.list_objects(self.api_client, res, self.namespace)[0]
        except (kube_io.NotServed, ApiException) as exc:
            log.info("runtimes not checked: %s", getattr(exc, "reason", exc))
            return None
        return runtime_catalog(objects)

    def registry_view(self) -> RegistryView:
        snap = self.plane.snapshot()
        keys = frozenset(c["key"] for c in self.plane.list_storage())
        return RegistryView({m.model_id: m for m in snap.models}, {v.vmodel_id: v for v in snap.vmodels},
                            keys, tuple(snap.pods))

    # -- one pass ------------------------------------------------------------------------------------

    def reconcile(self) -> PassResult:
        result = PassResult()
        resources = self.predictors()
        docs, secret_errors = self.storage_documents()
        runtimes = self.runtimes() if any(p.runtime for _, _, p in resources) else None
        view = self.registry_view()
        decided = plan([p for _, _, p in resources], docs, view, accepts_type=self.accepts_type, runtimes=runtimes,
                       now_ms=self.clock())
        problems = dict(decided.problems)
        for key, message in secret_errors.items():  # a resource naming a broken key says so
            for _, _, p in resources:
                if p.storage_key == key and p.ref not in problems:
                    problems[p.ref] = Problem(MODEL_LOAD_FAILED, message)
        self._execute(decided, view, problems, result)
        view = self.registry_view()
        for res, obj, p in resources:
            self._write_status(res, obj, p, view, problems.get(p.ref), result)
        return result

    def _execute(self, decided: Plan, view: RegistryView, problems: dict[tuple[str, str], Problem],
                 result: PassResult) -> None:
        from plane import operations, storage
        from plane.mgmt_client import ManagementError
        from plane.registry import RegistryError

        expected = (operations.ValidationError, operations.NotFound, RegistryError, ManagementError, ValueError)
        live = any(not pod.shutting_down for pod in view.pods)
        for action in decided.actions:
            refs = (action.refs if isinstance(action, PutStorage)
                    else (action.ref,) if isinstance(action, Register | SetVModel | EnsureLoaded) else ())
            if any(r in problems for r in refs) and not isinstance(action, PutStorage):
                continue  # its storage failed: registering it would only fail to load
            try:
                if isinstance(action, PutStorage):
                    cfg = storage.validate_config(action.key, action.type, action.params)
                    current = self.plane.get_storage(action.key)
                    if current is not None and (current.type, current.params) == (cfg.type, cfg.params):
                        continue
                    self.plane.set_storage(action.key, action.type, action.params)
                elif isinstance(action, Register):
                    self.plane.register_model(action.model_id, path=action.path, storage_key=action.storage_key,
                                              type=action.type)
                elif isinstance(action, SetVModel):
                    self.plane.set_vmodel(action.vmodel_id, action.model_id, auto_delete=True, owner=action.owner)
                    if action.load_now and live:
                        self.plane.ensure_loaded(action.model_id, sync=False)
                elif isinstance(action, EnsureLoaded):
                    self.plane.ensure_loaded(action.model_id, sync=False)
                elif isinstance(action, DeleteVModel):
                    self.plane.delete_vmodel(action.vmodel_id)
                elif isinstance(action, Unregister):
                    self._unregister(action.model_id)
                elif isinstance(action, RemoveStorage):
                    self.plane.remove_storage(action.key)
            except expected as exc:
                message = str(exc)
                result.errors.append(f"{type(action).__name__} {getattr(action, 'key', '')}"
                                     f"{getattr(action, 'model_id', '')}{getattr(action, 'vmodel_id', '')}: "
                                     f"{message}")
                log.warning("%s", result.errors[-1])
                for ref in refs:
                    problems.setdefault(ref, Problem(MODEL_LOAD_FAILED, message))
                continue
            result.actions.append(_describe(action))
            log.info("%s", result.actions[-1])

    def _unregister(self, model_id: str) -> None:
        """Unregister one of the controller's concrete models. A vmodel moved without a pod keeps a
        stale back-reference on its old target (``set_vmodel_direct`` adds the new one only): when
        no vmodel points at the model any more, such references are dropped first."""
        from plane import operations

        try:
            self.plane.unregister_model(model_id)
        except operations.InUse:
            live = {v.vmodel_id for v in self.plane.list_vmodels() if model_id in (v.active, v.target)}
            rec = self.plane.get_model(model_id)
            if rec is None or live:
                raise
            for vid in rec.refs:
                self.plane.run_async(operations.remove_ref(self.plane.registry, model_id, vid))
            self.plane.unregister_model(model_id)

    def _write_status(self, res: kube_io.Resource, obj: dict[str, Any], p: kserve.Predictor, view: RegistryView,
                      problem: Problem | None, result: PassResult) -> None:
        now = self.clock()
        state = model_state(p, view.vmodels.get(p.name), view.models, list(view.pods), problem=problem,
                            now_ms=now, expiry_ms=self.failure_expiry_ms)
        result.states[f"{res.kind}/{p.name}"] = state
        current = obj.get("status") or {}
        owned: tuple[str, ...]
        if res is INFERENCE_SERVICES:
            desired = inference_service_status(state, grpc_url=self.grpc_url, rest_url=self.rest_url,
                                               previous=current, now_ms=now)
            owned = ISVC_STATUS_KEYS
        else:
            desired = predictor_status(state, grpc_url=self.grpc_url, rest_url=self.rest_url, previous=current,
                                       now_ms=now)
            owned = PREDICTOR_STATUS_KEYS
        patch = status_patch(current, desired, owned)
        if patch is None:
            return
        from kubernetes.client.exceptions import ApiException

        try:
            updated = kube_io.patch_status(self.api_client, res, self.namespace, p.name, patch)
        except ApiException as exc:
            result.errors.append(f"status of {res.kind}/{p.name}: {exc.status} {exc.reason}")
            log.warning("%s", result.errors[-1])
            return
        # keep what we wrote, so the next pass compares against it even before the watch says so
        self.objects[res][p.name] = updated if updated.get("metadata") else {**obj, "status": {**current, **desired}}
        result.patched.append(f"{res.kind}/{p.name}")

    # -- the loop ------------------------------------------------------------------------------------

    def run(self, stop: threading.Event, *, resync_s: float = RESYNC_S, fast_s: float = FAST_RESYNC_S,
            watch_timeout_s: int = WATCH_TIMEOUT_S) -> None:
        """Watch and reconcile until ``stop`` is set."""
        events: queue.Queue[tuple[Any, ...]] = queue.Queue()
        for res in KINDS:
            threading.Thread(target=self._watch, args=(res, events, stop, watch_timeout_s),
                             name=f"watch-{res.plural}", daemon=True).start()
        synced: set[kube_io.Resource] = set()
        next_pass = 0.0
        while not stop.is_set():
            dirty = False
            wait = 0.5 if len(synced) < len(KINDS) else min(max(0.0, next_pass - time.monotonic()), 0.5)
            try:
                msg: tuple[Any, ...] | None = events.get(timeout=wait)
            except queue.Empty:
                msg = None
            while msg is not None:
                dirty = self._apply(msg, synced) or dirty
                try:
                    msg = events.get_nowait()
                except queue.Empty:
                    msg = None
            if len(synced) < len(KINDS) or not (dirty or time.monotonic() >= next_pass):
                continue
            try:
                result = self.reconcile()
                slow = not needs_attention(result.states.values())
            except Exception:  # noqa: BLE001 - etcd or the API server down: log it, try again later
                log.exception("reconcile pass failed; retrying in %.0f s", ERROR_BACKOFF_S)
                slow = True
            next_pass = time.monotonic() + (resync_s if slow else fast_s)

    def _apply(self, msg: tuple[Any, ...], synced: set[kube_io.Resource]) -> bool:
        """Apply a watch thread's message to the cache; True when a pass should follow."""
        if msg[0] == "sync":
            _, res, items, served = msg
            self.replace(res, items, served=served)
            synced.add(res)
            return True
        _, res, kind, obj = msg
        name = _name(obj)
        old = self.objects[res].get(name)
        if kind == "DELETED":
            self.objects[res].pop(name, None)
            return True
        self.objects[res][name] = obj

        def spec_of(o: dict[str, Any] | None) -> Any:
            meta = (o or {}).get("metadata") or {}
            return (meta.get("generation"), meta.get("annotations"), (o or {}).get("spec"))

        # our own status writes come back as MODIFIED: they change nothing a pass reads
        return old is None or spec_of(old) != spec_of(obj)

    def _watch(self, res: kube_io.Resource, events: queue.Queue[tuple[Any, ...]], stop: threading.Event,
               timeout_s: int) -> None:
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        while not stop.is_set():
            try:
                items, version = kube_io.list_objects(self.api_client, res, self.namespace)
            except kube_io.NotServed:
                events.put(("sync", res, [], False))
                stop.wait(NOT_SERVED_RETRY_S)
                continue
            except (ApiException, HTTPError, OSError) as exc:
                log.warning("listing %s failed: %s", res.plural, exc)
                stop.wait(ERROR_BACKOFF_S)
                continue
            events.put(("sync", res, items, True))
            try:
                while not stop.is_set():
                    for kind, obj in kube_io.watch_objects(self.api_client, res, self.namespace, version,
                                                           timeout_s=timeout_s):
                        version = str((obj.get("metadata") or {}).get("resourceVersion") or version)
                        if kind != "BOOKMARK":
                            events.put(("event", res, kind, obj))
                        if stop.is_set():
                            return
            except (kube_io.Expired, kube_io.NotServed):
                continue  # list again
            except (ApiException, HTTPError, OSError, ValueError) as exc:
                log.warning("watching %s failed: %s", res.plural, exc)
                stop.wait(ERROR_BACKOFF_S)


def _describe(action: Any) -> str:
    if isinstance(action, PutStorage):
        return f"storage {action.key} ({action.type}) written"
    if isinstance(action, Register):
        return f"registered {action.model_id} ({action.type}, {action.storage_key}:{action.path})"
    if isinstance(action, SetVModel):
        return f"vmodel {action.vmodel_id} -> {action.model_id} (owner {action.owner})"
    if isinstance(action, EnsureLoaded):
        return f"asked a pod to load {action.model_id} again"
    if isinstance(action, DeleteVModel):
        return f"vmodel {action.vmodel_id} deleted"
    if isinstance(action, Unregister):
        return f"unregistered {action.model_id}"
    return f"storage {action.key} removed"

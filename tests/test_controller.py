"""The KServe controller: pure decisions unit-tested, I/O tested against a recorded API exchange.

No Kubernetes API server can run on these machines. The I/O tests run the real ``kubernetes``
client against an HTTP server started in the test that serves Kubernetes API responses recorded
in the shape a real API server gives them (lists with a resourceVersion, Secrets with base64
``data``, ``Status`` bodies for 404, chunked watch streams of JSON events), applies the merge
patches the controller sends to ``/status`` and records every request. The registry side is a
real etcd (``etcd_endpoint``) through ``PlaneClient``. What a real cluster would add (admission,
RBAC enforcement, CRD validation, a running runtime pod loading the model) is not exercised here.
"""

from __future__ import annotations

import base64
import copy
import json
import pathlib
import queue
import threading
import time
import urllib.parse
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
import yaml

from plane.controller import kserve, reconcile, status
from plane.controller.storage import StorageError, resolve_storage
from plane.records import CopyInfo, FailureInfo, InstanceRecord, ModelRecord, VModelRecord

REPO = pathlib.Path(__file__).resolve().parent.parent
QUICKSTART = REPO / "manifests" / "overlays" / "quickstart"
NS = "mesh-plane"
ISVC_PATH = f"/apis/serving.kserve.io/v1beta1/namespaces/{NS}/inferenceservices"
PRED_PATH = f"/apis/serving.kserve.io/v1alpha1/namespaces/{NS}/predictors"
NOW = 1_760_000_000_000


def guide_isvc() -> dict[str, Any]:
    """manifests/overlays/quickstart/inference-service.yaml: the install guide's example, verbatim."""
    (doc,) = [d for d in yaml.safe_load_all((QUICKSTART / "inference-service.yaml").read_text()) if d]
    return doc


def guide_secret() -> dict[str, Any]:
    docs = [d for d in yaml.safe_load_all((QUICKSTART / "storage-config.yaml").read_text()) if d]
    return next(d for d in docs if d["metadata"]["name"] == "storage-config")


def isvc(name: str = "m", model: dict[str, Any] | None = None, annotations: dict[str, str] | None = None,
         predictor: dict[str, Any] | None = None) -> dict[str, Any]:
    ann = {"serving.kserve.io/deploymentMode": "ModelMesh", **(annotations or {})}
    spec = predictor if predictor is not None else {"model": model or {"modelFormat": {"name": "sklearn"},
                                                                       "storage": {"key": "k", "path": "a/b"}}}
    return {"apiVersion": "serving.kserve.io/v1beta1", "kind": "InferenceService",
            "metadata": {"name": name, "namespace": NS, "annotations": ann}, "spec": {"predictor": spec}}


# -- resources -> Predictor (modelmesh-serving's inferenceservice_registry.go / predictor_controller.go) --------


def test_the_guides_inference_service_is_read_like_modelmesh_serving_reads_it() -> None:
    p = kserve.from_inference_service(guide_isvc())
    assert p is not None and p.error == ""
    assert (p.source, p.name, p.model_format, p.path, p.storage_key) == (
        "isvc", "example-sklearn-isvc", "sklearn", "sklearn/mnist-svm.joblib", "localMinIO")
    assert kserve.type_label(p) == "mt:sklearn" and kserve.type_candidates(p) == ("mt:sklearn", "sklearn")
    rt = kserve.Predictor("isvc", "x", model_format="onnx", runtime="ovms-1.x")
    assert kserve.type_candidates(rt) == ("rt:ovms-1.x", "mt:onnx", "onnx")
    assert kserve.model_key_info(p) == {"storage_key": "localMinIO", "model_type": {"name": "sklearn"}}
    model_id = kserve.concrete_model_id(p, storage_key="localMinIO")
    assert kserve.parse_concrete_model_id(model_id) == ("example-sklearn-isvc", "isvc")
    assert kserve.parse_concrete_model_id("example-sklearn-isvc") is None


@pytest.mark.parametrize("uri, path, params", [
    ("s3://modelmesh-example-models/sklearn/mnist-svm.joblib", "sklearn/mnist-svm.joblib",
     {"type": "s3", "bucket": "modelmesh-example-models"}),
    ("gs://b/m/x.onnx", "m/x.onnx", {"type": "gcs", "bucket": "b"}),
    ("pvc://claim/models/x", "models/x", {"type": "pvc", "name": "claim"}),
    ("https://models.example:8443/x/y.bst", "x/y.bst", {"type": "http", "url": "https://models.example:8443"}),
    ("https://acct.blob.core.windows.net/cont/dir/m.onnx", "dir/m.onnx",
     {"type": "azure", "container": "cont", "account_name": "acct"}),
])
def test_storage_uri_schemes(uri: str, path: str, params: dict[str, str]) -> None:
    obj = isvc(model={"modelFormat": {"name": "onnx", "version": "1"}, "storageUri": uri,
                      "storage": {"parameters": {"type": "overridden", "extra": "kept"}}},
               annotations={"serving.kserve.io/secretKey": "localMinIO"})
    p = kserve.from_inference_service(obj)
    assert p is not None and not p.error
    assert p.path == path and p.storage_key == "localMinIO"
    assert p.storage_params == {"extra": "kept", **params}  # URI parameters win
    assert kserve.type_label(p) == "mt:onnx:1"


def test_inference_service_variants_and_mistakes() -> None:
    assert kserve.from_inference_service({**isvc(), "metadata": {"name": "m", "annotations": {}}}) is None
    old = kserve.from_inference_service(isvc(predictor={"xgboost": {"storageUri": "s3://b/x.json",
                                                                    "protocolVersion": "grpc-v2"}},
                                             annotations={"serving.kserve.io/servingRuntime": "mlserver-1.x"}))
    assert old is not None and old.model_format == "xgboost" and kserve.type_label(old) == "rt:mlserver-1.x"
    pv = kserve.from_inference_service(isvc(model={"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/p",
                                                   "protocolVersion": "grpc-v2"}))
    assert pv is not None and kserve.type_label(pv) == "mt:sklearn|pv:grpc-v2"
    for bad, words in [
        (isvc(model={"modelFormat": {"name": "sklearn"}, "storageUri": "s3://b/p", "storage": {"path": "p"}}),
         "cannot have both the storageUri and the storage.path"),
        (isvc(model={"modelFormat": {"name": "sklearn"}}), "must have either the storageUri or the storage.path"),
        (isvc(predictor={"model": {"modelFormat": {"name": "x"}}, "sklearn": {}}), "both the model spec"),
        (isvc(predictor={}), "no valid InferenceService predictor framework found"),
        (isvc(model={"modelFormat": {"name": "x"}, "storageUri": "ftp://h/p"}), "unsupported storageUri scheme"),
    ]:
        p = kserve.from_inference_service(bad)
        assert p is not None and words in p.error, (p, words)


def test_predictor_resource_as_modelmesh_serving_reads_it() -> None:
    """config/example-predictors/example-mlserver-sklearn-mnist-predictor.yaml (deprecated s3 fields)."""
    obj = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
           "metadata": {"name": "example-sklearn-mnist-svm", "namespace": NS},
           "spec": {"modelType": {"name": "sklearn"}, "path": "sklearn/mnist-svm.joblib",
                    "storage": {"s3": {"secretKey": "localMinIO", "bucket": "other"}}}}
    p = kserve.from_predictor(obj)
    assert (p.source, p.path, p.storage_key, p.storage_params) == (
        "ksp", "sklearn/mnist-svm.joblib", "localMinIO", {"bucket": "other"})
    bad = copy.deepcopy(obj)
    bad["spec"]["storage"]["key"] = "x"
    assert "spec.storage.s3 cannot be specified" in kserve.from_predictor(bad).error
    bad = copy.deepcopy(obj)
    bad["spec"]["storage"] = {"path": "p"}
    assert "Only one of spec.path and spec.storage.path" in kserve.from_predictor(bad).error


# -- storage: the puller's resolution (modelmesh-runtime-adapter puller.go) ---------------------------------


MINIO = {"type": "s3", "access_key_id": "id", "secret_access_key": "sk", "endpoint_url": "http://minio:9000",
         "bucket": "models"}


def test_storage_resolution() -> None:
    p = kserve.Predictor("isvc", "m", model_format="sklearn", path="a", storage_key="localMinIO")
    plain = resolve_storage(p, {"localMinIO": MINIO})
    assert (plain.key, plain.type, plain.derived) == ("localMinIO", "s3", False)
    other_bucket = resolve_storage(kserve.Predictor("isvc", "m", storage_key="localMinIO",
                                                    storage_params={"type": "s3", "bucket": "b2"}),
                                   {"localMinIO": MINIO})
    assert other_bucket.derived and other_bucket.key.startswith("localMinIO@kserve-")
    assert other_bucket.params["default_bucket"] == "b2" and "bucket" not in other_bucket.params
    assert "sk" not in other_bucket.key
    # no key: `default`, or `default_<type>` when the parameters name a type (mapped to a registry key)
    assert resolve_storage(kserve.Predictor("isvc", "m"), {"default": MINIO}).key == "default"
    typed = resolve_storage(kserve.Predictor("isvc", "m", storage_params={"type": "s3", "bucket": "x"}),
                            {"default_s3": MINIO})
    assert typed.key.startswith("default_s3@kserve-") and typed.params["default_bucket"] == "x"
    with pytest.raises(StorageError, match="Did not find storage config for key nope"):
        resolve_storage(kserve.Predictor("isvc", "m", storage_key="nope"), {"localMinIO": MINIO})
    with pytest.raises(StorageError, match="Predictor Storage field missing"):
        resolve_storage(kserve.Predictor("isvc", "m"), {})
    with pytest.raises(StorageError, match="expected an object"):
        resolve_storage(kserve.Predictor("isvc", "m", storage_key="k", storage_params={"bucket.x": "y"}),
                        {"k": MINIO})


# -- plan -----------------------------------------------------------------------------------------------


def served(*types: str) -> Any:
    return lambda t: t in types


POD = InstanceRecord(pod_id="pod-0", endpoint="10.0.0.1:8033")


def test_plan_registers_a_new_inference_service_then_does_nothing() -> None:
    p = kserve.from_inference_service(guide_isvc())
    assert p is not None
    docs = {"localMinIO": MINIO}
    first = reconcile.plan([p], docs, reconcile.RegistryView(), accepts_type=served("sklearn"))
    put, reg, setv = first.actions
    assert isinstance(put, reconcile.PutStorage) and put.key == "localMinIO" and put.params["bucket"] == "models"
    assert isinstance(reg, reconcile.Register) and (reg.type, reg.path, reg.storage_key) == (
        "sklearn", "sklearn/mnist-svm.joblib", "localMinIO")  # mt:sklearn not accepted: the plain format
    assert isinstance(setv, reconcile.SetVModel) and setv.load_now
    assert (setv.vmodel_id, setv.model_id, setv.owner) == ("example-sklearn-isvc", reg.model_id, "isvc")
    assert reconcile.plan([p], docs, reconcile.RegistryView(), accepts_type=served("mt:sklearn", "sklearn")
                          ).actions[1].type == "mt:sklearn"
    view = reconcile.RegistryView({reg.model_id: ModelRecord(reg.model_id, path=reg.path, key="localMinIO")},
                                  {p.name: VModelRecord(p.name, reg.model_id, reg.model_id, owner="isvc")},
                                  frozenset({"localMinIO"}))
    again = reconcile.plan([p], docs, view, accepts_type=served("sklearn"))
    assert [type(a) for a in again.actions] == [reconcile.PutStorage] and not again.problems


def test_plan_asks_again_for_a_model_that_failed_everywhere_but_not_in_a_tight_loop() -> None:
    p = kserve.Predictor("isvc", "m", model_format="onnx", path="p", storage_key="k")
    model_id = kserve.concrete_model_id(p, storage_key="k")

    def view(failed_ms: int, pods: tuple[InstanceRecord, ...] = (POD,), copies: bool = False) -> Any:
        rec = ModelRecord(model_id, path="p", key="k", failed={"pod-0": FailureInfo(failed_ms, "NoSuchKey")},
                          copies={"pod-0": CopyInfo("loaded")} if copies else {})
        return reconcile.RegistryView({model_id: rec}, {"m": VModelRecord("m", model_id, model_id, owner="isvc")},
                                      frozenset({"k"}), pods)

    def retries(v: Any) -> list[Any]:
        return [a for a in reconcile.plan([p], {"k": MINIO}, v, accepts_type=served("onnx"), now_ms=NOW).actions
                if isinstance(a, reconcile.EnsureLoaded)]

    assert retries(view(NOW - reconcile.LOAD_RETRY_MS)) == [reconcile.EnsureLoaded(model_id, ("isvc", "m"))]
    assert retries(view(NOW - 1000)) == []  # failed a second ago: not yet
    assert retries(view(NOW - reconcile.LOAD_RETRY_MS, pods=())) == []  # no pod to ask
    assert retries(view(NOW - reconcile.LOAD_RETRY_MS, copies=True)) == []  # loaded somewhere after all


def test_plan_moves_a_changed_spec_and_cleans_up_deleted_resources() -> None:
    old = kserve.Predictor("isvc", "m", model_format="onnx", path="v1", storage_key="k",
                           storage_params={"bucket": "b"})
    old_id = kserve.concrete_model_id(old, storage_key=resolve_storage(old, {"k": MINIO}).key)
    derived = resolve_storage(old, {"k": MINIO}).key
    view = reconcile.RegistryView(
        {old_id: ModelRecord(old_id, path="v1", key=derived), "hand-made": ModelRecord("hand-made")},
        {"m": VModelRecord("m", old_id, old_id, owner="isvc"), "alias": VModelRecord("alias", "hand-made")},
        frozenset({"k", derived, "unrelated"}))
    new = kserve.Predictor("isvc", "m", model_format="onnx", path="v2", storage_key="k")
    moved = reconcile.plan([new], {"k": MINIO}, view, accepts_type=served("onnx"))
    kinds = [type(a).__name__ for a in moved.actions]
    # the old model stays the vmodel's active one until the switch: it and its derived storage key stay
    assert kinds == ["PutStorage", "Register", "SetVModel"]
    assert not moved.actions[2].load_now  # an existing vmodel: its transition loads the new target
    gone = reconcile.plan([], {"k": MINIO}, view, accepts_type=served("onnx"))
    assert [str(a) for a in gone.actions] == [str(reconcile.DeleteVModel("m")), str(reconcile.Unregister(old_id)),
                                              str(reconcile.RemoveStorage(derived))]


def test_plan_reports_problems_and_keeps_what_an_invalid_resource_had() -> None:
    view = reconcile.RegistryView({}, {"taken": VModelRecord("taken", "x", "x", owner=""),
                                       "bad": VModelRecord("bad", "bad__isvc-0123456789", "bad__isvc-0123456789",
                                                           owner="isvc")}, frozenset())
    preds = [
        kserve.Predictor("isvc", "taken", model_format="onnx", path="p", storage_key="k"),
        kserve.Predictor("isvc", "bad", error="the InferenceService bad must have either ..."),
        kserve.Predictor("isvc", "both", model_format="onnx", path="p", storage_key="k"),
        kserve.Predictor("ksp", "both", model_format="onnx", path="p", storage_key="k"),
        kserve.Predictor("isvc", "nokey", model_format="onnx", path="p", storage_key="missing"),
        kserve.Predictor("isvc", "pt", model_format="pytorch", path="p", storage_key="k"),
        kserve.Predictor("isvc", "rt", model_format="onnx", runtime="custom-rt", path="p", storage_key="k"),
        kserve.Predictor("isvc", "mm", model_format="onnx", runtime="triton-2.x", path="p", storage_key="k"),
    ]
    out = reconcile.plan(preds, {"k": MINIO}, view, accepts_type=lambda t: t in ("onnx", "rt:triton-2.x"),
                         runtimes=frozenset({"other"}))
    reasons = {ref: (pr.reason, pr.message) for ref, pr in out.problems.items()}
    assert reasons[("isvc", "taken")] == ("InvalidPredictorSpec", reconcile.CONFLICT_MESSAGE)
    assert reasons[("ksp", "both")] == ("InvalidPredictorSpec", reconcile.CONFLICT_MESSAGE)
    assert reasons[("isvc", "bad")][0] == "InvalidPredictorSpec"
    assert reasons[("isvc", "nokey")][0] == "ModelLoadFailed" and "missing" in reasons[("isvc", "nokey")][1]
    assert reasons[("isvc", "pt")][0] == "NoSupportingRuntime"
    assert reasons[("isvc", "rt")] == ("RuntimeNotRecognized", "Specified runtime name not recognized")
    assert set(out.targets) == {("isvc", "both"), ("isvc", "mm")}  # ModelMesh's runtime names are known
    assert not [a for a in out.actions if isinstance(a, reconcile.DeleteVModel | reconcile.Unregister)]
    # a runtime the plane itself stands in for (it accepts rt:<name>) needs no ServingRuntime object
    assert reconcile.runtime_problem(preds[6], frozenset(), lambda t: t == "rt:custom-rt") is None
    # runtimes that could not be listed are not checked
    assert ("isvc", "rt") in reconcile.plan(preds[6:7], {"k": MINIO}, reconcile.RegistryView(),
                                            accepts_type=served("onnx")).targets
    assert reconcile.runtime_catalog([
        {"metadata": {"name": "a"}, "spec": {"multiModel": True}},
        {"metadata": {"name": "b"}, "spec": {"multiModel": True, "disabled": True}},
        {"metadata": {"name": "c"}, "spec": {}}]) == {"a"}


# -- status (updatePredictorStatusFromVModel, inferenceservice_registry.go UpdateStatus) --------------------


GRPC = f"grpc://mesh-inference.{NS}:8033"
P = kserve.Predictor("isvc", "m", model_format="sklearn", path="p", storage_key="k")


def state_of(rec: ModelRecord | None, *, pods: tuple[InstanceRecord, ...] = (POD,), vm: VModelRecord | None = None,
             problem: status.Problem | None = None) -> status.ModelState:
    records = {rec.model_id: rec} if rec else {}
    vm = vm or (VModelRecord("m", rec.model_id, rec.model_id, owner="isvc") if rec else None)
    return status.model_state(P, vm, records, list(pods), problem=problem, now_ms=NOW)


def test_status_of_a_loaded_model_has_the_url_and_ready_conditions() -> None:
    rec = ModelRecord("m__isvc-aaaaaaaaaa", copies={"pod-0": CopyInfo("loaded", NOW), "pod-1": CopyInfo("loading")})
    state = state_of(rec)
    assert (state.available, state.active, state.transition, state.total_copies) == (True, "Loaded", "UpToDate", 2)
    st = status.inference_service_status(state, grpc_url=GRPC, now_ms=NOW)
    assert st["url"] == GRPC and st["components"] == {"predictor": {"url": GRPC, "grpcUrl": GRPC}}
    assert st["modelStatus"] == {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded"},
                                 "copies": {"failedCopies": 0, "totalCopies": 2}}
    assert [(c["type"], c["status"]) for c in st["conditions"]] == [("PredictorReady", "True"), ("Ready", "True")]
    # written again later: the same status, so no patch (lastTransitionTime kept)
    later = status.inference_service_status(state, grpc_url=GRPC, previous=st, now_ms=NOW + 60_000)
    assert status.status_patch(st, later, status.ISVC_STATUS_KEYS) is None
    ps = status.predictor_status(state, grpc_url=GRPC, now_ms=NOW)
    assert ps == {"available": True, "transitionStatus": "UpToDate", "activeModelState": "Loaded",
                  "targetModelState": "", "grpcEndpoint": GRPC, "httpEndpoint": "", "totalCopies": 2,
                  "failedCopies": 0}


def test_status_of_failures_waiting_and_transitions() -> None:
    failed = ModelRecord("m__isvc-aaaaaaaaaa", failed={"pod-1": FailureInfo(NOW - 5000, "bad model file")})
    state = state_of(failed)
    assert (state.available, state.active, state.failed_copies) == (False, "FailedToLoad", 1)
    info = status.inference_service_status(state, grpc_url=GRPC, now_ms=NOW)["modelStatus"]["lastFailureInfo"]
    assert info == {"location": "pod-1", "reason": "ModelLoadFailed", "message": "bad model file",
                    "modelRevisionName": failed.model_id, "time": status.rfc3339(NOW - 5000)}
    waiting = state_of(ModelRecord("m__isvc-aaaaaaaaaa"), pods=())
    assert (waiting.active, waiting.available, waiting.failure.reason) == ("Standby", False, "RuntimeUnhealthy")
    assert state_of(None, pods=()).active == "Pending"
    nothing = state_of(None, problem=status.Problem("NoSupportingRuntime", "no runtime"))
    assert (nothing.active, nothing.available) == ("FailedToLoad", False)
    old = ModelRecord("m__isvc-0000000000", copies={"pod-0": CopyInfo("loaded")})
    new = ModelRecord("m__isvc-1111111111", copies={"pod-1": CopyInfo("loading")})
    moving = status.model_state(P, VModelRecord("m", old.model_id, new.model_id, owner="isvc"),
                                {old.model_id: old, new.model_id: new}, [POD], now_ms=NOW)
    assert (moving.transition, moving.active, moving.target, moving.available) == (
        "InProgress", "Loaded", "Loading", True)
    st = status.inference_service_status(moving, grpc_url=GRPC, now_ms=NOW)
    assert st["modelStatus"]["states"] == {"activeModelState": "Loaded", "targetModelState": "Loading"}
    assert reconcile.needs_attention([moving]) and not reconcile.needs_attention([state_of(old)])
    # becoming unavailable removes url and components (merge patch nulls) and flips the conditions
    ready = status.inference_service_status(state_of(old), grpc_url=GRPC, now_ms=NOW)
    patch = status.status_patch(ready, status.inference_service_status(state, grpc_url=GRPC, previous=ready,
                                                                       now_ms=NOW + 1000), status.ISVC_STATUS_KEYS)
    assert patch is not None and patch["url"] is None and patch["components"] is None
    assert patch["conditions"][0]["status"] == "False" and patch["conditions"][0]["reason"] == "ModelLoadFailed"


# -- the I/O, against a recorded API exchange and a real etcd ---------------------------------------------


def not_found(message: str) -> dict[str, Any]:
    return {"kind": "Status", "apiVersion": "v1", "metadata": {}, "status": "Failure", "message": message,
            "reason": "NotFound", "details": {}, "code": 404}


def as_stored(obj: dict[str, Any], version: int, generation: int = 1) -> dict[str, Any]:
    """An object as the API server returns it: uid, resourceVersion, generation, creationTimestamp;
    a Secret's stringData folded into base64 data."""
    obj = copy.deepcopy(obj)
    meta = obj["metadata"]
    meta.update({"uid": f"0b6c{version:04d}-5f1e-4c1a-9d0e-3a8f6e2b7c11", "resourceVersion": str(version),
                 "creationTimestamp": "2026-05-04T10:00:00Z"})
    if obj["kind"] == "Secret":
        data = {k: base64.b64encode(v.encode()).decode() for k, v in (obj.pop("stringData", None) or {}).items()}
        obj["data"] = {**obj.get("data", {}), **data}
    else:
        meta["generation"] = generation
    return obj


def merge_patch(target: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    out = dict(target) if isinstance(target, dict) else {}
    for k, v in patch.items():
        if v is None:
            out.pop(k, None)
        else:
            out[k] = merge_patch(out.get(k), v)
    return out


class RecordedApi:
    """Serves recorded API responses: GET of a stored object or list, a 404 Status otherwise; PATCH of
    ``/status`` applies the merge patch; a watch (``?watch=true``) streams the next queued batch of
    events, chunked, one JSON event per line (nothing within a second ends it empty, like a timeout)."""

    def __init__(self, objects: list[dict[str, Any]]) -> None:
        self.objects: dict[str, dict[str, Any]] = {}
        self.requests: list[dict[str, Any]] = []
        self.watches: dict[str, queue.Queue[list[dict[str, Any]]]] = {}
        self.version = 100
        for obj in objects:
            self.put(obj)
        api = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _handle(self) -> None:
                url = urllib.parse.urlsplit(self.path)
                body = self.rfile.read(int(self.headers.get("Content-Length") or 0))
                req = {"method": self.command, "path": url.path, "query": dict(urllib.parse.parse_qsl(url.query)),
                       "content_type": self.headers.get("Content-Type"),
                       "body": json.loads(body) if body else None}
                api.requests.append(req)
                if req["query"].get("watch") == "true":
                    return self._stream(api.watches.setdefault(url.path, queue.Queue()))
                code, payload = api.answer(req)
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _stream(self, batches: queue.Queue[list[dict[str, Any]]]) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Transfer-Encoding", "chunked")
                self.end_headers()
                try:
                    events = batches.get(timeout=1.0)
                except queue.Empty:
                    events = []
                for event in events:
                    line = (json.dumps(event) + "\n").encode()
                    self.wfile.write(f"{len(line):x}\r\n".encode() + line + b"\r\n")
                self.wfile.write(b"0\r\n\r\n")

            do_GET = do_PATCH = do_PUT = do_POST = do_DELETE = _handle

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.httpd.server_address[1]}"
        threading.Thread(target=self.httpd.serve_forever, daemon=True).start()

    @staticmethod
    def path_of(obj: dict[str, Any]) -> str:
        plural = {"InferenceService": "inferenceservices", "Predictor": "predictors", "Secret": "secrets"}[obj["kind"]]
        prefix = "/api/v1" if obj["kind"] == "Secret" else f"/apis/{obj['apiVersion']}"
        return f"{prefix}/namespaces/{obj['metadata']['namespace']}/{plural}/{obj['metadata']['name']}"

    def put(self, obj: dict[str, Any], generation: int = 1) -> dict[str, Any]:
        self.version += 1
        stored = as_stored(obj, self.version, generation)
        self.objects[self.path_of(obj)] = stored
        return stored

    def watch(self, collection: str, *events: tuple[str, dict[str, Any]]) -> None:
        self.watches.setdefault(collection, queue.Queue()).put([{"type": t, "object": o} for t, o in events])

    def answer(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        path = req["path"]
        if req["method"] == "PATCH" and path.endswith("/status") and path[:-len("/status")] in self.objects:
            assert req["content_type"] == "application/merge-patch+json"
            obj = self.objects[path[:-len("/status")]]
            self.version += 1
            obj.update(merge_patch(obj, req["body"]))
            obj["metadata"]["resourceVersion"] = str(self.version)
            return 200, obj
        if req["method"] == "GET" and path in self.objects:
            return 200, self.objects[path]
        if req["method"] == "GET" and path in (ISVC_PATH, PRED_PATH):
            items = [o for p, o in self.objects.items() if p.startswith(path + "/")]
            if not items and path == PRED_PATH:  # this recording: no Predictor definition installed
                return 404, not_found("the server could not find the requested resource")
            kind = "InferenceServiceList" if path == ISVC_PATH else "PredictorList"
            return 200, {"apiVersion": items[0]["apiVersion"] if items else "serving.kserve.io/v1beta1",
                         "kind": kind, "metadata": {"resourceVersion": str(self.version)}, "items": items}
        return 404, not_found(f"{path.rsplit('/', 1)[-1]} not found")

    def api_client(self) -> Any:
        from kubernetes import client

        cfg = client.Configuration()
        cfg.host = self.url
        return client.ApiClient(cfg)

    def status_patches(self, name: str) -> list[dict[str, Any]]:
        return [r["body"]["status"] for r in self.requests if r["method"] == "PATCH" and r["path"].endswith(
            f"/{name}/status")]


@pytest.fixture
def sklearn_served(monkeypatch: pytest.MonkeyPatch) -> None:
    """Register sklearn models even before the plane's sklearn runtime lands (another change adds it)."""
    from plane import operations
    from plane.controller.runner import plane_accepts_type

    if not (plane_accepts_type("mt:sklearn") or plane_accepts_type("sklearn")):
        monkeypatch.setattr(operations, "SERVED_TYPES", (*operations.SERVED_TYPES, "sklearn"))


@pytest.fixture
def plane(settings):
    from plane.api import PlaneClient

    with PlaneClient.connect(settings) as client:
        yield client


def fake_pod(plane: Any, model_id: str, *, loaded: bool = True, failure: str = "") -> None:
    """What a runtime pod would write: its instance record and its copy (or a failed load)."""
    from plane import operations

    plane.run_async(plane.registry.put_instance(InstanceRecord("mesh-pods-0", "10.0.0.7:8033"), None))
    plane.run_async(operations.write_copy(
        plane.registry, model_id, "mesh-pods-0", lambda: CopyInfo("loaded", NOW) if loaded else None,
        failure=FailureInfo(int(time.time() * 1000), failure) if failure else None))


def test_the_guides_example_is_registered_and_its_status_written(plane: Any, sklearn_served: None) -> None:
    from plane.controller.runner import Controller

    api = RecordedApi([guide_isvc(), guide_secret()])
    controller = Controller(plane, api.api_client(), NS)
    controller.sync()
    first = controller.reconcile()
    assert not first.errors, first.errors
    vm = plane.get_vmodel("example-sklearn-isvc")
    assert vm is not None and vm.owner == "isvc" and vm.auto_delete and vm.active == vm.target
    rec = plane.get_model(vm.active)
    assert rec is not None and kserve.parse_concrete_model_id(rec.model_id) == ("example-sklearn-isvc", "isvc")
    assert rec.type in ("mt:sklearn", "sklearn")  # modelmesh-serving's label if the plane takes it, else the format
    assert (rec.path, rec.key) == ("sklearn/mnist-svm.joblib", "localMinIO")
    cfg = plane.get_storage("localMinIO")
    assert cfg is not None and cfg.type == "s3" and cfg.params["default_bucket"] == "models"
    assert cfg.params["endpoint_url"] == "http://minio:9000"
    # what the client sent: reads of both storage Secrets, a merge patch of /status
    paths = [(r["method"], r["path"]) for r in api.requests]
    assert ("GET", f"/api/v1/namespaces/{NS}/secrets/storage-config") in paths
    assert ("GET", f"/api/v1/namespaces/{NS}/secrets/mesh-storage-config") in paths
    (written,) = api.status_patches("example-sklearn-isvc")
    assert written["modelStatus"]["states"] == {"activeModelState": "Standby"}
    assert written["modelStatus"]["lastFailureInfo"]["reason"] == "RuntimeUnhealthy"  # no runtime pod yet
    assert [c["status"] for c in written["conditions"]] == ["False", "False"] and "url" not in written
    # nothing changed: no registration, no status write
    again = controller.reconcile()
    assert again.actions == [] and again.patched == [] and len(api.status_patches("example-sklearn-isvc")) == 1
    # a pod loads it: Loaded, the URL, Ready; the failure info goes (a null in the merge patch)
    fake_pod(plane, rec.model_id)
    controller.reconcile()
    loaded = api.status_patches("example-sklearn-isvc")[-1]
    assert loaded["url"] == f"grpc://mesh-inference.{NS}:8033"
    assert loaded["components"]["predictor"]["grpcUrl"] == loaded["url"]
    assert loaded["modelStatus"]["lastFailureInfo"] is None
    stored = api.objects[f"{ISVC_PATH}/example-sklearn-isvc"]["status"]
    assert stored["modelStatus"] == {"transitionStatus": "UpToDate", "states": {"activeModelState": "Loaded"},
                                     "copies": {"failedCopies": 0, "totalCopies": 1}}
    assert {c["type"]: c["status"] for c in stored["conditions"]} == {"PredictorReady": "True", "Ready": "True"}
    assert stored["url"] == loaded["url"]


def test_a_failed_load_and_a_missing_storage_key_show_in_status(plane: Any, sklearn_served: None) -> None:
    from plane.controller.runner import Controller

    broken = isvc("no-key", model={"modelFormat": {"name": "sklearn"}, "storage": {"key": "absent", "path": "x"}})
    api = RecordedApi([guide_isvc(), broken, guide_secret()])
    controller = Controller(plane, api.api_client(), NS)
    controller.sync()
    controller.reconcile()
    info = api.status_patches("no-key")[-1]["modelStatus"]
    assert info["states"]["activeModelState"] == "FailedToLoad"
    assert info["lastFailureInfo"]["reason"] == "ModelLoadFailed"
    assert "Did not find storage config for key absent" in info["lastFailureInfo"]["message"]
    assert plane.get_vmodel("no-key") is None
    model_id = plane.get_vmodel("example-sklearn-isvc").active
    fake_pod(plane, model_id, loaded=False, failure="cannot read sklearn/mnist-svm.joblib: NoSuchKey")
    controller.reconcile()
    failed = api.objects[f"{ISVC_PATH}/example-sklearn-isvc"]["status"]["modelStatus"]  # after the patches
    assert failed["states"]["activeModelState"] == "FailedToLoad"
    assert failed["lastFailureInfo"]["location"] == "mesh-pods-0"
    assert failed["lastFailureInfo"]["modelRevisionName"] == model_id
    assert failed["copies"] == {"failedCopies": 1, "totalCopies": 1}


def test_the_guides_storage_uri_form_gets_a_derived_storage_key(plane: Any, sklearn_served: None) -> None:
    """The guide's second form: storageUri s3://modelmesh-example-models/... with the secretKey annotation.
    The bucket overrides the Secret's: a derived key holds the merged config, and goes with the model."""
    from plane.controller.runner import Controller

    obj = isvc("example-sklearn-isvc", model={"modelFormat": {"name": "sklearn"},
                                              "storageUri": "s3://modelmesh-example-models/sklearn/mnist-svm.joblib"},
               annotations={"serving.kserve.io/secretKey": "localMinIO"})
    api = RecordedApi([obj, guide_secret()])
    controller = Controller(plane, api.api_client(), NS)
    controller.sync()
    assert not controller.reconcile().errors
    rec = plane.get_model(plane.get_vmodel("example-sklearn-isvc").active)
    assert rec is not None and rec.key.startswith("localMinIO@kserve-") and rec.path == "sklearn/mnist-svm.joblib"
    derived = plane.get_storage(rec.key)
    assert derived is not None and derived.params["default_bucket"] == "modelmesh-example-models"
    assert derived.params["endpoint_url"] == "http://minio:9000"
    del api.objects[f"{ISVC_PATH}/example-sklearn-isvc"]
    controller.sync()
    done = controller.reconcile()
    assert plane.get_model(rec.model_id) is None and plane.get_storage(rec.key) is None, done


def test_a_predictor_resource_gets_the_predictor_status_shape(plane: Any) -> None:
    from plane.controller.runner import Controller

    pred = {"apiVersion": "serving.kserve.io/v1alpha1", "kind": "Predictor",
            "metadata": {"name": "example-onnx", "namespace": NS},
            "spec": {"modelType": {"name": "onnx"}, "path": "onnx/m.onnx",
                     "storage": {"s3": {"secretKey": "localMinIO"}}}}
    api = RecordedApi([pred, guide_secret()])
    controller = Controller(plane, api.api_client(), NS)
    controller.sync()
    controller.reconcile()
    vm = plane.get_vmodel("example-onnx")
    assert vm is not None and vm.owner == "ksp"
    rec = plane.get_model(vm.active)
    assert rec is not None and (rec.path, rec.key) == ("onnx/m.onnx", "localMinIO")
    assert rec.type in ("mt:onnx", "onnx")
    (written,) = api.status_patches("example-onnx")
    assert written["activeModelState"] == "Standby" and written["available"] is False
    assert written["grpcEndpoint"] == f"grpc://mesh-inference.{NS}:8033"
    assert written["lastFailureInfo"]["modelId"] == rec.model_id


def wait_for(check: Any, timeout: float = 20.0) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError("condition not met in time")


def test_the_watch_loop_follows_a_spec_change_and_a_deletion(plane: Any, sklearn_served: None) -> None:
    """run(): list, watch, reconcile on MODIFIED (a new path: a new concrete model, the old one gone)
    and on DELETED (vmodel and model removed); Predictors are not served by this recording (404)."""
    from plane.controller.runner import Controller

    api = RecordedApi([guide_isvc(), guide_secret()])
    controller = Controller(plane, api.api_client(), NS)
    stop = threading.Event()
    runner = threading.Thread(target=controller.run, args=(stop,), kwargs={"resync_s": 0.3, "fast_s": 0.3,
                                                                           "watch_timeout_s": 2}, daemon=True)
    runner.start()
    try:
        first = wait_for(lambda: (plane.get_vmodel("example-sklearn-isvc") or None))
        changed = guide_isvc()
        changed["spec"]["predictor"]["model"]["storage"]["path"] = "sklearn/mnist-svm-v2.joblib"
        api.watch(ISVC_PATH, ("MODIFIED", api.put(changed, generation=2)))
        second = wait_for(lambda: (v := plane.get_vmodel("example-sklearn-isvc")) and v.active != first.active and v)
        assert plane.get_model(second.active).path == "sklearn/mnist-svm-v2.joblib"
        wait_for(lambda: plane.get_model(first.active) is None)  # the superseded model is unregistered
        api.watch(ISVC_PATH, ("DELETED", api.objects.pop(f"{ISVC_PATH}/example-sklearn-isvc")))
        wait_for(lambda: plane.get_vmodel("example-sklearn-isvc") is None and plane.get_model(second.active) is None)
    finally:
        stop.set()
        runner.join(10)
    assert not runner.is_alive()
    watches = [r for r in api.requests if r["query"].get("watch") == "true" and r["path"] == ISVC_PATH]
    assert watches and all(r["query"]["allowWatchBookmarks"] == "true" for r in watches)
    assert watches[0]["query"]["resourceVersion"]  # watched from the list's resourceVersion
    assert any(r["path"] == PRED_PATH for r in api.requests)


def test_mesh_controller_once_against_the_recording(plane: Any, sklearn_served: None, tmp_path: pathlib.Path,
                                                   monkeypatch: pytest.MonkeyPatch, capsys: Any) -> None:
    from plane.cli import main

    api = RecordedApi([guide_isvc(), guide_secret()])
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(yaml.safe_dump({
        "apiVersion": "v1", "kind": "Config", "current-context": "rec",
        "clusters": [{"name": "c", "cluster": {"server": api.url}}], "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "rec", "context": {"cluster": "c", "user": "u"}}]}))
    monkeypatch.setenv("KUBECONFIG", str(kubeconfig))
    code = main(["controller", "--once", "--json", "--namespace", NS, "--etcd", plane.settings.etcd,
                 "--prefix", plane.settings.etcd_prefix])
    doc = json.loads(capsys.readouterr().out)
    assert code == 0 and doc["ok"], doc
    assert any(a.startswith("registered example-sklearn-isvc__isvc-") for a in doc["actions"])
    assert doc["patched"] == ["InferenceService/example-sklearn-isvc"]
    assert plane.get_vmodel("example-sklearn-isvc") is not None

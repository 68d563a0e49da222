"""KServe's resource definitions, as far as this plane honours them: the ``kserve-crds`` overlay.

``InferenceService`` (serving.kserve.io/v1beta1), ``Predictor`` (serving.kserve.io/v1alpha1, the
ModelMesh-era resource), ``ServingRuntime`` and ``ClusterServingRuntime`` (v1alpha1). The names,
groups, versions, scopes, short names and printer columns are KServe's
(kserve/kserve config/crd/full/serving.kserve.io_*.yaml; kserve/modelmesh-serving
config/crd/bases/serving.kserve.io_predictors.yaml), and the fields this plane reads or writes have
KServe's types; every other field is kept as written (``x-kubernetes-preserve-unknown-fields``),
so a ModelMesh user's YAML applies unchanged even where it sets fields this plane ignores.

Optional on purpose: on a cluster that already has KServe's own definitions, do not apply
these (they would replace KServe's fuller schemas); the controller works with either.
"""

from __future__ import annotations

from typing import Any

from plane.kube.meta import _meta

GROUP = "serving.kserve.io"

_STR = {"type": "string"}
_BOOL = {"type": "boolean"}
_INT = {"type": "integer"}
_OPEN = {"type": "object", "x-kubernetes-preserve-unknown-fields": True}
_STR_MAP = {"type": "object", "additionalProperties": {"type": "string"}}
_MODEL_STATES = ["", "Pending", "Standby", "Loading", "Loaded", "FailedToLoad"]
_TRANSITIONS = ["", "UpToDate", "InProgress", "BlockedByFailedLoad", "InvalidSpec"]
_REASONS = ["ModelLoadFailed", "RuntimeUnhealthy", "RuntimeDisabled", "NoSupportingRuntime",
            "RuntimeNotRecognized", "InvalidPredictorSpec"]
# The old-style predictor fields (spec.predictor.sklearn, ...): modelmesh-serving's
# getPredictorFramework (pkg/predictor_source/inferenceservice_registry.go) still reads them.
FRAMEWORKS = ("xgboost", "lightgbm", "sklearn", "tensorflow", "onnx", "pytorch", "triton", "pmml")


def _obj(properties: dict[str, Any], *, required: list[str] | None = None, open_: bool = False) -> dict[str, Any]:
    out: dict[str, Any] = {"type": "object", "properties": properties}
    if required:
        out["required"] = required
    if open_:
        out["x-kubernetes-preserve-unknown-fields"] = True
    return out


def _storage_spec() -> dict[str, Any]:
    return _obj({"key": _STR, "path": _STR, "schemaPath": _STR, "parameters": _STR_MAP})


def _isvc_schema() -> dict[str, Any]:
    extension = {"storageUri": _STR, "storage": _storage_spec(), "protocolVersion": _STR, "runtimeVersion": _STR}
    model = _obj({"modelFormat": _obj({"name": _STR, "version": _STR}, required=["name"]), "runtime": _STR,
                  **extension}, open_=True)
    predictor = _obj({"model": model, **{f: _obj(dict(extension), open_=True) for f in FRAMEWORKS}}, open_=True)
    url = {"type": "string"}
    condition = _obj({"type": _STR, "status": _STR, "severity": _STR, "lastTransitionTime": _STR,
                      "reason": _STR, "message": _STR}, required=["type", "status"])
    model_status = _obj({
        "transitionStatus": {"type": "string", "enum": _TRANSITIONS, "default": "UpToDate"},
        "states": _obj({"activeModelState": {"type": "string", "enum": _MODEL_STATES, "default": "Pending"},
                        "targetModelState": {"type": "string", "enum": _MODEL_STATES}},
                       required=["activeModelState"]),
        "lastFailureInfo": _obj({"location": _STR, "reason": {"type": "string", "enum": _REASONS},
                                 "message": _STR, "modelRevisionName": _STR,
                                 "time": {"type": "string", "format": "date-time"},
                                 "exitCode": {"type": "integer", "format": "int32"}}),
        "copies": _obj({"failedCopies": {"type": "integer", "default": 0}, "totalCopies": _INT},
                       required=["failedCopies"]),
    }, required=["transitionStatus"])
    component = _obj({"url": url, "grpcUrl": url, "restUrl": url}, open_=True)
    status = _obj({
        "url": url,
        "address": _OPEN,
        "conditions": {"type": "array", "items": condition},
        "components": {"type": "object", "additionalProperties": component},
        "modelStatus": model_status,
        "observedGeneration": {"type": "integer", "format": "int64"},
    }, open_=True)
    return _obj({"apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"},
                 "spec": _obj({"predictor": predictor}, required=["predictor"], open_=True), "status": status})


def _predictor_schema() -> dict[str, Any]:
    """modelmesh-serving's Predictor (apis/serving/v1alpha1/predictor_types.go), status defaults included."""
    state = {"type": "string", "enum": _MODEL_STATES}
    spec = _obj({
        "modelType": _obj({"name": _STR, "version": _STR}, required=["name"]),
        "path": _STR,
        "schemaPath": _STR,
        "runtime": _obj({"name": _STR}, required=["name"]),
        "protocolVersion": _STR,
        "serviceAccountName": _STR,
        "gpu": {"type": "string", "enum": ["required", "preferred"]},
        "storage": _obj({
            "key": _STR, "path": _STR, "schemaPath": _STR, "parameters": _STR_MAP,
            "s3": _obj({"secretKey": _STR, "bucket": _STR}, required=["secretKey"]),
            "persistentVolumeClaim": _obj({"claimName": _STR, "readOnly": _BOOL}, required=["claimName"]),
        }),
    }, required=["modelType"])
    status = _obj({
        "available": _BOOL,
        "transitionStatus": {"type": "string", "enum": _TRANSITIONS[1:], "default": "UpToDate"},
        "activeModelState": {**state, "default": "Pending"},
        "targetModelState": {**state, "default": ""},
        "lastFailureInfo": _obj({"location": _STR,
                                 # modelmesh-serving's list: RuntimeDisabled came later, with v1beta1
                                 "reason": {"type": "string", "enum": [r for r in _REASONS if r != "RuntimeDisabled"]},
                                 "message": _STR, "modelId": _STR,
                                 "time": {"type": "string", "format": "date-time"}}),
        "httpEndpoint": _STR,
        "grpcEndpoint": _STR,
        "totalCopies": {"type": "integer", "default": 0},
        "failedCopies": {"type": "integer", "default": 0},
    }, required=["activeModelState", "available", "failedCopies", "targetModelState", "totalCopies",
                 "transitionStatus"])
    status["default"] = {"transitionStatus": "UpToDate", "activeModelState": "Pending", "targetModelState": "",
                         "available": False, "failedCopies": 0, "totalCopies": 0}
    return _obj({"apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"}, "spec": spec, "status": status})


def _runtime_schema() -> dict[str, Any]:
    formats = {"type": "array", "items": _obj({"name": _STR, "version": _STR, "autoSelect": _BOOL,
                                               "priority": {"type": "integer", "format": "int32", "minimum": 1}},
                                              required=["name"])}
    spec = _obj({
        "supportedModelFormats": formats,
        "multiModel": _BOOL,
        "disabled": _BOOL,
        "protocolVersions": {"type": "array", "items": _STR},
        "grpcEndpoint": _STR,
        "grpcDataEndpoint": _STR,
        "containers": {"type": "array", "items": _OPEN},
    }, required=["containers"], open_=True)
    return _obj({"apiVersion": _STR, "kind": _STR, "metadata": {"type": "object"}, "spec": spec, "status": _OPEN})


def _column(name: str, path: str, typ: str = "string") -> dict[str, str]:
    return {"name": name, "type": typ, "jsonPath": path}


_AGE = _column("Age", ".metadata.creationTimestamp", "date")


def _crd(kind: str, plural: str, version: str, schema: dict[str, Any], columns: list[dict[str, str]], *,
         scope: str = "Namespaced", short_names: list[str] | None = None, status: bool = True) -> dict[str, Any]:
    names: dict[str, Any] = {"kind": kind, "listKind": f"{kind}List", "plural": plural, "singular": kind.lower()}
    if short_names:
        names["shortNames"] = short_names
    ver: dict[str, Any] = {"name": version, "served": True, "storage": True, "schema": {"openAPIV3Schema": schema},
                           "additionalPrinterColumns": columns}
    if status:
        ver["subresources"] = {"status": {}}
    return {
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": _meta(f"{plural}.{GROUP}", None, "kserve-crds"),
        "spec": {"group": GROUP, "names": names, "scope": scope, "versions": [ver]},
    }


def render_kserve_crds() -> list[dict[str, Any]]:
    """The four definitions, for ``manifests/overlays/kserve-crds``."""
    runtime_columns = [_column("Disabled", ".spec.disabled", "boolean"),
                       _column("ModelType", ".spec.supportedModelFormats[*].name"),
                       _column("Containers", ".spec.containers[*].name"), _AGE]
    return [
        _crd("InferenceService", "inferenceservices", "v1beta1", _isvc_schema(),
             [_column("URL", ".status.url"), _column("Ready", ".status.conditions[?(@.type=='Ready')].status"),
              _column("ActiveModel", ".status.modelStatus.states.activeModelState"), _AGE],
             short_names=["isvc"]),
        _crd("Predictor", "predictors", "v1alpha1", _predictor_schema(),
             [_column("Type", ".spec.modelType.name"), _column("Available", ".status.available", "boolean"),
              _column("ActiveModel", ".status.activeModelState"), _column("TargetModel", ".status.targetModelState"),
              _column("Transition", ".status.transitionStatus"), _AGE]),
        # KServe's runtime definitions have no status subresource either.
        _crd("ServingRuntime", "servingruntimes", "v1alpha1", _runtime_schema(), runtime_columns, status=False),
        _crd("ClusterServingRuntime", "clusterservingruntimes", "v1alpha1", _runtime_schema(), runtime_columns,
             scope="Cluster", status=False),
    ]


def crd_schema(obj: dict[str, Any]) -> dict[str, Any] | None:
    """The openAPIV3Schema our definitions give ``obj``'s kind (for checking custom objects offline)."""
    for crd in render_kserve_crds():
        spec = crd["spec"]
        version = spec["versions"][0]
        if obj.get("kind") == spec["names"]["kind"] and obj.get("apiVersion") == f"{GROUP}/{version['name']}":
            return dict(version["schema"]["openAPIV3Schema"])
    return None

"""KServe resources as the plane sees them: an InferenceService or a Predictor becomes a
:class:`Predictor` (pure functions, no I/O).

Followed from kserve/modelmesh-serving (commit 9c7a2b7, April 2026):

* ``pkg/predictor_source/inferenceservice_registry.go`` - ``BuildBasePredictorFromInferenceService``
  (only InferenceServices annotated ``serving.kserve.io/deploymentMode: ModelMesh``; ``modelFormat``
  name/version, ``runtime``, ``protocolVersion``; the old framework fields ``spec.predictor.sklearn``
  ... when there is no ``model``; the ``serving.kserve.io/servingRuntime`` annotation), and
  ``processInferenceServiceStorage`` (``storageUri`` schemes ``s3://``, ``gs://``, ``pvc://``,
  ``http(s)://`` incl. Azure blob URLs -> path and storage parameters; ``storage.key/path/parameters/
  schemaPath``; URI parameters override ``storage.parameters``; the ``serving.kserve.io/secretKey``
  and ``serving.kserve.io/schemaPath`` annotations as fallbacks);
* ``controllers/predictor_controller.go`` - ``validatePredictor`` and ``extractModelFields`` for
  Predictors (``spec.storage.s3.secretKey``/``bucket``, deprecated; ``storage.path`` over
  ``spec.path``), ``ModelKeyInfo`` (what goes into ``ModelInfo.key``), ``concreteModelName``
  (``<name>__<source>-<hash>``, source ``isvc`` or ``ksp``, kept as is);
* ``controllers/modelmesh/model_type_labels.go`` - ``GetPredictorTypeLabel``: ``rt:<runtime>`` when a
  runtime is named, else ``mt:<format>[:<version>]``, then ``|pv:<protocol>``.

One deliberate difference: the hash in ``<name>__<source>-<hash>`` is over this plane's canonical
JSON of the fields that matter (and the storage key they resolve to), not over Go's struct
encoding, so the ids differ from the ones modelmesh-serving would make for the same spec. An
InferenceService that modelmesh-serving would refuse with a Go error (and no status) gets an
``InvalidSpec`` status here, which says what is wrong.
"""

from __future__ import annotations

import hashlib
import json
import re
import urllib.parse
from dataclasses import dataclass, field
from typing import Any

DEPLOYMENT_MODE_ANNOTATION = "serving.kserve.io/deploymentMode"
MODELMESH_MODE = "ModelMesh"
SECRET_KEY_ANNOTATION = "serving.kserve.io/secretKey"
SCHEMA_PATH_ANNOTATION = "serving.kserve.io/schemaPath"
RUNTIME_ANNOTATION = "serving.kserve.io/servingRuntime"
ISVC_SOURCE = "isvc"  # InferenceServiceCRSourceId
PREDICTOR_SOURCE = "ksp"  # PredictorCRSourceId
SOURCES = (ISVC_SOURCE, PREDICTOR_SOURCE)
# getPredictorFramework's order: the first one set wins
FRAMEWORKS = ("xgboost", "lightgbm", "sklearn", "tensorflow", "onnx", "pytorch", "triton", "pmml")
_AZURE_BLOB_SUFFIX = "blob.core.windows.net"
# Kubernetes names hold no "_", so the "__" of concreteModelName parses back unambiguously.
_CONCRETE_RE = re.compile(r"^(?P<name>[a-z0-9][a-z0-9.-]*)__(?P<source>isvc|ksp)-(?P<hash>[0-9a-f]{10})$")


@dataclass(frozen=True)
class Predictor:
    """What one InferenceService or Predictor asks for, in modelmesh-serving's terms.

    ``error`` is set (and the rest may be empty) when the resource is invalid: its status then
    says ``InvalidSpec`` and its existing registration, if any, is left as it is."""

    source: str
    name: str
    namespace: str = ""
    model_format: str = ""
    model_version: str | None = None
    runtime: str | None = None
    protocol_version: str | None = None
    path: str = ""
    schema_path: str | None = None
    storage_key: str | None = None
    storage_params: dict[str, str] = field(default_factory=dict)
    error: str = ""

    @property
    def ref(self) -> tuple[str, str]:
        return (self.source, self.name)


def is_modelmesh(obj: dict[str, Any]) -> bool:
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    return annotations.get(DEPLOYMENT_MODE_ANNOTATION) == MODELMESH_MODE


def _invalid(source: str, obj: dict[str, Any], message: str) -> Predictor:
    meta = obj.get("metadata") or {}
    return Predictor(source, str(meta.get("name", "")), str(meta.get("namespace", "")), error=message)


def _storage_from_uri(uri: str, name: str) -> tuple[str, dict[str, str]]:
    """(model path, storage parameters) of a ``storageUri`` (processInferenceServiceStorage)."""
    u = urllib.parse.urlsplit(uri)
    path = u.path.lstrip("/")
    if u.scheme == "pvc":
        return path, {"type": "pvc", "name": u.netloc}
    if u.scheme == "s3":
        return path, {"type": "s3", "bucket": u.netloc}
    if u.scheme == "gs":
        return path, {"type": "gcs", "bucket": u.netloc}
    if u.scheme in ("http", "https"):
        if u.hostname and u.hostname.endswith(_AZURE_BLOB_SUFFIX):
            parts = path.split("/")
            return "/".join(parts[1:]), {"type": "azure", "container": parts[0],
                                         "account_name": u.hostname.split(".")[0]}
        return path, {"type": "http", "url": urllib.parse.urlunsplit((u.scheme, u.netloc, "", "", ""))}
    raise ValueError(f"the InferenceService {name} has an unsupported storageUri scheme {u.scheme!r}")


def from_inference_service(obj: dict[str, Any]) -> Predictor | None:
    """The Predictor an InferenceService asks for; None when it is not annotated for ModelMesh."""
    if not is_modelmesh(obj):
        return None
    meta = obj.get("metadata") or {}
    name, namespace = str(meta.get("name", "")), str(meta.get("namespace", ""))
    annotations = meta.get("annotations") or {}
    predictor = ((obj.get("spec") or {}).get("predictor")) or {}
    framework = next((f for f in FRAMEWORKS if predictor.get(f) is not None), None)
    model = predictor.get("model")
    runtime: str | None
    if model is not None:
        if framework is not None:
            return _invalid(ISVC_SOURCE, obj, f"the InferenceService {name} cannot have both the model spec and "
                                              f"a framework spec ({framework})")
        if RUNTIME_ANNOTATION in annotations:
            return _invalid(ISVC_SOURCE, obj, f"the InferenceService {name} cannot have both the model spec and "
                                              f"the runtime annotation {RUNTIME_ANNOTATION}")
        fmt = model.get("modelFormat") or {}
        model_format, version, runtime, ext = fmt.get("name", ""), fmt.get("version"), model.get("runtime"), model
    else:
        if framework is None:
            return _invalid(ISVC_SOURCE, obj, "no valid InferenceService predictor framework found")
        ext = predictor[framework] or {}
        model_format, version, runtime = framework, None, annotations.get(RUNTIME_ANNOTATION)
    if not model_format:
        return _invalid(ISVC_SOURCE, obj, f"the InferenceService {name} names no modelFormat")
    protocol = ext.get("protocolVersion")
    storage = ext.get("storage") or {}
    uri = ext.get("storageUri")
    params: dict[str, str] = {}
    if uri is None:
        if not storage.get("path"):
            return _invalid(ISVC_SOURCE, obj, f"the InferenceService {name} must have either the storageUri or "
                                              "the storage.path")
        path = str(storage["path"])
    else:
        if storage.get("path"):
            return _invalid(ISVC_SOURCE, obj, f"the InferenceService {name} cannot have both the storageUri and "
                                              "the storage.path")
        try:
            path, params = _storage_from_uri(str(uri), name)
        except ValueError as exc:
            return _invalid(ISVC_SOURCE, obj, str(exc))
    # URI parameters take precedence over storage.parameters
    params = {**{str(k): str(v) for k, v in (storage.get("parameters") or {}).items()}, **params}
    return Predictor(
        ISVC_SOURCE, name, namespace, str(model_format), str(version) if version else None,
        str(runtime) if runtime else None,
        str(protocol) if protocol else None,  # kserve's ProtocolUnknown is ""
        path,
        storage.get("schemaPath") or annotations.get(SCHEMA_PATH_ANNOTATION),
        storage.get("key") or annotations.get(SECRET_KEY_ANNOTATION),
        params,
    )


def from_predictor(obj: dict[str, Any]) -> Predictor:
    """The ModelMesh-era Predictor resource (serving.kserve.io/v1alpha1)."""
    spec = obj.get("spec") or {}
    meta = obj.get("metadata") or {}
    storage = spec.get("storage")
    if storage is not None:  # validatePredictor
        if storage.get("path") is not None and spec.get("path"):
            return _invalid(PREDICTOR_SOURCE, obj, "Only one of spec.path and spec.storage.path can be specified")
        if storage.get("schemaPath") is not None and spec.get("schemaPath") is not None:
            return _invalid(PREDICTOR_SOURCE, obj,
                            "Only one of spec.schemaPath and spec.storage.schemaPath can be specified")
        if storage.get("persistentVolumeClaim") is not None:
            return _invalid(PREDICTOR_SOURCE, obj, "spec.storage.PersistentVolumeClaim is not supported")
        if storage.get("s3") is not None and any(storage.get(k) is not None
                                                 for k in ("path", "schemaPath", "parameters", "key")):
            return _invalid(PREDICTOR_SOURCE, obj,
                            "spec.storage.s3 cannot be specified with any other keys in spec.storage")
    storage = storage or {}
    s3 = storage.get("s3") or {}
    model_type = spec.get("modelType") or {}
    if not model_type.get("name"):
        return _invalid(PREDICTOR_SOURCE, obj, "spec.modelType.name is required")
    params = storage.get("parameters")
    if params is None and s3.get("bucket"):
        params = {"bucket": s3["bucket"]}
    return Predictor(
        PREDICTOR_SOURCE, str(meta.get("name", "")), str(meta.get("namespace", "")),
        str(model_type["name"]), model_type.get("version"),
        (spec.get("runtime") or {}).get("name") or None,
        spec.get("protocolVersion"),
        # extractModelFields reads no path without spec.storage; spec.path alone is honoured here
        str(storage.get("path") or spec.get("path") or ""),
        storage.get("schemaPath") or spec.get("schemaPath"),
        storage.get("key") or s3.get("secretKey") or None,
        {str(k): str(v) for k, v in (params or {}).items()},
    )


def type_label(p: Predictor) -> str:
    """``ModelInfo.type`` as modelmesh-serving sends it (GetPredictorTypeLabel)."""
    if p.runtime:
        return f"rt:{p.runtime}"
    label = f"mt:{p.model_format}"
    if p.model_version:
        label += f":{p.model_version}"
    if p.protocol_version:
        label += f"|pv:{p.protocol_version}"
    return label


def type_candidates(p: Predictor) -> tuple[str, ...]:
    """Type strings to register with, preferred first: modelmesh-serving's label, then
    ``mt:<format>``, then the plain format (this plane's runtimes are built in and chosen by format,
    so a runtime name it cannot stand in for need not keep the model from being served)."""
    out = [type_label(p), f"mt:{p.model_format}" if p.model_format else "", p.model_format.lower()]
    return tuple(dict.fromkeys(t for t in out if t))


def model_key_info(p: Predictor) -> dict[str, Any]:
    """The JSON modelmesh-serving puts in ``ModelInfo.key`` (ModelKeyInfo), which its puller reads."""
    info: dict[str, Any] = {}
    if p.storage_key is not None:
        info["storage_key"] = p.storage_key
    if p.storage_params:
        info["storage_params"] = dict(p.storage_params)
    info["model_type"] = {"name": p.model_format, **({"version": p.model_version} if p.model_version else {})}
    if p.schema_path is not None:
        info["schema_path"] = p.schema_path
    return info


def spec_hash(p: Predictor, *, storage_key: str = "") -> str:
    """10 hex characters that change whenever what is registered would (cf. ``Hash`` in
    predictor_controller.go): the type label, the path, the ModelInfo.key document, and the registry
    storage key the model was resolved to (a Secret that gains a ``default`` key moves it)."""
    canonical = json.dumps({"type": type_label(p), "path": p.path, "key": model_key_info(p), "storage": storage_key},
                           sort_keys=True, separators=(",", ":"))
    return hashlib.sha1(canonical.encode()).hexdigest()[:10]


def concrete_model_id(p: Predictor, *, storage_key: str = "") -> str:
    """The registered model behind the vmodel ``p.name``: a new spec is a new model, so a change
    is a vmodel transition (load the new one, then switch) instead of a gap."""
    return f"{p.name}__{p.source}-{spec_hash(p, storage_key=storage_key)}"


def parse_concrete_model_id(model_id: str) -> tuple[str, str] | None:
    """(name, source) of an id made by :func:`concrete_model_id`; None for any other model."""
    m = _CONCRETE_RE.match(model_id)
    return (m["name"], m["source"]) if m else None

"""Model type strings, as ModelMesh spells them, mapped to the runtime that serves them here.

Registration (``plane.operations.check_spec``) and loading both go through :func:`resolve_type`,
so a type is accepted exactly when a pod can load it, and refused with the list of what is.

ModelMesh's controller (modelmesh-serving ``controllers/modelmesh/model_type_labels.go``) fills
``ModelInfo.type`` with a placement label:

* ``mt:<format>`` or ``mt:<format>:<version>`` from the predictor's ``modelFormat``, optionally
  followed by ``|pv:<protocol>`` when the predictor names a protocol version;
* ``rt:<runtime name>`` when the predictor names a ServingRuntime. The built-in runtimes
  (``config/runtimes/*.yaml``) are ``mlserver-1.x`` (sklearn, xgboost, lightgbm), ``triton-2.x``
  (onnx, keras, pytorch, tensorflow, tensorrt; sklearn, xgboost, lightgbm through its FIL
  backend), ``ovms-1.x`` (openvino_ir, onnx) and ``torchserve-0.x`` (pytorch-mar).

A runtime name does not say which format a model is in, so ``rt:mlserver-*`` and
``rt:triton-*`` resolve to ``"auto"``: the runtime is chosen from the model's files among the
formats that runtime serves and this plane reads in that runtime's layout (Triton's FIL reads
XGBoost and LightGBM files, not sklearn pickles). ``rt:ovms-*`` and ``rt:torchserve-*`` are
refused: their reason to exist is OpenVINO IR and TorchServe archives, which this plane cannot
run; an ONNX model is registered as ``mt:onnx``. KServe's own ClusterServingRuntime names
(``kserve-sklearnserver`` ...) are accepted too, as the same formats.

Versions are not checked: the version in ``mt:sklearn:0`` names the framework major version
ModelMesh's runtimes were built with, and whether a file of another version loads is only known
by loading it. Matching is case-insensitive; the registry keeps the type as given.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NoReturn

__all__ = [
    "runtime_label",
    "AUTO",
    "RUNTIMES",
    "SERVED_TYPES",
    "ModelType",
    "UnknownType",
    "known_types",
    "parse_type",
    "resolve_type",
]

#: The runtimes this plane has, by canonical name.
RUNTIMES: tuple[str, ...] = ("onnx", "sklearn", "xgboost", "lightgbm")

#: A type that fixes no runtime: the model's files decide among ``ModelType.candidates``.
AUTO = "auto"

# Plain spellings (and ModelMesh format names) of each runtime.
_NAMES: dict[str, str] = {
    "onnx": "onnx",
    "onnxruntime": "onnx",
    "sklearn": "sklearn",
    "scikit-learn": "sklearn",
    "xgboost": "xgboost",
    "lightgbm": "lightgbm",
    AUTO: AUTO,
}

# ServingRuntime families (a name is the family, optionally "-<version>": mlserver-1.x) and the
# runtimes each may mean. Families mapped to () are known and refused, with the reason.
_RUNTIME_FAMILIES: dict[str, tuple[str, ...]] = {
    "mlserver": ("sklearn", "xgboost", "lightgbm"),
    "triton": ("onnx", "xgboost", "lightgbm"),
    "ovms": (),
    "torchserve": (),
    "kserve-sklearnserver": ("sklearn",),
    "kserve-xgbserver": ("xgboost",),
    "kserve-lgbserver": ("lightgbm",),
    "kserve-mlserver": ("sklearn", "xgboost", "lightgbm"),
    "kserve-tritonserver": ("onnx", "xgboost", "lightgbm"),
}
_REFUSED_RUNTIME = {
    "ovms": "it serves OpenVINO IR, which this plane cannot run (register ONNX models as mt:onnx)",
    "torchserve": "it serves TorchServe model archives, which this plane cannot run",
}
# Formats ModelMesh knows that no runtime here reads, so the refusal can say so.
_FOREIGN_FORMATS = ("tensorflow", "pytorch", "pytorch-mar", "keras", "openvino_ir", "tensorrt", "mllib", "pmml",
                    "huggingface", "mlflow", "paddle")
# The protocols a pod speaks (KServe V2 over gRPC; ModelMesh also labels it "v2" with its REST proxy).
_PROTOCOLS = ("grpc-v2", "v2")

_VERSION_RE = re.compile(r"^[a-z0-9][a-z0-9._+-]*$")
_RT_RE = re.compile(r"^(?P<family>[a-z][a-z0-9-]*?)(?:-(?P<version>[0-9][a-z0-9.]*))?$")


class UnknownType(ValueError):
    """A model type no runtime here serves; the message lists what is accepted."""


@dataclass(frozen=True)
class ModelType:
    """A parsed model type. ``runtime`` is one of :data:`RUNTIMES`, or :data:`AUTO` when the model's
    files choose among ``candidates`` (always the runtimes the type may mean)."""

    given: str
    runtime: str
    candidates: tuple[str, ...]
    format: str = ""  # the ModelMesh format name of an mt: type ("sklearn"), else ""
    version: str = ""  # its version ("0"), if any


def known_types() -> list[str]:
    """The spellings accepted, for messages and help texts."""
    return ["onnx", "sklearn", "xgboost", "lightgbm", "auto",
            "mt:<format>[:<version>] (format onnx, sklearn, xgboost or lightgbm)",
            "rt:<runtime> (mlserver-*, triton-*, kserve-sklearnserver, kserve-xgbserver, "
            "kserve-lgbserver, kserve-mlserver, kserve-tritonserver)"]


#: What registration accepts, as plain names (``mt:``/``rt:`` forms are in :func:`known_types`).
SERVED_TYPES: tuple[str, ...] = tuple(_NAMES)


def _refuse(given: str, why: str) -> UnknownType:
    return UnknownType(f"model type {given!r} is not served here: {why}. Accepted: {'; '.join(known_types())}")


def _strip_protocol(given: str, text: str) -> str:
    head, sep, tail = text.partition("|")
    if not sep:
        return text
    if not tail.startswith("pv:") or "|" in tail:
        raise _refuse(given, "after '|' only a protocol version 'pv:<protocol>' may follow")
    if tail[3:] not in _PROTOCOLS:
        raise _refuse(given, f"pods speak the KServe V2 gRPC protocol ({', '.join('pv:' + p for p in _PROTOCOLS)})")
    return head


def _single(given: str, runtime: str, fmt: str = "", version: str = "") -> ModelType:
    if runtime == AUTO:
        return ModelType(given, AUTO, RUNTIMES, fmt, version)
    return ModelType(given, runtime, (runtime,), fmt, version)


def resolve_type(text: str) -> ModelType:
    """Parse a model type (``onnx``, ``mt:sklearn:0``, ``rt:mlserver-1.x``, ...; case-insensitive).
    Raises :class:`UnknownType` for a type no runtime here serves."""
    given = text
    if not isinstance(text, str) or not text.strip():
        raise _refuse(str(text), "the type is empty")
    text = text.strip().lower()
    if text in _NAMES:
        return _single(given, _NAMES[text])
    kind, sep, rest = text.partition(":")
    if not sep or kind not in ("mt", "rt"):
        _unknown(given, text)
    rest = _strip_protocol(given, rest)
    if kind == "mt":
        fmt, _, version = rest.partition(":")
        if version and not _VERSION_RE.match(version):
            raise _refuse(given, f"{version!r} is not a format version")
        if fmt not in _NAMES or fmt == AUTO:
            _unknown(given, fmt)
        return _single(given, _NAMES[fmt], fmt, version)
    match = _RT_RE.match(rest)
    family = match.group("family") if match else ""
    if family not in _RUNTIME_FAMILIES:
        raise _refuse(given, f"no runtime here stands in for ServingRuntime {rest!r}")
    if family in _REFUSED_RUNTIME:
        raise _refuse(given, f"ServingRuntime {rest!r} cannot be stood in for: {_REFUSED_RUNTIME[family]}")
    candidates = _RUNTIME_FAMILIES[family]
    if len(candidates) == 1:
        return ModelType(given, candidates[0], candidates)
    return ModelType(given, AUTO, candidates)


def _unknown(given: str, name: str) -> NoReturn:
    if name in _FOREIGN_FORMATS:
        raise _refuse(given, f"{name} is a ModelMesh format this plane has no runtime for")
    raise _refuse(given, f"{name!r} is not a model format or runtime known here")


def parse_type(text: str) -> str:
    """The canonical runtime name of a model type: one of :data:`RUNTIMES`, or ``"auto"`` when the
    model's files decide (``rt:mlserver-1.x``). ``parse_type(parse_type(t))`` is ``parse_type(t)``
    except for ``auto``, whose candidates are all runtimes. Raises :class:`UnknownType`."""
    return resolve_type(text).runtime


def runtime_label(text: str) -> str:
    """The runtime that serves a model type, for tables: ``sklearn`` for ``mt:sklearn:1``,
    ``auto`` when the model's files decide; the type as given when no runtime here knows it."""
    try:
        return parse_type(text)
    except UnknownType:
        return text

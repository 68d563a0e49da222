"""Which file in a model's storage path is the model, and which runtime reads it.

A registered path may name a file or a directory, as in ModelMesh: ``sklearn/mnist-svm.joblib``,
or a directory holding ``model.joblib`` and perhaps MLServer's ``model-settings.json``, or a
Triton repository entry (``config.pbtxt`` next to version directories ``1/``, ``2/`` ...; the
highest is served). The storage side fetches the path (a local directory is used where it is; an
S3 prefix is downloaded whole, keeping the layout, since an ONNX model's external data files are
found relative to the ``.onnx`` file) and then asks :func:`find_model_file` for the file to load.

Inside a directory, for a runtime: the file ``model-settings.json`` points at
(``parameters.uri``), else a well-known name (``model.onnx``, ``model.joblib``, ``model.json`` ...),
else the single file with one of the runtime's suffixes; scikit-learn, whose files ModelMesh says
"can have any name", also takes the single file of any name. When the type fixes no runtime
(``rt:mlserver-1.x``), :func:`choose_runtime` decides from ``model-settings.json``'s
``implementation``, suffixes and the first bytes of the file (``.bst`` is a LightGBM text model
when it starts with ``tree``, else XGBoost).
"""

from __future__ import annotations

import json
import pathlib
import re
from typing import Any

from plane.runtimes.base import ModelLoadError

__all__ = ["MODEL_SETTINGS", "check_path_for_type", "choose_runtime", "find_model_file", "read_model_settings",
           "sniff"]

MODEL_SETTINGS = "model-settings.json"

_WELL_KNOWN: dict[str, tuple[str, ...]] = {
    "onnx": ("model.onnx",),
    "sklearn": ("model.joblib", "model.pkl", "model.pickle"),
    "xgboost": ("model.json", "model.ubj", "model.bst", "xgboost.json", "xgboost.ubj", "xgboost.model"),
    "lightgbm": ("model.txt", "model.bst"),
}
_SUFFIXES: dict[str, tuple[str, ...]] = {
    "onnx": (".onnx",),
    "sklearn": (".joblib", ".pkl", ".pickle"),
    "xgboost": (".json", ".ubj", ".bst", ".model"),
    "lightgbm": (".txt", ".bst", ".model"),
}
# Files that sit next to models and are never the model.
_NOT_MODELS = {MODEL_SETTINGS, "_schema.json", "config.pbtxt", "manifest.json"}
# MLServer's implementation classes (as ModelMesh's adapter writes them) -> our runtime.
_IMPLEMENTATIONS = {
    "mlserver_sklearn.sklearnmodel": "sklearn",
    "mlserver_xgboost.xgboostmodel": "xgboost",
    "mlserver_lightgbm.lightgbmmodel": "lightgbm",
}
# First bytes of pickles: protocol 2+ opcode, and the compressors joblib uses.
_PICKLE_MAGIC = (b"\x80", b"\x78\x01", b"\x78\x5e", b"\x78\x9c", b"\x78\xda", b"\x1f\x8b", b"BZh",
                 b"\xfd7zXZ\x00", b"\x04\x22\x4d\x18")


def read_model_settings(directory: pathlib.Path) -> dict[str, Any]:
    """MLServer's ``model-settings.json`` in ``directory`` as a dict ({} if there is none)."""
    path = pathlib.Path(directory) / MODEL_SETTINGS
    if not path.is_file():
        return {}
    try:
        doc = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise ModelLoadError(f"{MODEL_SETTINGS} is not valid JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise ModelLoadError(f"{MODEL_SETTINGS} must hold a JSON object")
    return doc


def _candidates(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted(p for p in directory.iterdir()
                  if p.is_file() and p.name not in _NOT_MODELS and not p.name.startswith(".")
                  and not p.name.endswith(".tmp"))


def _settings_uri(directory: pathlib.Path, settings: dict[str, Any]) -> pathlib.Path | None:
    params = settings.get("parameters")
    uri = params.get("uri") if isinstance(params, dict) else None
    if not isinstance(uri, str) or not uri:
        return None
    root = directory.resolve()
    # ModelMesh's adapter rewrites uri to an absolute path; a stored file has it relative.
    target = (root / uri.removeprefix("file://")).resolve()
    if target != root and root not in target.parents:
        raise ModelLoadError(f"{MODEL_SETTINGS} parameters.uri {uri!r} points outside the model's directory")
    return target


def _version_dirs(directory: pathlib.Path) -> list[pathlib.Path]:
    return sorted((p for p in directory.iterdir() if p.is_dir() and p.name.isdigit()), key=lambda p: int(p.name))


def _look(runtime: str, directory: pathlib.Path, *, any_name: bool) -> pathlib.Path | None:
    for name in _WELL_KNOWN[runtime]:
        if (directory / name).is_file():
            return directory / name
    files = _candidates(directory)
    matching = [p for p in files if p.suffix.lower() in _SUFFIXES[runtime]]
    if len(matching) > 1:
        raise ModelLoadError(f"{runtime} model directory {directory.name!r} holds several possible model files "
                             f"({', '.join(p.name for p in matching)}): name the one to serve "
                             f"{_WELL_KNOWN[runtime][0]} or register the file's path")
    if matching:
        return matching[0]
    if any_name and len(files) == 1:
        return files[0]
    return None


def find_model_file(runtime: str, path: pathlib.Path, *, any_name: bool | None = None) -> pathlib.Path:
    """The file ``runtime`` should load for the model at ``path`` (a file, returned as is, or a
    directory searched as the module doc says). Raises ModelLoadError naming what was looked for."""
    path = pathlib.Path(path)
    if runtime not in _WELL_KNOWN:
        raise ModelLoadError(f"unknown runtime {runtime!r}")
    if path.is_file():
        return path
    if not path.is_dir():
        raise ModelLoadError(f"model path {path.name!r} is neither a file nor a directory")
    if any_name is None:
        any_name = runtime == "sklearn"
    target = _settings_uri(path, read_model_settings(path))
    if target is not None:
        if target.is_file():
            return target
        if not target.is_dir():
            raise ModelLoadError(f"{MODEL_SETTINGS} parameters.uri names {target.name!r}, which is not there")
        path = target
    found = _look(runtime, path, any_name=any_name)
    if found is None:
        for version in reversed(_version_dirs(path)):  # Triton's layout: the highest version
            found = _look(runtime, version, any_name=any_name)
            if found is not None:
                break
    if found is None:
        raise ModelLoadError(f"no {runtime} model file in directory {path.name!r}: looked for "
                             f"{' or '.join(_WELL_KNOWN[runtime])} or a single *{'/*'.join(_SUFFIXES[runtime])} file")
    return found


def sniff(path: pathlib.Path) -> str | None:
    """The runtime a file's first bytes point to, when they tell: "lightgbm" (text starting with
    ``tree``), "xgboost" (JSON or UBJSON: ``{``), "sklearn" (a pickle or a compressed joblib file)."""
    try:
        with open(path, "rb") as f:
            head = f.read(16)
    except OSError:
        return None
    if head.startswith((b"tree\n", b"tree\r\n")):
        return "lightgbm"
    if head.startswith(b"{"):
        return "xgboost"
    if head.startswith(_PICKLE_MAGIC):
        return "sklearn"
    return None


def choose_runtime(path: pathlib.Path, candidates: tuple[str, ...]) -> tuple[str, pathlib.Path]:
    """``(runtime, file)`` for a model whose type names no single runtime (``rt:mlserver-1.x``)."""
    path = pathlib.Path(path)
    if path.is_dir():
        implementation = str(read_model_settings(path).get("implementation", "")).lower()
        chosen = _IMPLEMENTATIONS.get(implementation)
        if chosen in candidates:
            return chosen, find_model_file(chosen, path)
    found: dict[str, pathlib.Path] = {}
    for runtime in candidates:
        try:
            file = find_model_file(runtime, path, any_name=False)
        except ModelLoadError:
            continue
        by_suffix = file.suffix.lower() in _SUFFIXES[runtime] or file.name in _WELL_KNOWN[runtime]
        told = sniff(file)
        if told == runtime or (told is None and by_suffix) or (told not in candidates and by_suffix):
            found[runtime] = file
    if len(found) == 1:
        (runtime, file), = found.items()
        return runtime, file
    what = "/".join(candidates)
    if not found:
        raise ModelLoadError(f"no {what} model file at {path.name!r} (looked for "
                             + "; ".join(f"{r}: {', '.join(_WELL_KNOWN[r])}" for r in candidates) + ")")
    raise ModelLoadError(f"model at {path.name!r} could be " + " or ".join(f"{r} ({f.name})" for r, f in found.items())
                         + ": register it with a type that names its format, e.g. mt:" + next(iter(found)))


# A file suffix: a dot, a letter, then letters or digits ("resnet-v1.5" has none: a directory).
_FILE_SUFFIX = re.compile(r"\.[a-z][a-z0-9]*")


def check_path_for_type(model_type: str, path: str) -> str | None:
    """Why a model of ``model_type`` cannot be at ``path`` (its path inside the storage), or None
    when it may be. The one rule every registration form applies before registering (console,
    dashboard, CLI); only the text is checked, not the storage.

    The path's last part must end in a suffix the type's runtime reads (``.onnx`` for onnx;
    ``.joblib``/``.pkl``/``.pickle`` for sklearn; ``.json``/``.ubj``/``.bst``/``.model`` for
    xgboost; ``.txt``/``.bst``/``.model`` for lightgbm; for a type that names several runtimes,
    such as ``rt:mlserver-1.x``, a suffix of any of them), or name a directory, since a model
    may be one: a path ending in ``/``, or whose last part has no file suffix (``models/mnist``,
    ``resnet-v1.5``). A type no runtime here serves is refused with :func:`resolve_type`'s words.
    """
    from plane.runtimes.types import AUTO, RUNTIMES, UnknownType, resolve_type

    try:
        mtype = resolve_type(model_type)
    except UnknownType as exc:
        return str(exc)
    text = (path or "").strip()
    if not text:
        return "model path must not be empty: give the path of the model's file or directory inside the storage"
    if text.endswith("/"):
        return None
    name = pathlib.PurePosixPath(text).name
    if name in _NOT_MODELS:
        return f"{name} is not a model but a file next to one: register the directory that holds it"
    suffix = pathlib.PurePosixPath(name).suffix.lower()
    if not _FILE_SUFFIX.fullmatch(suffix):
        return None
    if any(suffix in _SUFFIXES[r] for r in mtype.candidates):
        return None
    what = mtype.runtime if mtype.runtime != AUTO else " / ".join(mtype.candidates)
    reads = list(dict.fromkeys(s for r in mtype.candidates for s in _SUFFIXES[r]))
    message = (f"{name!r} is no {what} model: type {mtype.given!r} reads {', '.join(reads)} files "
               f"or a directory (end the path with '/' if {name!r} is one)")
    others = [r for r in RUNTIMES if suffix in _SUFFIXES[r]]
    if others:
        message += f"; {suffix} files are {' or '.join(others)} models: choose that type"
    return message

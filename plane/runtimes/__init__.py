"""Runtimes: one per model format, behind one call.

A pod loads a registered model with :func:`load`, passing the record's ``type`` as stored (as
the operator or ModelMesh's controller gave it: ``onnx``, ``mt:sklearn:0``, ``rt:mlserver-1.x``
...) and the local path storage fetched (a file, or a directory). :func:`parse_type` maps a type
to the runtime that serves it; registration uses it to refuse types no runtime here serves.

Runtimes: ``onnx`` (onnxruntime, :mod:`plane.runtimes.onnx`), ``sklearn`` (joblib/pickle
estimators and pipelines), ``xgboost`` (JSON/UBJSON boosters), ``lightgbm`` (text boosters).
Each returns a :class:`ModelSession` whose ``size`` is measured the same way
(:func:`plane.runtime.measure`). Runtime modules are imported on first use: a pod that serves
only ONNX never imports XGBoost or LightGBM.
"""

from __future__ import annotations

import importlib
import pathlib
from typing import Any

from plane.runtimes.base import INPUT_NAME, LoadOptions, ModelLoadError, ModelSession
from plane.runtimes.files import choose_runtime, find_model_file, read_model_settings
from plane.runtimes.types import (
    AUTO,
    RUNTIMES,
    SERVED_TYPES,
    ModelType,
    UnknownType,
    known_types,
    parse_type,
    resolve_type,
)

__all__ = [
    "AUTO",
    "INPUT_NAME",
    "RUNTIMES",
    "SERVED_TYPES",
    "ModelLoadError",
    "ModelSession",
    "ModelType",
    "UnknownType",
    "find_model_file",
    "known_types",
    "load",
    "locate",
    "parse_type",
    "resolve_type",
]


def locate(model_type: str, path: pathlib.Path) -> tuple[str, pathlib.Path]:
    """``(runtime, file)`` for a model of ``model_type`` at the local ``path`` (file or directory)."""
    try:
        mtype = resolve_type(model_type)
    except UnknownType as exc:
        raise ModelLoadError(str(exc)) from exc
    path = pathlib.Path(path)
    if not path.exists():
        raise ModelLoadError(f"model path {path.name!r} does not exist")
    if mtype.runtime == AUTO:
        return choose_runtime(path, mtype.candidates)
    return mtype.runtime, find_model_file(mtype.runtime, path)


def _options(path: pathlib.Path, intra_threads: int, settings: Any) -> LoadOptions:
    if settings is None:
        from plane.settings import MeshSettings

        settings = MeshSettings()
    options = LoadOptions(allow_pickle=bool(getattr(settings, "allow_pickle", True)),
                          intra_threads=max(1, int(intra_threads)))
    if not path.is_dir():
        return options
    doc = read_model_settings(path)
    inputs, outputs = doc.get("inputs"), doc.get("outputs")
    if isinstance(inputs, list) and len(inputs) == 1 and isinstance(inputs[0], dict) and inputs[0].get("name"):
        options.input_name = str(inputs[0]["name"])
    if isinstance(outputs, list):
        options.default_outputs = [str(o["name"]) for o in outputs if isinstance(o, dict) and o.get("name")]
    return options


def load(model_type: str, model_id: str, path: pathlib.Path, *, intra_threads: int = 1, source: str = "",
         settings: Any = None) -> ModelSession:
    """Load the model at the local ``path`` with the runtime its type names (or its files show, for
    ``rt:mlserver-1.x``), measuring its memory. ``settings`` (a MeshSettings; default: from the
    environment) gives ``allow_pickle``. A ``model-settings.json`` next to the model may name the
    input (one, as MLServer models have) and the outputs answered by default. Raises
    ModelLoadError, whose message names the format, for anything that cannot be served."""
    path = pathlib.Path(path)
    runtime, file = locate(model_type, path)
    options = _options(path, intra_threads, settings)
    module = importlib.import_module(f"plane.runtimes.{runtime}")
    sess: ModelSession = module.load(model_id, file, source=source, options=options, path=path)
    sess.model_type, sess.local_path = model_type, str(path)
    return sess

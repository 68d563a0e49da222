"""Which storage a Predictor's model is read from (pure: Secret documents in, a registry storage key
and its config out).

modelmesh-serving leaves this to its puller: the controller passes ``storage_key`` and
``storage_params`` in ``ModelInfo.key`` and the puller, next to each runtime, resolves them
against the mounted ``storage-config`` Secret. This plane has no puller; its registry holds named
storage configs and a model names one. So the controller does the puller's resolution itself and
registers the result. Followed from kserve/modelmesh-runtime-adapter (commit af7d500, April 2026),
``model-serving-puller/puller/puller.go`` ``ProcessLoadModelRequest``:

* no ``storage_key``: the Secret's ``default`` key, or ``default_<type>`` when the parameters name
  a ``type``; absent is fine (the parameters alone may be enough);
* a ``storage_key`` the Secret lacks is an error ("Did not find storage config for key ...");
* ``puller/config.go`` ``GetStorageConfiguration``: for ``s3``, ``default_bucket`` is copied to
  ``bucket`` unless ``bucket`` is set;
* ``puller/dotpath.go`` ``ApplyParameterOverrides``: each parameter overrides the document's value
  at its dotted path (only string values may be overwritten);
* no ``type`` after that is an error ("Predictor Storage field missing").

When parameters change nothing, the model names the Secret's key itself (its registry name from
:func:`plane.kube.storage_config.plane_storage_key`). When they do (a ``storageUri`` naming another
bucket, ``storage.parameters``), the merged config is stored under a *derived* key,
``<key>@kserve-<hash of the Secret key and the parameters>``: deterministic, free of secret
material, and recognisable, so the controller removes it when no model uses it any more.
"""

from __future__ import annotations

import copy
import hashlib
import json
from dataclasses import dataclass, field
from typing import Any

from plane.controller.kserve import Predictor
from plane.kube.storage_config import plane_storage_key

DEFAULT_STORAGE_KEY = "default"
DERIVED_MARK = "@kserve-"


class StorageError(ValueError):
    """The Predictor's storage cannot be resolved; the message is the puller's where it has one."""


@dataclass(frozen=True)
class StorageChoice:
    key: str  # the registry storage key the model names
    type: str
    params: dict[str, Any] = field(default_factory=dict)
    derived: bool = False


def _set(doc: dict[str, Any], dotpath: str, value: str) -> None:
    fields = dotpath.split(".")
    for i, name in enumerate(fields[:-1]):
        nxt = doc.setdefault(name, {})
        if not isinstance(nxt, dict):
            raise StorageError(f"Unable to merge storage parameters from the storage config and the Predictor "
                               f"Storage field: expected an object at '{'.'.join(fields[:i + 1])}'")
        doc = nxt
    last = fields[-1]
    if last in doc and not isinstance(doc[last], str):
        raise StorageError(f"Unable to merge storage parameters from the storage config and the Predictor "
                           f"Storage field: expected a string at '{dotpath}'")
    doc[last] = value


def is_derived_key(key: str) -> bool:
    return DERIVED_MARK in key


def resolve_storage(p: Predictor, docs: dict[str, dict[str, Any]]) -> StorageChoice:
    """The registry storage key and config for ``p`` given the Secret's documents (by Secret key)."""
    if p.storage_key is None:
        typ = p.storage_params.get("type", "")
        secret_key = f"{DEFAULT_STORAGE_KEY}_{typ}" if typ else DEFAULT_STORAGE_KEY
        base = docs.get(secret_key)
    else:
        secret_key = p.storage_key
        base = docs.get(secret_key)
        if base is None:
            raise StorageError(f"Did not find storage config for key {secret_key}: "
                               f"Storage secretKey not found: {secret_key}")
    config = copy.deepcopy(base or {})
    if config.get("type") == "s3" and "default_bucket" in config and "bucket" not in config:
        config["bucket"] = config["default_bucket"]
    for dotpath, value in sorted(p.storage_params.items()):
        _set(config, dotpath, value)
    typ = config.pop("type", None)
    if not isinstance(typ, str) or not typ:
        raise StorageError("Predictor Storage field missing")
    if typ == "s3" and "bucket" in config:  # back to this plane's name for it (SPEC section 4)
        config["default_bucket"] = config.pop("bucket")
    original = {k: v for k, v in (base or {}).items() if k != "type"}
    if base is not None and not p.storage_params:
        return StorageChoice(plane_storage_key(secret_key), typ, original)
    digest = hashlib.sha1(json.dumps({"key": secret_key, "params": p.storage_params}, sort_keys=True)
                          .encode()).hexdigest()[:10]
    return StorageChoice(f"{plane_storage_key(secret_key)}{DERIVED_MARK}{digest}", typ, config, derived=True)

"""The storage Secret's content: SPEC section 4 storage configurations, checked and normalised.

:func:`load_storage_file` reads them from the JSON/YAML file ``mesh install
--storage-from-file`` names; :func:`normalise_storage_config` checks one document with the
same rules the registry applies; the checksum of the normalised documents goes on the pod
template, so a changed Secret rolls the pods. No function here logs or reports a secret value.
"""

from __future__ import annotations

import hashlib
import json
import pathlib
from typing import Any

import yaml


def _storage_checksum(storage_config: dict[str, dict[str, Any]]) -> str:
    canonical = json.dumps(storage_config, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode()).hexdigest()[:16]


def normalise_storage_config(key: str, doc: dict[str, Any]) -> dict[str, Any]:
    """Check one SPEC section 4 document and return it normalised (``bucket`` -> ``default_bucket``).

    ``local`` paths are paths inside the pods, so they are kept as written, not resolved here.
    """
    from plane import storage
    from plane.api import validate_model_id

    if not isinstance(doc, dict):
        raise ValueError(f"storage key {key!r}: expected a JSON object, got {type(doc).__name__}")
    params = {k: v for k, v in doc.items() if k != "type"}
    typ = str(doc.get("type") or "").lower()
    if typ == "local":
        validate_model_id(key, what="storage key")
        root = params.get("path") or params.get("root")
        if not root:
            raise ValueError(f"storage key {key!r}: a local storage config needs 'path'")
        return {"type": "local", "path": str(root)}
    cfg = storage.validate_config(key, typ, params)
    return {"type": cfg.type, **cfg.params}


def load_storage_file(path: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """Read storage configs from a JSON or YAML file.

    Accepted shapes: ``{key: {type: ..., ...}, ...}``; one document with a ``type`` (it becomes
    the ``default`` key); or a Kubernetes Secret whose ``stringData``/``data`` values are the
    documents (the ModelMesh ``storage-config`` Secret).
    """
    import base64

    p = pathlib.Path(path).expanduser()
    try:
        text = p.read_text()
    except OSError as exc:
        raise ValueError(f"cannot read storage file {str(p)!r}: {exc.strerror or exc}") from exc
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(f"storage file {str(p)!r} is neither JSON nor YAML: {exc}") from exc
    if not isinstance(data, dict) or not data:
        raise ValueError(f"storage file {str(p)!r} must hold a mapping of storage keys to configs")
    if data.get("kind") == "Secret":
        raw: dict[str, Any] = {}
        for k, v in (data.get("data") or {}).items():
            raw[k] = base64.b64decode(v).decode()
        raw.update(data.get("stringData") or {})
        data = raw
    elif "type" in data and not isinstance(data["type"], dict):
        data = {"default": data}
    out: dict[str, dict[str, Any]] = {}
    for key, doc in data.items():
        if isinstance(doc, str):
            try:
                doc = json.loads(doc)
            except json.JSONDecodeError as exc:
                raise ValueError(f"storage key {key!r} is not a JSON document") from exc
        out[str(key)] = normalise_storage_config(str(key), doc)
    return out

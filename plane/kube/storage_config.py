"""The storage Secret's content: SPEC section 4 storage configurations, checked and normalised.

:func:`load_storage_file` reads them from the JSON/YAML file ``mesh install
--storage-from-file`` names; :func:`normalise_storage_config` checks one document with the
same rules the registry applies; the checksum of the normalised documents goes on the pod
template, so a changed Secret rolls the pods. No function here logs or reports a secret value.

:func:`secret_data` and :func:`parse_storage_documents` read a ``storage-config`` Secret the way
modelmesh-serving does (servingruntime_controller.go ``getPVCs``: every value of ``Secret.data`` is
one JSON document), and :func:`plane_storage_key` maps a Secret key to a registry storage key: the
two name alphabets differ (a Secret key may start with ``.``, ``_`` or ``-``, a registry key may not).
"""

from __future__ import annotations

import base64
import hashlib
import json
import pathlib
import re
from typing import Any

import yaml

# The registry's id alphabet (plane.operations.validate_model_id): a Secret key may also start with . _ -
_KEY_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@+-]{0,252}$")


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
    # Checked under the registry key it will have (see plane_storage_key).
    if typ == "local":
        validate_model_id(plane_storage_key(key), what="storage key")
        root = params.get("path") or params.get("root")
        if not root:
            raise ValueError(f"storage key {key!r}: a local storage config needs 'path'")
        return {"type": "local", "path": str(root)}
    cfg = storage.validate_config(plane_storage_key(key), typ, params)
    return {"type": cfg.type, **cfg.params}


def plane_storage_key(secret_key: str) -> str:
    """The registry storage key of a Secret key: the same string when the registry accepts it (nearly
    always), else one without the leading punctuation and with a short hash of the original (so
    ``_minio`` and ``minio`` stay apart), e.g. ``_minio`` -> ``minio+3f1c2a``."""
    if _KEY_RE.match(secret_key):
        return secret_key
    cleaned = re.sub(r"[^A-Za-z0-9._:@+-]", "-", secret_key).lstrip("._:@+-") or "key"
    return f"{cleaned[:240]}+{hashlib.sha256(secret_key.encode()).hexdigest()[:6]}"


def secret_data(secret: dict[str, Any]) -> dict[str, str]:
    """A Secret object's values as text: ``data`` base64-decoded, ``stringData`` over it."""
    raw: dict[str, str] = {}
    for key, value in (secret.get("data") or {}).items():
        raw[str(key)] = base64.b64decode(value).decode()
    raw.update({str(k): str(v) for k, v in (secret.get("stringData") or {}).items()})
    return raw


def parse_storage_documents(raw: dict[str, str]) -> tuple[dict[str, dict[str, Any]], dict[str, str]]:
    """(documents, errors) of Secret values that should each be one JSON object; an error names the
    key and what is wrong, never the value."""
    docs: dict[str, dict[str, Any]] = {}
    errors: dict[str, str] = {}
    for key, text in raw.items():
        try:
            doc = json.loads(text)
        except json.JSONDecodeError as exc:
            errors[key] = f"storage key {key!r} is not a JSON document (line {exc.lineno}, column {exc.colno})"
            continue
        if not isinstance(doc, dict):
            errors[key] = f"storage key {key!r}: expected a JSON object, got {type(doc).__name__}"
            continue
        docs[key] = doc
    return docs, errors


def load_storage_file(path: str | pathlib.Path) -> dict[str, dict[str, Any]]:
    """Read storage configs from a JSON or YAML file.

    Accepted shapes: ``{key: {type: ..., ...}, ...}``; one document with a ``type`` (it becomes
    the ``default`` key); or a Kubernetes Secret whose ``stringData``/``data`` values are the
    documents (the ModelMesh ``storage-config`` Secret).
    """
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
        data = dict(secret_data(data))
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

"""Rendered objects as text: a multi-document YAML stream with Secret values masked, object refs.

Everything that shows or writes manifests (the CLI's ``--dry-run`` and ``--output``, the
console's and the dashboard's Install views, ``manifests/``) goes through :func:`to_yaml`,
which masks every Secret value unless asked not to.
"""

from __future__ import annotations

import copy
from collections.abc import Iterable
from typing import Any

import yaml

from plane.kube.defaults import MASK


def mask_secrets(objects: Iterable[dict[str, Any]]) -> list[dict[str, Any]]:
    """Copies of ``objects`` with every Secret value replaced by ``****``."""
    out = []
    for obj in objects:
        obj = copy.deepcopy(obj)
        if obj.get("kind") == "Secret":
            for fld in ("data", "stringData"):
                if isinstance(obj.get(fld), dict):
                    obj[fld] = {k: MASK for k in obj[fld]}
        out.append(obj)
    return out


def to_yaml(objects: Iterable[dict[str, Any]], *, mask: bool = True) -> str:
    """A multi-document YAML stream; Secret values masked unless ``mask=False``."""
    objs = mask_secrets(objects) if mask else list(objects)
    return yaml.safe_dump_all(objs, sort_keys=False, default_flow_style=False, width=120)


def object_ref(obj: dict[str, Any]) -> str:
    """``Kind/namespace/name`` (``Kind/name`` for cluster-scoped objects)."""
    meta = obj.get("metadata", {})
    ns = meta.get("namespace")
    return f"{obj['kind']}/{ns}/{meta['name']}" if ns else f"{obj['kind']}/{meta['name']}"

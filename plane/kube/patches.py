"""Strategic-merge patches computed from two renderings: how the ``tls`` and ``etcd-ha`` kustomize
components are written.

An option such as ``tls_secret`` is rendered once, in :func:`plane.kube.render.render_manifests`;
its kustomize component is the difference between that rendering and the default one, written
as strategic-merge patches (one per changed object) plus the objects only the option renders.
The test builds the overlays with ``kubectl kustomize`` and compares the result with the
rendering, so the two cannot drift.

Lists merge the way Kubernetes' strategic merge does for these fields: by their
``patchMergeKey`` (``name`` for containers, env and volumes, ``mountPath`` for volume mounts,
``containerPort``/``port`` for ports); any other list is replaced whole.

Order matters for ``env``: the kubelet expands ``$(VAR)`` only from variables defined *earlier*
in the list, and kustomize's merge puts a patch's items first (it does not honour
``$setElementOrder``). So an env patch also carries, ahead of its items, every variable they
refer to: whatever order the merge produces, a reference still follows its definition.
"""

from __future__ import annotations

import re
from typing import Any

from plane.kube.output import object_ref

_REF = re.compile(r"\$\(([A-Za-z_][A-Za-z0-9_]*)\)")
_MERGE_KEYS = {"containers": "name", "initContainers": "name", "env": "name", "volumes": "name",
               "volumeMounts": "mountPath", "imagePullSecrets": "name"}


def _merge_key(field: str, items: list[Any]) -> str | None:
    if not items or not all(isinstance(i, dict) for i in items):
        return None
    if field == "ports":
        return "containerPort" if "containerPort" in items[0] else "port"
    key = _MERGE_KEYS.get(field)
    return key if key and all(key in i for i in items) else None


def _diff(old: Any, new: Any, field: str = "") -> Any:
    """The patch that turns ``old`` into ``new`` (only called when they differ)."""
    if isinstance(old, dict) and isinstance(new, dict):
        out: dict[str, Any] = {}
        for key, value in new.items():
            if key not in old:
                out[key] = value
            elif old[key] != value:
                out[key] = _diff(old[key], value, key)
        for key in old:
            if key not in new:
                out[key] = None  # a strategic-merge (and JSON merge) patch deletes with null
        return out
    if isinstance(old, list) and isinstance(new, list):
        key = _merge_key(field, old + new)
        if key is None:
            return new
        before = {item[key]: item for item in old}
        after = {item[key]: item for item in new}
        if [k for k in after if k in before] != [k for k in before if k in after]:
            return new  # reordered: a merge would keep the old order
        items: list[Any] = []
        for name, item in after.items():
            if name not in before:
                items.append(item)
            elif before[name] != item:
                items.append({key: name, **_diff(before[name], item, field)})
        items += [{key: name, "$patch": "delete"} for name in before if name not in after]
        if field == "env":
            items = _with_dependencies(items, list(after.values()))
        return items
    return new


def env_references(item: dict[str, Any]) -> set[str]:
    """The variables an env item's value refers to with ``$(NAME)``."""
    return set(_REF.findall(str(item.get("value", ""))))


def _with_dependencies(items: list[dict[str, Any]], env: list[dict[str, Any]]) -> list[dict[str, Any]]:
    by_name = {e["name"]: e for e in env}
    needed: list[str] = []
    todo = [r for i in items for r in sorted(env_references(i))]
    while todo:
        name = todo.pop()
        if name in by_name and name not in needed:
            needed.append(name)
            todo += sorted(env_references(by_name[name]))
    patched = {i["name"] for i in items}
    deps = [e for e in env if e["name"] in needed and e["name"] not in patched]  # in definition order
    return deps + items


def strategic_patch(old: dict[str, Any], new: dict[str, Any]) -> dict[str, Any]:
    """A strategic-merge patch (identified by kind, name and namespace) from ``old`` to ``new``."""
    if object_ref(old) != object_ref(new):
        raise ValueError(f"cannot patch {object_ref(old)} into {object_ref(new)}")
    body = _diff({k: v for k, v in old.items() if k not in ("apiVersion", "kind")},
                 {k: v for k, v in new.items() if k not in ("apiVersion", "kind")})
    meta = {"name": new["metadata"]["name"]}
    if "namespace" in new["metadata"]:
        meta["namespace"] = new["metadata"]["namespace"]
    meta.update(body.pop("metadata", None) or {})
    return {"apiVersion": new["apiVersion"], "kind": new["kind"], "metadata": meta, **body}


def component_parts(base: list[dict[str, Any]], variant: list[dict[str, Any]]
                    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(patches, new objects) that turn the ``base`` rendering into ``variant``."""
    before = {object_ref(o): o for o in base}
    after = {object_ref(o): o for o in variant}
    gone = [ref for ref in before if ref not in after]
    if gone:
        raise ValueError(f"a component cannot remove objects: {', '.join(gone)}")
    patches = [strategic_patch(before[ref], obj) for ref, obj in after.items()
               if ref in before and before[ref] != obj]
    added = [obj for ref, obj in after.items() if ref not in before]
    return patches, added

"""Building blocks shared by every rendered object: labels, metadata, security contexts, memory.

Kept apart from the objects themselves so the plane's workloads (:mod:`plane.kube.workloads`),
the quickstart (:mod:`plane.kube.quickstart`) and the top-level rendering
(:mod:`plane.kube.render`) label, select and harden their objects the same way.
"""

from __future__ import annotations

import math
from typing import Any

from plane.kube.defaults import (
    _LABEL_MANAGED_BY,
    _LABEL_PART_OF,
    FIELD_MANAGER,
    MEMORY_LIMIT_HEADROOM_BYTES,
    MEMORY_LIMIT_HEADROOM_FRACTION,
    MEMORY_OVERHEAD_BYTES,
    PROJECT,
)


def _labels(component: str, name: str = PROJECT) -> dict[str, str]:
    return {
        "app.kubernetes.io/name": name,
        "app.kubernetes.io/component": component,
        _LABEL_PART_OF: PROJECT,
        _LABEL_MANAGED_BY: FIELD_MANAGER,
    }


def _selector(component: str) -> dict[str, str]:
    return {"app.kubernetes.io/name": PROJECT, "app.kubernetes.io/component": component}


def _meta(name: str, namespace: str | None, component: str, **extra: Any) -> dict[str, Any]:
    meta: dict[str, Any] = {"name": name}
    if namespace is not None:
        meta["namespace"] = namespace
    meta["labels"] = _labels(component)
    meta.update(extra)
    return meta


def _mi(num_bytes: int) -> str:
    """A memory quantity in whole MiB, rounded up (the API server keeps it as written)."""
    return f"{math.ceil(num_bytes / 1024**2)}Mi"


def memory_resources(capacity_bytes: int, *, overhead_bytes: int = MEMORY_OVERHEAD_BYTES) -> tuple[str, str]:
    """(request, limit) memory quantities for a pod whose model cache holds ``capacity_bytes``.

    The formula (docs/kubernetes.md, "Memory"): **request = capacity + overhead** (overhead 256 MiB
    by default: Python, gRPC, onnxruntime and the pod's own buffers, which the cache does not
    count), **limit = request + max(256 MiB, 25 % of capacity)**: the cache admits a model by its
    predicted size and learns the real one only after the load, so the limit leaves room for the
    difference instead of letting the kernel kill the pod mid-load. Both round up to whole MiB.
    The scheduler therefore places a pod only where its whole cache fits.
    """
    if overhead_bytes < 0:
        raise ValueError("memory overhead must not be negative")
    request = capacity_bytes + overhead_bytes
    headroom = max(MEMORY_LIMIT_HEADROOM_BYTES, int(capacity_bytes * MEMORY_LIMIT_HEADROOM_FRACTION))
    return _mi(request), _mi(request + headroom)


def _container_security() -> dict[str, Any]:
    return {
        "allowPrivilegeEscalation": False,
        "readOnlyRootFilesystem": True,
        "runAsNonRoot": True,
        "capabilities": {"drop": ["ALL"]},
    }


def _pod_security(uid: int) -> dict[str, Any]:
    return {
        "runAsNonRoot": True,
        "runAsUser": uid,
        "runAsGroup": uid,
        "fsGroup": uid,
        "seccompProfile": {"type": "RuntimeDefault"},
    }


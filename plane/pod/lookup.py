"""Reading a record the pod needs: the view first, the registry when the view lacks it.

One place for "view, else registry; NOT_FOUND when neither has it, UNAVAILABLE when etcd does
not answer", which routing, the copy lifecycle and the management API all need.
"""

from __future__ import annotations

from typing import Any

import grpc

from plane.pod.errors import MeshError, q
from plane.records import ModelRecord, RegistryError, StorageConfig

__all__ = ["model_record", "storage_config"]


async def model_record(view: Any, registry: Any, model_id: str, *, fresh: bool = False) -> ModelRecord:
    """The model's record: the view's (no I/O), or, when the view does not have it yet (just
    registered elsewhere) or ``fresh`` (what another pod wrote a moment ago), the registry's."""
    rec = None if fresh else view.models.get(model_id)
    if rec is None:
        try:
            rec = await registry.get_model(model_id)
        except RegistryError as exc:
            raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
    if rec is None:
        raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(model_id)} is not registered")
    return rec


async def storage_config(view: Any, registry: Any, key: str) -> StorageConfig | None:
    """The storage config named ``key`` (None when it is not configured)."""
    cfg = view.storage.get(key)
    if cfg is None:
        try:
            cfg = await registry.get_storage(key)
        except RegistryError as exc:
            raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
    return cfg

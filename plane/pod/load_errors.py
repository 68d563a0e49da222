"""What a failed load tells the client and the registry."""

from __future__ import annotations

import asyncio
import logging

import grpc

from plane import storage
from plane.cache import NoRoom
from plane.pod.errors import MeshError
from plane.records import EtcdUnavailable
from plane.runtime import ModelLoadError
from plane.settings import format_size

__all__ = ["TooBig", "load_error"]

log = logging.getLogger("mesh.pod.copies")


class TooBig(Exception):
    """A copy that cannot fit in the pod: its file, or its measured session, exceeds the capacity."""

    def __init__(self, needs: int, capacity: int, what: str):
        super().__init__(f"needs {needs} bytes ({what}), capacity {capacity}")
        self.needs, self.capacity, self.what = needs, capacity, what


def load_error(model_id: str, pod_id: str, exc: BaseException, *, timeout_s: float) -> MeshError:
    """The error a failed load reports: its status code, a message naming the pod, and whether
    it counts as a load failure of the model (recorded, retried elsewhere)."""
    if isinstance(exc, TooBig):
        return MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                         f"cannot load {model_id} on {pod_id}: needs {format_size(exc.needs)} "
                         f"({exc.what}), capacity {format_size(exc.capacity)}", load_failed=True,
                         needs=exc.needs, capacity=exc.capacity)
    if isinstance(exc, MeshError):
        return exc
    if isinstance(exc, TimeoutError):
        return MeshError(grpc.StatusCode.UNAVAILABLE,
                         f"loading {model_id} on {pod_id} timed out after {timeout_s:.0f}s",
                         load_failed=True)
    if isinstance(exc, NoRoom):
        return MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED, f"cannot load {model_id} on {pod_id}: {exc}")
    if isinstance(exc, ModelLoadError | storage.StorageError):
        return MeshError(grpc.StatusCode.INTERNAL, f"loading {model_id} failed on {pod_id}: {exc}",
                         load_failed=True)
    if isinstance(exc, EtcdUnavailable):
        return MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable while loading {model_id}: {exc}")
    if isinstance(exc, asyncio.CancelledError):
        return MeshError(grpc.StatusCode.CANCELLED, f"loading {model_id} was cancelled")
    log.exception("unexpected load error for %s", model_id)
    return MeshError(grpc.StatusCode.INTERNAL, f"loading {model_id} failed on {pod_id}: "
                     f"{type(exc).__name__}: {exc}", load_failed=True)


"""A small synchronous client of the pods' ModelMesh management API.

Used by :class:`plane.api.PlaneClient` for operations that need a pod to act (loading, vmodel
transitions). It tries the given pod endpoints in turn until one answers.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

import grpc

from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.settings import MeshSettings

__all__ = ["ensure_loaded", "set_vmodel", "load_on", "unload_copy", "ManagementError"]

# The pods' internal headers (plane.pod.errors; the client does not import the pod package).
_HOP, _TOKEN = "mm-internal-hop", "mm-internal-token"
_PEER_UNLOAD = "/meshinternal.Peer/Unload"

T = TypeVar("T")


class ManagementError(RuntimeError):
    """A pod refused or failed the operation; the message is the pod's."""

    def __init__(self, code: grpc.StatusCode, message: str):
        super().__init__(message)
        self.code = code



def _call(endpoints: list[str], fn: Callable[[mgrpc.ModelMeshStub], T], settings: MeshSettings | None) -> T:
    from plane import tls

    settings = settings or MeshSettings()
    last: grpc.RpcError | None = None
    for endpoint in endpoints:
        with tls.sync_channel(endpoint, settings) as ch:
            try:
                return fn(mgrpc.ModelMeshStub(ch))
            except grpc.RpcError as exc:
                if exc.code() == grpc.StatusCode.UNAVAILABLE and "connect" in (exc.details() or "").lower():
                    last = exc
                    continue  # that pod is gone: ask the next one
                raise ManagementError(exc.code(), exc.details() or exc.code().name) from None
    assert last is not None
    raise ManagementError(last.code(), f"no pod answered: {last.details()}")


def ensure_loaded(endpoints: list[str], model_id: str, *, sync: bool, timeout: float,
                  settings: MeshSettings | None = None) -> Any:
    req = mpb.EnsureLoadedRequest(modelId=model_id, sync=sync)
    return _call(endpoints, lambda stub: stub.ensureLoaded(req, timeout=timeout), settings)


def set_vmodel(endpoints: list[str], vmodel_id: str, target: str, *, auto_delete: bool, owner: str, sync: bool,
               timeout: float, settings: MeshSettings | None = None) -> Any:
    req = mpb.SetVModelRequest(vModelId=vmodel_id, targetModelId=target, autoDeleteTargetModel=auto_delete,
                               owner=owner, sync=sync)
    return _call(endpoints, lambda stub: stub.setVModel(req, timeout=timeout), settings)


def load_on(endpoint: str, model_id: str, *, token: str, timeout: float, settings: MeshSettings | None = None) -> Any:
    """Have the pod at ``endpoint`` load the model itself (as a peer would ask it to)."""
    req = mpb.EnsureLoadedRequest(modelId=model_id, sync=True)
    md = ((_HOP, "1"), (_TOKEN, token))
    return _call([endpoint], lambda stub: stub.ensureLoaded(req, metadata=md, timeout=timeout), settings)


def unload_copy(endpoint: str, model_id: str, *, reason: str, token: str, settings: MeshSettings | None = None,
                timeout: float = 30.0) -> bool:
    """Have the pod at ``endpoint`` drop its copy of the model (after requests in flight)."""
    import json

    from plane import tls

    with tls.sync_channel(endpoint, settings or MeshSettings()) as ch:
        call = ch.unary_unary(_PEER_UNLOAD, request_serializer=lambda d: json.dumps(d).encode(),
                              response_deserializer=json.loads)
        try:
            reply = call({"model_id": model_id, "reason": reason}, metadata=((_TOKEN, token),), timeout=timeout)
        except grpc.RpcError as exc:
            raise ManagementError(exc.code(), exc.details() or exc.code().name) from None
    return bool(reply.get("unloaded"))

"""Both gRPC services registered on the pod's server (see ``edge`` for how errors map)."""

from __future__ import annotations

from typing import TYPE_CHECKING

import grpc

from plane.pod.edge import SERVER_NAME, SERVER_VERSION, handlers
from plane.pod.inference_api import InferenceServicer
from plane.pod.management_api import ManagementServicer
from plane.proto import inference_pb2 as ipb
from plane.proto import mmesh_pb2 as mpb

if TYPE_CHECKING:
    from plane.pod.server import Pod

__all__ = ["add_to_server", "InferenceServicer", "ManagementServicer", "SERVER_NAME", "SERVER_VERSION"]


def add_to_server(server: grpc.aio.Server, pod: Pod) -> None:
    """Register both services with deserializers that never raise."""
    # ModelInfer takes the request's bytes: a pod that forwards a request passes them on
    # without decoding and re-encoding (it reads only the model name).
    for servicer, module, service, raw in ((InferenceServicer(pod), ipb, "GRPCInferenceService", {"ModelInfer"}),
                                           (ManagementServicer(pod), mpb, "ModelMesh", set())):
        full = f"{module.DESCRIPTOR.package}.{service}"
        table = handlers(servicer, module, service, raw=frozenset(raw))
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full, table),))
        server.add_registered_method_handlers(full, table)



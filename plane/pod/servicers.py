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
    for servicer, module, service in ((InferenceServicer(pod), ipb, "GRPCInferenceService"),
                                      (ManagementServicer(pod), mpb, "ModelMesh")):
        full = f"{module.DESCRIPTOR.package}.{service}"
        table = handlers(servicer, module, service)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full, table),))
        server.add_registered_method_handlers(full, table)



"""The KServe V2 inference service (SPEC section 1): protobuf in, a call on the router, protobuf out."""

from __future__ import annotations

from typing import TYPE_CHECKING

from plane.pod.edge import SERVER_NAME, SERVER_VERSION, edge
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc

if TYPE_CHECKING:
    from plane.pod.server import Pod

__all__ = ["InferenceServicer"]


class InferenceServicer(igrpc.GRPCInferenceServiceServicer):
    def __init__(self, pod: Pod):
        self.pod = pod
        self.router = pod.router
        self.calls = pod.calls

    @edge
    async def ServerLive(self, request, context):  # noqa: N802 - gRPC names
        return ipb.ServerLiveResponse(live=True)

    @edge
    async def ServerReady(self, request, context):  # noqa: N802
        return ipb.ServerReadyResponse(ready=self.pod.is_ready())

    @edge
    async def ServerMetadata(self, request, context):  # noqa: N802
        return ipb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_mesh"])

    @edge
    async def ModelReady(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata())
        return ipb.ModelReadyResponse(ready=self.router.model_ready(request.name, call))

    @edge
    async def ModelMetadata(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata(), context.time_remaining())
        return await self.router.metadata(request.name, call)

    @edge
    async def ModelInfer(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata(), context.time_remaining())
        return await self.router.infer_raw(request, call)  # request: the message's bytes

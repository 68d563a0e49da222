"""The gRPC servicers: convert protobuf to calls on the pod's parts and results back.

No rule lives here. Errors become status codes at this edge only: :class:`MeshError` carries
its own, registry failures are UNAVAILABLE, registration races ABORTED, bytes that are not the
request message INVALID_ARGUMENT (the handlers are registered with deserializers that never
raise, so a client never sees UNKNOWN with a Python exception's name), and anything unexpected
INTERNAL with the details in the pod's log.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Any

import grpc

from plane import operations
from plane.pod.errors import LOAD_FAILED_TRAILER, MeshError, q
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.records import Conflict, CopyState, ModelRecord, RegistryError, VModelRecord

if TYPE_CHECKING:
    from plane.pod.server import Pod

__all__ = ["InferenceServicer", "ManagementServicer", "status_info", "vmodel_info", "SERVER_NAME", "SERVER_VERSION",
           "add_to_server"]

log = logging.getLogger("mesh.pod.servicers")

SERVER_NAME = "mesh-plane"
SERVER_VERSION = "0.1.0"

MS = mpb.ModelStatusInfo
VS = mpb.VModelStatusInfo
_STATUS = {"NOT_FOUND": MS.NOT_FOUND, "NOT_LOADED": MS.NOT_LOADED, "LOADING": MS.LOADING,
           "LOADED": MS.LOADED, "LOADING_FAILED": MS.LOADING_FAILED}
_VSTATUS = {"DEFINED": VS.DEFINED, "TRANSITIONING": VS.TRANSITIONING, "TRANSITION_FAILED": VS.TRANSITION_FAILED}


def status_info(rec: ModelRecord | None, reachable: Callable[[str], bool]) -> mpb.ModelStatusInfo:
    if rec is None:
        return mpb.ModelStatusInfo(status=MS.NOT_FOUND)
    copies = {p: c for p, c in rec.copies.items() if reachable(p)}
    status = "LOADED" if any(c.state == CopyState.LOADED for c in copies.values()) else (
        "LOADING" if copies else ("LOADING_FAILED" if rec.failed else "NOT_LOADED"))
    info = mpb.ModelStatusInfo(status=_STATUS[status])
    for pod, c in sorted(copies.items()):
        info.modelCopyInfos.add(location=pod, time=c.since_ms,
                                copyStatus=_STATUS["LOADED" if c.state == CopyState.LOADED else "LOADING"])
    for pod, f in sorted(rec.failed.items()):
        info.errors.append(f"{pod}: {f.message}")
        info.modelCopyInfos.add(location=pod, copyStatus=MS.LOADING_FAILED, time=f.time_ms)
    return info


def vmodel_info(rec: VModelRecord | None, models: dict[str, ModelRecord],
                reachable: Callable[[str], bool]) -> mpb.VModelStatusInfo:
    if rec is None:
        return mpb.VModelStatusInfo(status=VS.NOT_FOUND)
    info = mpb.VModelStatusInfo(status=_VSTATUS[rec.status()], activeModelId=rec.active,
                                targetModelId=rec.target, owner=rec.owner)
    info.activeModelStatus.CopyFrom(status_info(models.get(rec.active), reachable))
    info.targetModelStatus.CopyFrom(status_info(models.get(rec.target), reachable))
    return info


class Undecodable:
    """What a handler gets instead of a request whose bytes are not the message."""

    def __init__(self, message: str):
        self.message = message


def _safe_parser(cls: Any) -> Callable[[bytes], Any]:
    def parse(raw: bytes) -> Any:
        try:
            return cls.FromString(raw)
        except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: bad client bytes
            return Undecodable(f"the request is not a valid {cls.DESCRIPTOR.name} message")

    return parse


def _edge(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map the parts' errors to gRPC status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        try:
            if isinstance(request, Undecodable):
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            return await method(self, request, context)
        except MeshError as exc:
            if exc.load_failed:
                context.set_trailing_metadata(((LOAD_FAILED_TRAILER, "1"),))
            await context.abort(exc.code, exc.message)
        except operations.NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except operations.InUse as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except operations.ValidationError as exc:
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        except Conflict as exc:
            await context.abort(grpc.StatusCode.ABORTED, str(exc))
        except RegistryError as exc:
            await context.abort(grpc.StatusCode.UNAVAILABLE, str(exc))
        except (asyncio.CancelledError, grpc.aio.AbortError):
            raise
        except Exception:  # noqa: BLE001 - a bug: the client gets INTERNAL, the log the traceback
            log.exception("%s failed", method.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method.__name__} (see the pod's log)")

    return wrapper


def _handlers(servicer: Any, module: Any, service: str) -> dict[str, grpc.RpcMethodHandler]:
    desc = module.DESCRIPTOR.services_by_name[service]
    out = {}
    for m in desc.methods:
        request_cls = getattr(module, m.input_type.name)
        response_cls = getattr(module, m.output_type.name)
        out[m.name] = grpc.unary_unary_rpc_method_handler(
            getattr(servicer, m.name), request_deserializer=_safe_parser(request_cls),
            response_serializer=response_cls.SerializeToString)
    return out


def add_to_server(server: grpc.aio.Server, pod: Pod) -> None:
    """Register both services with deserializers that never raise."""
    for servicer, module, service in ((InferenceServicer(pod), ipb, "GRPCInferenceService"),
                                      (ManagementServicer(pod), mpb, "ModelMesh")):
        full = f"{module.DESCRIPTOR.package}.{service}"
        handlers = _handlers(servicer, module, service)
        server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(full, handlers),))
        server.add_registered_method_handlers(full, handlers)


class InferenceServicer(igrpc.GRPCInferenceServiceServicer):
    def __init__(self, pod: Pod):
        self.pod = pod
        self.router = pod.router
        self.calls = pod.calls

    @_edge
    async def ServerLive(self, request, context):  # noqa: N802 - gRPC names
        return ipb.ServerLiveResponse(live=True)

    @_edge
    async def ServerReady(self, request, context):  # noqa: N802
        return ipb.ServerReadyResponse(ready=self.pod.is_ready())

    @_edge
    async def ServerMetadata(self, request, context):  # noqa: N802
        return ipb.ServerMetadataResponse(name=SERVER_NAME, version=SERVER_VERSION, extensions=["model_mesh"])

    @_edge
    async def ModelReady(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata())
        return ipb.ModelReadyResponse(ready=self.router.model_ready(request.name, call))

    @_edge
    async def ModelMetadata(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata(), context.time_remaining())
        return await self.router.metadata(request.name, call)

    @_edge
    async def ModelInfer(self, request, context):  # noqa: N802
        call = self.calls.read(context.invocation_metadata(), context.time_remaining())
        return await self.router.infer(request, call)


class ManagementServicer(mgrpc.ModelMeshServicer):
    def __init__(self, pod: Pod):
        self.pod = pod
        self.router = pod.router

    def _status(self, rec: ModelRecord | None) -> mpb.ModelStatusInfo:
        return status_info(rec, self.pod.membership.reachable)

    @_edge
    async def registerModel(self, request, context):  # noqa: N802
        pod = self.pod
        info = request.modelInfo
        spec = operations.ModelSpec(request.modelId, info.path, info.key or "default", info.type)
        rec = await operations.register(pod.registry, spec, load_now=request.loadNow,
                                        last_used_ms=int(request.lastUsedTime), writer=pod.pod_id)
        pod.view.models.setdefault(rec.model_id, rec)
        if request.loadNow:
            if request.sync:
                await self.router.ensure_loaded_anywhere(rec.model_id)
            else:
                pod.spawn(self.router.ensure_loaded_anywhere(rec.model_id), f"loading {rec.model_id}")
        return self._status(await pod.registry.get_model(rec.model_id))

    @_edge
    async def unregisterModel(self, request, context):  # noqa: N802
        if not await operations.unregister(self.pod.registry, request.modelId, writer=self.pod.pod_id):
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(request.modelId)} is not registered")
        return mpb.UnregisterModelResponse()

    @_edge
    async def getModelStatus(self, request, context):  # noqa: N802
        return self._status(await self.pod.registry.get_model(request.modelId))

    @_edge
    async def ensureLoaded(self, request, context):  # noqa: N802
        pod = self.pod
        call = pod.calls.read(context.invocation_metadata())
        hop, purpose = call.hop, call.purpose
        await self.router.model_record(request.modelId)
        if request.lastUsedTime:
            stamp = int(request.lastUsedTime)

            def touch(m: ModelRecord) -> ModelRecord:
                m.last_used_ms = max(m.last_used_ms, stamp)
                return m

            await pod.registry.update_model(request.modelId, touch)
        if request.sync or hop:
            await self.router.ensure_loaded_anywhere(request.modelId, hop=hop, purpose=purpose)
        else:
            pod.spawn(self.router.ensure_loaded_anywhere(request.modelId), f"loading {request.modelId}")
            await asyncio.sleep(0)
        return self._status(await pod.registry.get_model(request.modelId))

    @_edge
    async def setVModel(self, request, context):  # noqa: N802
        rec = await self.pod.vmodels.set(request)
        return vmodel_info(rec, self.pod.view.models, self.pod.membership.reachable)

    @_edge
    async def deleteVModel(self, request, context):  # noqa: N802
        pod = self.pod
        rec = await pod.registry.get_vmodel(request.vModelId)
        if rec is not None and request.owner and rec.owner and rec.owner != request.owner:
            raise MeshError(grpc.StatusCode.FAILED_PRECONDITION, f"vmodel {q(request.vModelId)} has another owner")
        await operations.delete_vmodel(pod.registry, request.vModelId, writer=pod.pod_id)
        return mpb.DeleteVModelResponse()

    @_edge
    async def getVModelStatus(self, request, context):  # noqa: N802
        rec = await self.pod.registry.get_vmodel(request.vModelId)
        return vmodel_info(rec, self.pod.view.models, self.pod.membership.reachable)

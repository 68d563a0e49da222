"""The gRPC edge: errors become status codes here and nowhere else.

:class:`MeshError` carries its own code, registry failures are UNAVAILABLE, registration races
ABORTED, bytes that are not the request message INVALID_ARGUMENT (the handlers are registered
with deserializers that never raise, so a client never sees UNKNOWN with a Python exception's
name), and anything unexpected INTERNAL with the details in the pod's log. Also the conversions
of registry records into the management API's status messages.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from plane import operations
from plane.pod.errors import HOP_HEADER, LOAD_FAILED_TRAILER, MeshError
from plane.proto import mmesh_pb2 as mpb
from plane.records import Conflict, CopyState, ModelRecord, RegistryError, VModelRecord

__all__ = ["edge", "handlers", "status_info", "vmodel_info", "Undecodable", "SERVER_NAME", "SERVER_VERSION"]

log = logging.getLogger("mesh.pod.edge")

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


def edge(method: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
    """Map the parts' errors to gRPC status codes."""

    @functools.wraps(method)
    async def wrapper(self: Any, request: Any, context: grpc.aio.ServicerContext) -> Any:
        t0, response = time.perf_counter(), None
        try:
            if isinstance(request, Undecodable):
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, request.message)
            response = await method(self, request, context)
            return response
        except MeshError as exc:
            if exc.load_failed:
                context.set_trailing_metadata(((LOAD_FAILED_TRAILER, "1"),))
            await context.abort(exc.code, exc.message)
        except operations.NotFound as exc:
            await context.abort(grpc.StatusCode.NOT_FOUND, str(exc))
        except operations.InUse as exc:
            await context.abort(grpc.StatusCode.FAILED_PRECONDITION, str(exc))
        except operations.AlreadyExists as exc:
            await context.abort(grpc.StatusCode.ALREADY_EXISTS, str(exc))
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
        finally:
            _api_metrics(self, method.__name__, context, t0, request, response)

    return wrapper


def _api_metrics(servicer: Any, name: str, context: Any, t0: float, request: Any, response: Any) -> None:
    """ModelMesh's per-call series (modelmesh_api_request_milliseconds{method,code} and the payload
    sizes: :meth:`plane.metrics.PodMetrics.api_request`). No code and no answer: cancelled. A
    peer's forward is not an external request (counted where the client called, as ModelMesh's
    internal hops are not); the pod that runs it counts modelmesh_invoke_model_milliseconds."""
    try:
        if any(k == HOP_HEADER for k, _ in context.invocation_metadata() or ()):
            return
        code = context.code() or (grpc.StatusCode.OK if response is not None else grpc.StatusCode.CANCELLED)
        servicer.pod.metrics.api_request(name, code, (time.perf_counter() - t0) * 1000,
                                         None if isinstance(request, Undecodable) else request, response)
    except Exception:  # noqa: BLE001 - a metric must never fail a call
        log.debug("metrics for %s not recorded", name, exc_info=True)


def _bytes_or_message(response: Any) -> bytes:
    """A forwarded answer is passed on as the peer's bytes; a local one is serialised."""
    return response if type(response) is bytes else response.SerializeToString()


def handlers(servicer: Any, module: Any, service: str, *, raw: frozenset[str] = frozenset()
             ) -> dict[str, grpc.RpcMethodHandler]:
    """Method handlers for a service. Methods named in ``raw`` get the request's bytes undecoded
    (the servicer parses them only if it serves the call itself) and may answer with bytes."""
    desc = module.DESCRIPTOR.services_by_name[service]
    out = {}
    for m in desc.methods:
        request_cls = getattr(module, m.input_type.name)
        response_cls = getattr(module, m.output_type.name)
        if m.name in raw:
            out[m.name] = grpc.unary_unary_rpc_method_handler(
                getattr(servicer, m.name), request_deserializer=None, response_serializer=_bytes_or_message)
        else:
            out[m.name] = grpc.unary_unary_rpc_method_handler(
                getattr(servicer, m.name), request_deserializer=_safe_parser(request_cls),
                response_serializer=response_cls.SerializeToString)
    return out

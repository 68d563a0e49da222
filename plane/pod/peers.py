"""Talking to other pods: forwarding requests, asking for loads and unloads.

Routing and the leader only see :class:`PeerClient`; :class:`GrpcPeers` is the real one (one
long-lived channel and stub per peer), and tests pass a fake that records calls. Every failure
comes back as a :class:`~plane.pod.errors.PeerError` carrying the status code.

A forwarded ``ModelInfer`` (the client's bytes, passed on undecoded) goes over the peer's hop
port when it has one (:mod:`plane.pod.hop`): the first forward to a peer asks it for the port
(``/meshinternal.Peer/Hop``) in the background and goes over gRPC; later ones use the hop
connection. A peer without a hop port, or whose hop port cannot be reached, is asked again
after ``HOP_RETRY_S``; meanwhile forwarding to it stays on gRPC.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any, Protocol

import grpc
import grpc.aio

from plane import tls
from plane.pod.errors import HOP_HEADER, LOAD_FAILED_TRAILER, PURPOSE_HEADER, TOKEN_HEADER, MeshError, PeerError
from plane.pod.hop import HopClient
from plane.proto import inference_pb2_grpc as igrpc
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc

__all__ = ["PeerClient", "GrpcPeers", "PEER_UNLOAD", "PEER_HOP", "peer_handler", "FORWARD_TIMEOUT_S"]

log = logging.getLogger("mesh.pod.peers")

PEER_UNLOAD = "/meshinternal.Peer/Unload"  # pod-to-pod only: the leader asks a pod to drop a copy
PEER_HOP = "/meshinternal.Peer/Hop"  # pod-to-pod only: which port a pod takes forwarded inference on
RAW_INFER = "/inference.GRPCInferenceService/ModelInfer"
FORWARD_TIMEOUT_S = 120.0
PEER_UNLOAD_TIMEOUT_S = 30.0
HOP_RETRY_S = 30.0


def _json_bytes(obj: Any) -> bytes:
    return json.dumps(obj).encode()


class PeerClient(Protocol):
    """What the pod's parts need from other pods."""

    in_flight: dict[str, int]

    async def call(self, pod_id: str, method: str, request: Any, metadata: Any, *, timeout: float) -> Any:
        """Forward an inference RPC (``ModelInfer`` / ``ModelMetadata``) to a peer, with the
        client's ``mm-*`` headers (``metadata``), within ``timeout`` seconds."""
        ...

    async def ensure_loaded(self, pod_id: str, model_id: str, *, sync: bool, purpose: str, timeout: float) -> None:
        ...

    async def unload(self, pod_id: str, model_id: str, reason: str) -> bool:
        ...

    def forget(self, pod_id: str) -> None:
        ...

    async def close(self) -> None:
        ...


def _peer_error(pod_id: str, exc: grpc.aio.AioRpcError) -> PeerError:
    trailing = dict(exc.trailing_metadata() or ())
    return PeerError(pod_id, exc.code(), exc.details() or exc.code().name,
                     load_failed=trailing.get(LOAD_FAILED_TRAILER) == "1")


class GrpcPeers:
    """Pooled channels to peers, found through ``endpoint_of``."""

    def __init__(self, settings: Any, endpoint_of: Callable[[str], str | None], token: Callable[[], str | None]):
        self.settings = settings
        self.endpoint_of = endpoint_of
        self.token = token
        self.in_flight: dict[str, int] = defaultdict(int)
        self._channels: dict[str, tuple[str, grpc.aio.Channel]] = {}
        self._stubs: dict[str, igrpc.GRPCInferenceServiceStub] = {}
        self._raw_infer: dict[str, Any] = {}
        # Forwarding over hop connections: not with TLS (the hop is plaintext), not when switched off.
        hop = getattr(settings, "hop_port", -1) >= 0 and not tls.enabled(settings)
        self.hops = HopClient(token, max_frame=settings.max_message_bytes) if hop else None
        self._hop_retry: dict[str, float] = {}  # peers without a usable hop port: ask again after
        self._hop_learning: set[str] = set()

    def channel(self, pod_id: str) -> grpc.aio.Channel:
        endpoint = self.endpoint_of(pod_id)
        got = self._channels.get(pod_id)
        if got is not None and (endpoint is None or got[0] == endpoint):
            return got[1]
        if endpoint is None:
            raise MeshError(grpc.StatusCode.UNAVAILABLE, f"pod {pod_id} is not registered")
        opts = [("grpc.max_receive_message_length", self.settings.max_message_bytes),
                ("grpc.max_send_message_length", self.settings.max_message_bytes)]
        ch = tls.aio_channel(endpoint, self.settings, options=opts)
        self._channels[pod_id] = (endpoint, ch)
        self._stubs.pop(pod_id, None)
        self._raw_infer.pop(pod_id, None)
        return ch

    def _internal(self, *extra: tuple[str, str]) -> tuple[tuple[str, str], ...]:
        return ((HOP_HEADER, "1"), (TOKEN_HEADER, self.token() or ""), *extra)

    def _callable(self, pod_id: str, method: str, request: Any) -> Any:
        if type(request) is bytes:  # a request passed on undecoded; the answer comes back as bytes
            fn = self._raw_infer.get(pod_id)
            if fn is None:
                fn = self._raw_infer[pod_id] = self.channel(pod_id).unary_unary(
                    RAW_INFER, request_serializer=None, response_deserializer=None)
            return fn
        stub = self._stubs.get(pod_id)
        if stub is None:  # one stub per peer: building one costs more than the call's own Python work
            stub = self._stubs[pod_id] = igrpc.GRPCInferenceServiceStub(self.channel(pod_id))
        return getattr(stub, method)

    async def call(self, pod_id: str, method: str, request: Any, metadata: Any, *, timeout: float) -> Any:
        hops = self.hops
        if hops is not None and type(request) is bytes:
            if hops.connected(pod_id):
                self.in_flight[pod_id] += 1
                try:
                    return await hops.call(pod_id, request, tuple(metadata), timeout=min(timeout, FORWARD_TIMEOUT_S))
                finally:
                    self.in_flight[pod_id] -= 1
            self._learn_hop(pod_id)  # this one goes over gRPC
        fn = self._callable(pod_id, method, request)
        self.in_flight[pod_id] += 1
        try:
            return await fn(request, metadata=(*metadata, *self._internal()), timeout=min(timeout, FORWARD_TIMEOUT_S))
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(pod_id, exc) from None
        finally:
            self.in_flight[pod_id] -= 1

    def _learn_hop(self, pod_id: str) -> None:
        if pod_id in self._hop_learning or self._hop_retry.get(pod_id, 0.0) > time.monotonic():
            return
        self._hop_learning.add(pod_id)
        task = asyncio.get_running_loop().create_task(self._connect_hop(pod_id), name=f"hop to {pod_id}")
        task.add_done_callback(lambda _: self._hop_learning.discard(pod_id))

    async def _connect_hop(self, pod_id: str) -> None:
        """Ask the peer for its hop port and connect to it; on any failure, gRPC until HOP_RETRY_S."""
        assert self.hops is not None
        endpoint = self.endpoint_of(pod_id)
        try:
            if endpoint is None:
                raise ConnectionError("not registered")
            ask = self.channel(pod_id).unary_unary(PEER_HOP, request_serializer=_json_bytes,
                                                   response_deserializer=json.loads)
            reply = await ask({}, metadata=self._internal(), timeout=PEER_UNLOAD_TIMEOUT_S)
            port = int(reply.get("port") or 0)
            if port <= 0:
                raise ConnectionError("it has no hop port")
            host = endpoint.rpartition(":")[0].strip("[]")
            await self.hops.connect(pod_id, host, port)
            self._hop_retry.pop(pod_id, None)
            log.info("forwarding to %s over its hop port %s:%d", pod_id, host, port)
        except (grpc.aio.AioRpcError, OSError, ConnectionError, TimeoutError, MeshError, ValueError) as exc:
            self._hop_retry[pod_id] = time.monotonic() + HOP_RETRY_S
            why = exc.details() if isinstance(exc, grpc.aio.AioRpcError) else (str(exc) or type(exc).__name__)
            log.info("forwarding to %s stays on gRPC for %.0fs: %s", pod_id, HOP_RETRY_S, why)

    async def ensure_loaded(self, pod_id: str, model_id: str, *, sync: bool, purpose: str, timeout: float) -> None:
        stub = mgrpc.ModelMeshStub(self.channel(pod_id))
        try:
            await stub.ensureLoaded(mpb.EnsureLoadedRequest(modelId=model_id, sync=sync),
                                    metadata=self._internal((PURPOSE_HEADER, purpose)), timeout=timeout)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(pod_id, exc) from None

    async def unload(self, pod_id: str, model_id: str, reason: str) -> bool:
        call = self.channel(pod_id).unary_unary(PEER_UNLOAD, request_serializer=_json_bytes,
                                                response_deserializer=json.loads)
        try:
            reply = await call({"model_id": model_id, "reason": reason}, metadata=self._internal(),
                               timeout=PEER_UNLOAD_TIMEOUT_S)
        except grpc.aio.AioRpcError as exc:
            raise _peer_error(pod_id, exc) from None
        return bool(reply.get("unloaded"))

    def forget(self, pod_id: str) -> None:
        got = self._channels.pop(pod_id, None)
        self._stubs.pop(pod_id, None)
        self._raw_infer.pop(pod_id, None)
        self.in_flight.pop(pod_id, None)
        self._hop_retry.pop(pod_id, None)
        if self.hops is not None:
            self.hops.forget(pod_id)
        if got is not None:
            asyncio.get_running_loop().create_task(got[1].close(), name=f"close channel {pod_id}")

    async def close(self) -> None:
        if self.hops is not None:
            self.hops.close()
        for _, ch in self._channels.values():
            try:
                await ch.close()
            except Exception:  # noqa: BLE001 - closing at shutdown: nothing left to do with the error
                pass
        self._channels.clear()
        self._stubs.clear()


def peer_handler(unload: Callable[[str, str], Any], hop_port: Callable[[], int],
                 require_peer: Callable[[Any], None]) -> grpc.GenericRpcHandler:
    """The server side of :data:`PEER_UNLOAD` and :data:`PEER_HOP`: for pods of this plane only."""

    async def handle_unload(request: Any, context: grpc.aio.ServicerContext) -> dict:
        try:
            require_peer(context.invocation_metadata())
        except MeshError as exc:
            await context.abort(exc.code, exc.message)
        if not isinstance(request, dict):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, "internal unload request is not a JSON object")
        done = await unload(str(request.get("model_id", ""))[:512], str(request.get("reason", "planner"))[:512])
        return {"unloaded": done}

    async def handle_hop(request: Any, context: grpc.aio.ServicerContext) -> dict:
        try:
            require_peer(context.invocation_metadata())
        except MeshError as exc:
            await context.abort(exc.code, exc.message)
        return {"port": hop_port()}

    def parse(raw: bytes) -> Any:
        try:
            return json.loads(raw)
        except ValueError:
            return None  # answered INVALID_ARGUMENT (after the token check), never UNKNOWN

    service, _, unload_method = PEER_UNLOAD.strip("/").partition("/")
    hop_method = PEER_HOP.rpartition("/")[2]
    return grpc.method_handlers_generic_handler(service, {
        unload_method: grpc.unary_unary_rpc_method_handler(handle_unload, request_deserializer=parse,
                                                           response_serializer=_json_bytes),
        hop_method: grpc.unary_unary_rpc_method_handler(handle_hop, request_deserializer=parse,
                                                        response_serializer=_json_bytes),
    })

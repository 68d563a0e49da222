"""Serving a request from a local copy: decode, run, encode.

Small requests to fast models run inline on the event loop (a thread hop costs more than the
model). A large request (over ``offload_request_bytes``) or a slow model runs on a worker
thread, so one request never stalls the pod's other work; after a large one the C allocator is
asked to return freed memory to the system (``malloc_trim``), so one big request does not
leave the pod holding its peak.
"""

from __future__ import annotations

import asyncio
import ctypes
import ctypes.util
import logging
import time
from collections.abc import Awaitable
from typing import Any

import grpc

from plane.pod.batching import Batcher, RunCost, batchable
from plane.pod.errors import MeshError
from plane.pod.isolated import IsolatedError, IsolatedRunner
from plane.proto import inference_pb2 as ipb
from plane.runtime import ModelSession
from plane.tensors import TensorError, decode_inputs, encode_outputs, request_payload_bytes

__all__ = ["Server", "metadata_response", "INLINE_RUN_LIMIT_US"]

log = logging.getLogger("mesh.pod.serving")

INLINE_RUN_LIMIT_US = 1000.0  # sessions faster than this run on the event loop, others on a thread


def _malloc_trim() -> Any:
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6")
        fn = libc.malloc_trim
        fn.argtypes = [ctypes.c_size_t]
        return fn
    except (OSError, AttributeError):  # not glibc: nothing to trim with
        return None


_TRIM = _malloc_trim()


def metadata_response(sess: ModelSession) -> ipb.ModelMetadataResponse:
    resp = ipb.ModelMetadataResponse(name=sess.model_id, versions=["1"], platform="onnxruntime_onnx")
    for spec in sess.inputs.values():
        resp.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in sess.outputs.values():
        resp.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return resp


class Server:
    """Runs requests on this pod's sessions and accounts for them."""

    def __init__(self, *, settings: Any, copies: Any, usage: Any, metrics: Any):
        self.copies = copies
        self.usage = usage
        self.metrics = metrics
        self.in_flight = 0
        self._max_elements = settings.max_message_bytes  # no tensor can hold more elements than bytes
        # Decoded size of one request's inputs: BYTES elements cost more decoded than on the wire.
        self._max_bytes = 4 * settings.max_message_bytes
        self._offload_bytes = settings.offload_request_bytes
        self._isolate_bytes = settings.isolate_string_request_bytes
        self.isolated = IsolatedRunner()  # a child process, started by the first request it runs
        self._batch_max = settings.batch_max_size
        self._batch_delay_ms = settings.batch_max_delay_ms
        self._batch_min_us = settings.batch_min_run_us
        self.batchers: dict[str, Batcher] = {}
        self.costs: dict[str, RunCost] = {}

    def cost(self, sess: ModelSession) -> RunCost:
        """What a run of ``sess`` costs (a reloaded model starts again)."""
        c = self.costs.get(sess.model_id)
        if c is None or c.sess is not sess:
            c = self.costs[sess.model_id] = RunCost(sess)
        return c

    def _batcher(self, sess: ModelSession) -> Batcher:
        b = self.batchers.get(sess.model_id)
        if b is None or b.sess is not sess:  # a reloaded model gets a new batcher
            b = self.batchers[sess.model_id] = Batcher(sess, max_size=self._batch_max,
                                                       max_delay_ms=self._batch_delay_ms, metrics=self.metrics)
        return b

    async def compute_batched(self, sess: ModelSession, request: ipb.ModelInferRequest) -> ipb.ModelInferResponse:
        try:
            inputs = decode_inputs(request, sess.inputs, max_elements=self._max_elements, max_bytes=self._max_bytes)
            requested = [o.name for o in request.outputs] if request.outputs else None
            outputs = await self._batcher(sess).run(inputs, requested)
            response = ipb.ModelInferResponse(model_name=sess.model_id, id=request.id)
            encode_outputs(response, outputs, requested)
            return response
        except TensorError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc

    def compute(self, sess: ModelSession, request: ipb.ModelInferRequest) -> ipb.ModelInferResponse:
        """Decode, run, encode: no event loop needed (runs inline or on a worker thread)."""
        try:
            inputs = decode_inputs(request, sess.inputs, max_elements=self._max_elements, max_bytes=self._max_bytes)
            requested = [o.name for o in request.outputs] if request.outputs else None
            t0 = time.thread_time()
            outputs = sess.run(inputs, requested)
            self.cost(sess).note((time.thread_time() - t0) * 1e6)
            response = ipb.ModelInferResponse(model_name=sess.model_id, id=request.id)
            encode_outputs(response, outputs, requested)
            return response
        except TensorError as exc:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc

    async def serve_raw(self, sess: ModelSession, raw: bytes, parse: Any) -> ipb.ModelInferResponse | bytes:
        """Serve a request given as the bytes received: a large one entirely on a worker thread."""
        if self._isolate_bytes and len(raw) >= self._isolate_bytes and sess.has_strings and sess.local_path:
            return await self._accounted(sess, self._run_isolated(sess, raw, parse))
        if len(raw) < self._offload_bytes:
            return await self.serve(sess, parse(raw), wire_size=len(raw))
        return await self._accounted(sess, asyncio.to_thread(self._compute_trimmed, sess, raw, parse))

    async def _run_isolated(self, sess: ModelSession, raw: bytes, parse: Any) -> bytes:
        """The serialized response from the child process (see plane.pod.isolated). When the
        child cannot load the model's file (a scratch download deleted after loading), the
        request runs here on a worker thread instead."""
        try:
            return await self.isolated.run(model_type=sess.model_type, model_id=sess.model_id, path=sess.local_path,
                                           raw=raw, max_elements=self._max_elements, max_bytes=self._max_bytes)
        except IsolatedError as exc:
            if exc.code == grpc.StatusCode.UNAVAILABLE:
                log.info("large string request for %s runs in the pod: %s", sess.model_id, exc)
                return await asyncio.to_thread(self._compute_trimmed, sess, raw, parse)
            raise MeshError(exc.code, str(exc)) from exc

    def _compute_trimmed(self, sess: ModelSession, request: ipb.ModelInferRequest | bytes,
                         parse: Any = None) -> Any:
        """:meth:`compute` for a large request on a worker thread, then freed memory goes back to
        the system. Given the bytes received (and ``parse``), it answers serialized bytes."""
        try:
            if isinstance(request, bytes):
                return self.compute(sess, parse(request)).SerializeToString()
            return self.compute(sess, request)
        finally:
            if _TRIM is not None:
                _TRIM(0)

    async def _accounted(self, sess: ModelSession, work: Awaitable[Any]) -> Any:
        """Run ``work`` (a request on ``sess``) as one request: in flight on the pod and on the
        copy (which keeps it out of eviction), the copy touched, usage and latency counted."""
        model_id = sess.model_id
        entry = self.copies.cache.get(model_id)
        if entry is not None:
            entry.in_flight += 1
            self.copies.cache.touch(model_id, time.time() * 1000)
        self.in_flight += 1
        t0 = time.perf_counter()
        try:
            response = await work
        finally:
            self.in_flight -= 1
            if entry is not None:
                entry.in_flight -= 1
        self.usage.record(model_id)
        self.metrics.request(model_id, (time.perf_counter() - t0) * 1000)
        return response

    async def serve(self, sess: ModelSession, request: ipb.ModelInferRequest, *,
                    wire_size: int | None = None) -> ipb.ModelInferResponse:
        """Serve from the local session. ``wire_size`` is the request's size as received (free on
        the raw path); otherwise it is estimated from the declared shapes."""
        return await self._accounted(sess, self._execute(sess, request, wire_size))

    async def _execute(self, sess: ModelSession, request: ipb.ModelInferRequest,
                       wire_size: int | None) -> ipb.ModelInferResponse:
        size = wire_size if wire_size is not None else request_payload_bytes(request)
        if size >= self._offload_bytes:
            return await asyncio.to_thread(self._compute_trimmed, sess, request)
        cost = self.cost(sess)
        if self._batch_max > 1 and batchable(sess, self._batch_min_us, cost.us):
            return await self.compute_batched(sess, request)
        if cost.us >= INLINE_RUN_LIMIT_US:
            return await asyncio.to_thread(self.compute, sess, request)
        return self.compute(sess, request)

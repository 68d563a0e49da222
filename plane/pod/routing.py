"""Routing: which pod serves a request, and where a model gets loaded.

Any pod accepts any request. A hit on a local copy is served here. Otherwise the request goes
to a pod holding a copy (fewest requests in flight), or to the pod placement chooses, which
loads the model and holds the request until the copy is ready. A forwarded request carries
``mm-internal-hop`` so the receiver serves it itself and never forwards again. A peer that does
not answer is dropped from this request's choices and the request retried elsewhere.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

import grpc

from plane import placement
from plane.pod.copies import Copies
from plane.pod.errors import HOP_HEADER, PURPOSE_HEADER, MeshError, PeerError, Purpose
from plane.pod.peers import PeerClient
from plane.proto import inference_pb2 as ipb
from plane.records import FailureInfo, ModelRecord, RegistryError, now_ms
from plane.runtime import ModelSession
from plane.tensors import TensorError, decode_inputs, encode_outputs

__all__ = ["Router", "INLINE_RUN_LIMIT_US", "metadata_response", "internal_headers"]

INLINE_RUN_LIMIT_US = 1000.0  # sessions faster than this run on the event loop, others on a thread


def internal_headers(metadata: Any) -> tuple[bool, str]:
    """(forwarded by a peer, load purpose) from a call's metadata."""
    hop, purpose = False, Purpose.REQUEST
    for key, value in metadata or ():
        if key == HOP_HEADER:
            hop = True
        elif key == PURPOSE_HEADER:
            purpose = value if value in (Purpose.REQUEST, Purpose.PLANNED) else Purpose.REQUEST
    return hop, purpose


def metadata_response(sess: ModelSession) -> ipb.ModelMetadataResponse:
    resp = ipb.ModelMetadataResponse(name=sess.model_id, versions=["1"], platform="onnxruntime_onnx")
    for spec in sess.inputs.values():
        resp.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    for spec in sess.outputs.values():
        resp.outputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    return resp


class Router:
    def __init__(self, *, pod_id: str, settings: Any, registry: Any, view: Any, copies: Copies,
                 peers: PeerClient, membership: Any, usage: Any, metrics: Any, shutting_down: Any):
        self.pod_id = pod_id
        self.settings = settings
        self.registry = registry
        self.view = view
        self.copies = copies
        self.peers = peers
        self.membership = membership
        self.usage = usage
        self.metrics = metrics
        self.shutting_down = shutting_down  # () -> bool
        self.in_flight = 0
        self._max_elements = settings.max_message_bytes  # no tensor can hold more elements than bytes
        self._pending_loader: dict[str, tuple[str, float]] = {}  # model -> (loader pod, until)
        self._expiry_ms = int(settings.failure_expiry_s * 1000)

    # -- naming ------------------------------------------------------------------------------------

    def resolve(self, name: str, metadata: Any) -> tuple[str, bool]:
        """(model id, forwarded-by-a-peer) from the request name and gRPC metadata."""
        model_id = vmodel_id = None
        hop = False
        for key, value in metadata or ():
            if key == HOP_HEADER:
                hop = True
            elif key == "mm-model-id":
                model_id = value
            elif key == "mm-vmodel-id":
                vmodel_id = value
            elif key == "mm-model-id-bin":
                model_id = value.decode("utf-8") if isinstance(value, bytes) else value
            elif key == "mm-vmodel-id-bin":
                vmodel_id = value.decode("utf-8") if isinstance(value, bytes) else value
        if model_id and vmodel_id:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "request names both a model id and a vmodel id")
        if vmodel_id:
            v = self.view.vmodels.get(vmodel_id)
            if v is None or not v.active:
                raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {vmodel_id!r} is not defined")
            return v.active, hop
        if model_id:
            return model_id, hop
        if not name:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty")
        v = self.view.vmodels.get(name)
        if v is not None and v.active:
            return v.active, hop
        return name, hop

    async def model_record(self, model_id: str) -> ModelRecord:
        rec = self.view.models.get(model_id)
        if rec is None:
            # Not yet seen by the watch (just registered elsewhere): one read on the miss path only.
            try:
                rec = await self.registry.get_model(model_id)
            except RegistryError as exc:
                raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} is not registered")
        return rec

    async def _fresh_record(self, model_id: str) -> ModelRecord:
        try:
            rec = await self.registry.get_model(model_id)
        except RegistryError as exc:
            raise MeshError(grpc.StatusCode.UNAVAILABLE, f"registry unavailable: {exc}") from exc
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} is not registered")
        return rec

    # -- serving -----------------------------------------------------------------------------------

    async def infer(self, request: ipb.ModelInferRequest, metadata: Any) -> ipb.ModelInferResponse:
        model_id, hop = self.resolve(request.model_name, metadata)
        sess = self.copies.sessions.get(model_id)
        if sess is not None:
            return await self.serve_local(sess, request)
        if hop:
            return await self.serve_local(await self.copies.ensure_local(model_id), request)
        return await self.route(model_id, "ModelInfer", request, metadata)

    async def serve_local(self, sess: ModelSession, request: ipb.ModelInferRequest) -> ipb.ModelInferResponse:
        model_id = sess.model_id
        entry = self.copies.cache.get(model_id)
        if entry is not None:
            entry.in_flight += 1
            self.copies.cache.touch(model_id, time.time() * 1000)
        self.in_flight += 1
        t0 = time.perf_counter()
        try:
            try:
                inputs = decode_inputs(request, sess.inputs, max_elements=self._max_elements)
                requested = [o.name for o in request.outputs] if request.outputs else None
                if sess.avg_run_us < INLINE_RUN_LIMIT_US:
                    outputs = sess.run(inputs, requested)
                else:
                    outputs = await asyncio.to_thread(sess.run, inputs, requested)
                response = ipb.ModelInferResponse(model_name=model_id, id=request.id)
                encode_outputs(response, outputs, requested)
            except TensorError as exc:
                raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, str(exc)) from exc
        finally:
            self.in_flight -= 1
            if entry is not None:
                entry.in_flight -= 1
        self.usage.record(model_id)
        self.metrics.request(model_id, (time.perf_counter() - t0) * 1000)
        return response

    async def metadata(self, name: str, metadata: Any) -> ipb.ModelMetadataResponse:
        model_id, hop = self.resolve(name, metadata)
        sess = self.copies.sessions.get(model_id)
        if sess is not None:
            return metadata_response(sess)
        rec = await self.model_record(model_id)
        if rec.io:
            resp = ipb.ModelMetadataResponse(name=model_id, versions=["1"], platform="onnxruntime_onnx")
            for n, dt, shape in rec.io.get("inputs", []):
                resp.inputs.add(name=n, datatype=dt, shape=shape)
            for n, dt, shape in rec.io.get("outputs", []):
                resp.outputs.add(name=n, datatype=dt, shape=shape)
            return resp
        if hop:
            return metadata_response(await self.copies.ensure_local(model_id))
        return await self.route(model_id, "ModelMetadata", ipb.ModelMetadataRequest(name=model_id), metadata)

    def model_ready(self, name: str, metadata: Any) -> bool:
        model_id, _ = self.resolve(name, metadata)
        if model_id in self.copies.sessions:
            return True
        rec = self.view.models.get(model_id)
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {model_id!r} is not registered")
        return any(self.membership.reachable(p) for p in rec.loaded_on())

    # -- the miss path -----------------------------------------------------------------------------

    def _candidates(self, rec: ModelRecord, tried: set[str]) -> tuple[list[str], list[str]]:
        def ok(p: str) -> bool:
            if p in tried or not self.membership.reachable(p):
                return False
            inst = self.view.instances.get(p)
            return inst is None or not inst.shutting_down or p == self.pod_id

        return [p for p in rec.loaded_on() if ok(p)], [p for p in rec.loading_on() if ok(p)]

    async def route(self, model_id: str, method: str, request: Any, metadata: Any) -> Any:
        """Serve a request for a model this pod does not hold."""
        tried: set[str] = set()
        last_error: MeshError | None = None
        t_miss = time.perf_counter()
        fresh = False
        for _ in range(self.settings.route_retries + 1):
            # After a failed load, read the record the loader wrote (what it measured, where it
            # failed) rather than a view that may not have it yet.
            rec = await self._fresh_record(model_id) if fresh else await self.model_record(model_id)
            holders, loading = self._candidates(rec, tried)
            if holders:
                target: str | None = placement.choose_copy(holders, self.peers.in_flight, prefer=self.pod_id)
            elif loading:
                target = loading[0]
            else:
                # A burst of misses for one model from this pod goes to one loader, not to
                # whichever pod each request's random tie-break would pick.
                pending = self._pending_loader.get(model_id)
                if pending and pending[1] > time.monotonic() and pending[0] not in tried and \
                        self.membership.reachable(pending[0]):
                    target = pending[0]
                else:
                    target = self.choose_loader(rec, exclude=tried)
                    if target is not None:
                        self._pending_loader[model_id] = (target, time.monotonic() + self.settings.load_timeout_s)
                if target is None:
                    raise last_error or self._unplaceable(rec)
            assert target is not None
            if target == self.pod_id:
                try:
                    sess = await self.copies.ensure_local(model_id)
                except MeshError as exc:
                    self._pending_loader.pop(model_id, None)
                    if not exc.load_failed:
                        raise
                    tried.add(target)
                    last_error, fresh = exc, True
                    continue  # another pod may load it (this one's failure is recorded)
                self._pending_loader.pop(model_id, None)
                if method == "ModelInfer":
                    return await self.serve_local(sess, request)
                return metadata_response(sess)
            try:
                response = await self.peers.call(target, method, request, metadata)
            except PeerError as exc:
                self._pending_loader.pop(model_id, None)
                tried.add(target)
                if exc.unreachable:
                    last_error = MeshError(exc.code, f"pod {target} unavailable: {exc.details}")
                    continue
                if exc.load_failed:
                    last_error = MeshError(exc.code, exc.details, load_failed=True)
                    rec = await self._fresh_record(model_id)
                    if len(rec.live_failures(now_ms(), self._expiry_ms)) >= self.settings.max_load_failures:
                        raise last_error from None
                    fresh = True
                    continue
                raise MeshError(exc.code, exc.details) from None
            if not holders:
                self.metrics.cache_miss((time.perf_counter() - t_miss) * 1000)
                self._pending_loader.pop(model_id, None)
            return response
        assert last_error is not None
        raise last_error

    def _failures(self, rec: ModelRecord) -> tuple[dict[str, FailureInfo], int]:
        """Live load failures per pod (with this pod's own, which it knows before its view does)
        and the largest size a load has measured or needed."""
        failed = dict(rec.failed)
        mine = self.copies.failures.get(rec.model_id)
        if mine is not None:
            failed[self.pod_id] = mine
        now = now_ms()
        live = {p: f for p, f in failed.items() if now - f.time_ms < self._expiry_ms}
        return live, max([rec.size, *(f.needs for f in live.values())])

    def _unplaceable(self, rec: ModelRecord) -> MeshError:
        pods = [p for p in self.view.instances.values() if not p.shutting_down]
        largest = max((p.capacity for p in pods), default=0)
        failures, size = self._failures(rec)
        if size and size > largest:
            return MeshError(grpc.StatusCode.RESOURCE_EXHAUSTED,
                             f"model {rec.model_id!r} needs {size} bytes; the largest pod holds {largest}",
                             load_failed=True)
        if failures:
            reasons = "; ".join(sorted({f.message for f in failures.values()}))
            return MeshError(grpc.StatusCode.UNAVAILABLE, f"model {rec.model_id!r} failed to load: {reasons}",
                             load_failed=True)
        return MeshError(grpc.StatusCode.UNAVAILABLE,
                         f"no pod can load model {rec.model_id!r}: all pods are full, shutting down or failed")

    def choose_loader(self, rec: ModelRecord, *, exclude: set[str]) -> str | None:
        """The pod that should load ``rec`` (None if none can). Pods where the copy did not fit
        stay excluded while their capacity is unchanged; other failures are tried again last."""
        failures, known = self._failures(rec)
        size = known or placement.predict_size(rec.file_size, self.settings.size_multiplier)
        pods = [p for p in self.view.instances.values() if not p.shutting_down]
        if self.pod_id not in self.view.instances and not self.shutting_down():
            pods.append(self.membership.record())
        never = {p.pod_id for p in pods if p.pod_id in failures and failures[p.pod_id].excludes(p.capacity)}
        choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude | set(failures) | never)
        if choice is None and set(failures) - exclude - never:
            # every pod failed once for another reason: try again on one of them rather than give up
            choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude | never)
        return choice.pod_id if choice else None

    async def ensure_loaded_anywhere(self, model_id: str, *, hop: bool = False,
                                     purpose: str = Purpose.REQUEST) -> None:
        """Load a copy somewhere (here when ``hop``: a peer chose us) unless one exists."""
        if hop:
            await self.copies.ensure_local(model_id, purpose=purpose, settle=True)
            return
        tried: set[str] = set()
        last_error: MeshError | None = None
        for attempt in range(self.settings.max_load_failures + 1):
            rec = await (self._fresh_record(model_id) if attempt else self.model_record(model_id))
            if any(self.membership.reachable(p) for p in rec.loaded_on()):
                return
            target = self.choose_loader(rec, exclude=tried)
            if target is None:
                raise last_error or self._unplaceable(rec)
            if target == self.pod_id:
                try:
                    await self.copies.ensure_local(model_id, purpose=purpose, settle=True)
                    return
                except MeshError as exc:
                    if not exc.load_failed:
                        raise
                    tried.add(target)
                    last_error = exc
                    continue
            try:
                await self.peers.ensure_loaded(target, model_id, sync=True, purpose=purpose,
                                               timeout=self.settings.load_timeout_s + 5)
                return
            except PeerError as exc:
                tried.add(target)
                if not (exc.unreachable or exc.load_failed or exc.code in (
                        grpc.StatusCode.INTERNAL, grpc.StatusCode.FAILED_PRECONDITION)):
                    raise MeshError(exc.code, exc.details) from None
                last_error = MeshError(exc.code, exc.details, load_failed=True)
        if last_error is not None:
            raise last_error
        raise MeshError(grpc.StatusCode.INTERNAL, f"model {model_id!r} failed to load on {len(tried)} pods")

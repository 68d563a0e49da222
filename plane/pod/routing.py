"""Routing: which pod serves a request, and where a model gets loaded.

Any pod accepts any request. A hit on a local copy is served here. Otherwise the request goes
to a pod holding a copy (fewest requests in flight), or to the pod placement chooses, which
loads the model and holds the request until the copy is ready. A forwarded request carries
``mm-internal-hop`` (with the plane's peer token) so the receiver serves it itself and never
forwards again. The caller's deadline bounds every forward. A holder that does not answer
within ``hop_timeout_s`` is marked suspect (avoided for a while, before its lease could expire)
and the request retried on another copy or a fresh load: inference is idempotent.
"""

from __future__ import annotations

import time
from typing import Any

import grpc

from plane import placement
from plane.pod import lookup
from plane.pod.calls import Call, resolve_model
from plane.pod.copies import Copies
from plane.pod.errors import MeshError, PeerError, Purpose, q
from plane.pod.peers import PeerClient
from plane.pod.serving import Server, metadata_response
from plane.proto import inference_pb2 as ipb
from plane.records import FailureInfo, ModelRecord, now_ms

__all__ = ["Router", "SUSPECT_S", "peek_model_name", "parse_infer_request"]

SUSPECT_S = 10.0  # a holder that timed out is avoided this long (or until it answers again)
LOADER_HINT_S = 5.0  # a pod that just answered a miss by loading gets this model's next misses this long
_NO_CALL = Call()


def peek_model_name(raw: bytes) -> str | None:
    """``model_name`` (field 1) of a serialised ModelInferRequest without decoding the rest:
    encoders write fields in number order, so it comes first when set. None when it does not
    (the caller then decodes the whole message)."""
    if len(raw) < 2 or raw[0] != 0x0A:
        return None
    n, shift, i = 0, 0, 1
    while i < len(raw) and i < 6:
        b = raw[i]
        n |= (b & 0x7F) << shift
        i += 1
        if not b & 0x80:
            break
        shift += 7
    else:
        return None
    if i + n > len(raw):
        return None
    try:
        return raw[i:i + n].decode("utf-8")
    except UnicodeDecodeError:
        return None


def parse_infer_request(raw: bytes) -> ipb.ModelInferRequest:
    try:
        return ipb.ModelInferRequest.FromString(raw)
    except Exception:  # noqa: BLE001 - protobuf's DecodeError and friends: bad client bytes
        raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "the request is not a valid ModelInferRequest message") \
            from None


class Router:
    def __init__(self, *, pod_id: str, settings: Any, registry: Any, view: Any, copies: Copies,
                 peers: PeerClient, membership: Any, server: Server, metrics: Any, shutting_down: Any):
        self.pod_id = pod_id
        self.settings = settings
        self.registry = registry
        self.view = view
        self.copies = copies
        self.peers = peers
        self.membership = membership
        self.server = server
        self.metrics = metrics
        self.shutting_down = shutting_down  # () -> bool
        self.suspects: dict[str, float] = {}  # pod -> avoided until (monotonic)
        self._pending_loader: dict[str, tuple[str, float]] = {}  # model -> (loader pod, until)
        self._expiry_ms = int(settings.failure_expiry_s * 1000)

    @property
    def in_flight(self) -> int:
        return self.server.in_flight

    def resolve(self, name: str, call: Call = _NO_CALL) -> str:
        return resolve_model(name, call, self.view.vmodels)

    async def model_record(self, model_id: str, *, fresh: bool = False) -> ModelRecord:
        """The view's record (the registry's when the view lacks it, or ``fresh``)."""
        return await lookup.model_record(self.view, self.registry, model_id, fresh=fresh)

    # -- serving -----------------------------------------------------------------------------------

    async def infer_raw(self, raw: bytes, call: Call = _NO_CALL) -> ipb.ModelInferResponse | bytes:
        """A ModelInfer call as the bytes the client sent: decoded only if served here; a forward
        passes the bytes on and the peer's answer back as bytes."""
        name = peek_model_name(raw)
        if name is None:  # no model_name first in the message (unusual encoder): decode it all
            return await self.infer(parse_infer_request(raw), call)
        model_id = self.resolve(name, call)
        sess = self.copies.sessions.get(model_id)
        if sess is not None:
            return await self.server.serve_raw(sess, raw, parse_infer_request)
        if call.hop:
            return await self.server.serve_raw(await self.copies.ensure_local(model_id), raw, parse_infer_request)
        return await self.route(model_id, "ModelInfer", raw, call)

    async def infer(self, request: ipb.ModelInferRequest, call: Call = _NO_CALL) -> ipb.ModelInferResponse:
        model_id = self.resolve(request.model_name, call)
        sess = self.copies.sessions.get(model_id)
        if sess is not None:
            return await self.server.serve(sess, request)
        if call.hop:
            return await self.server.serve(await self.copies.ensure_local(model_id), request)
        return await self.route(model_id, "ModelInfer", request, call)

    async def metadata(self, name: str, call: Call = _NO_CALL) -> ipb.ModelMetadataResponse:
        model_id = self.resolve(name, call)
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
        if call.hop:
            return metadata_response(await self.copies.ensure_local(model_id))
        return await self.route(model_id, "ModelMetadata", ipb.ModelMetadataRequest(name=model_id), call)

    def model_ready(self, name: str, call: Call = _NO_CALL) -> bool:
        model_id = self.resolve(name, call)
        if model_id in self.copies.sessions:
            return True
        rec = self.view.models.get(model_id)
        if rec is None:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"model {q(model_id)} is not registered")
        return any(self.membership.reachable(p) for p in rec.loaded_on())

    # -- the miss path -----------------------------------------------------------------------------

    def suspect(self, pod_id: str) -> bool:
        until = self.suspects.get(pod_id)
        if until is None:
            return False
        if until < time.monotonic():
            del self.suspects[pod_id]
            return False
        return True

    def _candidates(self, rec: ModelRecord, tried: set[str]) -> tuple[list[str], list[str]]:
        def ok(p: str) -> bool:
            if p in tried or not self.membership.reachable(p):
                return False
            inst = self.view.instances.get(p)
            return inst is None or not inst.shutting_down or p == self.pod_id

        holders = [p for p in rec.loaded_on() if ok(p)]
        loading = [p for p in rec.loading_on() if ok(p)]
        # Suspects only when nothing else is left: they did not answer in time lately.
        return ([p for p in holders if not self.suspect(p)] or holders,
                [p for p in loading if not self.suspect(p)] or loading)

    async def route(self, model_id: str, method: str, request: Any, call: Call = _NO_CALL) -> Any:
        """Serve a request for a model this pod does not hold."""
        tried: set[str] = set()
        last_error: MeshError | None = None
        t_miss = time.perf_counter()
        fresh = False
        for _ in range(self.settings.route_retries + 1):
            # After a failed load, read the record the loader wrote (what it measured, where it
            # failed) rather than a view that may not have it yet.
            rec = await self.model_record(model_id, fresh=fresh)
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
                    if type(request) is bytes:
                        return await self.server.serve_raw(sess, request, parse_infer_request)
                    return await self.server.serve(sess, request)
                return metadata_response(sess)
            # A holder answers quickly or is suspect; a loader gets the time a load may take.
            cap = self.settings.hop_timeout_s if holders else self.settings.load_timeout_s + 5
            timeout = call.remaining(cap)
            if timeout <= 0:
                raise MeshError(grpc.StatusCode.DEADLINE_EXCEEDED, f"deadline exceeded routing {q(model_id)}")
            try:
                response = await self.peers.call(target, method, request, call.forward, timeout=timeout)
            except PeerError as exc:
                self._pending_loader.pop(model_id, None)
                tried.add(target)
                if exc.code == grpc.StatusCode.DEADLINE_EXCEEDED:
                    if call.remaining(cap) <= 0:
                        raise MeshError(exc.code, f"deadline exceeded waiting for pod {target}") from None
                    self.suspects[target] = time.monotonic() + SUSPECT_S  # silent: try elsewhere
                    last_error = MeshError(grpc.StatusCode.UNAVAILABLE, f"pod {target} did not answer in {cap:g}s")
                    continue
                if exc.unreachable:
                    last_error = MeshError(exc.code, f"pod {target} unavailable: {exc.details}")
                    continue
                if exc.load_failed:
                    last_error = MeshError(exc.code, exc.details, load_failed=True)
                    rec = await self.model_record(model_id, fresh=True)
                    if len(rec.live_failures(now_ms(), self._expiry_ms)) >= self.settings.max_load_failures:
                        raise last_error from None
                    fresh = True
                    continue
                raise MeshError(exc.code, exc.details) from None
            self.suspects.pop(target, None)
            if not holders:
                self.metrics.cache_miss((time.perf_counter() - t_miss) * 1000)
                # The loader answers before the registry (and so this pod's view) hears of its
                # copy: keep sending this model's misses there until the view catches up.
                self._pending_loader[model_id] = (target, time.monotonic() + LOADER_HINT_S)
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
                             f"model {q(rec.model_id)} needs {size} bytes; the largest pod holds {largest}",
                             load_failed=True)
        if failures:
            reasons = "; ".join(sorted({f.message for f in failures.values()}))
            return MeshError(grpc.StatusCode.UNAVAILABLE, f"model {q(rec.model_id)} failed to load: {reasons}",
                             load_failed=True)
        return MeshError(grpc.StatusCode.UNAVAILABLE,
                         f"no pod can load model {q(rec.model_id)}: all pods are full, shutting down or failed")

    def choose_loader(self, rec: ModelRecord, *, exclude: set[str]) -> str | None:
        """The pod that should load ``rec`` (None if none can). Pods where the copy did not fit
        stay excluded while their capacity is unchanged; other failures are tried again last."""
        failures, known = self._failures(rec)
        size = known or placement.predict_size(rec.file_size, self.settings.size_multiplier)
        pods = [p for p in self.view.instances.values() if not p.shutting_down]
        if self.pod_id not in self.view.instances and not self.shutting_down():
            pods.append(self.membership.record())
        never = {p.pod_id for p in pods if p.pod_id in failures and failures[p.pod_id].excludes(p.capacity)}
        # tie=model id: pods whose views agree choose the same loader (placement.rendezvous)
        choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude | set(failures) | never,
                                               tie=rec.model_id)
        if choice is None and set(failures) - exclude - never:
            # every pod failed once for another reason: try again on one of them rather than give up
            choice = placement.choose_pod_for_load(pods, size=size, exclude=exclude | never, tie=rec.model_id)
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
            rec = await self.model_record(model_id, fresh=bool(attempt))
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
        raise MeshError(grpc.StatusCode.INTERNAL, f"model {q(model_id)} failed to load on {len(tried)} pods")

"""The KServe V2 REST routes, answered through the same calls as the pod's gRPC edge.

Every route ends in what the gRPC servicers (:mod:`plane.pod.inference_api`) call for the RPC:
``pod.calls.read(headers)`` makes the :class:`~plane.pod.calls.Call` (so ``mm-model-id``,
``mm-vmodel-id``, ``mm-balanced`` and the peer-token rules are the same), then
``router.infer`` / ``router.metadata`` / ``router.model_ready`` / ``pod.is_ready``. A REST
request is a gRPC request that arrived as JSON: it is served here, forwarded to a peer (over
gRPC) or triggers a load exactly like one.

Routes (``/versions/{v}`` may follow the model name; the version is passed on as
``model_version`` and otherwise ignored, as ModelMesh does):

=======  ======================================  ============================================
GET      /v2                                     server metadata
GET      /v2/health/live                         200 ``{"live": true}``
GET      /v2/health/ready                        200 ``{"ready": true}`` or 503 ``{"ready": false}``
GET      /v2/models/{name}                       model metadata
GET      /v2/models/{name}/ready                 200 ``{"name", "ready": true}`` or 503 (``false``)
POST     /v2/models/{name}/infer                 inference (JSON or the binary extension)
=======  ======================================  ============================================

Health: the V2 spec says the status code is the answer (200 true, non-200 false), which is
what tritonclient's ``is_server_ready`` / ``is_model_ready`` and Kubernetes probes read; the
body repeats it as KServe's own server does. Not ready is 503 (come back later), not 4xx.

Headers: every ``mm-*`` header goes to ``CallReader.read`` as (lowercased name, value). A
``-bin`` header is base64 (standard or URL-safe, padding optional), as gRPC's own HTTP/2 wire
and grpc-gateway carry binary metadata, so a UTF-8 id survives HTTP/1.1 header rules; other
``mm-*`` values must be printable ASCII (a peer forward sends them as gRPC metadata).
A request parameter ``timeout`` (microseconds, what ``tritonclient.http`` sends) becomes the
call's deadline, as a gRPC deadline would.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import functools
import logging
from typing import Any, Protocol
from urllib.parse import unquote

from aiohttp import web

from plane.proto import inference_pb2 as ipb
from plane.rest import codec
from plane.rest.errors import RestError, http_error

__all__ = ["RestApp", "PodLike", "EXTENSIONS"]

log = logging.getLogger("mesh.rest")

EXTENSIONS = ["model_mesh", "binary_tensor_data"]
_JSON = "application/json"
_BINARY = "application/octet-stream"
_HEADER_LENGTH = "Inference-Header-Content-Length"
_SERVER = {"Server": "mesh-plane"}


class PodLike(Protocol):
    """What the REST edge uses of a pod (``plane.pod.server.Pod`` has all of it)."""

    settings: Any
    router: Any
    calls: Any

    def is_ready(self) -> bool: ...


def _response(body: bytes, content_type: str, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # "Server: mesh-plane" rather than aiohttp's default, which tells every client the Python and aiohttp versions
    return web.Response(status=status, body=body, content_type=content_type,
                        headers={**headers, "Server": "mesh-plane"} if headers else _SERVER)


def _json(status: int, doc: Any, headers: dict[str, str] | None = None) -> web.Response:
    return _response(codec.dumps(doc), _JSON, status, headers)


def _b64(key: str, value: bytes) -> bytes:
    text = value.strip().replace(b"-", b"+").replace(b"_", b"/")
    try:
        return base64.b64decode(text + b"=" * (-len(text) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise RestError(400, f"header {key} is not base64 (a -bin header carries base64-encoded bytes)") from None


def mm_headers(raw_headers: Any) -> list[tuple[str, Any]]:
    """The request's ``mm-*`` headers as CallReader takes them."""
    out: list[tuple[str, Any]] = []
    for k, v in raw_headers:
        if k[:3].lower() != b"mm-":
            continue
        key = k.decode("ascii", "replace").lower()
        if key.endswith("-bin"):
            out.append((key, _b64(key, v)))
        elif all(0x20 <= c < 0x7F for c in v):
            out.append((key, v.decode("ascii")))
        else:
            raise RestError(400, f"header {key} must be printable ASCII; send UTF-8 as {key}-bin (base64)")
    return out


def _route(raw_path: str) -> tuple[str, str, str]:
    """(route, model name, version) for a path; route '' when nothing matches."""
    parts = raw_path.split("?", 1)[0].split("/")
    if len(parts) < 2 or parts[0] or parts[1] != "v2":
        return "", "", ""
    rest = [unquote(p) for p in parts[2:]] if "%" in raw_path else parts[2:]
    if rest in ([], [""]):
        return "server", "", ""
    if rest == ["health", "live"]:
        return "live", "", ""
    if rest == ["health", "ready"]:
        return "ready", "", ""
    if len(rest) < 2 or rest[0] != "models" or not rest[1]:
        return "", "", ""
    name, tail, version = rest[1], rest[2:], ""
    if len(tail) >= 2 and tail[0] == "versions" and tail[1]:
        version, tail = tail[1], tail[2:]
    if not tail:
        return "model", name, version
    if tail == ["ready"]:
        return "model_ready", name, version
    if tail == ["infer"]:
        return "infer", name, version
    return "", "", ""


def _cut(text: str, limit: int = 100) -> str:
    """A client's path as quoted back to it: a path may be 8 KB."""
    return text if len(text) <= limit else text[:limit] + "..."


_METHODS = {"server": "GET", "live": "GET", "ready": "GET", "model": "GET", "model_ready": "GET", "infer": "POST"}


class RestApp:
    """The request handler for aiohttp's low-level server."""

    def __init__(self, pod: PodLike, *, max_body_bytes: int, offload_bytes: int, body_timeout_s: float):
        self.pod = pod
        self.max_body_bytes = max_body_bytes
        self.offload_bytes = offload_bytes
        self.body_timeout_s = body_timeout_s
        self.max_elements = max_body_bytes  # no tensor holds more elements than the body has bytes

    async def __call__(self, request: web.BaseRequest) -> web.StreamResponse:
        started = getattr(request.protocol, "request_started", None)
        if started is not None:
            started()
        try:
            return await self._dispatch(request)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - every error becomes a JSON answer; bugs are logged there
            status, message, load_failed = http_error(exc, f"{request.method} {_cut(request.path)}")
            headers = {"mm-load-failed": "1"} if load_failed else {}
            if isinstance(exc, RestError) and exc.allow:
                headers["Allow"] = exc.allow
            resp = _json(status, {"error": message}, headers)
            if status in (408, 413):
                resp.force_close()  # the rest of the body is unread: this connection cannot carry another request
            return resp
        finally:
            done = getattr(request.protocol, "request_done", None)
            if done is not None:
                done()

    async def _dispatch(self, request: web.BaseRequest) -> web.StreamResponse:
        route, name, version = _route(request.raw_path)
        if not route:
            raise RestError(404, f"no route {request.method} {_cut(request.path)}")
        method = _METHODS[route]
        if request.method != method:
            raise RestError(405, f"{_cut(request.path)} takes {method}, not {request.method}", allow=method)
        pod = self.pod
        if route == "infer":
            return await self._infer(request, name, version)
        if route == "model":
            call = pod.calls.read(mm_headers(request.raw_headers), None)
            return _json(200, codec.metadata_json(await pod.router.metadata(name, call)))
        if route == "model_ready":
            ready = bool(pod.router.model_ready(name, pod.calls.read(mm_headers(request.raw_headers))))
            return _json(200 if ready else 503, {"name": name, "ready": ready})
        if route == "ready":
            ready = bool(pod.is_ready())
            return _json(200 if ready else 503, {"ready": ready})
        if route == "live":
            return _json(200, {"live": True})
        from plane.pod.edge import SERVER_NAME, SERVER_VERSION  # not at the top: see plane.rest.errors

        return _json(200, {"name": SERVER_NAME, "version": SERVER_VERSION, "extensions": EXTENSIONS})

    async def _infer(self, request: web.BaseRequest, name: str, version: str) -> web.StreamResponse:
        headers = mm_headers(request.raw_headers)
        header_length = None
        text = request.headers.get(_HEADER_LENGTH)
        if text is not None:
            try:
                header_length = int(text)
            except ValueError:
                raise RestError(400, f"{_HEADER_LENGTH} must be an integer, not {text[:32]!r}") from None
        body = await self._read_body(request)
        decode = functools.partial(codec.decode_infer_request, body, header_length=header_length, model_name=name,
                                   model_version=version, max_elements=self.max_elements)
        # Big bodies are decoded off the loop, as the pod runs big requests on a worker thread.
        decoded = await asyncio.to_thread(decode) if len(body) >= self.offload_bytes else decode()
        del body, decode  # the decoded request holds what it needs
        call = self.pod.calls.read(headers, decoded.timeout_s)
        resp = await self.pod.router.infer(decoded.request, call)
        if isinstance(resp, bytes):  # a router that passes a peer's answer on undecoded
            resp = ipb.ModelInferResponse.FromString(resp)
        encode = functools.partial(codec.encode_infer_response, resp, decoded)
        big = sum(map(len, resp.raw_output_contents)) >= self.offload_bytes
        out, json_length = await asyncio.to_thread(encode) if big else encode()
        if json_length is None:
            return _response(out, _JSON)
        return _response(out, _BINARY, headers={_HEADER_LENGTH: str(json_length)})

    async def _read_body(self, request: web.BaseRequest) -> bytes:
        limit = self.max_body_bytes
        length = request.content_length
        if length is not None and length > limit:
            raise RestError(413, f"request body of {length} bytes exceeds the limit of {limit} bytes")
        if request.headers.get("Expect", "").lower() == "100-continue":
            await request.writer.write(b"HTTP/1.1 100 Continue\r\n\r\n")
        content = request.content
        if content.is_eof():  # the whole body came with the head (small requests): no timer needed
            body = content.read_nowait()
            if len(body) > limit:
                raise RestError(413, f"request body exceeds the limit of {limit} bytes")
            return body
        chunks: list[bytes] = []
        total = 0
        try:
            async with asyncio.timeout(self.body_timeout_s):
                async for chunk in content.iter_any():
                    total += len(chunk)
                    if total > limit:  # chunked or compressed: counted as it arrives
                        raise RestError(413, f"request body exceeds the limit of {limit} bytes")
                    chunks.append(chunk)
        except TimeoutError:
            raise RestError(408, f"request body not received within {self.body_timeout_s:g}s") from None
        return chunks[0] if len(chunks) == 1 else b"".join(chunks)

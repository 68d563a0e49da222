"""Start and stop the REST front door on the pod's own event loop.

Why aiohttp's low-level server (``aiohttp.web.Server`` on ``loop.create_server``): the pod is a
grpc.aio process, so the HTTP server must be a protocol on the same asyncio loop, started and
stopped by the pod. ``bench/rest_servers.py`` (same aiohttp client, same run, servers
interleaved, on a shared 2-core machine) measured for a small JSON infer through a stub:
aiohttp and uvicorn+httptools serve the same requests/s within noise (c=1 ~1.2-2.7k, c=8
~1.8-3.5k, ± up to 50% between reps), and uvicorn spends a little less server CPU per request
(c=1 214 vs 254 µs, c=8 119 vs 159 µs in the last run: about 20-40 µs, the same direction in
every run); uvicorn on h11 costs twice as much. That gap is small next to what every request
costs either way (JSON to protobuf and back plus routing: the shipped front door measured
~300-430 µs CPU per request on that loaded machine), so fit decided: aiohttp binds with a plain
``create_server`` (an ``OSError`` the pod already handles, where uvicorn calls ``sys.exit`` on a
bind failure), needs no 100 ms housekeeping task and no private start-up API, takes no signal
handlers (uvicorn's ``serve()`` replaces the pod's SIGTERM handling), parses with llhttp in C,
bounds header lines and counts, and its keep-alive timer runs from the moment a connection
opens (uvicorn keeps a connection that never sends a request open forever and has no body
limit: both would have to be written around it). A bare httptools protocol measured 2-3x
cheaper still, but would make this project own HTTP/1.1 (pipelining, chunked bodies,
``Expect: 100-continue``, smuggling rules) for well under 100 µs of a request.

A client that disconnects does not cancel its request: it finishes (a load it started is worth
finishing) and the answer is dropped.

Limits, all explicit (:class:`RestLimits`, from the pod's settings where it has them):

* ``max_connections`` — connections past it get ``503 {"error": ...}`` and are closed at once;
* ``idle_timeout_s`` — a connection without a request in progress is closed after this (from
  the moment it opens, and after each response);
* ``header_timeout_s`` — from the first byte of a request to the end of its headers (a client
  trickling its headers is cut off here, well before the idle timeout);
* ``body_timeout_s`` — to receive the whole body (408 after it);
* ``max_body_bytes`` — ``max_message_bytes``, as on gRPC (413, counted after decompression too).

TLS: :func:`rest_ssl_context` builds an ``ssl.SSLContext`` from the same settings as the gRPC
port (``tls_cert_file``/``tls_key_file``, ``tls_ca_file``, ``tls_client_auth`` for mTLS).
"""

from __future__ import annotations

import asyncio
import logging
import pathlib
import ssl
from dataclasses import dataclass, fields
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler

from plane.rest.app import PodLike, RestApp

__all__ = ["RestLimits", "RestServer", "start_rest", "rest_ssl_context"]

log = logging.getLogger("mesh.rest")

_BUSY = (b"HTTP/1.1 503 Service Unavailable\r\nContent-Type: application/json\r\nContent-Length: 45\r\n"
         b"Connection: close\r\n\r\n" + b'{"error":"too many connections; retry later"}')
assert len(_BUSY.split(b"\r\n\r\n", 1)[1]) == 45
_REFUSED_LINGER_S = 1.0  # a refused connection is read (and discarded) this long before it is closed


@dataclass(frozen=True)
class RestLimits:
    max_connections: int = 1000
    idle_timeout_s: float = 75.0
    header_timeout_s: float = 10.0
    body_timeout_s: float = 60.0
    shutdown_grace_s: float = 5.0
    max_body_bytes: int = 64 * 1024**2
    offload_bytes: int = 1024**2

    def __post_init__(self) -> None:
        if self.max_connections < 1 or self.max_body_bytes < 1:
            raise ValueError("REST max_connections and max_body_bytes must be at least 1")
        if min(self.idle_timeout_s, self.header_timeout_s, self.body_timeout_s) <= 0 or self.shutdown_grace_s < 0:
            raise ValueError("REST timeouts must be positive")

    @classmethod
    def from_settings(cls, settings: Any) -> RestLimits:
        """``max_message_bytes`` and ``offload_request_bytes`` from the pod's settings, the rest from
        ``rest_<field>`` settings when the pod has them (defaults otherwise)."""
        values: dict[str, Any] = {}
        for f in fields(cls):
            value = getattr(settings, f"rest_{f.name}", None)
            if value is not None:
                values[f.name] = value
        values.setdefault("max_body_bytes", getattr(settings, "max_message_bytes", cls.max_body_bytes))
        values.setdefault("offload_bytes", getattr(settings, "offload_request_bytes", cls.offload_bytes))
        return cls(**values)


class _Connection(RequestHandler):
    """aiohttp's connection protocol plus the connection cap and a header timeout."""

    def __init__(self, manager: _Manager, **kwargs: Any):
        super().__init__(manager, **kwargs)
        self._rest = manager
        self._head_timer: asyncio.TimerHandle | None = None
        self._busy = False
        self._counted = False
        self._refused: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        rest = self._rest
        if rest.active >= rest.limits.max_connections:
            # Answer, stop sending, and read (discarding) briefly before closing: closing with the
            # client's request unread would make the kernel reset the connection before the client
            # reads the 503.
            rest.refused += 1
            tr: Any = transport
            tr.write(_BUSY)
            if tr.can_write_eof():
                tr.write_eof()
            asyncio.get_running_loop().call_later(_REFUSED_LINGER_S, tr.close)
            self._refused = tr
            return
        rest.active += 1
        self._counted = True
        super().connection_made(transport)

    def connection_lost(self, exc: BaseException | None) -> None:
        self._cancel_head_timer()
        if not self._counted:
            return
        self._counted = False
        self._rest.active -= 1
        super().connection_lost(exc)

    def eof_received(self) -> None:
        if self._refused is not None:
            self._refused.close()
            return
        super().eof_received()

    def data_received(self, data: bytes) -> None:
        if not self._counted:
            return
        if not self._busy and self._head_timer is None and data:
            self._head_timer = asyncio.get_running_loop().call_later(self._rest.limits.header_timeout_s,
                                                                     self._head_expired)
        super().data_received(data)

    def _head_expired(self) -> None:
        self._head_timer = None
        if not self._busy:
            log.info("closing a connection whose request headers did not arrive within %gs",
                     self._rest.limits.header_timeout_s)
            self.force_close()

    def _cancel_head_timer(self) -> None:
        if self._head_timer is not None:
            self._head_timer.cancel()
            self._head_timer = None

    def request_started(self) -> None:
        self._busy = True
        self._cancel_head_timer()

    def request_done(self) -> None:
        self._busy = False


class _Manager(web.Server):
    """aiohttp's low-level server, making :class:`_Connection` protocols and counting them."""

    def __init__(self, handler: RestApp, limits: RestLimits, **kwargs: Any):
        super().__init__(handler, **kwargs)  # type: ignore[arg-type]
        self.limits = limits
        self.active = 0
        self.refused = 0

    def __call__(self) -> RequestHandler:
        return _Connection(self, loop=self._loop, **self._kwargs)


class RestServer:
    """A running REST front door; ``await close()`` stops it (in-flight requests get the grace)."""

    def __init__(self, server: asyncio.Server, manager: _Manager, limits: RestLimits):
        self._server = server
        self._manager = manager
        self.limits = limits
        sock = server.sockets[0].getsockname() if server.sockets else ("", 0)
        self.host, self.port = str(sock[0]), int(sock[1])

    @property
    def connections(self) -> int:
        return self._manager.active

    async def close(self) -> None:
        grace = self.limits.shutdown_grace_s
        self._server.close()  # stop accepting
        self._manager.pre_shutdown()  # idle keep-alive connections close now, busy ones after their response
        await self._manager.shutdown(grace)  # in-flight requests get the grace, then are cancelled
        try:
            await asyncio.wait_for(self._server.wait_closed(), grace)
        except TimeoutError:
            log.warning("REST connections still open after %gs", grace)


async def start_rest(pod: PodLike, host: str, port: int, *, ssl_context: ssl.SSLContext | None = None,
                     limits: RestLimits | None = None) -> RestServer:
    """Serve KServe V2 REST for ``pod`` on ``host:port`` (0: any free port) on the running loop."""
    limits = limits or RestLimits.from_settings(pod.settings)
    app = RestApp(pod, max_body_bytes=limits.max_body_bytes, offload_bytes=limits.offload_bytes,
                  body_timeout_s=limits.body_timeout_s)
    manager = _Manager(app, limits, access_log=None, keepalive_timeout=limits.idle_timeout_s,
                       max_line_size=8190, max_field_size=8190, max_headers=128, lingering_time=2.0)
    loop = asyncio.get_running_loop()
    server = await loop.create_server(manager, host, port, ssl=ssl_context, backlog=min(1024, limits.max_connections),
                                      reuse_address=True)
    rest = RestServer(server, manager, limits)
    log.info("REST (KServe V2) on %s://%s:%d", "https" if ssl_context else "http", rest.host, rest.port)
    return rest


def rest_ssl_context(settings: Any) -> ssl.SSLContext | None:
    """A server context from the pod's TLS settings, or None when the pod serves plaintext."""
    cert = getattr(settings, "tls_cert_file", None)
    if not cert:
        return None
    key = getattr(settings, "tls_key_file", None)
    if not key:
        raise ValueError("MESH_TLS_CERT_FILE is set but MESH_TLS_KEY_FILE is not")
    ca = getattr(settings, "tls_ca_file", None)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.minimum_version = ssl.TLSVersion.TLSv1_2
    ctx.load_cert_chain(pathlib.Path(cert).expanduser(), pathlib.Path(key).expanduser())
    ctx.set_alpn_protocols(["http/1.1"])
    if getattr(settings, "tls_client_auth", False):
        if not ca:
            raise ValueError("MESH_TLS_CLIENT_AUTH needs MESH_TLS_CA_FILE to check client certificates")
        ctx.load_verify_locations(cafile=str(pathlib.Path(ca).expanduser()))
        ctx.verify_mode = ssl.CERT_REQUIRED
    return ctx

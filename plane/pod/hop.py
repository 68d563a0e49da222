"""Forwarded inference between pods over a plain TCP connection (the *hop*), without gRPC.

A forwarded ``ModelInfer`` is the client's bytes passed on and the answer's bytes passed back,
but gRPC's Python call path costs about as much as serving the request itself, on both sides of
the hop (bench/README.md, forwarding.py). So each pod also listens on a *hop port* for
forwarded inference from its peers: length-prefixed frames on one long-lived connection per pair
of pods, any number of requests in flight on it, answered in any order. Peers learn a pod's hop
port over gRPC (``/meshinternal.Peer/Hop``, token-checked) and fall back to gRPC forwarding when a
pod has none (an older pod, ``MESH_HOP_PORT=-1``, TLS) or cannot be reached on it.

Trust: a connection counts only after its first frame presents the plane's peer token (checked
in constant time); before that at most ``HELLO_MAX`` bytes are read and ``HELLO_TIMEOUT_S`` waited.
The hop is plaintext, so it is off when the pods' gRPC uses TLS (forwarding then stays on gRPC).

Frames (big-endian), after ``HELLO`` = ``b"MHOP" u8 version u16 n token[n]`` answered ``b"MHOK"``:

* request:  ``u32 n | u32 id | u32 timeout_ms | u16 headers | (u8 is_bytes, u16 k, key, u32 v, value)* | request``
* answer:   ``u32 n | u32 id | u8 code | u8 flags | body`` — ``code`` is the gRPC status value
  (0: ``body`` is the serialized ``ModelInferResponse``; else the error's details), ``flags`` bit
  0: the error is a load failure of the model (try another pod).
"""

from __future__ import annotations

import asyncio
import hmac
import logging
import struct
import time
from collections.abc import Awaitable, Callable
from typing import Any

import grpc

from plane.pod.errors import MeshError, PeerError
from plane.records import RegistryError

__all__ = ["HopServer", "HopClient", "HELLO_TIMEOUT_S", "encode_headers", "decode_headers"]

log = logging.getLogger("mesh.pod.hop")

MAGIC, OK, VERSION = b"MHOP", b"MHOK", 1
HELLO_MAX = 4096
HELLO_TIMEOUT_S = 5.0
CONNECT_TIMEOUT_S = 2.0
_LEN = struct.Struct(">I")
_REQ = struct.Struct(">IIIH")  # length, id, timeout_ms, headers
_ANS = struct.Struct(">IIBB")  # length, id, code, flags
_CODES = {c.value[0]: c for c in grpc.StatusCode}

#: (request bytes, the client's mm-* headers, seconds left) -> answer bytes
Handler = Callable[[bytes, tuple[tuple[str, Any], ...], float], Awaitable[bytes]]


def encode_headers(headers: tuple[tuple[str, Any], ...]) -> bytes:
    out = bytearray()
    for key, value in headers:
        k = key.encode()
        is_bytes = isinstance(value, bytes)
        v = value if is_bytes else str(value).encode()
        out += struct.pack(">BH", is_bytes, len(k)) + k + _LEN.pack(len(v)) + v
    return bytes(out)


def decode_headers(buf: memoryview, pos: int, count: int) -> tuple[tuple[tuple[str, Any], ...], int]:
    headers = []
    for _ in range(count):
        is_bytes, klen = struct.unpack_from(">BH", buf, pos)
        pos += 3
        key = bytes(buf[pos:pos + klen]).decode()
        pos += klen
        (vlen,) = _LEN.unpack_from(buf, pos)
        pos += 4
        raw = bytes(buf[pos:pos + vlen])
        pos += vlen
        headers.append((key, raw if is_bytes else raw.decode()))
    return tuple(headers), pos


class _Frames:
    """Splits a byte stream into length-prefixed frames."""

    def __init__(self, max_frame: int):
        self.buf = bytearray()
        self.max_frame = max_frame

    def feed(self, data: bytes) -> list[memoryview]:
        self.buf += data
        frames, pos, buf = [], 0, self.buf
        while len(buf) - pos >= 4:
            (n,) = _LEN.unpack_from(buf, pos)
            if n > self.max_frame:
                raise ValueError(f"frame of {n} bytes exceeds {self.max_frame}")
            if len(buf) - pos - 4 < n:
                break
            frames.append(memoryview(bytes(buf[pos:pos + 4 + n])))
            pos += 4 + n
        if pos:
            del buf[:pos]
        return frames


# -- the server side (the pod that serves) ---------------------------------------------------------


class _ServerConn(asyncio.Protocol):
    def __init__(self, server: HopServer):
        self.server = server
        self.transport: asyncio.Transport | None = None
        self.trusted = False
        self.hello = bytearray()
        self.frames = _Frames(server.max_frame)
        self.timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.timer = asyncio.get_running_loop().call_later(HELLO_TIMEOUT_S, self._no_hello)
        self.server.conns.add(self)

    def _no_hello(self) -> None:
        if not self.trusted and self.transport is not None:
            self.transport.close()

    def connection_lost(self, exc: Exception | None) -> None:
        self.server.conns.discard(self)
        if self.timer is not None:
            self.timer.cancel()

    def data_received(self, data: bytes) -> None:
        if not self.trusted:
            self.hello += data
            if not self._read_hello():
                return
            data, self.hello = bytes(self.hello), bytearray()
        try:
            frames = self.frames.feed(data)
        except ValueError as exc:
            log.warning("closing a hop connection: %s", exc)
            assert self.transport is not None
            self.transport.close()
            return
        tasks = self.server.tasks
        for frame in frames:
            task = asyncio.get_running_loop().create_task(self._answer(frame), name="hop request")
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    def _read_hello(self) -> bool:
        """True once the token is read and right; the rest of ``hello`` is then frames."""
        assert self.transport is not None
        buf = self.hello
        if len(buf) > HELLO_MAX or (len(buf) >= 4 and buf[:4] != MAGIC):
            self.transport.close()
            return False
        if len(buf) < 7:
            return False
        (n,) = struct.unpack_from(">H", buf, 5)
        if len(buf) < 7 + n:
            return False
        token, expected = bytes(buf[7:7 + n]), (self.server.token() or "").encode()
        if buf[4] != VERSION or not expected or not hmac.compare_digest(token, expected):
            log.warning("refused a hop connection from %s: no valid peer token",
                        self.transport.get_extra_info("peername"))
            self.transport.close()
            return False
        self.trusted = True
        if self.timer is not None:
            self.timer.cancel()
        del buf[:7 + n]
        self.transport.write(OK)
        return True

    async def _answer(self, frame: memoryview) -> None:
        _, rid, timeout_ms, count = _REQ.unpack_from(frame, 0)
        code, flags, body = 0, 0, b""
        try:
            headers, pos = decode_headers(frame, _REQ.size, count)
            body = await self.server.handler(bytes(frame[pos:]), headers, timeout_ms / 1000 if timeout_ms else 0.0)
        except MeshError as exc:
            code, flags, body = exc.code.value[0], int(exc.load_failed), exc.message.encode()
        except RegistryError as exc:
            code, body = grpc.StatusCode.UNAVAILABLE.value[0], str(exc).encode()
        except asyncio.CancelledError:
            raise
        except Exception:  # noqa: BLE001 - a bug: the peer gets INTERNAL, the log the traceback
            log.exception("forwarded request failed")
            code, body = grpc.StatusCode.INTERNAL.value[0], b"internal error in a forwarded ModelInfer (see its log)"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(_ANS.pack(_ANS.size - 4 + len(body), rid, code, flags) + body)


class HopServer:
    """The hop port of a pod: answers its peers' forwarded requests with ``handler``."""

    def __init__(self, handler: Handler, token: Callable[[], str | None], *, max_frame: int):
        self.handler = handler
        self.token = token
        self.max_frame = max_frame + 1024  # the request and its headers
        self.conns: set[_ServerConn] = set()
        self.tasks: set[asyncio.Task[None]] = set()  # requests being answered
        self._server: asyncio.Server | None = None
        self.port = 0

    async def start(self, host: str, port: int) -> int:
        self._server = await asyncio.get_running_loop().create_server(lambda: _ServerConn(self), host, port)
        self.port = self._server.sockets[0].getsockname()[1]
        return self.port

    async def close(self) -> None:
        """Stop listening, drop the connections (their peers see UNAVAILABLE and retry elsewhere)
        and the requests still being answered."""
        if self._server is not None:
            self._server.close()
            for conn in list(self.conns):
                if conn.transport is not None:
                    conn.transport.close()
            for task in list(self.tasks):
                task.cancel()
            await self._server.wait_closed()


# -- the client side (the pod that forwards) -----------------------------------------------------------


class _ClientConn(asyncio.Protocol):
    def __init__(self, pod_id: str, max_frame: int):
        self.pod_id = pod_id
        self.transport: asyncio.Transport | None = None
        self.frames = _Frames(max_frame)
        self.pending: dict[int, asyncio.Future[bytes]] = {}
        self.ready: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        self.greeting = bytearray()
        self.closed = False
        self.next_id = 0

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        if not self.ready.done():
            self.greeting += data
            if len(self.greeting) < len(OK):
                return
            if bytes(self.greeting[:len(OK)]) != OK:
                self.ready.set_exception(ConnectionError("the peer refused the hop connection"))
                assert self.transport is not None
                self.transport.close()
                return
            data = bytes(self.greeting[len(OK):])
            self.ready.set_result(None)
        try:
            frames = self.frames.feed(data)
        except ValueError as exc:
            log.warning("closing the hop connection to %s: %s", self.pod_id, exc)
            assert self.transport is not None
            self.transport.close()
            return
        for frame in frames:
            _, rid, code, flags = _ANS.unpack_from(frame, 0)
            fut = self.pending.pop(rid, None)
            if fut is None or fut.done():
                continue  # timed out meanwhile
            if code == 0:
                fut.set_result(bytes(frame[_ANS.size:]))
            else:
                status = _CODES.get(code, grpc.StatusCode.UNKNOWN)
                fut.set_exception(PeerError(self.pod_id, status, bytes(frame[_ANS.size:]).decode(errors="replace"),
                                            load_failed=bool(flags & 1)))

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        if not self.ready.done():
            self.ready.set_exception(ConnectionError(f"hop connection to {self.pod_id} closed"))
            self.ready.exception()
        for fut in self.pending.values():
            if not fut.done():
                fut.set_exception(PeerError(self.pod_id, grpc.StatusCode.UNAVAILABLE,
                                            "the hop connection closed before the answer"))
        self.pending.clear()

    def expire(self, rid: int) -> None:
        fut = self.pending.pop(rid, None)
        if fut is not None and not fut.done():
            fut.set_exception(PeerError(self.pod_id, grpc.StatusCode.DEADLINE_EXCEEDED, "deadline exceeded"))


class HopClient:
    """One hop connection per peer, opened on first use."""

    def __init__(self, token: Callable[[], str | None], *, max_frame: int):
        self.token = token
        self.max_frame = max_frame + 1024
        self._conns: dict[str, _ClientConn] = {}

    def connected(self, pod_id: str) -> bool:
        conn = self._conns.get(pod_id)
        return conn is not None and not conn.closed

    async def connect(self, pod_id: str, host: str, port: int) -> None:
        """Open (and authenticate) the connection to ``pod_id``'s hop port. Raises OSError or
        ConnectionError when the peer cannot be reached or refuses."""
        if self.connected(pod_id):
            return
        loop = asyncio.get_running_loop()
        _, conn = await asyncio.wait_for(loop.create_connection(lambda: _ClientConn(pod_id, self.max_frame),
                                                                host, port), CONNECT_TIMEOUT_S)
        assert conn.transport is not None
        token = (self.token() or "").encode()
        conn.transport.write(MAGIC + bytes([VERSION]) + struct.pack(">H", len(token)) + token)
        try:
            await asyncio.wait_for(asyncio.shield(conn.ready), CONNECT_TIMEOUT_S)
        except BaseException:
            conn.transport.close()
            raise
        old = self._conns.get(pod_id)
        self._conns[pod_id] = conn
        if old is not None and old.transport is not None:
            old.transport.close()

    async def call(self, pod_id: str, raw: bytes, headers: tuple[tuple[str, Any], ...], *, timeout: float) -> bytes:
        """Forward ``raw`` (a serialized ModelInferRequest) and return the answer's bytes; errors
        are PeerErrors as gRPC forwarding raises them."""
        conn = self._conns.get(pod_id)
        if conn is None or conn.closed or conn.transport is None or conn.transport.is_closing():
            raise PeerError(pod_id, grpc.StatusCode.UNAVAILABLE, "no hop connection")
        conn.next_id = rid = (conn.next_id + 1) & 0xFFFFFFFF
        fut: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        conn.pending[rid] = fut
        extra = encode_headers(headers) if headers else b""
        ms = max(1, min(0xFFFFFFFF, int(timeout * 1000)))
        conn.transport.write(_REQ.pack(_REQ.size - 4 + len(extra) + len(raw), rid, ms, len(headers)) + extra + raw)
        timer = asyncio.get_running_loop().call_later(timeout, conn.expire, rid)
        try:
            return await fut
        finally:
            timer.cancel()
            conn.pending.pop(rid, None)

    def forget(self, pod_id: str) -> None:
        conn = self._conns.pop(pod_id, None)
        if conn is not None and conn.transport is not None:
            conn.transport.close()

    def close(self) -> None:
        for pod_id in list(self._conns):
            self.forget(pod_id)


def deadline_of(timeout_s: float) -> float | None:
    """The ``time.monotonic()`` deadline of a forwarded request (None: none was given)."""
    return time.monotonic() + timeout_s if timeout_s > 0 else None

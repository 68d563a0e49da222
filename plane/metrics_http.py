"""The pods' Prometheus endpoint: a small asyncio HTTP server on its own thread, with head and
idle timeouts and a connection cap (prometheus_client's ``start_http_server`` keeps a thread per
idle socket with no timeout). Serves ``GET``/``HEAD /metrics`` from a CollectorRegistry."""

from __future__ import annotations

import asyncio
import logging
import socket
import threading
import time
import urllib.parse
from dataclasses import dataclass

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder, gzip_accepted

log = logging.getLogger("mesh.metrics")

__all__ = ["MetricsServer"]


# -- the HTTP endpoint -------------------------------------------------------------------------------------

_REASONS = {200: "OK", 400: "Bad Request", 404: "Not Found", 405: "Method Not Allowed",
            431: "Request Header Fields Too Large"}


@dataclass(eq=False)
class _Conn:
    writer: asyncio.StreamWriter
    busy: bool = False  # answering a request (not evictable)
    since: float = 0.0  # when it started waiting for a request head


class MetricsServer:
    """``/metrics`` of a CollectorRegistry over HTTP/1.1, with timeouts and bounded concurrency
    (see the module docstring). ``start()`` binds and returns self; ``port`` is the bound port."""

    def __init__(self, registry: CollectorRegistry, host: str = "127.0.0.1", port: int = 0, *,
                 max_connections: int = 16, head_timeout_s: float = 5.0, idle_timeout_s: float = 5.0,
                 write_timeout_s: float = 10.0, max_head_bytes: int = 8192, max_headers: int = 64):
        self.registry = registry
        self.host, self.port = host, port
        self.max_connections = max_connections
        self.head_timeout_s, self.idle_timeout_s, self.write_timeout_s = head_timeout_s, idle_timeout_s, write_timeout_s
        self.max_head_bytes, self.max_headers = max_head_bytes, max_headers
        self.evicted = 0  # idle connections closed to make room for a new one
        self.refused = 0  # new connections closed at once (every slot busy answering)
        self._conns: dict[asyncio.StreamWriter, _Conn] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._thread: threading.Thread | None = None
        self._server: asyncio.base_events.Server | None = None

    @property
    def open_connections(self) -> int:
        return len(self._conns)

    def start(self) -> MetricsServer:
        family, _, _, _, addr = socket.getaddrinfo(self.host or None, self.port, type=socket.SOCK_STREAM,
                                                   flags=socket.AI_PASSIVE)[0]
        sock = socket.socket(family, socket.SOCK_STREAM)
        try:
            sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            sock.bind(addr)
        except OSError:
            sock.close()
            raise
        self.port = sock.getsockname()[1]
        # The loop is started in its own thread: the caller may be running an event loop (the pod's).
        loop = self._loop = asyncio.new_event_loop()
        started: list[BaseException | None] = []
        ready = threading.Event()

        def run() -> None:
            asyncio.set_event_loop(loop)
            try:
                self._server = loop.run_until_complete(
                    asyncio.start_server(self._connection, sock=sock, limit=self.max_head_bytes, backlog=256))
            except BaseException as exc:  # noqa: BLE001 - handed to the caller
                started.append(exc)
                ready.set()
                return
            started.append(None)
            ready.set()
            loop.run_forever()

        self._thread = threading.Thread(target=run, name=f"metrics-http-{self.port}", daemon=True)
        self._thread.start()
        ready.wait(10)
        if not started or started[0] is not None:
            sock.close()
            raise OSError(f"metrics server on {self.host}:{self.port} did not start: {started[0] if started else ''}")
        return self

    def close(self) -> None:
        """Stop serving and close every connection (for tests; pods serve until they exit)."""
        loop, thread = self._loop, self._thread
        if loop is None or thread is None:
            return

        async def stop() -> None:
            if self._server is not None:
                self._server.close()
            for w in list(self._conns):
                w.transport.abort()
            self._conns.clear()

        asyncio.run_coroutine_threadsafe(stop(), loop).result(5)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
        loop.close()
        self._loop = self._thread = None

    def _admit(self, writer: asyncio.StreamWriter) -> bool:
        if len(self._conns) >= self.max_connections:
            idle = [c for c in self._conns.values() if not c.busy]
            if not idle:
                self.refused += 1
                return False
            victim = min(idle, key=lambda c: c.since)
            del self._conns[victim.writer]
            victim.writer.transport.abort()
            self.evicted += 1
        self._conns[writer] = _Conn(writer, since=time.monotonic())
        return True

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        if not self._admit(writer):
            writer.transport.abort()
            return
        conn = self._conns[writer]
        timeout = self.head_timeout_s
        try:
            while writer in self._conns:
                conn.busy, conn.since = False, time.monotonic()
                try:
                    head = await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), timeout)
                except (asyncio.LimitOverrunError, ValueError):
                    conn.busy = True
                    await self._send(writer, self._reply(431, b"request head too large\n", keep=False))
                    return
                except (asyncio.IncompleteReadError, TimeoutError, ConnectionError):
                    return  # silent, trickling or gone: closed below
                conn.busy = True
                response, keep = self._handle(head)
                await self._send(writer, response)
                if not keep:
                    return
                timeout = self.idle_timeout_s
        except (TimeoutError, ConnectionError):
            pass
        finally:
            self._conns.pop(writer, None)
            writer.close()
            try:
                await asyncio.wait_for(writer.wait_closed(), 1.0)
            except (TimeoutError, OSError) as exc:  # the peer went away first: aborted below
                log.debug("metrics connection closed uncleanly: %r", exc)
            writer.transport.abort()

    async def _send(self, writer: asyncio.StreamWriter, data: bytes) -> None:
        writer.write(data)
        await asyncio.wait_for(writer.drain(), self.write_timeout_s)

    def _handle(self, head: bytes) -> tuple[bytes, bool]:
        """(response bytes, keep the connection open) for one request head."""
        lines = head.lstrip(b"\r\n").decode("latin-1").split("\r\n")
        parts = lines[0].split()
        if len(parts) != 3 or not parts[2].startswith("HTTP/1.") or len(lines) > self.max_headers + 3:
            return self._reply(400, b"bad request\n", keep=False), False
        method, target, version = parts
        headers: dict[str, str] = {}
        for line in lines[1:]:
            if line:
                name, sep, value = line.partition(":")
                if not sep:
                    return self._reply(400, b"bad header line\n", keep=False), False
                headers[name.strip().lower()] = value.strip()
        conn_hdr = headers.get("connection", "").lower()
        keep = "close" not in conn_hdr if version == "HTTP/1.1" else "keep-alive" in conn_hdr
        if headers.get("content-length", "0").strip() != "0" or "transfer-encoding" in headers:
            keep = False  # a request body is not read: never reuse the connection after one
        url = urllib.parse.urlsplit(target)
        if url.path != "/metrics":
            return self._reply(404, b"only /metrics is served here\n", keep=keep), keep
        if method not in ("GET", "HEAD"):
            return self._reply(405, b"use GET\n", keep=keep, extra=[("Allow", "GET, HEAD")]), keep
        registry = self.registry
        names = urllib.parse.parse_qs(url.query).get("name[]")
        if names:
            registry = registry.restricted_registry(names)  # type: ignore[assignment]
        encoder, content_type = choose_encoder(headers.get("accept", ""))
        body = encoder(registry)
        extra = [("Content-Type", content_type)]
        if gzip_accepted(headers.get("accept-encoding", "")):
            import gzip

            body = gzip.compress(body)
            extra.append(("Content-Encoding", "gzip"))
        return self._reply(200, body, keep=keep, extra=extra, head_only=method == "HEAD"), keep

    @staticmethod
    def _reply(status: int, body: bytes, *, keep: bool, extra: list[tuple[str, str]] | None = None,
               head_only: bool = False) -> bytes:
        hdrs = extra or [("Content-Type", "text/plain; charset=utf-8")]
        lines = [f"HTTP/1.1 {status} {_REASONS[status]}", *(f"{k}: {v}" for k, v in hdrs),
                 f"Content-Length: {len(body)}", f"Connection: {'keep-alive' if keep else 'close'}", "", ""]
        return "\r\n".join(lines).encode("latin-1") + (b"" if head_only else body)

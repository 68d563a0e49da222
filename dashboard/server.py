"""The dashboard as an ASGI app: ``streamlit run dashboard/server.py`` (what dashboard.launch runs).

``st.App`` serves ``app.py`` exactly as ``streamlit run dashboard/app.py`` would, with one
middleware in front: :class:`BaseUrlScript`. When a browser opens a page's own URL
(``/placement``, a bookmark or a reload), Streamlit's frontend does not know the app's base URL
and probes ``/placement/_stcore/health`` and ``/placement/_stcore/host-config`` first; the
server answers 404 and the browser logs two errors before the frontend falls back to ``/``.
The middleware tells the frontend its base URL up front (``window.__streamlit``, the frontend's
documented embedding hook, read before its bundle starts), so it probes only the right one.

The server also watches the process that launched it (``MESH_DASHBOARD_PARENT_PID``) and stops
when that one is gone, so no server outlives its launcher, however the launcher ended.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from typing import Any

import streamlit as st
from starlette.middleware import Middleware

__all__ = ["BaseUrlScript", "BASE_URL_SCRIPT", "PARENT_ENV", "watch_parent", "app"]

# The origin plus the served base path: the frontend then connects there without probing.
BASE_URL_SCRIPT = (
    b"<script>window.__streamlit=Object.assign(window.__streamlit||{},"
    b"{BACKEND_BASE_URL:window.location.origin+__BASE__})</script>"
)
_NOT_HTML = ("/_stcore/", "/static/", "/media/", "/component", "/app/static/")


class BaseUrlScript:
    """ASGI middleware: put :data:`BASE_URL_SCRIPT` at the top of every HTML page it serves."""

    def __init__(self, app: Any, base_path: str = "") -> None:
        self.app = app
        base = "/" + base_path.strip("/")
        self.script = BASE_URL_SCRIPT.replace(b"__BASE__", repr(base.rstrip("/") + "/").encode())

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        path = scope.get("path", "")
        if scope.get("type") != "http" or scope.get("method") != "GET" or any(p in path for p in _NOT_HTML):
            await self.app(scope, receive, send)
            return
        # plain bytes for the pages themselves (they are small); everything else stays compressed
        scope = dict(scope, headers=[(k, v) for k, v in scope.get("headers", []) if k != b"accept-encoding"])
        start: dict[str, Any] = {}
        body: list[bytes] = []

        async def rewrite(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                start.update(message)
                return
            if message["type"] != "http.response.body":
                await send(message)
                return
            body.append(message.get("body", b""))
            if message.get("more_body"):
                return
            data = b"".join(body)
            headers = list(start.get("headers", []))
            is_html = dict(headers).get(b"content-type", b"").startswith(b"text/html")
            if is_html and b"<head>" in data:
                data = data.replace(b"<head>", b"<head>" + self.script, 1)
                headers = [(k, v) for k, v in headers if k != b"content-length"]
                headers.append((b"content-length", str(len(data)).encode()))
            await send({**start, "headers": headers})
            await send({"type": "http.response.body", "body": data})

        await self.app(scope, receive, rewrite)


PARENT_ENV = "MESH_DASHBOARD_PARENT_PID"  # set by dashboard.launch: the process that owns this server


def watch_parent(pid: int, *, every_s: float = 1.0) -> threading.Thread:
    """Stop this server (SIGTERM to itself, Streamlit's clean shutdown) once process ``pid``
    is gone, even if that one was killed without a chance to stop it (SIGKILL, a crash)."""

    def watch() -> None:
        while True:
            time.sleep(every_s)
            try:
                os.kill(pid, 0)
            except ProcessLookupError:
                os.kill(os.getpid(), signal.SIGTERM)
                return
            except PermissionError:  # alive, owned by someone else
                pass

    t = threading.Thread(target=watch, name="mesh-parent-watch", daemon=True)
    t.start()
    return t


if os.environ.get(PARENT_ENV, "").isdigit():
    watch_parent(int(os.environ[PARENT_ENV]))


def _base_path() -> str:
    from streamlit import config

    return str(config.get_option("server.baseUrlPath") or "")


app = st.App("app.py", middleware=[Middleware(BaseUrlScript, base_path=_base_path())])

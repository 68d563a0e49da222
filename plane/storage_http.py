"""HTTP(S) storage, ModelMesh's ``http`` type: ``url``, optional ``headers`` (every value is a
secret: masked wherever a config is shown) and optional ``certificate`` (PEM of a CA to trust).

A model's path is appended to the URL's path, as ModelMesh's puller joins them
(``https://host/repo`` + ``mnist/model.onnx`` -> ``https://host/repo/mnist/model.onnx``, the
URL's query kept); the empty path (``mesh storage test KEY`` without ``--path``) is the URL
itself. A model here is one file: HTTP has no listing, so a model directory needs s3, local or
pvc storage. Userinfo in the URL (``https://user:pass@host``) is sent as Basic authentication.

Downloads go through the disk cache, keyed by what the server says of the file (ETag,
Last-Modified, Content-Length, from a HEAD request; servers and pre-signed URLs that refuse
HEAD get a GET whose body is not read). A server that gives neither ETag nor Last-Modified is
downloaded again at every load. Every request has a timeout; redirects to another host or
scheme drop the configured headers, so a credential never follows a redirect elsewhere.
"""

from __future__ import annotations

import base64
import http
import http.client
import json
import pathlib
import re
import socket
import ssl
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from typing import Any

from plane import secrets
from plane.disk_cache import DiskCache
from plane.records import StorageConfig
from plane.storage_base import StorageError, StorageTestResult, check_relative_path, store

__all__ = ["HTTP_TIMEOUT_S", "HttpStatusError", "Unreachable", "validate", "model_url", "probe", "size", "fetch",
           "test"]

HTTP_TIMEOUT_S = 30.0  # connecting, and each read: a server silent for this long fails the load
CHUNK = 1 << 20
_TOKEN = re.compile(r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")  # an HTTP header name (RFC 9110 token)


class HttpStatusError(StorageError):
    """The server answered, with an error status."""

    def __init__(self, message: str, code: int):
        super().__init__(message)
        self.code = code


class Unreachable(StorageError):
    """No usable answer: connection refused, name not found, timeout, TLS failure, 5xx."""


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """An http config's parameters, checked; ``headers`` may be given as a JSON string."""
    from plane.operations import ValidationError

    url = params.get("url")
    if not url:
        raise ValidationError("an http storage config needs 'url': the base URL that model paths are appended "
                              "to, e.g. https://models.example/repo")
    if not isinstance(url, str) or not url.startswith(("http://", "https://")):
        raise ValidationError(f"url {secrets.mask_url(str(url))!r} must start with http:// or https://")
    try:
        parts = urllib.parse.urlsplit(url)
        _ = parts.port
    except ValueError:
        raise ValidationError(f"url {secrets.mask_url(url)!r} is not a valid URL") from None
    if not parts.hostname:
        raise ValidationError(f"url {secrets.mask_url(url)!r} names no host")
    headers = params.get("headers")
    if headers in (None, "", {}):
        params.pop("headers", None)
    else:
        if isinstance(headers, str):
            try:
                headers = json.loads(headers)
            except ValueError:
                raise ValidationError("'headers' must be a JSON object: header name -> value") from None
        if not isinstance(headers, dict):
            raise ValidationError("'headers' must be an object: header name -> value (or list of values)")
        for name, value in headers.items():
            if not isinstance(name, str) or not _TOKEN.match(name):
                raise ValidationError(f"header name {str(name)[:64]!r} is not a valid HTTP header name")
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) for v in values):
                raise ValidationError(f"header {name!r}: the value must be a string or a list of strings")
            if any(c in v for v in values for c in "\r\n\0"):
                raise ValidationError(f"header {name!r}: a value must not contain line breaks")
        params["headers"] = dict(headers)
    cert = params.get("certificate")
    if cert is not None and (not isinstance(cert, str) or "BEGIN CERTIFICATE" not in cert):
        raise ValidationError("'certificate' must be the PEM text of the CA certificate to trust")
    return params


def model_url(base: str, path: str) -> str:
    """The URL of the model at ``path`` (``base`` itself for the empty path)."""
    parts = urllib.parse.urlsplit(base)
    if path:
        check_relative_path(path)
        parts = parts._replace(path=parts.path.rstrip("/") + "/" + urllib.parse.quote(path, safe="/"))
    return urllib.parse.urlunsplit(parts._replace(fragment=""))


def _url_of(cfg: StorageConfig, path: str) -> str:
    base = cfg.params.get("url")
    if not isinstance(base, str) or not base.startswith(("http://", "https://")):
        raise StorageError(f"http storage {cfg.key!r} has no http(s) 'url': set it again with `mesh storage set`")
    return model_url(base, path)


class _Redirects(urllib.request.HTTPRedirectHandler):
    """Follows redirects over http(s) only; one to another scheme, host or port drops the
    configured headers (and the Basic authentication of the URL's userinfo)."""

    def __init__(self, names: list[str]):
        super().__init__()
        self.names = {n.capitalize() for n in names} | {"Authorization"}

    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> Any:
        new = super().redirect_request(req, fp, code, msg, headers, newurl)
        if new is None:
            return None
        old, nxt = urllib.parse.urlsplit(req.full_url), urllib.parse.urlsplit(new.full_url)
        if nxt.scheme not in ("http", "https"):
            return None  # the 3xx is then reported as it is
        if (old.scheme, old.hostname, old.port) != (nxt.scheme, nxt.hostname, nxt.port):
            for name in self.names:
                new.remove_header(name)
        return new


def _request(cfg: StorageConfig, url: str, method: str) -> tuple[urllib.request.Request, list[str]]:
    parts = urllib.parse.urlsplit(url)
    headers: dict[str, str] = {}
    if parts.username is not None:
        user = urllib.parse.unquote(parts.username)
        password = urllib.parse.unquote(parts.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        url = urllib.parse.urlunsplit(parts._replace(netloc=parts.netloc.rpartition("@")[2]))
    configured = dict(cfg.params.get("headers") or {})
    for name, value in configured.items():
        headers[name] = ", ".join(value) if isinstance(value, list) else str(value)
    req = urllib.request.Request(url, method=method)
    for name, text in headers.items():
        req.add_header(name, text)
    if not req.has_header("User-agent"):
        req.add_header("User-Agent", "mesh-plane")
    return req, list(configured)


def _opener(cfg: StorageConfig, names: list[str]) -> urllib.request.OpenerDirector:
    handlers: list[Any] = [_Redirects(names)]
    cert = cfg.params.get("certificate")
    if cert:
        try:
            handlers.append(urllib.request.HTTPSHandler(context=ssl.create_default_context(cadata=str(cert))))
        except (ssl.SSLError, ValueError) as exc:
            raise StorageError(f"the storage's certificate cannot be read: {exc}") from None
    return urllib.request.build_opener(*handlers)


def _unreachable(url: str, exc: BaseException) -> Unreachable:
    reason: Any = exc.reason if isinstance(exc, urllib.error.URLError) else exc
    where = secrets.mask_url(url)
    if isinstance(reason, TimeoutError):
        return Unreachable(f"no answer from {where} within {HTTP_TIMEOUT_S:.0f} s")
    if isinstance(reason, ConnectionRefusedError):
        return Unreachable(f"cannot reach {where}: connection refused (check the url and that the server runs)")
    if isinstance(reason, socket.gaierror):
        return Unreachable(f"cannot reach {where}: host {urllib.parse.urlsplit(url).hostname!r} not found")
    if isinstance(reason, ssl.SSLError | ssl.CertificateError):
        return Unreachable(f"TLS with {where} failed ({getattr(reason, 'reason', None) or reason}): give the "
                           "server's CA certificate as the storage's 'certificate'")
    return Unreachable(f"cannot reach {where}: {type(reason).__name__}: {str(reason)[:200]}")


def _phrase(code: int) -> str:
    try:
        return http.HTTPStatus(code).phrase
    except ValueError:
        return ""


def _open(cfg: StorageConfig, url: str, method: str) -> Any:
    req, names = _request(cfg, url, method)
    try:
        return _opener(cfg, names).open(req, timeout=HTTP_TIMEOUT_S)
    except urllib.error.HTTPError as exc:
        exc.close()
        where = secrets.mask_url(url)
        status = f"HTTP {exc.code} {_phrase(exc.code)}".rstrip()  # the standard phrase, not the server's text
        if exc.code >= 500:
            raise Unreachable(f"{where} answered {status}") from None
        hint = {401: ": check the storage's headers (credentials)", 403: ": check the storage's headers "
                "(credentials)", 404: ": check the storage's url and the model path", 410: ": check the model path"}
        raise HttpStatusError(f"{where} answered {status}{hint.get(exc.code, '')}", exc.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _unreachable(url, exc) from None


def _meta(resp: Any) -> dict[str, Any]:
    length = resp.headers.get("Content-Length")
    return {"status": int(resp.status), "size": int(length) if length and length.isdigit() else None,
            "etag": resp.headers.get("ETag", ""), "modified": resp.headers.get("Last-Modified", ""),
            "type": resp.headers.get("Content-Type", "")}


def probe(cfg: StorageConfig, url: str) -> dict[str, Any]:
    """What the server says of ``url``: status, size (None if it does not say), ETag, Last-Modified."""
    try:
        with _open(cfg, url, "HEAD") as resp:
            return _meta(resp)
    except HttpStatusError as exc:
        if exc.code not in (403, 405, 501):
            raise
    with _open(cfg, url, "GET") as resp:  # HEAD refused: the headers of a GET (its body left unread)
        return _meta(resp)


def size(cfg: StorageConfig, path: str) -> int:
    """The model file's size in bytes (0 when the server does not say)."""
    return int(probe(cfg, _url_of(cfg, path))["size"] or 0)


def _download(cfg: StorageConfig, url: str, dest: pathlib.Path) -> None:
    where = secrets.mask_url(url)
    got = 0
    with _open(cfg, url, "GET") as resp:
        expected = _meta(resp)["size"]
        with open(dest, "wb") as out:  # a local disk fault leaves as OSError: the caller decides
            while True:
                try:
                    chunk = resp.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:
                    raise Unreachable(f"download from {where} broke off after {got} bytes "
                                      f"({type(exc).__name__})") from None
                if not chunk:
                    break
                out.write(chunk)
                got += len(chunk)
    if expected is not None and got != expected:
        raise Unreachable(f"download from {where} ended after {got} of {expected} bytes")


def fetch(cfg: StorageConfig, path: str, cache: DiskCache | None,
          warn: Callable[[str], None] | None) -> tuple[pathlib.Path, str]:
    """The model file on local disk (a disk-cache entry or a scratch file) and where it came from."""
    url = _url_of(cfg, path)
    last = f"{cfg.key}\0{path}\0last"
    try:
        meta = probe(cfg, url)
    except Unreachable:
        stale = cache.get(last) if cache is not None else None
        if stale is not None:  # the server is away: the newest copy this pod pulled still serves
            return stale, "disk-cache"
        raise
    ident = f"{cfg.key}\0{url}\0{meta['etag']}\0{meta['modified']}\0{meta['size']}"
    if cache is not None and (meta["etag"] or meta["modified"]):
        hit = cache.get(ident)
        if hit is not None:
            return hit, "disk-cache"
    name = path or urllib.parse.urlsplit(url).path.rpartition("/")[2] or "model"
    return store(cache, ident, last, lambda dest: _download(cfg, url, dest), directory=False, what=name,
                 key=cfg.key, origin="http", warn=warn)


def test(cfg: StorageConfig, path: str) -> StorageTestResult:
    url = _url_of(cfg, path)
    where = secrets.mask_url(url)
    try:
        meta = probe(cfg, url)
    except HttpStatusError as exc:
        if not path and exc.code == 404:
            return StorageTestResult(True, f"{where} is reachable (HTTP 404 for the base URL itself, as most file "
                                     "servers answer): give --path to check a model file")
        return StorageTestResult(False, str(exc))
    about = f", {meta['size']} bytes" if meta["size"] is not None else ""
    return StorageTestResult(True, f"{where} answered HTTP {meta['status']}{about}", [path] if path else [])

"""Errors at the REST edge: one mapping from the pod's errors to HTTP statuses.

The pod's parts raise :class:`MeshError` with the gRPC status a client should see (the gRPC
edge sends it as is); here the same code becomes an HTTP status, following the usual
gRPC-to-HTTP table, with one deliberate exception: RESOURCE_EXHAUSTED, which the router raises
when no pod can hold a model, is 503 (the request may succeed once room is made), not 429, and
every load failure (``load_failed``: no pod could load the model, even for a corrupt file that
gRPC reports as INTERNAL) is 503 with the header ``mm-load-failed: 1``, the gRPC trailer's twin.
Registry failures are 503 (etcd unavailable), as on the gRPC edge's UNAVAILABLE. Anything
unexpected is logged with its traceback and answered 500 ``internal error``: a client never
sees a stack trace or an exception's name.

Nothing in :mod:`plane.rest` imports :mod:`plane.pod` at module level, so the pod's server can
import this package at its top without a cycle.
"""

from __future__ import annotations

import logging

import grpc

from plane import operations
from plane.records import Conflict, RegistryError
from plane.rest.codec import CodecError

__all__ = ["RestError", "GRPC_TO_HTTP", "http_error"]

log = logging.getLogger("mesh.rest")

S = grpc.StatusCode
GRPC_TO_HTTP: dict[grpc.StatusCode, int] = {
    S.OK: 200,
    S.INVALID_ARGUMENT: 400,
    S.FAILED_PRECONDITION: 400,
    S.OUT_OF_RANGE: 400,
    S.UNAUTHENTICATED: 401,
    S.PERMISSION_DENIED: 403,
    S.NOT_FOUND: 404,
    S.ALREADY_EXISTS: 409,
    S.ABORTED: 409,
    S.CANCELLED: 503,  # a peer went away mid-call: retryable, like UNAVAILABLE
    S.RESOURCE_EXHAUSTED: 503,  # no pod has room for the model
    S.UNAVAILABLE: 503,
    S.DEADLINE_EXCEEDED: 504,
    S.UNIMPLEMENTED: 501,
    S.INTERNAL: 500,
    S.UNKNOWN: 500,
    S.DATA_LOSS: 500,
}


class RestError(Exception):
    """An HTTP-level refusal (bad route, method, body size, header) with its status."""

    def __init__(self, status: int, message: str, *, allow: str = ""):
        super().__init__(message)
        self.status = status
        self.message = message
        self.allow = allow  # for 405: the methods the route takes


def http_error(exc: BaseException, what: str = "request") -> tuple[int, str, bool]:
    """(HTTP status, message for the client, load failed) for an exception raised serving ``what``."""
    # Imported here, not at the top: plane.pod's package imports the pod server, which starts this
    # REST server, so a module-level import would make ``import plane.rest`` circular.
    from plane.pod.errors import MeshError

    if isinstance(exc, RestError):
        return exc.status, exc.message, False
    if isinstance(exc, CodecError):
        return 400, str(exc), False
    if isinstance(exc, MeshError):
        if exc.load_failed:  # no pod could load the model (gRPC says INTERNAL for a corrupt file)
            return 503, exc.message, True
        return GRPC_TO_HTTP.get(exc.code, 500), exc.message, False
    if isinstance(exc, operations.NotFound):
        return 404, str(exc), False
    if isinstance(exc, operations.ValidationError):
        return 400, str(exc), False
    if isinstance(exc, Conflict):
        return 409, str(exc), False
    if isinstance(exc, RegistryError):
        return 503, f"registry unavailable: {exc}", False
    log.error("%s failed", what, exc_info=exc)
    return 500, "internal error", False

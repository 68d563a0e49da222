"""Errors and wire constants shared by the pod's parts.

A part raises :class:`MeshError` with the gRPC status a client should see; only the servicers
turn it into a status. A peer's answer comes back as :class:`PeerError`, so routing never
depends on grpc's exception classes (and a fake peer client can raise the same thing).
"""

from __future__ import annotations

import grpc

__all__ = ["MeshError", "PeerError", "HOP_HEADER", "PURPOSE_HEADER", "TOKEN_HEADER", "LOAD_FAILED_TRAILER",
           "INTERNAL_PREFIX", "Purpose", "q"]

HOP_HEADER = "mm-internal-hop"  # a peer forwarded this: serve it here, never forward again
PURPOSE_HEADER = "mm-internal-purpose"  # why a peer asks for a load: "request" or a planner reason
TOKEN_HEADER = "mm-internal-token"  # the plane's peer token: internal headers count only with it
INTERNAL_PREFIX = "mm-internal-"  # headers a client may not set (ignored without the token)
LOAD_FAILED_TRAILER = "mm-load-failed"  # the answer is a load failure (try another pod)
NAME_QUOTE_MAX = 64


def q(name: str) -> str:
    """A name as quoted in a message: repr, cut to a readable length (a client may send 10 KB)."""
    text = repr(name)
    return text if len(text) <= NAME_QUOTE_MAX else text[: NAME_QUOTE_MAX - 5] + "...'"


class Purpose:
    """Why a copy is loaded. Only a request's load may evict other copies."""

    REQUEST = "request"
    PLANNED = "planned"  # preload, scale-up: free space only, never evicts


class MeshError(Exception):
    """An error with the gRPC status code a client should see."""

    def __init__(self, code: grpc.StatusCode, message: str, *, load_failed: bool = False, needs: int = 0,
                 capacity: int = 0):
        super().__init__(message)
        self.code = code
        self.message = message
        self.load_failed = load_failed
        self.needs = needs  # a copy that did not fit: the bytes it needs, and the pod's capacity
        self.capacity = capacity


class PeerError(Exception):
    """A peer pod answered with an error, or did not answer."""

    def __init__(self, pod_id: str, code: grpc.StatusCode, details: str, *, load_failed: bool = False):
        super().__init__(f"pod {pod_id}: {code.name}: {details}")
        self.pod_id = pod_id
        self.code = code
        self.details = details
        self.load_failed = load_failed

    @property
    def unreachable(self) -> bool:
        """The peer did not serve the call at all (gone, restarting, cancelled)."""
        return self.code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.CANCELLED)

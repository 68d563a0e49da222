"""What a call asks for: its headers, whether it comes from a peer, its deadline, its model.

The trust boundary lives here. Headers starting ``mm-internal-`` (a forward's hop mark, a
planned load's purpose) count only when the call also carries the plane's peer token; from
anyone else they are dropped, so a client cannot make every pod load its own copy. Internal
RPCs (``/meshinternal.Peer/...``) check the same token and answer outsiders PERMISSION_DENIED.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import grpc

from plane.pod.errors import HOP_HEADER, INTERNAL_PREFIX, PURPOSE_HEADER, TOKEN_HEADER, MeshError, Purpose, q

__all__ = ["Call", "CallReader", "resolve_model"]


@dataclass(slots=True)
class Call:
    """One incoming call, read once."""

    forward: tuple[tuple[str, Any], ...] = ()  # the client's mm-* headers, passed on to a peer
    model_id: str | None = None  # from mm-model-id[-bin]
    vmodel_id: str | None = None  # from mm-vmodel-id[-bin]
    hop: bool = False  # a peer forwarded it (token checked): serve here, never forward again
    purpose: str = Purpose.REQUEST
    trusted: bool = False  # carried the plane's peer token
    deadline: float | None = None  # time.monotonic() by which the caller gives up
    extra: dict[str, Any] = field(default_factory=dict)

    def remaining(self, cap: float) -> float:
        """Seconds left for a call made on this one's behalf, at most ``cap``."""
        if self.deadline is None:
            return cap
        return max(0.0, min(cap, self.deadline - time.monotonic()))


def _text(key: str, value: Any) -> str:
    if isinstance(value, bytes):
        try:
            return value.decode("utf-8")
        except UnicodeDecodeError:
            raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, f"header {key} is not valid UTF-8") from None
    return str(value)


def _read_model_header(call: Call, key: str, value: Any) -> None:
    """mm-model-id / mm-vmodel-id (or their -bin forms) into the call; other headers are not read."""
    if key == "mm-model-id" or key == "mm-model-id-bin":
        call.model_id = _text(key, value)
    elif key == "mm-vmodel-id" or key == "mm-vmodel-id-bin":
        call.vmodel_id = _text(key, value)


class CallReader:
    """Reads calls against the plane's peer token (``token()`` is None until the pod knows it)."""

    def __init__(self, token: Callable[[], str | None]):
        self.token = token

    def read(self, metadata: Any, time_remaining: float | None = None) -> Call:
        call = Call()
        forward = []
        token = None
        hop = False
        purpose = Purpose.REQUEST
        for key, value in metadata or ():
            if not key.startswith("mm-"):
                continue
            if key.startswith(INTERNAL_PREFIX):
                if key == HOP_HEADER:
                    hop = True
                elif key == PURPOSE_HEADER:
                    purpose = value if value in (Purpose.REQUEST, Purpose.PLANNED) else Purpose.REQUEST
                elif key == TOKEN_HEADER:
                    token = value
                continue  # never passed on as the client sent it
            forward.append((key, value))
            _read_model_header(call, key, value)
        call.forward = tuple(forward)
        if token is not None:
            mine = self.token()
            call.trusted = mine is not None and hmac.compare_digest(str(token).encode(), mine.encode())
        if call.trusted:
            call.hop, call.purpose = hop, purpose
        if time_remaining is not None:
            call.deadline = time.monotonic() + time_remaining
        return call

    def forwarded(self, headers: Any, deadline: float | None) -> Call:
        """A call a peer forwarded over the hop port (the connection presented the token): the
        client's ``mm-*`` headers as the first pod read them, served here, never forwarded again."""
        call = Call(hop=True, trusted=True, deadline=deadline)
        forward = []
        for key, value in headers or ():
            if not key.startswith("mm-") or key.startswith(INTERNAL_PREFIX):
                continue
            forward.append((key, value))
            _read_model_header(call, key, value)
        call.forward = tuple(forward)
        return call

    def require_peer(self, metadata: Any) -> None:
        """Internal RPCs: PERMISSION_DENIED unless the caller is a pod of this plane."""
        if not self.read(metadata).trusted:
            raise MeshError(grpc.StatusCode.PERMISSION_DENIED,
                            "internal pod-to-pod call refused: the caller did not present the plane's peer token")


def resolve_model(name: str, call: Call, vmodels: dict[str, Any]) -> str:
    """The model id a call names: mm-vmodel-id, else mm-model-id, else model_name read as a
    vmodel first, then as a model id (SPEC section 2)."""
    if call.model_id and call.vmodel_id:
        raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "request names both a model id and a vmodel id")
    if call.vmodel_id:
        v = vmodels.get(call.vmodel_id)
        if v is None or not v.active:
            raise MeshError(grpc.StatusCode.NOT_FOUND, f"vmodel {q(call.vmodel_id)} is not defined")
        return str(v.active)
    if call.model_id:
        return call.model_id
    if not name:
        raise MeshError(grpc.StatusCode.INVALID_ARGUMENT, "model_name is empty")
    v = vmodels.get(name)
    if v is not None and v.active:
        return str(v.active)
    return name

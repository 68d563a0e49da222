"""Helpers shared by test modules (imported as ``tests.support``; conftest modules are for fixtures)."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable
from typing import TypeVar

T = TypeVar("T")


def wait_for(predicate: Callable[[], T], timeout: float = 20.0, what: str = "condition",
             interval: float = 0.05) -> T:
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def uid(base: str) -> str:
    """A name unique to this test run."""
    return f"{base}-{uuid.uuid4().hex[:6]}"


# The plane fixtures start their pods with this peer token (MESH_PEER_TOKEN), so a test can act
# as a peer: a request with these headers is served (loading if needed) by the pod it reaches.
TEST_PEER_TOKEN = "test-peer-token-5c1d0e"


def pin_metadata(token: str = TEST_PEER_TOKEN) -> tuple[tuple[str, str], ...]:
    from plane.pod.errors import HOP_HEADER, TOKEN_HEADER

    return ((HOP_HEADER, "1"), (TOKEN_HEADER, token))


def pin_headers(token: str = TEST_PEER_TOKEN) -> dict[str, str]:
    return dict(pin_metadata(token))

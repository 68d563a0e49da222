"""Fixtures for the console tests: demo apps with a pinned clock, a plane client that writes
registry records the way pods do, a moto S3 server with IAM authentication, and helpers to
wait for the UI (poll with a timeout, never a bare sleep)."""

from __future__ import annotations

import datetime as dt
import pathlib
import sys
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # an editable install made before console/ existed does not map it
    sys.path.insert(0, str(ROOT))

from tests_console_support import SIZE, UI_TIMEOUT_S, wait_for  # noqa: E402,F401 - shared with the tests

from console.app import MeshConsole  # noqa: E402
from console.demo import DEMO_NOW_MS, demo_state  # noqa: E402
from plane.api import PlaneClient  # noqa: E402
from plane.settings import MeshSettings  # noqa: E402


@pytest.fixture
def demo_app() -> Callable[..., MeshConsole]:
    """A console over the demo data, no etcd, with "now" pinned and times in UTC."""

    def make(**kwargs: Any) -> MeshConsole:
        kwargs.setdefault("state", demo_state())
        kwargs.setdefault("clock", lambda: DEMO_NOW_MS)
        kwargs.setdefault("tz", dt.UTC)
        kwargs.setdefault("endpoint_label", "etcd demo:2379 (prefix mesh)")
        return MeshConsole(**kwargs)

    return make


@pytest.fixture
def plane_client(settings: MeshSettings) -> Iterator[PlaneClient]:
    """A client on the test's registry prefix, for writing what pods would write."""
    client = PlaneClient.connect(settings)
    try:
        yield client
    finally:
        client.close()


@pytest.fixture(scope="session")
def s3_server(s3_server) -> dict[str, str]:
    """The session's S3 endpoint (tests/conftest.py: moto in its own process, credentials
    checked, so a wrong secret is refused), with a bucket of this suite's own holding two objects.
    A separate process keeps moto's global auth switch away from other suites' in-process servers."""
    s3 = s3_server["client"]
    s3.create_bucket(Bucket="console-models")
    s3.put_object(Bucket="console-models", Key="mnist/model.onnx", Body=b"onnx-bytes")
    s3.put_object(Bucket="console-models", Key="resnet/model.onnx", Body=b"onnx-bytes")
    return {"endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key_id"],
            "secret_access_key": s3_server["secret_access_key"], "bucket": "console-models"}

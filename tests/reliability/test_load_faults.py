"""Faults during a load: the S3 endpoint goes away (before and in the middle of a download), and
the pod doing a load is killed. Each test runs its own pods under its own registry prefix."""

from __future__ import annotations

import os
import signal
import threading
import time

import grpc
import numpy as np
import pytest

from plane import demo, local
from plane.proto import inference_pb2 as ipb
from plane.proto import mmesh_pb2 as mpb

from .conftest import (
    TcpForwarder,
    check_tiny_response,
    infer_stub,
    load_here,
    mgmt,
    start_plane,
    tiny_request,
    uid,
    wait_for,
)

pytestmark = pytest.mark.slow

FAIL_BOUND_S = 30.0  # a load from an unreachable S3 endpoint must fail within this


def medium_request(model_id: str) -> ipb.ModelInferRequest:
    x = demo.sample_input("digits").astype(np.float32)
    req = ipb.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
    req.raw_input_contents.append(x.tobytes())
    return req


def model_status(endpoint: str, model_id: str) -> mpb.ModelStatusInfo:
    ch, stub = mgmt(endpoint)
    with ch:
        return stub.getModelStatus(mpb.GetStatusRequest(modelId=model_id), timeout=10)


def test_s3_down_gives_loading_failed_then_recovers(s3_server, rel_models, medium_model_file, etcd_endpoint,
                                                    tmp_path):
    s3 = s3_server["client"]
    port = int(s3_server["endpoint_url"].rsplit(":", 1)[1])
    tiny_key, medium_key = f"rel/{uid('tiny')}.onnx", f"rel/{uid('medium')}.onnx"
    s3.put_object(Bucket="models", Key=tiny_key, Body=(rel_models / "tiny" / "model.onnx").read_bytes())
    s3.put_object(Bucket="models", Key=medium_key, Body=medium_model_file.read_bytes())
    fwd = TcpForwarder(("127.0.0.1", port))
    slow = TcpForwarder(("127.0.0.1", port), delay_s=0.02)
    creds = {"access_key_id": s3_server["access_key_id"], "secret_access_key": s3_server["secret_access_key"],
             "bucket": "models"}
    try:
        with start_plane(etcd_endpoint, tmp_path / "state", None, pods=2, failure_expiry_s=3) as plane:
            client, (p0, p1) = plane.client, plane.pods
            client.set_storage("s3flaky", "s3", {"endpoint_url": fwd.url, **creds})
            client.set_storage("s3slow", "s3", {"endpoint_url": slow.url, **creds})

            # 1. endpoint down before the load
            model = uid("s3down")
            client.register_model(model, path=tiny_key, storage_key="s3flaky")
            fwd.down()
            ch, stub = infer_stub(p0.endpoint)
            with ch:
                t0 = time.monotonic()
                with pytest.raises(grpc.RpcError) as info:
                    stub.ModelInfer(tiny_request(model), timeout=60)
                assert time.monotonic() - t0 < FAIL_BOUND_S
            assert info.value.code() in (grpc.StatusCode.INTERNAL, grpc.StatusCode.UNAVAILABLE), info.value
            assert "cannot reach the S3 endpoint" in info.value.details(), info.value.details()
            status = model_status(p1.endpoint, model)
            assert status.status == mpb.ModelStatusInfo.LOADING_FAILED
            assert status.errors and all("cannot reach the S3 endpoint" in e for e in status.errors), status.errors
            assert fwd.url in status.errors[0]  # the reason names the endpoint
            failed_pods = set(client.get_model(model).failed)
            assert failed_pods
            events = [e for e in client.events(limit=0) if e.model == model and e.kind == "load-failed"]
            assert events and "cannot reach the S3 endpoint" in events[0].reason

            # endpoint back: a later request loads it (on a pod that failed before, if need be)
            fwd.up()
            ch, stub = infer_stub(p0.endpoint)
            with ch:
                check_tiny_response(stub.ModelInfer(tiny_request(model), timeout=60))
            # answered first; the registry hears of the copy right after
            rec = wait_for(lambda: (r := client.get_model(model)).status() == "LOADED" and r, 10, "LOADED")
            assert not set(rec.loaded_on()) & set(rec.failed)  # a successful load clears that pod's failure
            wait_for(lambda: model_status(p0.endpoint, model).status == mpb.ModelStatusInfo.LOADED, 10, "LOADED")
            # after failure_expiry_s the failures no longer count against placement
            wait_for(lambda: not client.get_model(model).live_failures(int(time.time() * 1000), 3000), 10,
                     "the recorded failures to expire")

            # 2. endpoint cut in the middle of a download (a slow link, then nothing)
            model2 = uid("s3cut")
            client.register_model(model2, path=medium_key, storage_key="s3slow")
            result: dict[str, object] = {}

            def call() -> None:
                ich, istub = infer_stub(p0.endpoint)
                with ich:
                    try:
                        result["ok"] = istub.ModelInfer(medium_request(model2), timeout=90)
                    except grpc.RpcError as exc:
                        result["err"] = exc

            t = threading.Thread(target=call, daemon=True)
            t.start()
            wait_for(lambda: client.get_model(model2).loading_on(), 30, "the download to start", every=0.01)
            time.sleep(0.3)  # let bytes flow: the cut must land mid-download  # noqa: ASYNC251
            slow.down()
            t.join(FAIL_BOUND_S + 30)
            assert not t.is_alive(), "the request hung after the endpoint went away"
            assert "err" in result, "the load succeeded although the endpoint was cut mid-download"
            rec = client.get_model(model2)
            assert rec.status() == "LOADING_FAILED" and not rec.copies, rec
            assert all("S3" in f.message for f in rec.failed.values()), rec.failed
            # no half-written file was left in a pod's disk cache under a final name
            sizes = {medium_model_file.stat().st_size, (rel_models / "tiny" / "model.onnx").stat().st_size}
            for pod in plane.pods:
                cache = plane.settings.resolved_disk_cache_dir() / pod.pod_id
                kept = [p for p in cache.iterdir() if p.is_file() and not p.name.startswith(".")]
                assert all(p.stat().st_size in sizes for p in kept), [(p.name, p.stat().st_size) for p in kept]
            slow.delay_s = 0.0
            slow.up()
            ich, istub = infer_stub(p1.endpoint)
            with ich:
                resp = istub.ModelInfer(medium_request(model2), timeout=90)
            assert resp.outputs  # answered first; the registry hears of the copy right after
            wait_for(lambda: client.get_model(model2).status() == "LOADED", 10, "LOADED in the registry")
    finally:
        fwd.down()
        slow.down()


def test_pod_killed_during_load_is_retried_elsewhere(etcd_endpoint, rel_models, medium_model_file, tmp_path):
    with start_plane(etcd_endpoint, tmp_path / "state", rel_models, pods=3) as plane:
        client = plane.client
        entry = plane.pods[0]
        pids = {p.pod_id: p.pid for p in plane.pods}
        # one model on the entry pod, so placement prefers the two empty pods for the next load
        filler = uid("filler")
        client.register_model(filler, path="tiny/model.onnx")
        load_here(entry.endpoint, filler)
        wait_for(lambda: {p.pod_id: p.count for p in client.pods()}.get(entry.pod_id) == 1, 10,
                 "the entry pod to publish its copy")
        killed = None
        for _attempt in range(4):
            model = uid("victim")
            client.register_model(model, path="medium/model.onnx")
            result: dict[str, object] = {}

            def call(model: str = model, result: dict = result) -> None:
                ch, stub = infer_stub(entry.endpoint)
                with ch:
                    try:
                        result["ok"] = stub.ModelInfer(medium_request(model), timeout=90)
                    except grpc.RpcError as exc:
                        result["err"] = exc

            t = threading.Thread(target=call, daemon=True)
            t.start()
            # kill the loader the moment the registry says it is loading (and not done)
            deadline = time.monotonic() + 30
            victim = None
            while time.monotonic() < deadline and t.is_alive():
                rec = client.get_model(model)
                loading = [p for p in rec.loading_on() if p != entry.pod_id]
                if loading and not rec.loaded_on():
                    victim = loading[0]
                    os.kill(pids[victim], signal.SIGKILL)
                    break
            t.join(60)
            assert not t.is_alive(), "the request hung"
            if victim is None:
                continue  # the load finished before we could catch it: try another model
            if any(e.kind == "loaded" and e.pod == victim for e in client.events(limit=0) if e.model == model):
                continue  # the kill landed just after the load finished: not the case under test
            killed = victim
            break
        assert killed is not None, "never caught a load in progress on a peer"
        assert "ok" in result, f"the request failed instead of being retried elsewhere: {result.get('err')}"
        resp = result["ok"]
        assert [o.name for o in resp.outputs] and resp.model_name == model
        wait_for(lambda: client.get_model(model).loaded_on(), 10, "the copy in the registry")
        # (the killed pod's own "load" event may be missing: the kill can land between its
        # registry update and the event write)
        wait_for(lambda: any(e.kind == "loaded" and e.pod != killed
                             for e in client.events(limit=0) if e.model == model), 10, "another pod's loaded event")
        # the dead pod's lease expires and its half-done copy is purged from the registry
        wait_for(lambda: killed not in {p.pod_id for p in client.pods()}, 20, "the killed pod's lease to expire")
        wait_for(lambda: killed not in client.get_model(model).copies, 20, "the dead copy to be purged")
        assert client.get_model(model).loaded_on()
        assert not local.pid_alive(pids[killed])

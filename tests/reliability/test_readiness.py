"""ServerReady tells the truth: false until the pod is registered, false as soon as it starts to
drain on SIGTERM (while it still answers), and it never goes back to true."""

from __future__ import annotations

import os
import signal
import time

import grpc
import pytest

from plane import local
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from tests.support import pin_metadata

from .conftest import load_here, start_plane, uid, wait_for

pytestmark = pytest.mark.slow


def poll_ready(stub: igrpc.GRPCInferenceServiceStub) -> bool | None:
    try:
        return stub.ServerReady(ipb.ServerReadyRequest(), timeout=0.5).ready
    except grpc.RpcError:
        return None


def test_ready_only_after_registration_and_false_while_draining(etcd_endpoint, rel_models, medium_model_file,
                                                                 tmp_path):
    # room for the medium forest (~80 MB once loaded) on the peer, so the drain can migrate it
    with start_plane(etcd_endpoint, tmp_path / "state", rel_models, pods=1, capacity=256 * 1024**2) as plane:
        client, settings = plane.client, plane.settings

        # -- a pod joining: not ready before its instance record exists ------------------------------
        port = local.free_port()
        pod_id = "pod-late"
        proc = local.start_pod(settings, port=port, metrics_port=0, pod_id=pod_id,
                               log_path=tmp_path / "state" / "logs" / f"{pod_id}.log")
        endpoint = f"127.0.0.1:{port}"
        try:
            observations: list[bool | None] = []
            with grpc.insecure_channel(endpoint) as ch:
                stub = igrpc.GRPCInferenceServiceStub(ch)
                deadline = time.monotonic() + 60
                while time.monotonic() < deadline:
                    assert proc.poll() is None, "the pod exited during start-up"
                    ready = poll_ready(stub)
                    observations.append(ready)
                    if ready:
                        registered = {p.pod_id: p for p in client.pods()}
                        assert pod_id in registered, "ServerReady was true before the pod was registered"
                        assert not registered[pod_id].shutting_down
                        break
                    time.sleep(0.01)
                else:
                    raise AssertionError(f"the pod never became ready: {observations[-5:]}")

                # -- the same pod draining on SIGTERM, with loaded models and a peer -----------------
                models = [uid("drain-tiny"), uid("drain-medium")]
                client.register_model(models[0], path="tiny/model.onnx")
                client.register_model(models[1], path="medium/model.onnx")
                load_here(endpoint, models[0])
                x = ipb.ModelInferRequest(model_name=models[1])
                x.inputs.add(name="input", datatype="FP32", shape=[1, 64])
                x.raw_input_contents.append(b"\0" * 256)
                stub.ModelInfer(x, metadata=pin_metadata(), timeout=60)
                wait_for(lambda: all(client.get_model(m).loaded_on() == [pod_id] for m in models), 10,
                         "both copies in the registry")
                assert poll_ready(stub) is True

                os.kill(proc.pid, signal.SIGTERM)
                during: list[bool | None] = []
                deadline = time.monotonic() + 45
                while proc.poll() is None and time.monotonic() < deadline:
                    during.append(poll_ready(stub))
                    time.sleep(0.005)
                assert proc.poll() is not None, "the pod did not exit after SIGTERM"
        finally:
            if proc.poll() is None:
                local.stop_process(proc, timeout=5, sig=signal.SIGKILL)
        assert True not in during, f"ServerReady was true after SIGTERM: {during[:20]}"
        assert False in during, "never saw ServerReady=false while the pod was draining"
        # the drain did its job: the models live on the peer, the pod's record is gone
        peer = plane.pods[0].pod_id
        wait_for(lambda: pod_id not in {p.pod_id for p in client.pods()}, 10, "the instance record to go")
        for m in models:
            rec = client.get_model(m)
            assert pod_id not in rec.copies and rec.loaded_on() == [peer], rec
        print(f"start-up observations: {len(observations)}, drain observations: "
              f"{during.count(False)} false / {during.count(None)} unanswered")


def test_drain_migrates_what_peers_can_take(etcd_endpoint, rel_models, medium_model_file, tmp_path):
    # the peer (64 MiB) cannot take the medium forest (~80 MB loaded), it can take the tiny model
    with start_plane(etcd_endpoint, tmp_path / "state", rel_models, pods=1, capacity=64 * 1024**2) as plane:
        client = plane.client
        port = local.free_port()
        big = plane.settings.model_copy(update={"capacity": 256 * 1024**2})
        proc = local.start_pod(big, port=port, metrics_port=0, pod_id="pod-big",
                               log_path=tmp_path / "state" / "logs" / "pod-big.log")
        endpoint = f"127.0.0.1:{port}"
        try:
            with grpc.insecure_channel(endpoint) as ch:
                stub = igrpc.GRPCInferenceServiceStub(ch)
                wait_for(lambda: poll_ready(stub), 60, "pod-big to be ready")
                tiny, medium = uid("mig-tiny"), uid("mig-medium")
                client.register_model(tiny, path="tiny/model.onnx")
                client.register_model(medium, path="medium/model.onnx")
                load_here(endpoint, tiny)  # used first ...
                x = ipb.ModelInferRequest(model_name=medium)
                x.inputs.add(name="input", datatype="FP32", shape=[1, 64])
                x.raw_input_contents.append(b"\0" * 256)
                stub.ModelInfer(x, metadata=pin_metadata(), timeout=60)  # ... medium most recently
            os.kill(proc.pid, signal.SIGTERM)
            wait_for(lambda: proc.poll() is not None, 45, "pod-big to exit")
        finally:
            if proc.poll() is None:
                local.stop_process(proc, timeout=5, sig=signal.SIGKILL)
        assert client.get_model(tiny).loaded_on() == [plane.pods[0].pod_id], "the tiny model was not migrated"

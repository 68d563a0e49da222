"""End to end: real pods (processes), real etcd, real gRPC over loopback, real onnxruntime.

Clients are tritonclient (a client we did not write) and the generated stubs.
"""

from __future__ import annotations

import json

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from plane.demo import sample_input
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from tests.support import pin_headers, pin_metadata, uid, wait_for

pytestmark = pytest.mark.slow

MS = mpb.ModelStatusInfo


def register_demo(client, model_dir, index: int = 0) -> tuple[str, str, str]:
    manifest = json.loads((model_dir / "manifest.json").read_text())
    m = manifest["models"][index]
    model_id = uid(m["model_id"])
    client.register_model(model_id, path=m["path"])
    return model_id, m["dataset"], m["path"]


def triton_infer(endpoint: str, model_id: str, x: np.ndarray, headers=None, outputs=None):
    c = tc.InferenceServerClient(endpoint)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    req_out = [tc.InferRequestedOutput(o) for o in outputs] if outputs else None
    return c.infer(model_id, [inp], headers=headers, outputs=req_out)


def stubs(endpoint: str):
    ch = grpc.insecure_channel(endpoint)
    return ch, igrpc.GRPCInferenceServiceStub(ch), mgrpc.ModelMeshStub(ch)


def test_status_json_names_every_pod_endpoint(plane, capsys):
    from plane.cli import main

    lp, settings, _ = plane
    code = main(["status", "--json", "--etcd", settings.etcd, "--prefix", settings.etcd_prefix])
    assert code == 0
    data = json.loads(capsys.readouterr().out)
    assert data["up"] is True
    got = sorted(p["endpoint"] for p in data["pods"])
    assert got == sorted(p.endpoint for p in lp.pods)
    for p in data["pods"]:
        host, _, port = p["endpoint"].rpartition(":")
        assert host and port.isdigit()
        assert p["capacity"] == settings.capacity


def test_inference_works_on_every_pod(plane_client, model_dir, endpoints):
    model_id, dataset, path = register_demo(plane_client, model_dir, 0)
    x = sample_input(dataset, 3)
    expected = ort.InferenceSession(str(model_dir / path)).run(None, {"input": x})
    for endpoint in endpoints:
        result = triton_infer(endpoint, model_id, x)
        np.testing.assert_array_equal(result.as_numpy("label"), expected[0])
        np.testing.assert_allclose(result.as_numpy("probabilities"), expected[1], rtol=1e-6)
    # the registry hears of the copy right after the first answer
    rec = wait_for(lambda: (lambda r: r if r.loaded_on() and r.size else None)(plane_client.get_model(model_id)),
                   what="the copy in the registry")
    # one copy serves all three pods: the others forwarded to it
    assert len(rec.loaded_on()) == 1
    assert rec.size > 0 and rec.copies[rec.loaded_on()[0]].size == rec.size


def test_model_metadata_comes_from_the_onnx_graph(plane_client, model_dir, endpoints):
    model_id, dataset, _ = register_demo(plane_client, model_dir, 1)
    md = tc.InferenceServerClient(endpoints[1]).get_model_metadata(model_id)
    assert [i.name for i in md.inputs] == ["input"]
    assert md.inputs[0].datatype == "FP32"
    assert list(md.inputs[0].shape)[1] == sample_input(dataset).shape[1]
    assert {o.name for o in md.outputs} == {"label", "probabilities"}
    # the copy is in the registry, and so in every pod's view, right after the first answer
    wait_for(lambda: tc.InferenceServerClient(endpoints[2]).is_model_ready(model_id), 10, "ready on another pod")


def test_typed_inputs_and_requested_output_filtering(plane_client, model_dir, endpoints):
    model_id, dataset, _ = register_demo(plane_client, model_dir, 2)
    x = sample_input(dataset, 2)
    ch, infer, _ = stubs(endpoints[0])
    with ch:
        req = ipb.ModelInferRequest(model_name=model_id)
        t = req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
        t.contents.fp32_contents.extend(x.ravel().tolist())
        req.outputs.add(name="probabilities")
        resp = infer.ModelInfer(req, timeout=30)
    assert [o.name for o in resp.outputs] == ["probabilities"]
    assert len(resp.raw_output_contents) == 1  # answered raw, as tritonclient needs
    probs = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(resp.outputs[0].shape)
    assert probs.shape[0] == 2
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)


def test_malformed_tensors_are_invalid_argument_and_pod_stays_up(plane_client, model_dir, endpoints):
    model_id, dataset, _ = register_demo(plane_client, model_dir, 3)
    n = sample_input(dataset).shape[1]
    ch, infer, _ = stubs(endpoints[1])
    bad_requests = []
    r = ipb.ModelInferRequest(model_name=model_id)
    r.inputs.add(name="input", datatype="FP32", shape=[1, n])
    r.raw_input_contents.append(b"\0" * (4 * n - 1))  # one byte short
    bad_requests.append(r)
    r = ipb.ModelInferRequest(model_name=model_id)
    r.inputs.add(name="nope", datatype="FP32", shape=[1, n])
    r.raw_input_contents.append(b"\0" * (4 * n))
    bad_requests.append(r)
    r = ipb.ModelInferRequest(model_name=model_id)
    r.inputs.add(name="input", datatype="FP32", shape=[1, -3])
    r.raw_input_contents.append(b"")
    bad_requests.append(r)
    r = ipb.ModelInferRequest(model_name=model_id)
    r.inputs.add(name="input", datatype="INT64", shape=[1, n])
    r.raw_input_contents.append(b"\0" * (8 * n))
    bad_requests.append(r)
    with ch:
        for req in bad_requests:
            with pytest.raises(grpc.RpcError) as exc:
                infer.ModelInfer(req, timeout=30)
            assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT, exc.value.details()
            assert exc.value.details()
        assert infer.ServerLive(ipb.ServerLiveRequest()).live
    # the model still serves good requests afterwards
    triton_infer(endpoints[1], model_id, sample_input(dataset))


def test_unknown_model_is_not_found(endpoints):
    with pytest.raises(InferenceServerException) as exc:
        triton_infer(endpoints[0], "no-such-model", np.zeros((1, 4), np.float32))
    assert "NOT_FOUND" in str(exc.value.status()) or "not registered" in str(exc.value)


def test_oversize_message_is_rejected(endpoints, plane):
    _, settings, _ = plane
    ch, infer, _ = stubs(endpoints[0])
    with ch:
        req = ipb.ModelInferRequest(model_name="x")
        req.raw_input_contents.append(b"\0" * (settings.max_message_bytes + 1024))
        with pytest.raises(grpc.RpcError) as exc:
            infer.ModelInfer(req, timeout=30)
        assert exc.value.code() == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert infer.ServerLive(ipb.ServerLiveRequest()).live


def test_routing_headers(plane_client, model_dir, endpoints):
    model_id, dataset, _ = register_demo(plane_client, model_dir, 4)
    vmodel = uid("alias")
    plane_client.set_vmodel(vmodel, model_id, sync=True)
    x = sample_input(dataset)
    a = triton_infer(endpoints[0], "ignored-name", x, headers={"mm-model-id": model_id}).as_numpy("label")
    b = triton_infer(endpoints[1], "ignored-name", x, headers={"mm-vmodel-id": vmodel}).as_numpy("label")
    # Again, for a while: the first forwards go over gRPC, later ones over the hop connection
    # the forwarding pod opens in the background; both must carry the client's headers.
    for _ in range(30):
        again = triton_infer(endpoints[1], "ignored-name", x, headers={"mm-vmodel-id": vmodel}).as_numpy("label")
        assert again.tolist() == b.tolist()
    c = triton_infer(endpoints[2], vmodel, x).as_numpy("label")  # model_name read as a vmodel first
    assert a.tolist() == b.tolist() == c.tolist()
    with pytest.raises(InferenceServerException) as exc:
        triton_infer(endpoints[0], "x", x, headers={"mm-model-id": model_id, "mm-vmodel-id": vmodel})
    assert "INVALID_ARGUMENT" in str(exc.value.status())


def test_corrupt_model_fails_to_load_and_says_why(plane_client, endpoints):
    model_id = uid("corrupt")
    plane_client.register_model(model_id, path="corrupt/model.onnx")
    with pytest.raises(InferenceServerException) as exc:
        triton_infer(endpoints[0], model_id, np.zeros((1, 4), np.float32))
    assert "not a valid ONNX model" in str(exc.value)
    ch, infer, mm = stubs(endpoints[2])
    with ch:
        status = mm.getModelStatus(mpb.GetStatusRequest(modelId=model_id))
        assert infer.ServerReady(ipb.ServerReadyRequest()).ready
    assert status.status == MS.LOADING_FAILED
    assert status.errors and "not a valid ONNX model" in status.errors[0]
    rec = plane_client.get_model(model_id)
    assert rec.copies == {}
    assert 1 <= len(rec.failed) <= 3  # retried on other pods, bounded
    kinds = [e.kind for e in plane_client.events(limit=0) if e.model == model_id]
    assert "load-failed" in kinds


def test_missing_storage_key_is_a_clear_load_failure(plane_client, endpoints):
    model_id = uid("nostore")
    plane_client.register_model(model_id, path="tiny/model.onnx", storage_key="nowhere")
    with pytest.raises(InferenceServerException) as exc:
        triton_infer(endpoints[0], model_id, np.zeros((1, 4), np.float32))
    assert "storage key 'nowhere'" in str(exc.value)


def test_management_api_register_load_status_unregister(plane_client, endpoints):
    model_id = uid("tiny")
    ch, infer, mm = stubs(endpoints[1])
    with ch:
        status = mm.registerModel(mpb.RegisterModelRequest(
            modelId=model_id, modelInfo=mpb.ModelInfo(type="onnx", path="tiny/model.onnx"), loadNow=True, sync=True),
            timeout=60)
        assert status.status == MS.LOADED
        assert status.modelCopyInfos and status.modelCopyInfos[0].copyStatus == MS.LOADED
        holder = status.modelCopyInfos[0].location
        with pytest.raises(grpc.RpcError) as exc:
            mm.registerModel(mpb.RegisterModelRequest(modelId=model_id, modelInfo=mpb.ModelInfo(type="")))
        assert exc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
        req = ipb.ModelInferRequest(model_name=model_id)
        req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
        req.raw_input_contents.append(np.arange(4, dtype="<f4").tobytes())
        resp = infer.ModelInfer(req, timeout=30)
        y = np.frombuffer(resp.raw_output_contents[0], "<f4")
        np.testing.assert_allclose(y, np.arange(4) * 2 + 1)
        mm.unregisterModel(mpb.UnregisterModelRequest(modelId=model_id))
        assert mm.getModelStatus(mpb.GetStatusRequest(modelId=model_id)).status == MS.NOT_FOUND
        mm.unregisterModel(mpb.UnregisterModelRequest(modelId=model_id))  # unknown id: done (ModelMesh)
    wait_for(lambda: any(e.kind == "unload" and e.model == model_id and e.pod == holder
                         for e in plane_client.events(limit=0)), what="unload event")


def test_lru_eviction_on_a_full_pod(plane_client, endpoints, plane):
    lp, settings, _ = plane
    ids = [uid(f"medium{i}") for i in range(3)]
    for i, model_id in enumerate(ids):
        plane_client.register_model(model_id, path=f"medium-{i}/model.onnx")
    target = lp.pods[2]
    x = sample_input("digits")
    # Load all three on one pod (the hop header pins a request to the pod it reaches).
    for model_id in ids:
        triton_infer(target.endpoint, model_id, x, headers=pin_headers())
    sizes = wait_for(lambda: (lambda z: z if all(z) else None)([plane_client.get_model(m).size for m in ids]),
                     what="the measured sizes in the registry")
    pod = next(p for p in plane_client.pods() if p.pod_id == target.pod_id)
    assert pod.used <= pod.capacity
    if sum(sizes) <= settings.capacity:
        pytest.skip(f"three medium models ({sum(sizes)} bytes) fit in {settings.capacity}: nothing to evict")
    evicted = wait_for(lambda: [e for e in plane_client.events(limit=0)
                                if e.kind == "evict" and e.pod == target.pod_id and e.model in ids],
                       what="evict event")
    assert evicted[0].model == ids[0]  # least recently used goes first
    assert evicted[0].reason.startswith(f"evicted for {ids[1]}") or evicted[0].reason.startswith(
        f"evicted for {ids[2]}")
    wait_for(lambda: target.pod_id not in plane_client.get_model(ids[0]).copies, what="the evicted copy gone")
    wait_for(lambda: target.pod_id in plane_client.get_model(ids[2]).loaded_on(), what="the last copy recorded")


def test_vmodel_switch_loads_target_first_then_auto_deletes(plane_client, model_dir, endpoints):
    a, dataset, _ = register_demo(plane_client, model_dir, 5)
    b_info = json.loads((model_dir / "manifest.json").read_text())["models"][5]
    b = uid("next")
    plane_client.register_model(b, path=b_info["path"])
    vm = uid("prod")
    rec = plane_client.set_vmodel(vm, a, sync=True)
    assert rec.active == a and rec.status() == "DEFINED"
    triton_infer(endpoints[0], vm, sample_input(dataset))
    rec = plane_client.set_vmodel(vm, b, auto_delete=True, sync=True)
    assert rec.active == b and rec.target == b
    assert plane_client.get_model(b).loaded_on()  # loaded before the switch
    assert plane_client.get_model(a) is None  # auto-deleted: nothing refers to it
    triton_infer(endpoints[1], vm, sample_input(dataset))
    ch, _, mm = stubs(endpoints[2])
    with ch:
        info = mm.getVModelStatus(mpb.GetVModelStatusRequest(vModelId=vm))
    assert info.status == mpb.VModelStatusInfo.DEFINED and info.activeModelId == b
    assert info.activeModelStatus.status == MS.LOADED


def test_model_from_s3_then_reload_from_disk_cache(plane_client, s3_server, model_dir, endpoints, plane):
    lp, _, _ = plane
    s3 = s3_server["client"]
    s3.put_object(Bucket="models", Key="tiny/model.onnx", Body=(model_dir / "tiny" / "model.onnx").read_bytes())
    plane_client.set_storage("s3store", "s3", {
        "endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key_id"],
        "secret_access_key": s3_server["secret_access_key"], "bucket": "models"})
    assert plane_client.test_storage("s3store").ok
    model_id = uid("s3tiny")
    plane_client.register_model(model_id, path="tiny/model.onnx", storage_key="s3store")
    target = lp.pods[0]
    ch, infer, _ = stubs(target.endpoint)
    req = ipb.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.ones(4, "<f4").tobytes())
    md = pin_metadata()
    with ch:
        infer.ModelInfer(req, metadata=md, timeout=30)
        # unregister + register again: the pod unloads, the next load finds the file on local disk
        plane_client.unregister_model(model_id)
        wait_for(lambda: any(e.kind == "unload" and e.model == model_id for e in plane_client.events(limit=0)),
                 what="unload")
        plane_client.register_model(model_id, path="tiny/model.onnx", storage_key="s3store")
        infer.ModelInfer(req, metadata=md, timeout=30)
    # the answer comes before the registry hears of the load: the second 'loaded' event follows it
    reasons = wait_for(lambda: (lambda r: r if len(r) >= 2 else None)(
        [e.reason for e in plane_client.events(limit=0) if e.kind == "loaded" and e.model == model_id]),
        what="the second load's event")
    assert reasons[0].startswith("from s3") and reasons[-1].startswith("from disk-cache")


def test_wrong_s3_secret_is_reported_not_leaked(plane_client, s3_server):
    secret = "WRONG-secret-value-1234567890"
    plane_client.set_storage("bads3", "s3", {
        "endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key_id"],
        "secret_access_key": secret, "bucket": "models"})
    result = plane_client.test_storage("bads3")
    assert not result.ok
    assert "refused the credentials" in result.message
    listed = json.dumps(plane_client.list_storage())
    assert secret not in listed and secret not in result.message


def test_register_races_leave_one_record(plane_client):
    from concurrent.futures import ThreadPoolExecutor

    from plane.api import ValidationError

    model_id = uid("race")

    def reg(path):
        try:
            plane_client.register_model(model_id, path=path)
            return path
        except ValidationError:
            return None

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(reg, ["tiny/model.onnx", "corrupt/model.onnx"] * 4))
    winners = {r for r in results if r}
    assert len(winners) == 1  # same registration repeated is fine; a conflicting one is refused
    rec = plane_client.get_model(model_id)
    assert rec.path in winners


def test_a_burst_of_misses_loads_one_copy(plane_client, model_dir, endpoints):
    from concurrent.futures import ThreadPoolExecutor

    model_id, dataset, _ = register_demo(plane_client, model_dir, 7)
    x = sample_input(dataset)
    with ThreadPoolExecutor(16) as pool:
        labels = list(pool.map(lambda _: triton_infer(endpoints[0], model_id, x).as_numpy("label").tolist(),
                               range(16)))
    assert len({str(v) for v in labels}) == 1
    rec = wait_for(lambda: (lambda r: r if r.loaded_on() else None)(plane_client.get_model(model_id)),
                   what="the copy in the registry")
    assert len(rec.copies) == 1, rec.copies


def test_an_operator_loads_and_unloads_a_copy_on_a_chosen_pod(plane_client, plane):
    lp, _, _ = plane
    model_id = uid("placed")
    plane_client.register_model(model_id, path="tiny/model.onnx")
    pod = lp.pods[1].pod_id
    rec = plane_client.load_on(model_id, pod)
    assert rec.loaded_on() == [pod]
    assert plane_client.unload_copy(model_id, pod) is True
    wait_for(lambda: not plane_client.get_model(model_id).copies, what="the copy gone from the registry")
    assert plane_client.unload_copy(model_id, pod) is False  # nothing left to unload
    reasons = [e.reason for e in plane_client.events(limit=0) if e.kind == "unload" and e.model == model_id]
    assert reasons == ["unloaded by an operator"]


def test_every_pod_answers_kserve_v2_rest_as_named_by_mesh_status(plane, plane_client):
    """REST on the port `mesh status --json` names, routed like gRPC (a pod without the copy)."""
    import json as _json
    import subprocess
    import sys
    import urllib.request

    lp, settings, _ = plane
    env = {**settings.child_env(), "MESH_ETCD": settings.etcd}
    out = subprocess.run([sys.executable, "-m", "plane.cli", "status", "--json"], env=env, capture_output=True,
                         text=True, timeout=60)
    pods = _json.loads(out.stdout)["pods"]
    rest = [p["rest_endpoint"] for p in pods if p.get("alive", True)]
    assert rest and all(r and r.count(":") == 1 for r in rest)
    model_id = uid("rest")
    plane_client.register_model(model_id, path="tiny/model.onnx")
    body = _json.dumps({"inputs": [{"name": "x", "shape": [1, 4], "datatype": "FP32", "data": [0, 1, 2, 3]}]})
    for endpoint in rest:
        req = urllib.request.Request(f"http://{endpoint}/v2/models/{model_id}/infer", data=body.encode(),
                                     headers={"Content-Type": "application/json"})
        answer = _json.loads(urllib.request.urlopen(req, timeout=60).read())
        assert answer["outputs"][0]["data"] == [1.0, 3.0, 5.0, 7.0]
    copies = wait_for(lambda: plane_client.get_model(model_id).loaded_on(), what="the copy in the registry")
    assert len(copies) == 1  # one copy served all pods' REST

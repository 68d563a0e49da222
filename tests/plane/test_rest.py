"""KServe V2 REST on a real pod: a ``plane.pod.server.Pod`` started in this process over the
session etcd, real ONNX models, ``start_rest`` on a free port, driven over plain HTTP (httpx,
raw sockets) and with ``tritonclient.http`` (JSON and the binary tensor data extension)."""

from __future__ import annotations

import asyncio
import base64
import json
import pathlib
import socket
import ssl
import struct
import subprocess
import sys
import uuid

import grpc
import httpx
import numpy as np
import pytest
import tritonclient.http as thttp

from plane import certs, demo, local, operations
from plane.operations import ModelSpec
from plane.pod.errors import MeshError
from plane.pod.server import Pod
from plane.records import Conflict, RegistryError, StorageConfig
from plane.registry import Registry
from plane.rest import RestLimits, rest_ssl_context, start_rest
from plane.rest.codec import CodecError, decode_infer_request
from plane.rest.errors import RestError, http_error
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN

pytestmark = pytest.mark.slow

MAX_BODY = 1024**2
TYPES = {"BOOL": np.bool_, "UINT8": np.uint8, "UINT16": np.uint16, "UINT32": np.uint32, "UINT64": np.uint64,
         "INT8": np.int8, "INT16": np.int16, "INT32": np.int32, "INT64": np.int64, "FP16": np.float16,
         "FP32": np.float32, "FP64": np.float64, "BYTES": np.object_}


def make_types_model(path: pathlib.Path) -> None:
    """``out_<t> = Identity(in_<t>)`` for every V2 datatype (ONNX string for BYTES)."""
    from onnx import TensorProto, helper

    onnx_types = {"BOOL": TensorProto.BOOL, "UINT8": TensorProto.UINT8, "UINT16": TensorProto.UINT16,
                  "UINT32": TensorProto.UINT32, "UINT64": TensorProto.UINT64, "INT8": TensorProto.INT8,
                  "INT16": TensorProto.INT16, "INT32": TensorProto.INT32, "INT64": TensorProto.INT64,
                  "FP16": TensorProto.FLOAT16, "FP32": TensorProto.FLOAT, "FP64": TensorProto.DOUBLE,
                  "BYTES": TensorProto.STRING}
    names = [t.lower() for t in onnx_types]
    graph = helper.make_graph(
        [helper.make_node("Identity", [f"in_{n}"], [f"out_{n}"]) for n in names], "types",
        [helper.make_tensor_value_info(f"in_{n}", t, [None]) for n, t in zip(names, onnx_types.values(), strict=True)],
        [helper.make_tensor_value_info(f"out_{n}", t, [None]) for n, t in zip(names, onnx_types.values(), strict=True)])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(model.SerializeToString())


SAMPLES = {"BOOL": [True, False, True], "UINT8": [0, 7, 255], "UINT16": [0, 9, 65535], "UINT32": [0, 1, 2**32 - 1],
           "UINT64": [0, 2**63, 2**64 - 1], "INT8": [-128, 0, 127], "INT16": [-32768, 5, 32767],
           "INT32": [-(2**31), 1, 2**31 - 1], "INT64": [-(2**63), 3, 2**63 - 1], "FP16": [0.5, -2.0, 1024.0],
           "FP32": [1.5, -0.25, 3e38], "FP64": [1e-300, 2.5, -1e300], "BYTES": ["héllo", "", "x" * 50]}


@pytest.fixture(scope="module")
def rest_models(tmp_path_factory) -> tuple[pathlib.Path, demo.DemoModel]:
    root = tmp_path_factory.mktemp("rest-models")
    (root / "tiny").mkdir()
    demo.make_tiny_model(root / "tiny" / "model.onnx")
    make_types_model(root / "types" / "model.onnx")
    (root / "corrupt").mkdir()
    demo.make_corrupt_model(root / "corrupt" / "model.onnx")
    models = demo.generate_models(root / "demo", 1, seed=5)
    return root, models[0]


@pytest.fixture(scope="module")
async def rest(etcd_endpoint, rest_models, tmp_path_factory):
    root, dm = rest_models
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"rest-{uuid.uuid4().hex[:8]}",
                            state_dir=tmp_path_factory.mktemp("rest-state"), grpc_port=local.free_port(),
                            metrics_port=0, max_message_bytes=MAX_BODY, offload_request_bytes=64 * 1024,
                            peer_token=TEST_PEER_TOKEN, load_timeout_s=30, usage_flush_s=0.5)
    registry = await Registry.from_settings(settings)
    await registry.put_storage(StorageConfig("default", "local", {"path": str(root)}))
    for model_id, path in (("tiny", "tiny/model.onnx"), ("types", "types/model.onnx"),
                           ("corrupt", "corrupt/model.onnx"), ("demo", f"demo/{dm.path}")):
        await operations.register(registry, ModelSpec(model_id, path), load_now=False)
    await operations.set_vmodel_direct(registry, "alias", "tiny", False, owner="")
    await operations.register(registry, ModelSpec("tiny-b", "tiny/model.onnx"), load_now=False)
    pod = Pod(settings, registry)
    await pod.start()
    server = await start_rest(pod, "127.0.0.1", 0)
    url = f"http://127.0.0.1:{server.port}"
    try:
        async with httpx.AsyncClient(base_url=url, timeout=30) as client:
            yield pod, server, client, dm
    finally:
        await server.close()
        await pod.shutdown(graceful=False)
        await registry.close()


def infer_body(data, shape=None, datatype="FP32", name="x", **extra) -> dict:
    shape = list(np.asarray(data).shape) if shape is None else shape
    return {"inputs": [{"name": name, "shape": shape,
                        "datatype": datatype, "data": data}], **extra}


async def test_server_routes(rest):
    pod, server, client, _ = rest
    for path in ("/v2", "/v2/"):
        r = await client.get(path)
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.headers["server"] == "mesh-plane"  # not the Python and aiohttp versions
        assert r.json() == {"name": "mesh-plane", "version": "0.1.0",
                            "extensions": ["model_mesh", "binary_tensor_data"]}
    assert (await client.get("/v2/health/live")).json() == {"live": True}
    r = await client.get("/v2/health/ready")
    assert (r.status_code, r.json()) == (200, {"ready": True})
    pod.ready = False  # what the pod reports while starting or shutting down
    try:
        r = await client.get("/v2/health/ready")
        assert (r.status_code, r.json()) == (503, {"ready": False})
    finally:
        pod.ready = True


async def test_model_metadata_and_ready(rest):
    _, _, client, dm = rest
    r = await client.get("/v2/models/demo/ready")
    assert (r.status_code, r.json()) == (503, {"name": "demo", "ready": False})  # registered, not loaded yet
    for path in ("/v2/models/tiny", "/v2/models/tiny/versions/1"):
        r = await client.get(path)
        assert r.status_code == 200, r.text
        assert r.json() == {"name": "tiny", "versions": ["1"], "platform": "onnxruntime_onnx",
                            "inputs": [{"name": "x", "datatype": "FP32", "shape": [-1, 4]}],
                            "outputs": [{"name": "y", "datatype": "FP32", "shape": [-1, 4]}]}
    r = await client.get("/v2/models/tiny/versions/1/ready")
    assert (r.status_code, r.json()) == (200, {"name": "tiny", "ready": True})  # the metadata call loaded it
    r = await client.get("/v2/models/demo")
    assert r.json()["inputs"] == [{"name": "input", "datatype": "FP32", "shape": [-1, dm.n_features]}]
    assert {o["name"]: o["datatype"] for o in r.json()["outputs"]} == {"label": "INT64", "probabilities": "FP32"}
    for path in ("/v2/models/nope", "/v2/models/nope/ready"):
        r = await client.get(path)
        assert r.status_code == 404 and r.json() == {"error": "model 'nope' is not registered"}


async def test_infer_flat_nested_and_versions(rest):
    _, _, client, _ = rest
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    want = {"name": "y", "datatype": "FP32", "shape": [2, 4], "data": (x * 2 + 1).ravel().tolist()}
    for path, data in (("/v2/models/tiny/infer", x.ravel().tolist()), ("/v2/models/tiny/infer", x.tolist()),
                       ("/v2/models/tiny/versions/1/infer", x.tolist())):
        r = await client.post(path, json=infer_body(data, shape=[2, 4], id="req-1"))
        assert r.status_code == 200, r.text
        assert r.json() == {"model_name": "tiny", "id": "req-1", "outputs": [want]}
    big = np.random.default_rng(0).random((3000, 4), dtype=np.float32)  # over offload_request_bytes: a thread
    r = await client.post("/v2/models/tiny/infer", json=infer_body(big.tolist()))
    assert r.status_code == 200
    np.testing.assert_allclose(np.array(r.json()["outputs"][0]["data"]).reshape(3000, 4), big * 2 + 1, rtol=1e-6)


async def test_infer_demo_model_and_requested_outputs(rest):
    _, _, client, dm = rest
    x = demo.sample_input(dm.dataset, 3)
    r = await client.post("/v2/models/demo/infer", json=infer_body(x.tolist(), name="input"))
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    assert outs["label"]["datatype"] == "INT64" and outs["label"]["shape"] == [3]
    assert outs["probabilities"]["datatype"] == "FP32" and outs["probabilities"]["shape"][0] == 3
    np.testing.assert_allclose(np.array(outs["probabilities"]["data"]).reshape(3, -1).sum(axis=1), 1, rtol=1e-4)
    r = await client.post("/v2/models/demo/infer", json=infer_body(x.tolist(), name="input",
                                                                   outputs=[{"name": "label"}]))
    assert [o["name"] for o in r.json()["outputs"]] == ["label"]
    assert r.json()["outputs"][0]["data"] == outs["label"]["data"]


async def test_every_datatype_round_trips(rest):
    _, _, client, _ = rest
    inputs = [{"name": f"in_{t.lower()}", "shape": [3], "datatype": t, "data": v,
               "parameters": {"note": t, "n": 3, "flag": True}} for t, v in SAMPLES.items()]
    r = await client.post("/v2/models/types/infer", json={"id": "types", "inputs": inputs,
                                                          "parameters": {"priority": 1, "tag": "t", "x": False}})
    assert r.status_code == 200, r.text
    outs = {o["name"]: o for o in r.json()["outputs"]}
    for t, values in SAMPLES.items():
        out = outs[f"out_{t.lower()}"]
        assert (out["datatype"], out["shape"]) == (t, [3])
        if t in ("FP16", "FP32"):
            np.testing.assert_array_equal(np.array(out["data"], TYPES[t]), np.array(values, TYPES[t]))
        else:
            assert out["data"] == values, t


async def test_tritonclient_json_and_binary(rest):
    _, server, _, _ = rest

    def run() -> None:
        client = thttp.InferenceServerClient(f"127.0.0.1:{server.port}")
        try:
            assert client.is_server_live() and client.is_server_ready() and client.is_model_ready("tiny")
            assert client.get_model_metadata("tiny")["inputs"][0]["name"] == "x"
            x = np.arange(12, dtype=np.float32).reshape(3, 4)
            for binary_in in (False, True):
                inp = thttp.InferInput("x", list(x.shape), "FP32")
                inp.set_data_from_numpy(x, binary_data=binary_in)
                for binary_out in (False, True):
                    res = client.infer("tiny", [inp], outputs=[thttp.InferRequestedOutput("y", binary_data=binary_out)])
                    np.testing.assert_array_equal(res.as_numpy("y"), x * 2 + 1)
                res = client.infer("tiny", [inp])  # no outputs named: all of them, binary
                np.testing.assert_array_equal(res.as_numpy("y"), x * 2 + 1)
                res = client.infer("tiny", [inp], request_compression_algorithm="gzip",
                                   response_compression_algorithm="deflate")  # answered uncompressed
                np.testing.assert_array_equal(res.as_numpy("y"), x * 2 + 1)
            big = np.random.default_rng(1).random((5000, 4), dtype=np.float32)  # 80 KB: decoded on a thread
            inp = thttp.InferInput("x", list(big.shape), "FP32")
            inp.set_data_from_numpy(big)
            np.testing.assert_array_equal(client.infer("tiny", [inp]).as_numpy("y"), big * 2 + 1)
            inputs, outputs = [], []
            for t, values in SAMPLES.items():
                arr = np.array([v.encode() for v in values] if t == "BYTES" else values, dtype=TYPES[t])
                inp = thttp.InferInput(f"in_{t.lower()}", [3], t)
                inp.set_data_from_numpy(arr, binary_data=t not in ("UINT8", "FP64"))  # mixed: some JSON
                inputs.append(inp)
                outputs.append(thttp.InferRequestedOutput(f"out_{t.lower()}", binary_data=t != "INT16"))
            res = client.infer("types", inputs, outputs=outputs)
            for t, values in SAMPLES.items():
                got = res.as_numpy(f"out_{t.lower()}")
                want = np.array([v.encode() for v in values] if t == "BYTES" else values, dtype=TYPES[t])
                np.testing.assert_array_equal(got, want, err_msg=t)
            with pytest.raises(Exception, match="not registered"):
                client.infer("nope", [inp])
        finally:
            client.close()

    await asyncio.to_thread(run)


async def test_binary_extension_by_hand(rest):
    _, _, client, _ = rest
    x = np.arange(8, dtype=np.float32)
    head = json.dumps({"inputs": [{"name": "x", "shape": [2, 4], "datatype": "FP32",
                                   "parameters": {"binary_data_size": x.nbytes}}],
                       "outputs": [{"name": "y", "parameters": {"binary_data": True}}]}).encode()
    r = await client.post("/v2/models/tiny/infer", content=head + x.tobytes(),
                          headers={"Inference-Header-Content-Length": str(len(head))})
    assert r.status_code == 200, r.text
    assert r.headers["content-type"] == "application/octet-stream"
    n = int(r.headers["inference-header-content-length"])
    doc = json.loads(r.content[:n])
    assert doc["outputs"][0]["parameters"] == {"binary_data_size": 32}
    np.testing.assert_array_equal(np.frombuffer(r.content[n:], "<f4"), x * 2 + 1)
    # request-level binary_data_output, with one output opting out
    body = infer_body(x.tolist(), shape=[2, 4], parameters={"binary_data_output": True})
    r = await client.post("/v2/models/tiny/infer", json=body)
    assert "inference-header-content-length" in r.headers
    body["outputs"] = [{"name": "y", "parameters": {"binary_data": False}}]
    r = await client.post("/v2/models/tiny/infer", json=body)
    assert "inference-header-content-length" not in r.headers and r.json()["outputs"][0]["data"][0] == 1.0
    for length, blob, message in (("abc", b"", "must be an integer"), ("9999", b"", "outside the body"),
                                  (str(len(head)), x.tobytes()[:-4], "runs past the end"),
                                  (str(len(head)), x.tobytes() + b"xx", "claimed by no input")):
        r = await client.post("/v2/models/tiny/infer", content=head + blob,
                              headers={"Inference-Header-Content-Length": length})
        assert r.status_code == 400 and message in r.json()["error"], r.text


async def test_forwarded_to_the_pod_holding_the_copy(rest, tmp_path):
    """REST lands on pod A, the copy is on pod B: A forwards over gRPC, exactly as a gRPC request."""
    pod_a, server_a, client, _ = rest
    settings_b = pod_a.settings.model_copy(update={"grpc_port": local.free_port(), "state_dir": tmp_path / "b"})
    registry_b = await Registry.from_settings(settings_b)
    pod_b = Pod(settings_b, registry_b)
    await pod_b.start()
    try:
        await pod_b.copies.ensure_local("tiny-b")
        for _ in range(200):  # until A's view shows B's copy
            rec = pod_a.view.models.get("tiny-b")
            if rec is not None and pod_b.pod_id in rec.loaded_on():
                break
            await asyncio.sleep(0.05)
        r = await client.post("/v2/models/tiny-b/infer", json=infer_body([[1.0, 2.0, 3.0, 4.0]], id="fwd"))
        assert r.status_code == 200, r.text
        want = [{"name": "y", "datatype": "FP32", "shape": [1, 4], "data": [3.0, 5.0, 7.0, 9.0]}]
        assert r.json() == {"model_name": "tiny-b", "id": "fwd", "outputs": want}
        assert "tiny-b" not in pod_a.copies.sessions  # served by B, not loaded on A

        def with_tritonclient() -> None:  # JSON and binary, through A
            tc = thttp.InferenceServerClient(f"127.0.0.1:{server_a.port}")
            try:
                x = np.arange(8, dtype=np.float32).reshape(2, 4)
                for binary in (False, True):
                    inp = thttp.InferInput("x", [2, 4], "FP32")
                    inp.set_data_from_numpy(x, binary_data=binary)
                    out = thttp.InferRequestedOutput("y", binary_data=binary)
                    np.testing.assert_array_equal(tc.infer("tiny-b", [inp], outputs=[out]).as_numpy("y"), x * 2 + 1)
                assert tc.get_model_metadata("tiny-b")["inputs"][0]["name"] == "x"
            finally:
                tc.close()

        await asyncio.to_thread(with_tritonclient)
        assert "tiny-b" not in pod_a.copies.sessions
        r = await client.get("/v2/models/tiny-b/ready")
        assert r.json() == {"name": "tiny-b", "ready": True}
    finally:
        await pod_b.shutdown(graceful=False)
        await registry_b.close()


async def test_mm_headers_vmodels_and_trust(rest):
    _, _, client, _ = rest
    body = infer_body([[1.0, 2.0, 3.0, 4.0]])
    for headers in ({"mm-vmodel-id": "alias"}, {"mm-model-id": "tiny"},
                    {"mm-model-id-bin": base64.b64encode(b"tiny").decode()},
                    {"mm-model-id-bin": base64.urlsafe_b64encode(b"tiny").decode().rstrip("=")}):
        r = await client.post("/v2/models/whatever/infer", json=body, headers=headers)
        assert r.status_code == 200 and r.json()["outputs"][0]["data"] == [3.0, 5.0, 7.0, 9.0], (headers, r.text)
    r = await client.post("/v2/models/alias/infer", json=body)  # the URL's name read as a vmodel first
    assert r.status_code == 200 and r.json()["model_name"] == "tiny"
    r = await client.post("/v2/models/x/infer", json=body, headers={"mm-model-id": "tiny", "mm-vmodel-id": "alias"})
    assert r.status_code == 400 and "both" in r.json()["error"]
    r = await client.post("/v2/models/x/infer", json=body, headers={"mm-vmodel-id": "no-alias"})
    assert r.status_code == 404
    r = await client.post("/v2/models/x/infer", json=body, headers={"mm-model-id-bin": "***"})
    assert r.status_code == 400 and "base64" in r.json()["error"]
    r = await client.post("/v2/models/x/infer", json=body, headers={"mm-model-id-bin": base64.b64encode(b"\xff")})
    assert r.status_code == 400 and "UTF-8" in r.json()["error"]
    r = await client.post("/v2/models/x/infer", json=body, headers={"mm-model-id": "tïny".encode()})
    assert r.status_code == 400 and "mm-model-id-bin" in r.json()["error"]
    # internal headers without the plane's token are dropped: a normal request, no error
    r = await client.post("/v2/models/tiny/infer", json=body,
                          headers={"mm-internal-hop": "1", "mm-internal-token": "wrong", "mm-balanced": "true"})
    assert r.status_code == 200


async def test_error_matrix(rest):
    _, _, client, _ = rest
    ok = [[1.0, 2.0, 3.0, 4.0]]
    cases = [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 400, "JSON object"),
        (json.dumps({"inputs": []}), 400, "non-empty list"),
        (json.dumps(infer_body(ok, datatype="INT32", name="x")), 400, "'x'"),  # wrong datatype for the model
        (json.dumps(infer_body([[1.0, 2.0, 3.0]])), 400, "'x'"),  # wrong shape for the model
        (json.dumps(infer_body([1.0] * 7, shape=[2, 4])), 400, "input 'x': data has 7 elements but shape [2, 4]"),
        (json.dumps(infer_body([[1.0, 2.0], [3.0]], shape=[2, 2])), 400, "ragged"),
        (json.dumps(infer_body(["a"] * 4, shape=[1, 4])), 400, "must be numbers"),
        (json.dumps(infer_body(ok, name="z")), 400, "'z'"),
        (json.dumps(infer_body(ok, parameters={"p": 0.5})), 400, "parameter 'p'"),
        (json.dumps(infer_body(ok, shape=[2**40, 4])), 400, "more than the limit"),
        (b'{"inputs": ' + b"[" * 5000 + b"]" * 5000 + b"}", 400, "nested too deeply"),
    ]
    for body, status, message in cases:
        r = await client.post("/v2/models/tiny/infer", content=body)
        assert r.status_code == status and message in r.json()["error"], (body, r.text)
        assert "Traceback" not in r.text
    r = await client.post("/v2/models/nope/infer", json=infer_body(ok))
    assert (r.status_code, r.json()) == (404, {"error": "model 'nope' is not registered"})
    r = await client.post("/v2/models/corrupt/infer", json=infer_body(ok))
    assert r.status_code == 503 and r.headers.get("mm-load-failed") == "1", r.text
    assert "not a valid ONNX model" in r.json()["error"]
    r = await client.post("/v2/models/tiny/infer", content=b"x" * (MAX_BODY + 1))
    assert r.status_code == 413 and "exceeds the limit" in r.json()["error"]

    async def chunks():
        for _ in range(5):
            yield b" " * (MAX_BODY // 4)

    r = await client.post("/v2/models/tiny/infer", content=chunks())  # chunked, no Content-Length
    assert r.status_code == 413
    for method, path, status in (("GET", "/v3", 404), ("GET", "/v2/models", 404), ("GET", "/v2/models/tiny/x", 404),
                                 ("GET", "/v2/health", 404), ("GET", "/", 404), ("GET", "/v2/models/tiny/infer", 405),
                                 ("POST", "/v2/models/tiny", 405), ("DELETE", "/v2/health/live", 405)):
        r = await client.request(method, path)
        assert r.status_code == status and "error" in r.json(), (method, path, r.text)
        if status == 405:
            assert r.headers["allow"] in ("GET", "POST")


def test_http_error_mapping():
    S = grpc.StatusCode
    for code, status in ((S.INVALID_ARGUMENT, 400), (S.NOT_FOUND, 404), (S.PERMISSION_DENIED, 403),
                         (S.DEADLINE_EXCEEDED, 504), (S.UNAVAILABLE, 503), (S.RESOURCE_EXHAUSTED, 503),
                         (S.INTERNAL, 500), (S.FAILED_PRECONDITION, 400)):
        assert http_error(MeshError(code, "m"))[:2] == (status, "m")
    assert http_error(MeshError(S.INTERNAL, "corrupt", load_failed=True)) == (503, "corrupt", True)
    assert http_error(RegistryError("etcd down"))[:2] == (503, "registry unavailable: etcd down")
    assert http_error(Conflict("race"))[0] == 409
    assert http_error(CodecError("input 'x': bad")) == (400, "input 'x': bad", False)
    assert http_error(RestError(413, "too big"))[:2] == (413, "too big")
    assert http_error(KeyError("secret detail")) == (500, "internal error", False)


def test_codec_parameters_outputs_and_limits():
    body = json.dumps({"id": "r", "parameters": {"b": True, "i": -5, "s": "v", "binary_data_output": True,
                                                 "timeout": 2_000_000},
                       "inputs": [{"name": "a", "shape": [2], "datatype": "INT16", "data": [1, -2],
                                   "parameters": {"k": "v"}}],
                       "outputs": [{"name": "o", "parameters": {"binary_data": False, "top": 3}}]}).encode()
    d = decode_infer_request(body, header_length=None, model_name="m", model_version="2", max_elements=10)
    req = d.request
    assert (req.model_name, req.model_version, req.id) == ("m", "2", "r")
    assert {k: v.WhichOneof("parameter_choice") for k, v in req.parameters.items()} == {
        "b": "bool_param", "i": "int64_param", "s": "string_param", "timeout": "int64_param"}
    assert req.inputs[0].parameters["k"].string_param == "v" and req.outputs[0].parameters["top"].int64_param == 3
    assert np.frombuffer(req.raw_input_contents[0], "<i2").tolist() == [1, -2]
    assert d.timeout_s == 2.0 and d.wants_binary("other") and not d.wants_binary("o")
    with pytest.raises(CodecError, match="more than the limit of 10"):
        decode_infer_request(json.dumps(infer_body([1] * 11, datatype="INT8")).encode(), header_length=None,
                             model_name="m", max_elements=10)
    raw = decode_infer_request(json.dumps(infer_body(["ab", "c"], datatype="BYTES")).encode(), header_length=None,
                               model_name="m", max_elements=10).request.raw_input_contents[0]
    assert raw == struct.pack("<I", 2) + b"ab" + struct.pack("<I", 1) + b"c"


def test_importing_plane_rest_loads_no_pod_module():
    """The pod's server may import plane.rest at its top: plane.rest must not import plane.pod back."""
    code = ("import sys, plane.rest, plane.rest.app, plane.rest.codec, plane.rest.errors; "
            "print(sorted(m for m in sys.modules if m.startswith('plane.pod')))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60,
                         cwd=pathlib.Path(__file__).resolve().parents[2])
    assert out.returncode == 0 and out.stdout.strip() == "[]", out.stdout + out.stderr


def _raw_request(port: int, data: bytes, *, wait: float = 2.0) -> bytes:
    with socket.create_connection(("127.0.0.1", port), timeout=wait) as s:
        s.sendall(data)
        chunks = []
        try:
            while chunk := s.recv(65536):
                chunks.append(chunk)
        except TimeoutError:
            pass
        return b"".join(chunks)


async def test_limits_timeouts_expect_and_close(rest):
    pod = rest[0]
    limits = RestLimits(max_connections=2, idle_timeout_s=0.6, header_timeout_s=0.3, body_timeout_s=0.3,
                        max_body_bytes=MAX_BODY, offload_bytes=MAX_BODY)
    server = await start_rest(pod, "127.0.0.1", 0, limits=limits)
    port = server.port
    idle = socket.socket()
    try:
        body = json.dumps(infer_body([[1.0, 2.0, 3.0, 4.0]])).encode()
        head = f"POST /v2/models/tiny/infer HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n".encode()

        def expect_continue() -> bytes:
            with socket.create_connection(("127.0.0.1", port), timeout=5) as s:
                s.sendall(head + b"Expect: 100-continue\r\n\r\n")
                first = s.recv(65536)
                s.sendall(body)
                return first + s.recv(65536)

        out = await asyncio.to_thread(expect_continue)
        assert out.startswith(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK"), out
        # trickled headers are cut off by the header timeout; an idle connection by the idle timeout
        t0 = asyncio.get_running_loop().time()
        out = await asyncio.to_thread(_raw_request, port, b"POST /v2/models/tiny/infer HTTP/1.1\r\nHost:", wait=3)
        assert out == b"" and asyncio.get_running_loop().time() - t0 < 2
        out = await asyncio.to_thread(_raw_request, port, b"", wait=3)
        assert out == b""
        out = await asyncio.to_thread(_raw_request, port, head + b"\r\n" + body[:10], wait=3)  # body never finishes
        assert out.startswith(b"HTTP/1.1 408") and b'"error"' in out, out
        # the connection cap: two open connections, the third is refused with a 503
        held = [socket.create_connection(("127.0.0.1", port)) for _ in range(2)]
        try:
            await asyncio.sleep(0.1)
            assert server.connections == 2
            out = await asyncio.to_thread(_raw_request, port, b"GET /v2 HTTP/1.1\r\nHost: x\r\n\r\n")
            assert out.startswith(b"HTTP/1.1 503") and b"too many connections" in out
        finally:
            for s in held:
                s.close()
    finally:
        await server.close()
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    # close() does not wait for keep-alive connections between requests: they are closed at once
    server = await start_rest(pod, "127.0.0.1", 0, limits=RestLimits(shutdown_grace_s=4))
    try:
        idle.connect(("127.0.0.1", server.port))
        idle.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        assert (await asyncio.to_thread(idle.recv, 65536)).startswith(b"HTTP/1.1 200")
    finally:
        t0 = asyncio.get_running_loop().time()
        await server.close()
        assert asyncio.get_running_loop().time() - t0 < 2
        assert await asyncio.to_thread(idle.recv, 65536) == b""
        idle.close()


async def test_tls_and_mtls(rest, tmp_path):
    pod = rest[0]
    paths = certs.generate(tmp_path / "certs")
    settings = MeshSettings(tls_cert_file=paths["server"], tls_key_file=paths["server_key"], tls_ca_file=paths["ca"],
                            tls_client_auth=True)
    assert rest_ssl_context(MeshSettings()) is None
    with pytest.raises(ValueError, match="KEY_FILE"):
        rest_ssl_context(MeshSettings(tls_cert_file=paths["server"]))
    server = await start_rest(pod, "127.0.0.1", 0, ssl_context=rest_ssl_context(settings))
    try:
        good = ssl.create_default_context(cafile=str(paths["ca"]))
        good.load_cert_chain(str(paths["client"]), str(paths["client_key"]))
        async with httpx.AsyncClient(verify=good) as client:
            r = await client.get(f"https://127.0.0.1:{server.port}/v2/health/ready")
            assert r.json() == {"ready": True}
        anonymous = ssl.create_default_context(cafile=str(paths["ca"]))
        async with httpx.AsyncClient(verify=anonymous) as client:
            with pytest.raises(httpx.HTTPError):
                await client.get(f"https://127.0.0.1:{server.port}/v2/health/ready")
    finally:
        await server.close()

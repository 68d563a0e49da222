"""The pods' metrics carry ModelMesh's names and labels (kserve/modelmesh Metric.java,
Metrics.java, docs/metrics.md): scraped from a real pod's metrics port after a load, requests,
an eviction and a load failure; and the per_model_metrics setting, on a PodMetrics of its own."""

from __future__ import annotations

import asyncio
import time
import urllib.request

import grpc
import numpy as np
import pytest
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from plane.metrics import PodMetrics, note_resolved
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.records import CopyInfo, FailureInfo, InstanceRecord, ModelRecord
from tests.support import uid, wait_for

Samples = dict[str, list[tuple[dict[str, str], float]]]


def scrape(port: int) -> Samples:
    text = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
    return parse(text)


def parse(text: str) -> Samples:
    out: Samples = {}
    for fam in text_string_to_metric_families(text):
        for s in fam.samples:
            out.setdefault(s.name, []).append((s.labels, s.value))
    return out


def value(samples: Samples, name: str, **labels: str) -> float | None:
    """The sample of ``name`` whose labels include ``labels`` (summed over the others)."""
    found = [v for lab, v in samples.get(name, []) if all(lab.get(k) == x for k, x in labels.items())]
    return sum(found) if found else None


def tiny_infer(endpoint: str, model_id: str, *, balanced: bool = True) -> grpc.StatusCode:
    req = ipb.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="x", datatype="FP32", shape=[1, 4])
    req.raw_input_contents.append(np.ones(4, "<f4").tobytes())
    with grpc.insecure_channel(endpoint) as ch:
        try:
            igrpc.GRPCInferenceServiceStub(ch).ModelInfer(
                req, metadata=(("mm-balanced", "true"),) if balanced else (), timeout=60)
            return grpc.StatusCode.OK
        except grpc.RpcError as exc:
            return exc.code()


@pytest.mark.slow
def test_a_pod_scrape_has_modelmesh_names_and_labels(plane, plane_client):
    lp, settings, client = plane
    capacity = settings.capacity
    pod = lp.pods[1]
    tiny, corrupt = uid("m-tiny"), uid("m-corrupt")
    mediums = [uid(f"m-medium{i}") for i in range(3)]
    client.register_model(tiny, path="tiny/model.onnx")
    client.register_model(corrupt, path="corrupt/model.onnx")
    for i, m in enumerate(mediums):
        client.register_model(m, path=f"medium-{i}/model.onnx")
    # a load and requests (one served here, one for a model that does not exist)
    client.load_on(tiny, pod.pod_id)
    assert tiny_infer(pod.endpoint, tiny) == grpc.StatusCode.OK
    assert tiny_infer(pod.endpoint, uid("nobody")) == grpc.StatusCode.NOT_FOUND
    # a request to a pod without a copy: forwarded to `pod`, counted as an API request where it came in
    entry = lp.pods[0]
    assert tiny_infer(entry.endpoint, tiny, balanced=False) == grpc.StatusCode.OK
    s = scrape(entry.metrics_port)
    ok = {"method": "ModelInfer", "code": "OK"}
    assert value(s, "modelmesh_api_request_milliseconds_count", **ok) >= 1
    assert value(s, "modelmesh_response_size_bytes_sum", **ok) > 16  # the peer's answer, as bytes
    assert value(s, "modelmesh_invoke_model_milliseconds_count", modelId=tiny) is None  # it ran on `pod`
    # an eviction: three medium forests do not fit in one pod
    for m in mediums:
        client.load_on(m, pod.pod_id)
    evicted = wait_for(lambda: [e.model for e in client.events(limit=0)
                                if e.kind == "evict" and e.pod == pod.pod_id and e.model in mediums + [tiny]],
                       30, "an eviction on the pod")
    # a load failure
    with pytest.raises(Exception):  # noqa: B017 - ManagementError: the corrupt file does not load
        client.load_on(corrupt, pod.pod_id)

    s = wait_for(lambda: (lambda x: x if value(x, "modelmesh_loadmodel_failure") else None)(scrape(pod.metrics_port)),
                 20, "the load failure to be counted")
    assert value(s, "modelmesh_loadmodel_failure") >= 1  # no _total, no labels: as ModelMesh
    size = client.get_model(tiny).size
    assert size > 0
    loads = value(s, "modelmesh_loadmodel_milliseconds_count", modelId=tiny, vModelId="")
    assert loads == 1
    assert 0 < value(s, "modelmesh_loadmodel_milliseconds_sum", modelId=tiny) < 60_000
    assert value(s, "modelmesh_loaded_model_size_bytes_sum", modelId=tiny) == size
    assert value(s, "modelmesh_loading_queue_delay_milliseconds_count", modelId=tiny) == 1
    # the requests: invoke_model where they ran (the forwarded one too), api_request where the client called
    assert value(s, "modelmesh_invoke_model_milliseconds_count", **ok, modelId=tiny, vModelId="") >= 2
    assert value(s, "modelmesh_invoke_model_milliseconds_sum", **ok, modelId=tiny) > 0
    assert value(s, "modelmesh_api_request_milliseconds_count", **ok) >= 1
    assert value(s, "modelmesh_api_request_milliseconds_count", method="ModelInfer", code="NOT_FOUND") >= 1
    assert value(s, "modelmesh_request_size_bytes_sum", **ok) > 16  # at least the 16 bytes of x
    api_methods = {lab["method"] for lab, _ in s["modelmesh_api_request_milliseconds_count"]}
    assert api_methods <= {"ModelInfer", "ModelMetadata", "ModelReady"}  # management calls are not counted
    labels = {frozenset(lab) for lab, _ in s["modelmesh_api_request_milliseconds_count"]}
    assert labels == {frozenset({"method", "code", "modelId", "vModelId"})}  # per_model_metrics on
    # the eviction: ModelMesh's histogram (its count is the eviction count) and the plane's counter
    victim = evicted[0]
    assert value(s, "modelmesh_age_at_eviction_milliseconds_count", modelId=victim, vModelId="") >= 1
    assert value(s, "modelmesh_age_at_eviction_milliseconds_sum", modelId=victim) >= 0
    assert value(s, "mesh_evictions_total") >= 1
    # the plane's per-model extras, labelled as ModelMesh labels models
    assert value(s, "mesh_model_requests_total", modelId=tiny) >= 1
    assert value(s, "mesh_model_request_milliseconds_count", modelId=tiny) >= 1
    # the pod's gauges (published with its instance record)
    s = wait_for(lambda: (lambda x: x if value(x, "modelmesh_instance_used_bytes") else None)(scrape(pod.metrics_port)),
                 20, "the instance gauges")
    assert value(s, "modelmesh_instance_capacity_bytes") == capacity
    used = value(s, "modelmesh_instance_used_bytes")
    assert 0 < used <= capacity
    assert value(s, "modelmesh_instance_used_bps") == pytest.approx(used / capacity * 10_000, abs=1)
    assert value(s, "modelmesh_instance_models_total") >= 1
    assert 0 <= value(s, "modelmesh_instance_lru_age_seconds") < 3600
    assert abs(value(s, "modelmesh_instance_lru_seconds") - time.time()) < 3600


def leader_pod(client) -> str:
    reg = client.registry
    raw, _ = client.run_async(reg.get_raw(reg.key("leader", "")[:-1]))
    return raw.decode() if raw else ""


@pytest.mark.slow
def test_deployment_gauges_come_from_the_leader_only(plane, plane_client):
    # Metric.java: MODELS_LOADED / MODELS_WITH_LOAD_FAIL / TOTAL_MODELS are "global" and registered
    # on the leader only (Metrics.registerGlobals), so max() or sum() over pods counts a model once
    lp, _, client = plane
    client.register_model(uid("m-count"), path="tiny/model.onnx")
    leader = wait_for(lambda: leader_pod(client), 30, "a leader")
    by_id = {p.pod_id: p for p in lp.pods}

    def managed() -> bool:
        s = scrape(by_id[leader].metrics_port)
        return value(s, "modelmesh_models_managed_total") == len(client.list_models())

    wait_for(managed, 20, "the leader's modelmesh_models_managed_total")
    models = client.list_models()
    s = scrape(by_id[leader].metrics_port)
    assert value(s, "modelmesh_models_loaded_total") == sum(1 for m in models if m.loaded_on())
    assert value(s, "modelmesh_models_with_failure_total") is not None
    for pod_id, p in by_id.items():
        if pod_id != leader:
            assert value(scrape(p.metrics_port), "modelmesh_models_managed_total") is None, pod_id


def test_per_model_metrics_off_keeps_modelmesh_labels_only():
    # ModelMesh's MM_METRICS per_model_metrics=false: method/code only, no modelId/vModelId
    for per_model in (True, False):
        m = PodMetrics("p", per_model=per_model)
        m.request("a", 1.5)
        m.api_request("ModelInfer", grpc.StatusCode.OK, 2.0, b"x" * 200, ipb.ModelInferResponse())
        m.api_request("registerModel", None, 1.0)  # a management call: not an API request metric
        m.load(50.0, "a", 3 * 1024**2)
        m.eviction(120_000, "a")
        m.cache_miss(40.0, "a")
        m.load_failed("b")
        m.instance(InstanceRecord("p", "e", capacity=1000, used=0, count=0))
        m.track_mesh(lambda: [ModelRecord("a", copies={"p": CopyInfo("loaded")}),
                              ModelRecord("b", failed={"p": FailureInfo(int(time.time() * 1000), "bad")})],
                     lambda: True)
        s = parse(generate_latest(m.registry).decode())
        with_model = {n for n, rows in s.items() for lab, _ in rows if "modelId" in lab}
        if per_model:
            assert {"modelmesh_invoke_model_milliseconds_count", "modelmesh_api_request_milliseconds_count",
                    "modelmesh_loadmodel_milliseconds_count", "modelmesh_loaded_model_size_bytes_count",
                    "modelmesh_age_at_eviction_milliseconds_count", "modelmesh_cache_miss_milliseconds_count",
                    "mesh_model_requests_total"} <= with_model
        else:
            assert with_model == set()
            assert value(s, "modelmesh_invoke_model_milliseconds_count", method="ModelInfer", code="OK") == 1
            assert value(s, "modelmesh_loadmodel_milliseconds_count") == 1
            assert "mesh_model_requests_total" not in s
        assert value(s, "modelmesh_api_request_milliseconds_count", method="registerModel") is None
        assert value(s, "modelmesh_loadmodel_failure") == 1
        assert value(s, "modelmesh_instance_lru_seconds") == float((2**63 - 1) // 1000)  # empty: Long.MAX_VALUE / 1000
        assert value(s, "modelmesh_instance_used_bps") == 0
        assert (value(s, "modelmesh_models_loaded_total"), value(s, "modelmesh_models_with_failure_total"),
                value(s, "modelmesh_models_managed_total")) == (1, 1, 2)
        m.forget("a")
        assert 'modelId="a"' not in generate_latest(m.registry).decode()


async def test_api_request_takes_the_model_the_router_resolved():
    # ModelMesh labels api_request with the resolved modelId and the vModelId the client named
    # (ModelMeshApi: resolvedModelId, vModelId); here the router reports them with note_resolved
    m = PodMetrics("p", per_model=True)

    async def call(model_id: str, vmodel_id: str) -> None:
        note_resolved(model_id, vmodel_id)
        m.api_request("ModelInfer", None, 1.0)

    await asyncio.gather(asyncio.create_task(call("m1", "vm")), asyncio.create_task(call("m2", "")))
    m.api_request("ModelInfer", None, 1.0)  # a call that resolved nothing (in this task)
    s = parse(generate_latest(m.registry).decode())
    got = sorted((lab["modelId"], lab["vModelId"]) for lab, _ in s["modelmesh_api_request_milliseconds_count"])
    assert got == [("", ""), ("m1", "vm"), ("m2", "")]

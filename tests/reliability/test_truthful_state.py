"""The registry equals what the pods hold: after churn, through an etcd pause, and when a model
cannot fit anywhere. Real etcd, real pods, real onnxruntime sessions, traffic from threads.

Each pod's own truth is its published instance record (built from its cache: copy count and
bytes charged) and its ``modelmesh_instance_models_total`` metric; the registry's picture is the
copies listed in the model records. The figures the tests measure are printed (``-s`` shows them).
"""

from __future__ import annotations

import pathlib
import random
import re
import threading
import time
import urllib.request

import grpc
import numpy as np
import pytest

from plane import demo, stats
from plane.api import PlaneClient
from plane.demo import sample_input
from plane.proto import inference_pb2 as ipb
from plane.records import CopyState

from .conftest import infer_stub, load_here, start_plane, tiny_request, uid, wait_for

pytestmark = pytest.mark.slow

CHURN_MODELS = 200
CHURN_REQUESTS = 1500
CHURN_CAPACITY = 2 * 1024**2


@pytest.fixture(scope="module")
def many_models(tmp_path_factory: pytest.TempPathFactory) -> tuple[pathlib.Path, list[demo.DemoModel]]:
    root = tmp_path_factory.mktemp("churn-models")
    return root, demo.generate_models(root, CHURN_MODELS, seed=7)


def drift(client: PlaneClient) -> dict[str, dict[str, int]]:
    """Per pod: copies and bytes as the registry lists them vs as the pod reports them."""
    snap = client.snapshot()
    out: dict[str, dict[str, int]] = {}
    for pod in snap.pods:
        listed = [(m.model_id, m.copies[pod.pod_id]) for m in snap.models if pod.pod_id in m.copies]
        out[pod.pod_id] = {
            "registry_copies": len(listed), "pod_copies": pod.count,
            "registry_bytes": sum(c.size for _, c in listed), "pod_bytes": pod.used,
            "loading": sum(1 for _, c in listed if c.state != CopyState.LOADED), "capacity": pod.capacity,
        }
    return out


def in_agreement(d: dict[str, dict[str, int]]) -> bool:
    return bool(d) and all(v["registry_copies"] == v["pod_copies"] and v["registry_bytes"] == v["pod_bytes"]
                           and v["loading"] == 0 for v in d.values())


def loaded_metric(metrics_endpoint: str) -> int:
    text = urllib.request.urlopen(f"http://{metrics_endpoint}/metrics", timeout=5).read().decode()
    return int(float(re.search(r"^modelmesh_instance_models_total (\S+)$", text, re.M).group(1)))


def zipf_traffic(endpoints: list[str], models: list[demo.DemoModel], total: int, threads_per_pod: int = 2) -> int:
    """Zipf (alpha 1) requests sent to every pod at once; returns how many failed."""
    rng = random.Random(3)
    order = list(models)
    rng.shuffle(order)
    weights = [1.0 / (rank + 1) for rank in range(len(order))]
    inputs = {d: sample_input(d, 1) for d in demo.DATASETS}
    picks = rng.choices(order, weights, k=total)
    errors: list[str] = []
    lock = threading.Lock()
    workers = [(ep, i) for ep in endpoints for i in range(threads_per_pod)]

    def run(k: int, endpoint: str) -> None:
        ch, stub = infer_stub(endpoint)
        with ch:
            for m in picks[k::len(workers)]:
                x = inputs[m.dataset]
                req = ipb.ModelInferRequest(model_name=m.model_id)
                req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
                req.raw_input_contents.append(x.tobytes())
                try:
                    stub.ModelInfer(req, timeout=60)
                except grpc.RpcError as exc:
                    with lock:
                        errors.append(f"{m.model_id}: {exc.code().name} {exc.details()}")

    ts = [threading.Thread(target=run, args=(k, ep)) for k, (ep, _) in enumerate(workers)]
    for t in ts:
        t.start()
    for t in ts:
        t.join(300)
    return len(errors)


def test_churn_registry_equals_pods_and_idle_plane_evicts_nothing(etcd_endpoint, tmp_path, many_models):
    root, models = many_models
    with start_plane(etcd_endpoint, tmp_path / "state", root, pods=3, capacity=CHURN_CAPACITY,
                     planner_interval_s=1, preload=True, lease_ttl_s=3) as plane:
        client = plane.client
        client.register_models([demo_spec(m) for m in models])
        failed = zipf_traffic(plane.endpoints, models, CHURN_REQUESTS)
        assert failed == 0
        quiet = time.monotonic()
        d = wait_for(lambda: (lambda d: d if in_agreement(d) else None)(drift(client)), 10,
                     "the registry to equal the pods after traffic stopped")
        settle_s = time.monotonic() - quiet
        for pod in plane.pods:
            assert loaded_metric(f"127.0.0.1:{pod.metrics_port}") == d[pod.pod_id]["pod_copies"]
        over = [p for p, v in d.items() if v["registry_bytes"] > v["capacity"] or v["pod_bytes"] > v["capacity"]]
        assert over == []
        evictions = sum(1 for e in client.events(limit=0) if e.kind == "evict")
        assert evictions > 0, "the capacity was meant to make the pods evict under traffic"
        # The pods' own per-minute counts agree with the (not yet truncated) event log.
        loaded_events = sum(1 for e in client.events(limit=0) if e.kind == "loaded")
        # (each pod writes its counts at its next usage flush)
        wait_for(lambda: (t := stats.totals(client.stats()))["evictions"] == evictions and
                 t["loads"] == loaded_events and t["requests"] == CHURN_REQUESTS, 10,
                 "per-minute stats to match the log and the requests sent")
        # The idle plane: several planner rounds with preloading on, and nothing may be evicted.
        idle_from = time.time() * 1000
        deadline = time.monotonic() + 6
        while time.monotonic() < deadline:
            assert in_agreement(drift(client))
            time.sleep(0.5)
        idle_evictions = [e for e in client.events(since_ms=int(idle_from), limit=0) if e.kind == "evict"]
        assert idle_evictions == []
        copies = sum(v["pod_copies"] for v in d.values())
        print(f"\nchurn: {CHURN_REQUESTS} requests over {CHURN_MODELS} models, {evictions} evictions; "
              f"registry == pods {settle_s:.2f}s after traffic stopped; {copies} copies; 0 over capacity; "
              f"0 evictions while idle")


def demo_spec(m: demo.DemoModel):
    from plane.api import ModelSpec

    return ModelSpec(m.model_id, m.path, "default")


def test_etcd_pause_reloads_no_held_copy(dedicated_etcd, tmp_path, rel_models):
    """etcd frozen for longer than the leases: every lease expires at once when it resumes.
    The pods must re-assert their copies; none may be purged and loaded again."""
    etcd = dedicated_etcd
    pause_s = 8.0
    with start_plane(etcd.endpoint, tmp_path / "state", rel_models, pods=3, lease_ttl_s=2) as plane:
        client = plane.client
        held = {}
        for i, endpoint in enumerate(plane.endpoints):
            model_id = uid(f"held{i}")
            client.register_model(model_id, path="tiny/model.onnx")
            load_here(endpoint, model_id)
            held[model_id] = plane.pods[i].pod_id
        wait_for(lambda: all(client.get_model(m).loaded_on() == [p] for m, p in held.items()), 10,
                 "the copies to be recorded")
        loads_before = [e for e in client.events(limit=0) if e.kind == "load"]
        etcd.pause()
        time.sleep(pause_s)  # the outage itself: longer than the 2 s leases
        etcd.resume()
        # Traffic to every pod for every model while the plane recovers.
        deadline = time.monotonic() + 8
        ok = 0
        while time.monotonic() < deadline:
            for endpoint in plane.endpoints:
                ch, stub = infer_stub(endpoint)
                with ch:
                    for model_id in held:
                        resp = stub.ModelInfer(tiny_request(model_id), timeout=20)
                        y = np.frombuffer(resp.raw_output_contents[0], dtype="<f4")
                        assert y[0] == 1.0
                        ok += 1
        wait_for(lambda: len(client.pods()) == 3, 20, "every pod registered again")
        wait_for(lambda: all(client.get_model(m).loaded_on() == [p] for m, p in held.items()), 20,
                 "every copy re-asserted on its pod")
        loads_after = [e for e in client.events(limit=0) if e.kind == "load"]
        reloaded = [e for e in loads_after if e not in loads_before and e.model in held]
        assert reloaded == [], f"held copies were loaded again: {reloaded}"
        print(f"\netcd paused {pause_s:.0f}s (leases 2s): {len(reloaded)} held copies reloaded, {ok} requests ok")


def test_a_model_larger_than_every_pod_fails_once_with_the_reason(etcd_endpoint, tmp_path, rel_models):
    """A 126-byte-class model whose session allocates far more than a pod holds."""
    bomb = rel_models / "bomb" / "model.onnx"
    if not bomb.exists():
        bomb.parent.mkdir(exist_ok=True)
        demo.make_memory_bomb_model(bomb)
    with start_plane(etcd_endpoint, tmp_path / "state", rel_models, pods=2, capacity=2 * 1024**2) as plane:
        client = plane.client
        client.register_model("bomb", path="bomb/model.onnx")
        ch, stub = infer_stub(plane.endpoints[0])
        with ch:
            for _ in range(3):
                with pytest.raises(grpc.RpcError) as err:
                    stub.ModelInfer(demo_bomb_request(), timeout=60)
                assert err.value.code() in (grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.UNAVAILABLE)
                assert "needs" in err.value.details() and "capacity" in err.value.details() or \
                    "largest pod" in err.value.details()
        rec = client.get_model("bomb")
        assert rec.status() == "LOADING_FAILED" and rec.copies == {}
        assert any("needs" in f.message and "capacity" in f.message for f in rec.failed.values())
        failures = [e for e in client.events(limit=0) if e.kind == "load-failed" and e.model == "bomb"]
        loads = [e for e in client.events(limit=0) if e.kind == "load" and e.model == "bomb"]
        seen = [(e.kind, e.pod, e.reason) for e in loads + failures]
        assert len(loads) == 1 and len(failures) == 1, f"tried once, not per request: {seen}"
        assert all(p.used <= p.capacity for p in client.pods())


def demo_bomb_request() -> ipb.ModelInferRequest:
    return tiny_request("bomb")

"""Concurrent registration: racing registrations of one model id (threads through different
pods, and separate processes straight to etcd) have exactly one winner and leave an intact
record; 1,000 register/unregister operations interleaved across pods end in exactly the
expected registry, in etcd and in every pod's view."""

from __future__ import annotations

import json
import random
import subprocess
import sys
import textwrap
import threading
import time
from collections import Counter

import grpc
import pytest

from plane.proto import inference_pb2 as ipb
from plane.proto import mmesh_pb2 as mpb
from plane.registry import ModelRecord

from .conftest import infer_stub, mgmt, register_rpc, start_plane, uid, wait_for

pytestmark = pytest.mark.slow

PATHS = ("tiny/model.onnx", "tiny/./model.onnx")  # two different registrations of one id


@pytest.fixture(scope="module")
def race_plane(etcd_endpoint, rel_models, tmp_path_factory):
    with start_plane(etcd_endpoint, tmp_path_factory.mktemp("race"), rel_models, pods=3) as plane:
        yield plane


def raw_model(plane, model_id: str) -> ModelRecord | None:
    raw, _ = plane.client.run_async(plane.client.registry.get_raw(plane.client.registry.key("models", model_id)))
    return ModelRecord.from_json(raw) if raw else None  # parses: the JSON is intact


def test_racing_registrations_one_winner_threads(race_plane):
    plane = race_plane
    stubs = [mgmt(ep) for ep in plane.endpoints]
    try:
        for _round in range(8):
            model_id = uid("race")
            n = 6
            barrier = threading.Barrier(n)
            outcomes: list[tuple[str, str]] = [("", "")] * n

            def go(i: int, model_id: str = model_id, barrier: threading.Barrier = barrier,
                   outcomes: list = outcomes) -> None:
                stub = stubs[i % len(stubs)][1]
                path = PATHS[i % 2]
                barrier.wait(10)
                try:
                    register_rpc(stub, model_id, path, timeout=30)
                    outcomes[i] = (path, "ok")
                except grpc.RpcError as exc:
                    outcomes[i] = (path, exc.code().name + ": " + (exc.details() or ""))

            threads = [threading.Thread(target=go, args=(i,)) for i in range(n)]
            for t in threads:
                t.start()
            for t in threads:
                t.join(40)
            rec = raw_model(plane, model_id)
            assert rec is not None and rec.path in PATHS
            for path, result in outcomes:
                if path == rec.path:
                    assert result == "ok", outcomes
                else:
                    assert result.startswith("ALREADY_EXISTS") and "already registered" in result, outcomes
            registers = [e for e in plane.client.events(limit=0) if e.kind == "register" and e.model == model_id]
            assert len(registers) == 1, registers
            assert rec.copies == {} and rec.failed == {} and rec.refs == []
    finally:
        for ch, _ in stubs:
            ch.close()


RACER = textwrap.dedent("""
    import json, sys, time
    from plane.api import PlaneClient, ValidationError
    from plane.settings import MeshSettings
    etcd, prefix, model_id, path, start = sys.argv[1:6]
    client = PlaneClient.connect(MeshSettings(etcd=etcd, etcd_prefix=prefix))
    while time.time() < float(start):
        time.sleep(0.001)
    try:
        rec = client.register_model(model_id, path=path)
        print(json.dumps({"path": path, "ok": True, "got": rec.path}))
    except ValidationError as exc:
        print(json.dumps({"path": path, "ok": False, "error": str(exc)}))
    client.close()
""")


def test_racing_registrations_one_winner_processes(race_plane):
    plane = race_plane
    model_id = uid("procrace")
    start = time.time() + 6  # all racers connected by then, then they go at once
    procs = [
        subprocess.Popen([sys.executable, "-c", RACER, plane.settings.etcd, plane.settings.etcd_prefix, model_id,
                          PATHS[i % 2], str(start)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        for i in range(4)
    ]
    results = []
    for p in procs:
        out, err = p.communicate(timeout=60)
        assert p.returncode == 0, err
        results.append(json.loads(out.strip().splitlines()[-1]))
    rec = raw_model(plane, model_id)
    assert rec is not None
    winners = [r for r in results if r["ok"]]
    assert winners and all(r["path"] == rec.path and r["got"] == rec.path for r in winners), results
    assert all("already registered" in r["error"] for r in results if not r["ok"]), results
    assert {r["path"] for r in winners} == {rec.path}


def test_thousand_interleaved_register_unregister(race_plane):
    plane = race_plane
    base = uid("churn")
    n_threads, ops_per_thread, ids_per_thread = 8, 125, 10
    stubs = [mgmt(ep) for ep in plane.endpoints]
    expected: set[str] = set()
    counts: Counter[str] = Counter()
    problems: list[str] = []
    lock = threading.Lock()

    def worker(t: int) -> None:
        rnd = random.Random(t)
        mine = [f"{base}-{t}-{j}" for j in range(ids_per_thread)]
        present: set[str] = set()
        for _ in range(ops_per_thread):
            model_id = rnd.choice(mine)
            stub = rnd.choice(stubs)[1]
            try:
                if rnd.random() < 0.55:
                    register_rpc(stub, model_id, "tiny/model.onnx", timeout=30)
                    counts["created" if model_id not in present else "re-registered"] += 1
                    present.add(model_id)
                else:
                    # unregistering an absent id is done, not an error (ModelMesh's deleteModel)
                    stub.unregisterModel(mpb.UnregisterModelRequest(modelId=model_id), timeout=30)
                    counts["deleted" if model_id in present else "not-found"] += 1
                    present.discard(model_id)
            except grpc.RpcError as exc:
                problems.append(f"{model_id}: {exc.code().name} {exc.details()}")
        with lock:
            expected.update(present)

    t0 = time.monotonic()
    threads = [threading.Thread(target=worker, args=(t,)) for t in range(n_threads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    took = time.monotonic() - t0
    for ch, _ in stubs:
        ch.close()
    assert not any(t.is_alive() for t in threads), "operations hung"
    assert problems == [], problems[:10]
    assert sum(counts.values()) == n_threads * ops_per_thread == 1000

    in_etcd = {m.model_id for m in plane.client.list_models() if m.model_id.startswith(base + "-")}
    assert in_etcd == expected

    # every pod's view converges to the same set (ModelReady answers NOT_FOUND only for absent ids)
    all_ids = [f"{base}-{t}-{j}" for t in range(n_threads) for j in range(ids_per_thread)]

    def views_agree() -> bool:
        for ep in plane.endpoints:
            ch, stub = infer_stub(ep)
            with ch:
                for model_id in all_ids:
                    try:
                        stub.ModelReady(ipb.ModelReadyRequest(name=model_id), timeout=5)
                        known = True
                    except grpc.RpcError as exc:
                        if exc.code() != grpc.StatusCode.NOT_FOUND:
                            raise
                        known = False
                    if known != (model_id in expected):
                        return False
        return True

    wait_for(views_agree, 20, "every pod's view to match the registry")
    # one register event per creation, one unregister event per deletion
    events = [e for e in plane.client.events(limit=0) if e.model.startswith(base + "-")]
    kinds = Counter(e.kind for e in events)
    assert kinds["unregister"] == counts["deleted"], (kinds, counts)
    # register events carry no pod id, so two pods writing one in the same millisecond can
    # overwrite each other (see test_events_from_two_writers_in_one_millisecond_are_both_kept)
    assert kinds["register"] <= counts["created"], (kinds, counts)
    print(f"1000 ops in {took:.1f}s: {dict(counts)}; {len(expected)} models remain; "
          f"register events {kinds['register']} for {counts['created']} creations")


def test_events_from_two_writers_in_one_millisecond_are_both_kept(etcd_endpoint):
    import asyncio

    from plane.registry import Event, Registry

    async def scenario() -> list[Event]:
        host, port = etcd_endpoint.rsplit(":", 1)
        prefix = uid("evkeys")
        a = await Registry.connect([(host, int(port))], prefix)  # e.g. pod-0's registry client
        b = await Registry.connect([(host, int(port))], prefix)  # e.g. pod-1's registry client
        try:
            stamp = int(time.time() * 1000)
            await a.add_event(Event("register", model="m-a", reason="x", time_ms=stamp))
            await b.add_event(Event("register", model="m-b", reason="x", time_ms=stamp))
            return await a.list_events(limit=0)
        finally:
            await a.close()
            await b.close()

    events = asyncio.run(scenario())
    assert sorted(e.model for e in events) == ["m-a", "m-b"]

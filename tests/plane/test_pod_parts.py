"""The pod's parts, each on its own with fakes of its neighbours (tests/plane/podfakes.py):
an in-memory registry, plain dicts as the view, a recording peer client. No etcd, no pods."""

from __future__ import annotations

import asyncio
import threading
import time
from types import SimpleNamespace

import grpc
import pytest

from plane.pod.accounting import Usage
from plane.pod.copies import Copies
from plane.pod.errors import MeshError, PeerError, Purpose
from plane.pod.membership import Membership
from plane.pod.routing import Router
from plane.pod.serving import Server
from plane.proto import inference_pb2 as ipb
from plane.records import CopyInfo, FailureInfo, ModelRecord, StorageConfig, now_ms
from plane.settings import MeshSettings
from plane.tensors import TensorSpec
from tests.plane.podfakes import FakeMetrics, FakePeers, FakeRegistry, fake_view, instance

POD = "pod-0"


class Loader:
    """Stands in for onnxruntime: a session of a chosen measured size per model. With ``gate``
    (a threading.Event) each build waits for it, as a slow load would; ``building``/``most``
    count builds running at once (they run on the load slots' threads)."""

    def __init__(self, sizes: dict[str, int], gate: threading.Event | None = None):
        self.sizes = sizes
        self.loaded: list[str] = []
        self.gate = gate
        self.building = self.most = 0
        self._lock = threading.Lock()

    def __call__(self, model_id, path, *, intra_threads=1, source=""):
        with self._lock:
            self.building += 1
            self.most = max(self.most, self.building)
        try:
            if self.gate is not None:
                assert self.gate.wait(10), "the test never opened the gate"
            self.loaded.append(model_id)
        finally:
            with self._lock:
                self.building -= 1
        spec = {"x": TensorSpec("x", "FP32", [-1, 1])}
        return SimpleNamespace(model_id=model_id, size=self.sizes[model_id], file_size=path.stat().st_size,
                               inputs=spec, outputs=spec, source=source, avg_run_us=0.0)


@pytest.fixture
def parts(tmp_path):
    def build(*, capacity=1024**2, sizes=None, files=None, known=None, gate=None, slots=1, loader=None):
        """``known``: sizes the registry already records (measured at an earlier load); ``gate``:
        builds wait for it; ``loader=False``: the real runtimes (plane.runtimes) instead."""
        registry = FakeRegistry()
        store = tmp_path / "models"
        store.mkdir(exist_ok=True)
        registry.storage["default"] = StorageConfig("default", "local", {"path": str(store)})
        for name, nbytes in (files or {}).items():
            (store / f"{name}.onnx").write_bytes(b"\0" * nbytes)
            registry.put(ModelRecord(name, path=f"{name}.onnx", size=(known or {}).get(name, 0)))
        view = fake_view(registry)
        view.refresh()
        settings = MeshSettings(state_dir=tmp_path / "state", capacity=capacity, metrics_port=0, lease_ttl_s=1,
                                max_concurrent_loads=slots)
        metrics = FakeMetrics()
        usage = Usage(POD, registry, view)
        loader = loader if loader is not None else Loader(sizes or {}, gate)
        copies = Copies(pod_id=POD, settings=settings, registry=registry, view=view, metrics=metrics,
                        weight=usage.weight, changed=lambda: None, loader=loader or None)
        return SimpleNamespace(registry=registry, view=view, copies=copies, usage=usage, metrics=metrics,
                               loader=loader, settings=settings, store=store)

    return build


def registry_copies(p) -> dict[str, tuple[str, int]]:
    """model -> (state, size) of this pod's copies as the fake registry records them."""
    out = {}
    for model_id in p.registry.models:
        c = p.registry.model(model_id).copies.get(POD)
        if c is not None:
            out[model_id] = (c.state, c.size)
    return out


def local_copies(p) -> dict[str, tuple[str, int]]:
    return {m: (p.copies.desired(m).state, p.copies.desired(m).size) for m in [e.model_id for e in
                                                                             p.copies.cache.entries()]}


# -- copies: the state machine and reconciliation ----------------------------------------------------------


async def test_a_load_records_the_measured_size_and_an_event(parts):
    p = parts(sizes={"a": 5000}, files={"a": 100})
    sess = await p.copies.ensure_local("a", settle=True)
    assert sess.size == 5000
    assert registry_copies(p) == {"a": ("loaded", 5000)} == local_copies(p)
    assert p.registry.model("a").size == 5000
    assert p.registry.kinds() == ["load", "loaded"]


async def test_reconcile_adds_missing_and_removes_phantom_copies(parts):
    p = parts(sizes={"a": 5000, "b": 7000}, files={"a": 100, "b": 100})
    await p.copies.ensure_local("a", settle=True)
    # The registry lost our copy of a, and lists a copy of b that this pod does not hold.
    rec = p.registry.model("a")
    rec.copies.clear()
    p.registry.put(rec)
    rec = p.registry.model("b")
    rec.copies[POD] = CopyInfo("loaded", now_ms(), 7000)
    p.registry.put(rec)
    p.view.refresh()
    assert sorted(p.copies.drifted()) == ["a", "b"]
    assert await p.copies.reconcile() == 2
    assert registry_copies(p) == {"a": ("loaded", 5000)} == local_copies(p)
    p.view.refresh()
    assert p.copies.drifted() == []


async def test_a_failed_write_is_counted_then_repaired(parts):
    p = parts(sizes={"a": 5000}, files={"a": 100})
    await p.copies.ensure_local("a", settle=True)
    p.registry.down = True
    assert await p.copies.unload("a", "planner") is True  # the pod drops it even with etcd away
    assert p.metrics.counts["write_failed:copy"] >= 1
    assert p.copies.unsynced == {"a"}
    assert registry_copies(p) == {"a": ("loaded", 5000)}  # stale while etcd is away
    p.registry.down = False
    await p.copies.reconcile()
    assert registry_copies(p) == {} == local_copies(p)
    assert p.copies.unsynced == set()


async def test_concurrent_writes_converge_on_the_local_truth(parts):
    p = parts(sizes={"a": 5000}, files={"a": 100})
    await p.copies.ensure_local("a", settle=True)
    first = asyncio.create_task(p.copies.sync("a"))  # queued while the state changes under it
    p.copies.cache.remove("a")
    p.copies.sessions.pop("a")
    second = asyncio.create_task(p.copies.sync("a"))
    await asyncio.gather(first, second)
    assert registry_copies(p) == {}


async def test_a_copy_measured_larger_than_the_pod_is_refused_with_the_reason(parts):
    p = parts(capacity=100_000, sizes={"bomb": 256 * 1024**2}, files={"bomb": 126})
    with pytest.raises(MeshError) as err:
        await p.copies.ensure_local("bomb")
    assert err.value.load_failed and err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED
    assert "needs 256.0 MiB" in err.value.message and "capacity 97.7 KiB" in err.value.message
    assert p.copies.cache.used == 0 and p.copies.sessions == {}
    rec = p.registry.model("bomb")
    assert rec.copies == {}
    failure = rec.failed[POD]
    assert (failure.needs, failure.capacity) == (256 * 1024**2, 100_000)
    assert failure.excludes(100_000) and not failure.excludes(512 * 1024**2)
    assert rec.size == 256 * 1024**2  # placement now knows it fits no such pod
    assert "load-failed" in p.registry.kinds()


async def test_a_file_larger_than_the_pod_fails_before_loading(parts):
    p = parts(capacity=10_000, sizes={"big": 1}, files={"big": 20_000})
    with pytest.raises(MeshError) as err:
        await p.copies.ensure_local("big")
    assert "its file" in err.value.message
    assert p.loader.loaded == []


async def test_a_planned_load_never_evicts(parts):
    p = parts(capacity=1024**2, sizes={"a": 900_000, "b": 200_000}, files={"a": 100, "b": 100})
    await p.copies.ensure_local("a", settle=True)
    with pytest.raises(MeshError) as err:
        await p.copies.ensure_local("b", purpose=Purpose.PLANNED)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION and not err.value.load_failed
    assert local_copies(p) == {"a": ("loaded", 900_000)} == registry_copies(p)
    assert "evict" not in p.registry.kinds()
    assert POD not in p.registry.model("b").failed  # not the model's fault: no failure recorded


async def test_a_request_load_evicts_the_lowest_weight_copy(parts):
    p = parts(capacity=1024**2, sizes={"a": 500_000, "b": 400_000, "c": 300_000},
              files={"a": 100, "b": 100, "c": 100})
    await p.copies.ensure_local("a", settle=True)
    await p.copies.ensure_local("b", settle=True)
    for _ in range(5):
        p.usage.record("b")  # b is busy, a is not
    await p.copies.ensure_local("c", settle=True)

    async def evicted() -> bool:  # the eviction's registry write runs as its own task
        return "evict" in p.registry.kinds() and "a" not in registry_copies(p)

    await _until(evicted)
    assert set(local_copies(p)) == {"b", "c"}
    assert registry_copies(p) == local_copies(p)
    evict = [e for e in p.registry.events if e.kind == "evict"]
    assert [e.model for e in evict] == ["a"] and "evicted for c" in evict[0].reason
    assert p.copies.cache.used <= p.copies.cache.capacity


async def test_requests_are_answered_before_the_registry_hears_of_the_copy(parts):
    p = parts(sizes={"a": 5000}, files={"a": 100})
    p.registry.gate = asyncio.Event()  # etcd is slow: no write lands until the gate opens
    sess = await asyncio.wait_for(p.copies.ensure_local("a"), 5)
    assert sess.size == 5000 and p.copies.sessions["a"] is sess
    assert registry_copies(p) == {} and p.registry.events == []
    assert local_copies(p) == {"a": ("loaded", 5000)}
    p.registry.gate.set()
    await p.copies.ensure_local("a", settle=True)  # the load's registry writes have landed
    assert registry_copies(p) == {"a": ("loaded", 5000)} == local_copies(p)
    assert p.registry.model("a").size == 5000 and p.registry.model("a").io
    assert p.registry.kinds() == ["load", "loaded"]
    assert p.registry.events[0].time_ms <= p.registry.events[1].time_ms


async def test_a_load_reserves_the_size_measured_before_and_never_overcommits(parts):
    p = parts(capacity=300_000, sizes={"a": 120_000, "b": 120_000, "c": 150_000},
              files={"a": 100, "b": 100, "c": 100}, known={"a": 120_000, "b": 120_000, "c": 150_000})
    await p.copies.ensure_local("a", settle=True)
    await p.copies.ensure_local("b", settle=True)
    used: list[int] = []
    p.copies.cache.resize = _watching(p.copies.cache, p.copies.cache.resize, used)
    await p.copies.ensure_local("c", settle=True)  # 150 kB: one of a and b must go first
    assert max(used, default=0) <= 300_000 and p.copies.cache.used <= 300_000
    assert len(p.copies.sessions) == 2 and "c" in p.copies.sessions
    evict = [e for e in p.registry.events if e.kind == "evict"]
    assert len(evict) == 1 and "measured more than predicted" not in evict[0].reason


def _watching(cache, fn, seen: list[int]):
    def resize(model_id, size):
        fn(model_id, size)
        seen.append(cache.used)

    return resize


async def test_loads_run_side_by_side_and_wait_for_room_held_by_other_loads(parts):
    gate = threading.Event()
    p = parts(capacity=300_000, slots=2, gate=gate, sizes={"a": 100_000, "b": 100_000, "c": 250_000},
              files={"a": 100, "b": 100, "c": 100}, known={"a": 100_000, "b": 100_000, "c": 250_000})
    loads = [asyncio.create_task(p.copies.ensure_local(m, settle=True)) for m in ("a", "b", "c")]

    async def both_building() -> bool:
        return p.loader.building == 2

    await _until(both_building)
    # a and b hold 200 kB while they build; c (250 kB) cannot fit yet and waits instead of failing
    assert p.copies.cache.used == 200_000 and "c" not in p.copies.cache and not loads[2].done()
    gate.set()
    await asyncio.wait_for(asyncio.gather(*loads), 10)
    assert p.loader.most == 2  # never more builds at once than slots
    assert "c" in p.copies.sessions and p.copies.cache.used <= 300_000
    assert registry_copies(p) == local_copies(p)
    assert sum(1 for e in p.registry.events if e.kind == "evict") >= 1


async def test_a_planned_load_does_not_wait_for_room(parts):
    gate = threading.Event()
    p = parts(capacity=300_000, slots=2, gate=gate, sizes={"a": 200_000, "b": 200_000},
              files={"a": 100, "b": 100}, known={"a": 200_000, "b": 200_000})
    first = asyncio.create_task(p.copies.ensure_local("a"))

    async def building() -> bool:
        return p.loader.building == 1

    await _until(building)
    with pytest.raises(MeshError) as err:
        await p.copies.ensure_local("b", purpose=Purpose.PLANNED)
    assert err.value.code == grpc.StatusCode.FAILED_PRECONDITION
    gate.set()
    await first


async def test_a_file_loaded_again_is_built_once_and_keeps_its_measured_size(parts, monkeypatch):
    from plane import demo, runtime, size_memo

    size_memo.forget_all()
    p = parts(loader=False, capacity=64 * 1024**2)
    demo.make_tiny_model(p.store / "tiny.onnx")
    p.registry.put(ModelRecord("tiny", path="tiny.onnx"))
    p.view.refresh()
    measured: list[int] = []
    real = runtime._measure

    def counting(*args, **kwargs):
        found = real(*args, **kwargs)
        measured.append(found.delta)
        return found

    monkeypatch.setattr(runtime, "_measure", counting)
    first = await p.copies.ensure_local("tiny", settle=True)
    assert len(measured) == 1 and first.size >= first.file_size
    assert await p.copies.unload("tiny", "test")
    p.view.refresh()
    second = await p.copies.ensure_local("tiny", settle=True)
    assert len(measured) == 1, "the same file was measured again"
    assert second is not first and second.size == first.size
    loaded = [e.reason for e in p.registry.events if e.kind == "loaded"]
    assert "earlier load" not in loaded[0] and "size measured at an earlier load of the same file" in loaded[1]
    # A file replaced under the same name is a new file: measured again.
    assert await p.copies.unload("tiny", "test")
    demo.make_tiny_model(p.store / "tiny.new")
    (p.store / "tiny.new").replace(p.store / "tiny.onnx")
    await p.copies.ensure_local("tiny", settle=True)
    assert len(measured) == 2


# -- membership: pods that vanish -----------------------------------------------------------------------


def _membership(view, registry, *, grace: float) -> Membership:
    settings = MeshSettings(lease_ttl_s=1, metrics_port=0)
    m = Membership(pod_id=POD, settings=settings, registry=registry, view=view, record=lambda: instance(POD),
                   reregistered=lambda: asyncio.sleep(0), metrics=FakeMetrics())
    m.purge_grace_s = grace
    return m


async def _until(predicate, timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not await predicate():
        assert time.monotonic() < deadline, "condition not reached in time"
        await asyncio.sleep(0.02)


async def test_copies_of_a_vanished_pod_are_purged_only_after_the_grace():
    registry = FakeRegistry()
    registry.put(ModelRecord("m", copies={"pod-9": CopyInfo("loaded", 0, 10)}))
    view = fake_view(registry)
    view.refresh()
    view.instances = {POD: instance(POD)}
    m = _membership(view, registry, grace=0.3)
    m.on_instance_change("pod-9", instance("pod-9"), None)
    assert m.reachable("pod-9")  # a lease blip, as far as anyone knows yet
    assert await m.sweep() == 0
    assert registry.model("m").copies

    async def purged() -> bool:
        await m.sweep()
        return not registry.model("m").copies

    await _until(purged)
    assert not m.reachable("pod-9")
    assert registry.events[-1].kind == "unload" and "pod gone" in registry.events[-1].reason


async def test_a_pod_back_within_the_grace_keeps_its_copies():
    registry = FakeRegistry()
    registry.put(ModelRecord("m", copies={"pod-9": CopyInfo("loaded", 0, 10)}))
    view = fake_view(registry)
    view.refresh()
    view.instances = {POD: instance(POD)}
    m = _membership(view, registry, grace=0.2)
    m.on_instance_change("pod-9", instance("pod-9"), None)
    await m.sweep()
    view.instances["pod-9"] = instance("pod-9")
    m.on_instance_change("pod-9", None, view.instances["pod-9"])
    await asyncio.sleep(0.3)
    assert await m.sweep() == 0
    assert registry.model("m").copies


# -- routing, with a fake peer client --------------------------------------------------------------------


def _router(p, peers: FakePeers, membership: Membership) -> Router:
    server = Server(settings=p.settings, copies=p.copies, usage=p.usage, metrics=p.metrics)
    return Router(pod_id=POD, settings=p.settings, registry=p.registry, view=p.view, copies=p.copies, peers=peers,
                  membership=membership, server=server, metrics=p.metrics, shutting_down=lambda: False)


def _held_by(p, model_id: str, pods: list[str]) -> None:
    rec = p.registry.model(model_id)
    rec.copies = {q: CopyInfo("loaded", 0, 10) for q in pods}
    p.registry.put(rec)
    p.view.refresh()


async def test_a_silent_holder_is_skipped_for_another(parts):
    p = parts(files={"m": 100})
    p.view.instances = {q: instance(q) for q in (POD, "p1", "p2")}
    _held_by(p, "m", ["p1", "p2"])
    peers = FakePeers()
    peers.answers["p2"] = lambda req: ipb.ModelInferResponse(model_name="from-p2")
    router = _router(p, peers, _membership(p.view, p.registry, grace=5))
    for _ in range(5):
        resp = await router.route("m", "ModelInfer", ipb.ModelInferRequest(model_name="m"))
        assert resp.model_name == "from-p2"
    assert p.loader.loaded == []  # nothing was loaded for it


async def test_a_recently_vanished_holder_is_still_tried_before_any_reload(parts):
    p = parts(files={"m": 100})
    p.view.instances = {POD: instance(POD)}
    _held_by(p, "m", ["p1"])
    peers = FakePeers()
    peers.answers["p1"] = lambda req: ipb.ModelInferResponse(model_name="from-p1")
    membership = _membership(p.view, p.registry, grace=5)
    membership.on_instance_change("p1", instance("p1"), None)  # its lease expired (etcd paused)
    resp = await _router(p, peers, membership).route("m", "ModelInfer", ipb.ModelInferRequest(model_name="m"))
    assert resp.model_name == "from-p1"
    assert p.loader.loaded == []


async def test_a_model_that_fits_no_pod_is_not_loaded_again(parts):
    p = parts(capacity=100_000, files={"m": 100})
    p.view.instances = {POD: instance(POD, capacity=100_000), "p1": instance("p1", capacity=100_000)}
    rec = p.registry.model("m")
    rec.size = 5_000_000
    rec.failed = {POD: FailureInfo(now_ms(), "needs 4.8 MiB, capacity 97.7 KiB", needs=5_000_000, capacity=100_000)}
    p.registry.put(rec)
    p.view.refresh()
    peers = FakePeers()
    router = _router(p, peers, _membership(p.view, p.registry, grace=5))
    assert router.choose_loader(p.view.models["m"], exclude=set()) is None
    with pytest.raises(MeshError) as err:
        await router.route("m", "ModelInfer", ipb.ModelInferRequest(model_name="m"))
    assert err.value.code == grpc.StatusCode.RESOURCE_EXHAUSTED and "needs 5000000 bytes" in err.value.message
    assert peers.calls == [] and p.loader.loaded == []
    # A pod with room is chosen once one exists.
    p.view.instances["p2"] = instance("p2", capacity=10_000_000)
    assert router.choose_loader(p.view.models["m"], exclude=set()) == "p2"


# -- the hop: forwarded inference over a plain connection ------------------------------------------------


async def _hop_pair(handler, *, token="secret", client_token="secret"):
    from plane.pod.hop import HopClient, HopServer

    server = HopServer(handler, lambda: token, max_frame=1 << 20)
    port = await server.start("127.0.0.1", 0)
    client = HopClient(lambda: client_token, max_frame=1 << 20)
    return server, client, port


async def test_a_hop_carries_requests_both_ways_in_any_order():
    seen = []

    async def handler(raw, headers, timeout_s):
        seen.append((headers, round(timeout_s)))
        await asyncio.sleep(0.05 if raw == b"slow" else 0)
        return raw.upper()

    server, client, port = await _hop_pair(handler)
    try:
        await client.connect("p1", "127.0.0.1", port)
        headers = (("mm-model-id", "m"), ("mm-vmodel-id-bin", b"\xff\x00"))
        answers = await asyncio.gather(client.call("p1", b"slow", headers, timeout=30),
                                       *(client.call("p1", b"x%d" % i, (), timeout=30) for i in range(20)))
        assert answers == [b"SLOW", *(b"X%d" % i for i in range(20))]
        assert seen[0] == (headers, 30) and all(h == () for h, _ in seen[1:])
    finally:
        client.close()
        await server.close()


async def test_a_hop_maps_errors_and_deadlines_as_grpc_forwarding_does():
    async def handler(raw, headers, timeout_s):
        if raw == b"broken":
            raise MeshError(grpc.StatusCode.INTERNAL, "not a valid ONNX model", load_failed=True)
        if raw == b"missing":
            raise MeshError(grpc.StatusCode.NOT_FOUND, "model 'x' is not registered")
        await asyncio.sleep(5)
        return b""

    server, client, port = await _hop_pair(handler)
    try:
        await client.connect("p1", "127.0.0.1", port)
        with pytest.raises(PeerError) as err:
            await client.call("p1", b"broken", (), timeout=5)
        assert err.value.code == grpc.StatusCode.INTERNAL and err.value.load_failed
        assert "not a valid ONNX model" in err.value.details
        with pytest.raises(PeerError) as err:
            await client.call("p1", b"missing", (), timeout=5)
        assert err.value.code == grpc.StatusCode.NOT_FOUND and not err.value.load_failed
        t0 = time.monotonic()
        with pytest.raises(PeerError) as err:
            await client.call("p1", b"hang", (), timeout=0.2)
        assert err.value.code == grpc.StatusCode.DEADLINE_EXCEEDED and time.monotonic() - t0 < 2
    finally:
        client.close()
        await server.close()


async def test_a_hop_without_the_peer_token_is_refused():
    async def handler(raw, headers, timeout_s):
        raise AssertionError("an outsider's request was served")

    server, client, port = await _hop_pair(handler, client_token="wrong")
    try:
        with pytest.raises((ConnectionError, OSError)):
            await client.connect("p1", "127.0.0.1", port)
        assert not client.connected("p1")
        with pytest.raises(PeerError) as err:
            await client.call("p1", b"x", (), timeout=1)
        assert err.value.unreachable  # routing falls back (gRPC, another copy)
    finally:
        client.close()
        await server.close()


async def test_a_hop_connection_that_closes_fails_its_requests_as_unreachable():
    release = asyncio.Event()

    async def handler(raw, headers, timeout_s):
        await release.wait()
        return b"late"

    server, client, port = await _hop_pair(handler)
    try:
        await client.connect("p1", "127.0.0.1", port)
        pending = asyncio.create_task(client.call("p1", b"x", (), timeout=10))
        await asyncio.sleep(0.05)
        await server.close()  # the serving pod goes away
        with pytest.raises(PeerError) as err:
            await asyncio.wait_for(pending, 5)
        assert err.value.unreachable
        assert not client.connected("p1")
    finally:
        release.set()
        client.close()


def test_a_call_forwarded_over_the_hop_keeps_the_clients_model_headers():
    from plane.pod.calls import CallReader

    reader = CallReader(lambda: "tok")
    call = reader.forwarded((("mm-vmodel-id", "alias"), ("mm-internal-hop", "1"), ("x-other", "y")), None)
    assert call.vmodel_id == "alias" and call.model_id is None
    assert call.hop and call.trusted and call.forward == (("mm-vmodel-id", "alias"),)
    call = reader.forwarded((("mm-model-id-bin", b"m1"),), None)
    assert call.model_id == "m1"

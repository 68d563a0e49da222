"""Fakes of a pod part's neighbours: an in-memory registry, a plain view, a recording peer
client, metrics that count. No etcd, no gRPC: each part is tested on its own."""

from __future__ import annotations

import asyncio
from collections import Counter, defaultdict
from types import SimpleNamespace
from typing import Any

import grpc

from plane.pod.errors import PeerError
from plane.records import EtcdUnavailable, Event, InstanceRecord, ModelRecord, StorageConfig


class FakeRegistry:
    """The registry calls the parts make, over dicts. ``down = True`` makes every call fail as
    an unreachable etcd does."""

    def __init__(self) -> None:
        self.models: dict[str, bytes] = {}
        self.storage: dict[str, StorageConfig] = {}
        self.events: list[Event] = []
        self.stats: dict[str, Any] = {}
        self.down = False
        self.writes = 0
        self.gate: asyncio.Event | None = None  # when set: writes wait until the event is set (etcd slow)

    def _check(self) -> None:
        if self.down:
            raise EtcdUnavailable("etcd is down (fake)")

    def put(self, rec: ModelRecord) -> None:
        self.models[rec.model_id] = rec.to_json()

    def model(self, model_id: str) -> ModelRecord | None:
        raw = self.models.get(model_id)
        return ModelRecord.from_json(raw) if raw else None

    async def get_model(self, model_id: str) -> ModelRecord | None:
        self._check()
        return self.model(model_id)

    async def _wait_gate(self) -> None:
        if self.gate is not None:
            await self.gate.wait()

    async def update_model(self, model_id: str, fn: Any, *, create: bool = False) -> ModelRecord | None:
        self._check()
        await asyncio.sleep(0)  # a real write yields to the loop
        await self._wait_gate()
        raw = self.models.get(model_id)
        if raw is None and not create:
            return None
        new = fn(ModelRecord.from_json(raw) if raw else ModelRecord(model_id))
        if new is None:
            self.models.pop(model_id, None)
            return None
        self.models[model_id] = new.to_json()
        self.writes += 1
        return ModelRecord.from_json(self.models[model_id])

    async def get_storage(self, key: str) -> StorageConfig | None:
        self._check()
        return self.storage.get(key)

    async def add_event(self, ev: Event) -> None:
        self._check()
        await self._wait_gate()
        self.events.append(ev)

    async def put_stats(self, rec: Any) -> None:
        self._check()
        self.stats[rec.key] = rec

    def kinds(self) -> list[str]:
        return [e.kind for e in self.events]


def fake_view(registry: FakeRegistry | None = None) -> SimpleNamespace:
    """A view is plain dicts. ``refresh`` copies the fake registry into it (the watch's job)."""
    synced = asyncio.Event()
    synced.set()
    view = SimpleNamespace(models={}, vmodels={}, instances={}, storage={}, synced=synced, connected=True)

    def refresh() -> None:
        if registry is not None:
            view.models = {m: ModelRecord.from_json(raw) for m, raw in registry.models.items()}
            view.storage = dict(registry.storage)

    view.refresh = refresh
    return view


class FakeMetrics:
    def __init__(self) -> None:
        self.counts: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Any:
        def record(*args: Any, **kwargs: Any) -> None:
            self.counts[name] += 1
            if name == "registry_write_failed":
                self.counts[f"write_failed:{args[0]}"] += 1

        return record


class FakePeers:
    """Records calls; ``answers[pod]`` is a callable giving the reply or raising PeerError."""

    def __init__(self) -> None:
        self.in_flight: dict[str, int] = defaultdict(int)
        self.calls: list[tuple[str, str, str]] = []
        self.answers: dict[str, Any] = {}

    async def call(self, pod_id: str, method: str, request: Any, metadata: Any, *, timeout: float) -> Any:
        self.calls.append((pod_id, method, getattr(request, "model_name", "")))
        answer = self.answers.get(pod_id)
        if answer is None:
            raise PeerError(pod_id, grpc.StatusCode.UNAVAILABLE, "connection refused (fake)")
        return answer(request)

    async def ensure_loaded(self, pod_id: str, model_id: str, *, sync: bool, purpose: str, timeout: float) -> None:
        self.calls.append((pod_id, "ensureLoaded", model_id))

    async def unload(self, pod_id: str, model_id: str, reason: str) -> bool:
        self.calls.append((pod_id, "unload", model_id))
        return True

    def forget(self, pod_id: str) -> None:
        pass

    async def close(self) -> None:
        pass


def instance(pod_id: str, *, capacity: int = 10_000, used: int = 0) -> InstanceRecord:
    return InstanceRecord(pod_id=pod_id, endpoint=f"127.0.0.1:{abs(hash(pod_id)) % 50000 + 1000}",
                          capacity=capacity, used=used)

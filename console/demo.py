"""Deterministic demo data: the plane as a small cluster would show it.

Used by the snapshot tests (as an in-memory :class:`~console.state.PlaneState`), and by
``console/screenshots.py`` (written into a real etcd through the registry, the same way
pods write it). Every time is relative to a fixed ``now`` so the text never changes.
"""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any, TypeVar

from console.state import Change, PlaneState
from plane.registry import (
    CopyInfo,
    Event,
    FailureInfo,
    InstanceRecord,
    ModelRecord,
    Registry,
    StorageConfig,
    VModelRecord,
)
from plane.stats import MINUTE_MS, StatsRecord, minute_of
from plane.usage import RATE_WINDOW_MS

__all__ = ["DEMO_NOW_MS", "DemoPlane", "demo_plane", "demo_state", "write_demo"]

R = TypeVar("R", ModelRecord, VModelRecord)

DEMO_NOW_MS = 1_790_000_000_000  # a fixed "now" (2026-09-21 14:13:20 UTC)
MIB = 1024**2
MIN = 60_000


@dataclass
class DemoPlane:
    pods: list[InstanceRecord] = field(default_factory=list)
    models: list[ModelRecord] = field(default_factory=list)
    vmodels: list[VModelRecord] = field(default_factory=list)
    storage: list[StorageConfig] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    stats: list[StatsRecord] = field(default_factory=list)


STAT_OF_EVENT = {"loaded": "loads", "evict": "evictions", "unload": "unloads", "load-failed": "failures"}
POD_TRAFFIC = {"pod-0": 150, "pod-1": 70, "pod-2": 110}  # requests per minute, on average
# (minutes ago, pod, kind): activity of the hour before the events kept above (the bounded log
# lost those events; the pods' per-minute stats still count them)
OLDER_ACTIVITY = [(58, "pod-0", "loads"), (58, "pod-1", "loads"), (57, "pod-2", "loads"), (55, "pod-0", "loads"),
                  (52, "pod-1", "loads"), (51, "pod-1", "evictions"), (47, "pod-2", "loads"),
                  (46, "pod-2", "evictions"), (44, "pod-0", "loads"), (41, "pod-0", "loads"),
                  (40, "pod-0", "evictions"), (37, "pod-1", "loads"), (36, "pod-1", "evictions"),
                  (33, "pod-2", "loads"), (31, "pod-0", "unloads")]


def demo_stats(events: list[Event], now: int, *, seed: int = 11) -> list[StatsRecord]:
    """The pods' per-minute stats of the last hour: the demo events counted by minute, the
    older activity the log no longer holds, and requests that rise and fall."""
    rng = random.Random(seed)
    counts: dict[tuple[str, int], dict[str, int]] = {}

    def add(pod: str, t_ms: int, kind: str, n: int = 1) -> None:
        row = counts.setdefault((pod, minute_of(t_ms)), {})
        row[kind] = row.get(kind, 0) + n

    for ev in events:
        if ev.pod and ev.kind in STAT_OF_EVENT:
            add(ev.pod, ev.time_ms, STAT_OF_EVENT[ev.kind])
    for minutes_ago, pod, kind in OLDER_ACTIVITY:
        add(pod, now - minutes_ago * MINUTE_MS, kind)
    for i in range(60):
        t = now - (59 - i) * MINUTE_MS
        wave = 0.55 + 0.45 * math.sin(i / 7.0)
        for pod, base in POD_TRAFFIC.items():
            add(pod, t, "requests", int(base * wave) + rng.randint(0, base // 4))
    return [StatsRecord(pod, minute, row) for (pod, minute), row in sorted(counts.items(), key=lambda kv: kv[0][1])]


def _pod_rate(m: ModelRecord, pod_id: str, now: int) -> float:
    """What a live pod publishes as its rate for this model: the requests of its last minute."""
    rpm, at = m.pod_rpm.get(pod_id, (0.0, now))
    return rpm * max(0.0, 1.0 - (now - at) / RATE_WINDOW_MS)


def demo_plane(now: int = DEMO_NOW_MS) -> DemoPlane:
    d = DemoPlane()
    spec: list[tuple[str, int, dict[str, str], float, int | None]] = [
        # id, size MiB, copies {pod: state}, rate in the pods' last reports, seconds since the
        # last request (None: never used). Pods report at their usage flush after requests, so a
        # report is as old as the last request, and the rate shown has decayed by that age
        # (``usage.fresh_rpm``): models idle for a minute or more show no rate.
        ("mnist-v1", 12, {"pod-0": "loaded", "pod-1": "loaded"}, 42.0, 3),
        ("mnist-v2", 12, {"pod-2": "loaded"}, 9.0, 12),
        ("resnet18", 46, {"pod-0": "loaded"}, 3.2, 2 * 60 + 10),
        ("bert-tiny", 18, {"pod-1": "loaded"}, 1.0, 6 * 60 + 5),
        ("fraud-gbm", 8, {"pod-2": "loaded", "pod-0": "loaded"}, 120.0, 1),
        ("churn-lr", 1, {"pod-1": "loaded"}, 0.4, 14 * 60 + 5),
        ("iris-svm", 1, {"pod-2": "loading"}, 0.0, None),
        ("yolo-nano", 64, {}, 0.0, 38 * 60 + 5),
        ("sentiment-distil", 92, {"pod-1": "loaded"}, 5.1, 25),
        ("recsys-mf", 33, {"pod-0": "loaded"}, 11.0, 40),
        ("ocr-crnn", 27, {}, 0.0, 95 * 60 + 5),
        ("anomaly-ae", 5, {"pod-2": "loaded"}, 0.7, 22 * 60 + 5),
    ]
    # the models that are not ONNX files: (type as registered, path inside the storage)
    formats = {"fraud-gbm": ("lightgbm", "models/fraud-gbm/model.txt"),
               "churn-lr": ("sklearn", "models/churn-lr.joblib"),
               "iris-svm": ("mt:sklearn:1", "models/iris-svm/"),
               "recsys-mf": ("xgboost", "models/recsys-mf.ubj")}
    for model_id, size, copies, rpm, idle_s in spec:
        mtype, path = formats.get(model_id, ("onnx", f"models/{model_id}.onnx"))
        used = 0 if idle_s is None else now - idle_s * 1000
        # the registry's eviction order: set in the past at registration, then the last use
        order = used or now - 6 * 3600_000
        loaded = sorted(p for p, state in copies.items() if state == "loaded")
        share = {p: round(rpm / len(loaded), 2) for p in loaded} if used else {}
        d.models.append(ModelRecord(
            model_id=model_id, type=mtype, path=path, key="minio" if "v" in model_id else "default",
            created_ms=now - 3 * 3600_000, last_used_ms=order, used_ms=used, size=size * MIB,
            file_size=size * MIB // 2,
            copies={p: CopyInfo(state=s, since_ms=now - 30 * MIN, size=size * MIB)
                    for p, s in copies.items()},
            rpm=sum(share.values(), 0.0), pod_rpm={p: [r, used] for p, r in share.items()},
        ))
    d.models.append(ModelRecord(  # never used: its first request found no pod able to load it
        model_id="broken-net", path="models/broken-net.onnx", created_ms=now - 20 * MIN,
        last_used_ms=now - 20 * MIN - 6 * 3600_000,
        failed={"pod-1": FailureInfo(now - 7 * MIN, "InvalidProtobuf: file is not an ONNX model"),
                "pod-2": FailureInfo(now - 6 * MIN, "InvalidProtobuf: file is not an ONNX model")},
    ))
    for i, pod_id in enumerate(("pod-0", "pod-1", "pod-2")):
        held = [m for m in d.models if pod_id in m.copies]
        d.pods.append(InstanceRecord(
            pod_id=pod_id, endpoint=f"127.0.0.1:{8033 + i}", capacity=256 * MIB,
            used=sum(m.size for m in held), count=len(held),
            loading=sum(1 for m in held if m.copies[pod_id].state == "loading"),
            rpm=round(sum(_pod_rate(m, pod_id, now) for m in held), 1), started_ms=now - 3 * 3600_000,
            updated_ms=now,
        ))
    d.vmodels = [
        VModelRecord("mnist", active="mnist-v1", target="mnist-v2", owner="team-vision",
                     updated_ms=now - 2 * MIN),
        VModelRecord("fraud", active="fraud-gbm", target="fraud-gbm", owner="team-risk",
                     updated_ms=now - 55 * MIN),
    ]
    d.storage = [
        StorageConfig("default", "local", {"path": "/srv/models"}),
        StorageConfig("minio", "s3", {"endpoint_url": "http://minio.local:9000", "default_bucket": "models",
                                      "access_key_id": "AKIADEMOACCESSKEY01", "secret_access_key":
                                      "demo/secret/key/that/is/long/enough42"}),
    ]
    events: list[tuple[int, str, str, str, int, str]] = [
        (29 * 60, "register", "yolo-nano", "", 0, "default:models/yolo-nano.onnx"),
        (28 * 60, "loaded", "yolo-nano", "pod-2", 64, "loaded in 1.8s"),
        (22 * 60, "loaded", "anomaly-ae", "pod-2", 5, "loaded in 0.3s"),
        (17 * 60, "loaded", "sentiment-distil", "pod-1", 92, "loaded in 3.9s"),
        (15 * 60, "evict", "ocr-crnn", "pod-1", 27, "evicted for sentiment-distil, last used 80m ago"),
        (9 * 60, "load", "broken-net", "pod-1", 0, "first request"),
        (7 * 60, "load-failed", "broken-net", "pod-1", 0, "InvalidProtobuf: file is not an ONNX model"),
        (6 * 60, "load-failed", "broken-net", "pod-2", 0, "InvalidProtobuf: file is not an ONNX model"),
        (4 * 60, "loaded", "recsys-mf", "pod-0", 33, "loaded in 0.9s"),
        (3 * 60, "evict", "yolo-nano", "pod-2", 64, "evicted for mnist-v2, last used 34m ago"),
        (3 * 60 - 2, "loaded", "mnist-v2", "pod-2", 12, "loaded in 0.4s"),
        (2 * 60, "vmodel", "mnist-v2", "", 0, "vmodel mnist -> mnist-v2 (transition)"),
        (90, "unload", "churn-lr", "pod-2", 1, "copy count above need"),
        (40, "load", "iris-svm", "pod-2", 0, "ensureLoaded"),
    ]
    for i, (secs_ago, kind, model, pod, size, reason) in enumerate(events):
        ev = Event(kind, model=model, pod=pod, size=size * MIB, reason=reason, time_ms=now - secs_ago * 1000)
        ev.key = f"{ev.time_ms * 1000 + i:020d}-{pod or 'api'}"
        d.events.append(ev)
    d.stats = demo_stats(d.events, now)
    return d


def demo_state(now: int = DEMO_NOW_MS) -> PlaneState:
    d = demo_plane(now)
    changes: list[Change] = []
    changes += [Change("models", m.model_id, m) for m in d.models]
    changes += [Change("instances", p.pod_id, p) for p in d.pods]
    changes += [Change("vmodels", v.vmodel_id, v) for v in d.vmodels]
    changes += [Change("storage", s.key, s.masked()) for s in d.storage]
    changes += [Change("events", e.key, e) for e in d.events]
    state = PlaneState.from_changes(changes)
    state.merge_stats(d.stats, now)
    return state


def _replace_with(new: R) -> Callable[[R | None], R]:
    """A registry update that writes ``new`` whatever was there."""

    def replace(_old: R | None) -> R:
        return new

    return replace


async def write_demo(registry: Registry, now: int, *, lease: Any = None) -> DemoPlane:
    """Write the demo plane into etcd. Pods need a lease (as live pods hold one)."""
    d = demo_plane(now)
    for m in d.models:
        await registry.update_model(m.model_id, _replace_with(m), create=True)
    for s in d.storage:
        await registry.put_storage(s)
    for v in d.vmodels:
        await registry.update_vmodel(v.vmodel_id, _replace_with(v))
    for p in d.pods:
        await registry.put_instance(p, lease)
    for e in d.events:
        await registry.add_event(Event(e.kind, e.model, e.pod, e.size, e.reason, e.time_ms))
    for rec in d.stats:
        await registry.put_stats(rec)
    return d

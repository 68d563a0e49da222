"""Demo traffic: Zipf-distributed requests over the demo models, sent round robin to the pods,
so that a new plane shows loads, forwarding and (under a small capacity) evictions at once."""

from __future__ import annotations

import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from plane import tls
from plane.demo import DemoModel, sample_input
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.settings import MeshSettings

__all__ = ["TrafficReport", "send_demo_traffic"]


@dataclass
class TrafficReport:
    requests: int
    errors: int
    seconds: float
    error_samples: list[str]


def send_demo_traffic(endpoints: list[str], models: list[DemoModel], requests: int, *,
                      settings: MeshSettings | None = None, alpha: float = 1.0, seed: int = 0,
                      progress: Callable[[int, int], None] | None = None) -> TrafficReport:
    settings = settings or MeshSettings()
    rng = random.Random(seed)
    order = list(models)
    rng.shuffle(order)  # popularity not aligned with model ids
    weights = [1.0 / (rank + 1) ** alpha for rank in range(len(order))]
    inputs = {d: sample_input(d, 1) for d in {m.dataset for m in models}}
    channels = [tls.sync_channel(e, settings) for e in endpoints]
    stubs = [igrpc.GRPCInferenceServiceStub(ch) for ch in channels]
    errors: list[str] = []
    t0 = time.monotonic()
    try:
        for i in range(requests):
            m = rng.choices(order, weights)[0]
            x = inputs[m.dataset]
            req = ipb.ModelInferRequest(model_name=m.model_id)
            req.inputs.add(name="input", datatype="FP32", shape=list(x.shape))
            req.raw_input_contents.append(x.tobytes())
            try:
                stubs[i % len(stubs)].ModelInfer(req, timeout=60)
            except grpc.RpcError as exc:
                errors.append(f"{m.model_id}: {exc.code().name} {exc.details()}")
            if progress and (i + 1) % max(1, requests // 20) == 0:
                progress(i + 1, requests)
    finally:
        for ch in channels:
            ch.close()
    return TrafficReport(requests, len(errors), time.monotonic() - t0, errors[:5])

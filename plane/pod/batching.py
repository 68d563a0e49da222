"""Adaptive batching: concurrent requests for one model run as one batch.

Only for models whose every input and output has a batch dimension (first dimension -1) and
whose run time matters (``batch_min_run_us``): for a 30 µs model the bookkeeping would cost
more than it saves. A request that finds the model idle runs at once, alone; requests that
arrive while a batch runs wait for it and then run together (up to ``batch_max_size`` rows),
so batches grow with the load and an idle pod adds no delay. ``batch_max_delay_ms`` may add a
short wait to collect more requests first (0 by default). Batches run on a worker thread.

Requests are batched only with requests of the same shape beyond the first dimension, dtypes
and requested outputs; the outputs are split back by each request's row count.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plane.runtime import ModelSession

__all__ = ["Batcher", "RunCost", "batchable"]

log = logging.getLogger("mesh.pod.batching")


class RunCost:
    """What one run of a session costs, in µs of the running thread's CPU time (an exponential
    average over its runs alone; onnxruntime runs a session with one intra-op thread on the
    calling thread). Not wall time: on a worker thread that also counts waiting for the GIL, and
    on a busy machine waiting for a core, so a fast model looked slow on a busy pod, went to
    threads or batches, and looked slower there still."""

    __slots__ = ("sess", "us", "runs")

    def __init__(self, sess: ModelSession):
        self.sess = sess
        self.us = 0.0
        self.runs = 0

    def note(self, us: float) -> None:
        self.us = us if self.runs == 0 else 0.9 * self.us + 0.1 * us
        self.runs += 1


def batchable(sess: ModelSession, min_run_us: float, run_us: float | None = None) -> bool:
    """Whether requests for this session may be batched (``run_us``: what a run costs, default
    the session's own average)."""
    if (sess.avg_run_us if run_us is None else run_us) < min_run_us or sess.runs < 3:
        return False
    specs = [*sess.inputs.values(), *sess.outputs.values()]
    return bool(specs) and all(s.shape and s.shape[0] == -1 for s in specs)


def _key(inputs: dict[str, np.ndarray], requested: list[str] | None) -> tuple:
    return (tuple(requested or ()),
            tuple((name, a.dtype.str, a.shape[1:]) for name, a in sorted(inputs.items())))


@dataclass
class _Pending:
    inputs: dict[str, np.ndarray]
    requested: list[str] | None
    rows: int
    future: asyncio.Future[dict[str, np.ndarray]] = field(default_factory=lambda: asyncio.get_running_loop()
                                                           .create_future())


class Batcher:
    """One per model: a queue and at most one batch running at a time."""

    def __init__(self, sess: ModelSession, *, max_size: int, max_delay_ms: float, metrics: Any = None):
        self.sess = sess
        self.max_size = max(1, max_size)
        self.max_delay_s = max(0.0, max_delay_ms) / 1000
        self.metrics = metrics
        self.queue: deque[_Pending] = deque()
        self.running = False
        self.batches = 0
        self.batched_requests = 0
        self.largest = 0
        self.sizes: dict[int, int] = {}  # requests per batch -> batches of that size

    async def run(self, inputs: dict[str, np.ndarray], requested: list[str] | None) -> dict[str, np.ndarray]:
        rows = min((a.shape[0] for a in inputs.values()), default=0) if inputs else 0
        if rows <= 0 or any(a.shape[0] != rows for a in inputs.values()) or rows >= self.max_size:
            return await asyncio.to_thread(self.sess.run, inputs, requested)
        pending = _Pending(inputs, requested, rows)
        self.queue.append(pending)
        if not self.running:
            self.running = True
            asyncio.get_running_loop().create_task(self._drain(), name=f"batch {self.sess.model_id}")
        return await pending.future

    async def _drain(self) -> None:
        try:
            if self.max_delay_s:
                await asyncio.sleep(self.max_delay_s)
            while self.queue:
                batch = self._take()
                await self._run_batch(batch)
        finally:
            self.running = False

    def _take(self) -> list[_Pending]:
        first = self.queue.popleft()
        batch, rows, key = [first], first.rows, _key(first.inputs, first.requested)
        rest: deque[_Pending] = deque()
        while self.queue:
            p = self.queue.popleft()
            if rows + p.rows <= self.max_size and _key(p.inputs, p.requested) == key:
                batch.append(p)
                rows += p.rows
            else:
                rest.append(p)
        self.queue = rest + self.queue
        return batch

    async def _run_batch(self, batch: list[_Pending]) -> None:
        if len(batch) == 1:
            p = batch[0]
            try:
                p.future.set_result(await asyncio.to_thread(self.sess.run, p.inputs, p.requested))
            except Exception as exc:  # noqa: BLE001 - the request's own error goes back to it
                p.future.set_exception(exc)
            return
        names = list(batch[0].inputs)
        joined = {n: np.concatenate([p.inputs[n] for p in batch], axis=0) for n in names}
        try:
            outputs = await asyncio.to_thread(self.sess.run, joined, batch[0].requested)
        except Exception:  # noqa: BLE001 - one bad request must not fail the others: run them alone
            log.info("batch of %d for %s failed; running its requests one by one", len(batch), self.sess.model_id)
            for p in batch:
                await self._run_batch([p])
            return
        total = sum(p.rows for p in batch)
        if any(getattr(v, "shape", (None,))[:1] != (total,) for v in outputs.values()):
            for p in batch:  # an output without the batch dimension after all: no splitting it
                await self._run_batch([p])
            return
        self.batches += 1
        self.batched_requests += len(batch)
        self.largest = max(self.largest, total)
        self.sizes[len(batch)] = self.sizes.get(len(batch), 0) + 1
        start = 0
        for p in batch:
            end = start + p.rows
            p.future.set_result({n: v[start:end] for n, v in outputs.items()})
            start = end

"""Adaptive batching on its own, with a session stand-in that records what it ran."""

from __future__ import annotations

import asyncio
import threading
import time

import numpy as np
import pytest

from plane.pod.batching import Batcher, batchable
from plane.tensors import TensorError, TensorSpec


class Session:
    """y = 2x, 2 ms a run (a model whose run time matters); records batch sizes."""

    model_id = "m"
    inputs = {"x": TensorSpec("x", "FP32", [-1, 3])}
    outputs = {"y": TensorSpec("y", "FP32", [-1, 3])}
    avg_run_us = 2000.0
    runs = 10

    def __init__(self):
        self.ran: list[int] = []
        self.lock = threading.Lock()

    def run(self, inputs, requested=None):
        x = inputs["x"]
        if np.isnan(x).any():
            raise TensorError("NaN in x")
        time.sleep(0.002)
        with self.lock:
            self.ran.append(x.shape[0])
        return {"y": x * 2}


def test_only_models_with_a_batch_dimension_and_real_run_time():
    s = Session()
    assert batchable(s, 300)
    assert not batchable(s, 5000)
    s.outputs = {"y": TensorSpec("y", "FP32", [3])}
    assert not batchable(s, 300)


async def test_concurrent_requests_run_together_and_get_their_own_rows():
    sess = Session()
    b = Batcher(sess, max_size=64, max_delay_ms=0)
    xs = [np.full((1 + i % 3, 3), i, np.float32) for i in range(30)]
    outs = await asyncio.gather(*(b.run({"x": x}, None) for x in xs))
    for x, out in zip(xs, outs, strict=True):
        np.testing.assert_array_equal(out["y"], x * 2)
    assert len(sess.ran) < len(xs)  # some ran together
    assert sum(sess.ran) == sum(x.shape[0] for x in xs)
    assert max(sess.ran) <= 64 and b.largest == max(sess.ran) and b.batches >= 1


async def test_an_idle_model_runs_a_request_at_once_alone():
    sess = Session()
    b = Batcher(sess, max_size=64, max_delay_ms=0)
    out = await b.run({"x": np.ones((2, 3), np.float32)}, None)
    assert sess.ran == [2] and out["y"].shape == (2, 3)


async def test_a_bad_request_fails_alone():
    sess = Session()
    b = Batcher(sess, max_size=64, max_delay_ms=0)
    good = [np.ones((1, 3), np.float32) for _ in range(5)]
    bad = np.full((1, 3), np.nan, np.float32)
    results = await asyncio.gather(*(b.run({"x": x}, None) for x in [*good[:2], bad, *good[2:]]),
                                   return_exceptions=True)
    assert isinstance(results[2], TensorError)
    assert all(isinstance(r, dict) for i, r in enumerate(results) if i != 2)


async def test_different_trailing_shapes_are_not_mixed():
    sess = Session()
    b = Batcher(sess, max_size=64, max_delay_ms=0)
    a = np.ones((1, 3), np.float32)
    c = np.ones((1, 4), np.float32)
    outs = await asyncio.gather(b.run({"x": a}, None), b.run({"x": c}, None), b.run({"x": a}, None))
    assert [o["y"].shape for o in outs] == [(1, 3), (1, 4), (1, 3)]


@pytest.mark.parametrize("delay_ms", [0, 5])
async def test_max_size_is_never_exceeded(delay_ms):
    sess = Session()
    b = Batcher(sess, max_size=4, max_delay_ms=delay_ms)
    await asyncio.gather(*(b.run({"x": np.ones((1, 3), np.float32)}, None) for _ in range(20)))
    assert max(sess.ran) <= 4 and sum(sess.ran) == 20

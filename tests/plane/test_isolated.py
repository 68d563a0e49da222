"""The child process that runs large string requests (plane.pod.isolated), with a real
onnxruntime string model: same answer as in the pod, client errors as INVALID_ARGUMENT, a
killed child reported and replaced, no child outliving its pod."""

from __future__ import annotations

import asyncio
import pathlib
import struct
import subprocess
import sys
import time

import grpc
import psutil
import pytest

from plane.pod.isolated import IsolatedError, IsolatedRunner
from plane.proto import inference_pb2 as ipb


def string_identity(path: pathlib.Path) -> pathlib.Path:
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Identity", ["s"], ["out"])], "echo",
        [helper.make_tensor_value_info("s", TensorProto.STRING, [None])],
        [helper.make_tensor_value_info("out", TensorProto.STRING, [None])])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def request(elements: list[bytes], *, shape: int | None = None) -> bytes:
    req = ipb.ModelInferRequest(model_name="echo", id="r1")
    req.inputs.add(name="s", datatype="BYTES", shape=[len(elements) if shape is None else shape])
    req.raw_input_contents.append(b"".join(struct.pack("<I", len(e)) + e for e in elements))
    return req.SerializeToString()


@pytest.fixture
def model(tmp_path: pathlib.Path) -> pathlib.Path:
    return string_identity(tmp_path / "echo.onnx")


def run(runner: IsolatedRunner, model: pathlib.Path, raw: bytes) -> bytes:
    return asyncio.run(runner.run(model_type="onnx", model_id="echo", path=str(model), raw=raw,
                                  max_elements=1 << 24, max_bytes=1 << 28))


def test_the_child_answers_what_the_model_computes(model):
    runner = IsolatedRunner()
    try:
        elements = [b"%07d" % i for i in range(50_000)]
        resp = ipb.ModelInferResponse.FromString(run(runner, model, request(elements)))
        assert resp.model_name == "echo" and resp.id == "r1"
        assert resp.outputs[0].name == "out" and list(resp.outputs[0].shape) == [50_000]
        assert resp.raw_output_contents[0] == request(elements)[-len(resp.raw_output_contents[0]):]
        first = runner.pid
        run(runner, model, request([b"again"]))
        assert runner.pid == first and runner.runs == 2  # one child serves request after request
    finally:
        runner.close()
    assert first is not None and not psutil.pid_exists(first)  # closed: the child is stopped and reaped


def test_bad_input_is_invalid_argument_and_the_child_stays(model):
    runner = IsolatedRunner()
    try:
        with pytest.raises(IsolatedError) as err:
            run(runner, model, request([b"\0\0\0\0"], shape=67_108_864))
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT and "'s'" in str(err.value)
        with pytest.raises(IsolatedError) as err:
            run(runner, model, b"\xff\xff not a message")
        assert err.value.code == grpc.StatusCode.INVALID_ARGUMENT
        assert runner.failures == 0
    finally:
        runner.close()


def test_a_gone_model_file_is_unavailable(model, tmp_path):
    runner = IsolatedRunner()
    try:
        with pytest.raises(IsolatedError) as err:
            asyncio.run(runner.run(model_type="onnx", model_id="echo", path=str(tmp_path / "gone.onnx"),
                                   raw=request([b"x"]), max_elements=10, max_bytes=100))
        assert err.value.code == grpc.StatusCode.UNAVAILABLE
    finally:
        runner.close()


def test_a_child_killed_mid_request_is_reported_and_replaced(model):
    runner = IsolatedRunner()
    try:
        run(runner, model, request([b"x"]))
        child = psutil.Process(runner.pid)
        big = request([b"%09d" % i for i in range(3_000_000)])
        loop = asyncio.new_event_loop()
        task = loop.create_task(runner.run(model_type="onnx", model_id="echo", path=str(model), raw=big,
                                           max_elements=1 << 24, max_bytes=1 << 28))
        start = child.cpu_times().user
        deadline = time.monotonic() + 30
        while child.cpu_times().user - start < 0.3:  # the child is busy with it
            loop.run_until_complete(asyncio.sleep(0.02))
            assert time.monotonic() < deadline
        child.kill()
        with pytest.raises(IsolatedError) as err:
            loop.run_until_complete(task)
        loop.close()
        assert err.value.code == grpc.StatusCode.INTERNAL and "died" in str(err.value)
        assert runner.failures == 1
        resp = ipb.ModelInferResponse.FromString(run(runner, model, request([b"back"])))
        assert resp.raw_output_contents[0] == struct.pack("<I", 4) + b"back"
        assert runner.pid != child.pid
    finally:
        runner.close()


def test_a_child_dead_between_requests_is_replaced_and_counted(model):
    runner = IsolatedRunner()
    try:
        run(runner, model, request([b"x"]))
        child = psutil.Process(runner.pid)
        child.kill()
        deadline = time.monotonic() + 10
        while child.status() != psutil.STATUS_ZOMBIE:
            assert time.monotonic() < deadline
            time.sleep(0.02)
        resp = ipb.ModelInferResponse.FromString(run(runner, model, request([b"y"])))
        assert resp.raw_output_contents[0] == struct.pack("<I", 1) + b"y"
        assert runner.failures == 1
    finally:
        runner.close()


PARENT = """
import asyncio, sys
from plane.pod.isolated import IsolatedRunner
from tests.plane.test_isolated import request
r = IsolatedRunner()
asyncio.run(r.run(model_type="onnx", model_id="echo", path=sys.argv[1], raw=request([b"x"]),
                  max_elements=10, max_bytes=1000))
print(r.pid, flush=True)
sys.stdin.readline()
"""


def test_the_child_dies_with_its_pod(model):
    parent = subprocess.Popen([sys.executable, "-c", PARENT, str(model)], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True, cwd=pathlib.Path(__file__).parents[2])
    assert parent.stdout is not None
    child = int(parent.stdout.readline())
    assert psutil.pid_exists(child)
    parent.kill()
    parent.wait(10)
    deadline = time.monotonic() + 10
    while psutil.pid_exists(child) and psutil.Process(child).status() != "zombie":
        assert time.monotonic() < deadline, "the child outlived its pod"
        time.sleep(0.05)

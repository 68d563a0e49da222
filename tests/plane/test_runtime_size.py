"""Model memory measurement (plane/runtime.py) with real onnxruntime sessions and real ONNX files.

The size must be reproducible (same file: max/min ≤ 1.1 across repeated loads and across
processes), small models must get their own small but nonzero size, and a tiny file whose
session holds 256 MiB must measure as such.
"""

from __future__ import annotations

import json
import pathlib
import statistics
import subprocess
import sys

import numpy as np
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper

from plane import demo, runtime
from plane.runtime import load_session, memory_in_use, warm_up

REPO = pathlib.Path(__file__).resolve().parents[2]
SPREAD = 1.1
glibc_only = pytest.mark.skipif(memory_in_use()[1] != "mallinfo2", reason="needs glibc's mallinfo2")


def spread(values: list[int]) -> float:
    return max(values) / min(values)


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, pathlib.Path]:
    """Four demo models of different kinds, the tiny model and the memory bomb."""
    root = tmp_path_factory.mktemp("size-models")
    out = {m.model_id: root / m.path for m in demo.generate_models(root, 4, seed=2)}
    demo.make_tiny_model(root / "tiny" / "model.onnx")
    out["tiny"] = root / "tiny" / "model.onnx"
    demo.make_memory_bomb_model(root / "bomb" / "model.onnx")
    out["bomb"] = root / "bomb" / "model.onnx"
    warm_up()
    return out


@pytest.fixture(scope="module")
def demo_ids(models) -> list[str]:
    return [k for k in models if k.startswith("demo-")]


@pytest.fixture(scope="module")
def repeated(models, demo_ids) -> dict[str, list[int]]:
    """Sizes of 6 round-robin loads of two small models in this process, sessions kept alive."""
    names = [demo_ids[0], "tiny"]
    sizes: dict[str, list[int]] = {n: [] for n in names}
    kept = []
    for i in range(6):
        for n in names:
            sess = load_session(f"{n}-{i}", models[n])
            sizes[n].append(sess.size)
            kept.append(sess)
    return sizes


@glibc_only
def test_same_file_measures_within_10_percent_across_repeated_loads(repeated) -> None:
    for name, sizes in repeated.items():
        assert spread(sizes) <= SPREAD, f"{name}: {sizes}"


@glibc_only
def test_fresh_processes_measure_the_same_as_this_process(models, repeated) -> None:
    names = list(repeated)
    code = (
        "import json, pathlib, sys\n"
        "from plane.runtime import load_session, warm_up\n"
        "warm_up()\n"
        "print(json.dumps([load_session('m', pathlib.Path(p)).size for p in sys.argv[1:]]))\n"
    )
    for _ in range(2):
        out = subprocess.run([sys.executable, "-c", code, *(str(models[n]) for n in names)],
                             cwd=REPO, check=True, stdout=subprocess.PIPE, text=True, timeout=120).stdout
        for name, size in zip(names, json.loads(out), strict=True):
            here = statistics.median(repeated[name])
            assert spread([size, here]) <= SPREAD, f"{name}: fresh process {size}, this process {repeated[name]}"


def test_models_of_different_sizes_get_different_sizes_of_at_least_their_file(models, demo_ids) -> None:
    sizes = {}
    for name in [*demo_ids, "tiny"]:
        sess = load_session(name, models[name])
        file_size = models[name].stat().st_size
        assert sess.file_size == file_size
        assert sess.size >= file_size
        assert sess.size_method in ("mallinfo2", "rss")
        assert sess.warm_run
        sizes[name] = sess.size
    assert len(set(sizes.values())) > 1, sizes
    if memory_in_use()[1] == "mallinfo2":
        # a session holds its graph, kernels and initializers: more than the file, not a constant floor
        assert min(sizes.values()) > 4096
        assert len(set(sizes.values())) == len(sizes), sizes


def test_memory_bomb_measures_at_least_200_mib(models) -> None:
    file_size = models["bomb"].stat().st_size
    assert file_size < 400
    sess = load_session("bomb", models["bomb"])
    assert sess.size >= 200 * 1024**2, sess.size
    assert sess.size < 320 * 1024**2, sess.size
    x = np.array([[0.0, 1.0, 2.5, -3.0]], dtype=np.float32)
    np.testing.assert_array_equal(sess.run({"x": x})["y"], x + 1)


def test_session_runs_and_gives_correct_outputs_after_measurement(models, demo_ids) -> None:
    tiny = load_session("tiny", models["tiny"])
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    np.testing.assert_array_equal(tiny.run({"x": x})["y"], x * 2 + 1)
    assert tiny.runs == 1
    for name in demo_ids:
        sess = load_session(name, models[name])
        spec = sess.inputs["input"]
        x = np.random.default_rng(0).random((3, spec.shape[1]), dtype=np.float32)
        plain = ort.InferenceSession(str(models[name]), providers=["CPUExecutionProvider"])
        expected = dict(zip(sess.output_names, plain.run(sess.output_names, {"input": x}), strict=True))
        got = sess.run({"input": x})
        assert set(got) == set(expected)
        for out, value in expected.items():
            np.testing.assert_allclose(got[out], value, rtol=1e-5, atol=1e-6, err_msg=f"{name} {out}")


def test_a_first_run_that_fails_does_not_fail_the_load(tmp_path: pathlib.Path) -> None:
    # y = table[int(x) + 5]: zeros index out of the 3-element table, so the warm run fails
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None])
    table = helper.make_tensor("table", TensorProto.FLOAT, [3], [10.0, 20.0, 30.0])
    five = helper.make_tensor("five", TensorProto.INT64, [], [5])
    graph = helper.make_graph(
        [helper.make_node("Cast", ["x"], ["i"], to=TensorProto.INT64),
         helper.make_node("Add", ["i", "five"], ["j"]),
         helper.make_node("Gather", ["table", "j"], ["y"], axis=0)],
        "picky", [x], [y], [table, five])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path = tmp_path / "picky.onnx"
    path.write_bytes(model.SerializeToString())
    sess = load_session("picky", path)
    assert not sess.warm_run
    assert sess.size >= path.stat().st_size
    np.testing.assert_array_equal(sess.run({"x": np.array([-5.0, -3.0], dtype=np.float32)})["y"], [10.0, 30.0])


def test_rss_fallback_when_mallinfo2_is_missing(models, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(runtime, "_in_use", None)  # what a non-glibc platform sees
    sess = load_session("tiny-rss", models["tiny"])
    assert sess.size_method == "rss"
    assert sess.size >= max(4096, sess.file_size)

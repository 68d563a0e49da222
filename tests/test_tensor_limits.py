"""Decoder limits (plane.tensors): bounded before allocation, BYTES framing checked first, no
per-element Python calls, the cost estimate, thread safety, and ONNX inputs with no shape."""

from __future__ import annotations

import struct
import sys
import threading
import time
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from plane.proto import inference_pb2 as pb
from plane.runtime import load_session
from plane.tensor_wire import BYTES_ITEM_COST
from plane.tensors import (
    DATATYPES,
    TensorError,
    TensorSpec,
    decode_inputs,
    encode_outputs,
    request_payload_bytes,
)

TYPED_FIELD = {
    "BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
    "UINT8": "uint_contents", "UINT16": "uint_contents", "UINT32": "uint_contents",
    "INT64": "int64_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
    "FP64": "fp64_contents", "BYTES": "bytes_contents",
}  # fmt: skip


def frame(items) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def wire(req: pb.ModelInferRequest) -> pb.ModelInferRequest:
    return pb.ModelInferRequest.FromString(req.SerializeToString())


def one_raw(datatype, shape, blob, name="x") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest()
    req.inputs.add(name=name, datatype=datatype, shape=list(shape))
    req.raw_input_contents.append(blob)
    return wire(req)


def cost_of(datatype: str, arr: np.ndarray) -> int:
    """What the decoder charges an array against max_bytes, recomputed independently."""
    if datatype == "BYTES":
        data = sum(len(v.encode() if isinstance(v, str) else v) for v in arr.reshape(-1).tolist())
        return arr.size * BYTES_ITEM_COST + data
    return arr.size * DATATYPES[datatype].itemsize


# ---------------------------------------------------------------- the reported attack


ATTACK_SHAPE = [67108864]  # 64 Mi elements, exactly the pod's max_elements (64 MiB messages)


@pytest.mark.parametrize(
    "datatype,blob",
    [("BYTES", b"\0\0\0\0"), ("BYTES", b""), ("BYTES", frame([b"a"] * 3)), ("FP32", b"\0\0\0\0"), ("BOOL", b"\1")],
)
def test_tiny_request_with_huge_shape_is_refused_fast_and_small(datatype, blob):
    req = one_raw(datatype, ATTACK_SHAPE, blob)
    assert req.ByteSize() <= 40
    tracemalloc.start()
    try:
        t0 = time.perf_counter()
        with pytest.raises(TensorError, match="'x'"):
            decode_inputs(req, max_elements=64 << 20)
        elapsed = time.perf_counter() - t0
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert elapsed < 0.1
    assert peak < 1 << 20  # the 512 MiB object array is never allocated


def test_typed_contents_with_huge_shape_is_refused_small():
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="BYTES", shape=ATTACK_SHAPE).contents.bytes_contents.append(b"")
    req.inputs.add(name="y", datatype="INT64", shape=ATTACK_SHAPE).contents.int64_contents.append(1)
    req = wire(req)
    tracemalloc.start()
    try:
        with pytest.raises(TensorError, match="'x'.*1 values.*67108864"):
            decode_inputs(req, max_elements=64 << 20)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 1 << 20


def test_max_bytes_bounds_the_whole_request():
    req = pb.ModelInferRequest()
    for name in ("a", "b"):
        req.inputs.add(name=name, datatype="FP32", shape=[100])
        req.raw_input_contents.append(b"\0" * 400)
    req = wire(req)
    assert decode_inputs(req, max_bytes=800)["b"].shape == (100,)
    with pytest.raises(TensorError, match="'b'.*decodes to 400 bytes.*399 bytes left"):
        decode_inputs(req, max_bytes=799)
    with pytest.raises(TensorError, match="'a'"):
        decode_inputs(req, max_bytes=10)


def test_max_bytes_charges_bytes_elements():
    blob = frame([b"abc", b"", b"de"])
    need = 3 * BYTES_ITEM_COST + 5
    assert decode_inputs(one_raw("BYTES", [3], blob), max_bytes=need)["x"].tolist() == ["abc", "", "de"]
    with pytest.raises(TensorError, match="'x'.*decodes to"):
        decode_inputs(one_raw("BYTES", [3], blob), max_bytes=need - 1)
    req = pb.ModelInferRequest()
    req.inputs.add(name="t", datatype="BYTES", shape=[3]).contents.bytes_contents.extend([b"abc", b"", b"de"])
    assert decode_inputs(wire(req), max_bytes=need)["t"].tolist() == ["abc", "", "de"]
    with pytest.raises(TensorError, match="'t'.*decodes to"):
        decode_inputs(wire(req), max_bytes=need - 1)


def test_long_names_are_cut_in_messages():
    name = "n" * 10_000
    with pytest.raises(TensorError) as info:
        decode_inputs(one_raw("BYTES", [5], b"", name=name))
    assert len(str(info.value)) < 300 and "10000 chars" in str(info.value)
    with pytest.raises(TensorError) as info:
        decode_inputs(one_raw("Q" * 5000, [1], b""))
    assert len(str(info.value)) < 400
    with pytest.raises(TensorError) as info:
        decode_inputs(one_raw("FP32", [1], b"\0" * 4, name=name), {"x": TensorSpec("x", "FP32", [1])})
    assert len(str(info.value)) < 300


def test_rank_is_checked_before_the_shape_is_printed():
    with pytest.raises(TensorError) as info:
        decode_inputs(one_raw("FP32", [1] * 100_000, b""), {"x": TensorSpec("x", "FP32", [1])})
    assert "rank 100000 exceeds" in str(info.value) and len(str(info.value)) < 200


# ---------------------------------------------------------------- properties of the limits

datatypes = st.sampled_from(["BYTES"] * 4 + list(DATATYPES))
dims = st.sampled_from([0, 1, 2, 3, 5] * 6 + [-1, 1 << 20, 1 << 26, 1 << 40, 2**63 - 1])
shapes = st.lists(dims, max_size=3)
# permissive first: hypothesis favours (and shrinks towards) the first values
limits = st.sampled_from([1 << 30, 1 << 20] * 3 + [0, 1, 8, 64, 100, 256, 1000, 4096])
element_limits = st.sampled_from([1 << 26] * 5 + [0, 1, 8, 64, 1 << 10])


def _count(shape) -> int:
    n = 1
    for d in shape:
        n *= max(d, 0)
    return n


@st.composite
def blobs(draw, datatype, shape):
    n = min(_count(shape), 1 << 12)
    kind = draw(st.sampled_from(["exact"] * 6 + ["random", "framed", "framed", "lying", "uniform"]))
    if kind == "exact" and datatype != "BYTES":
        return draw(st.binary(min_size=n * DATATYPES[datatype].itemsize, max_size=n * DATATYPES[datatype].itemsize))
    if kind in ("exact", "framed"):
        items = draw(st.lists(st.binary(max_size=5) | st.text(max_size=4).map(str.encode), min_size=min(n, 40),
                              max_size=min(n, 40) if kind == "exact" else 40))
        blob = frame(items)
        cut = draw(st.sampled_from([0] * 6 + [-3, -1, 1, 3]))
        return blob[:cut] if cut < 0 else blob + b"\0" * cut
    if kind == "lying":  # a prefix that claims more than is there, or a huge count of empties
        return struct.pack("<I", draw(st.sampled_from([5, 1 << 20, 2**32 - 1]))) + b"ab"
    if kind == "uniform":
        length = draw(st.integers(0, 3))
        return frame([b"\0" * length] * min(n, 64)) + draw(st.sampled_from([b"", b"\0"]))
    return draw(st.binary(max_size=64))


@st.composite
def requests(draw):
    req = pb.ModelInferRequest()
    use_raw = draw(st.booleans())
    for i in range(draw(st.sampled_from([1, 1, 1, 2, 3]))):
        datatype = draw(datatypes)
        shape = draw(shapes)
        inp = req.inputs.add(name=f"in{i}", datatype=datatype, shape=shape)
        if use_raw:
            req.raw_input_contents.append(draw(blobs(datatype, shape)))
        elif datatype != "FP16":
            n = min(_count(shape), 64)
            n = draw(st.sampled_from([n] * 6 + [0, n + 1, max(n - 1, 0)]))
            values = getattr(inp.contents, TYPED_FIELD[datatype])
            if datatype == "BYTES":
                values.extend(draw(st.lists(st.binary(max_size=4), min_size=n, max_size=n)))
            elif datatype == "BOOL":
                values.extend([bool(j & 1) for j in range(n)])
            elif datatype.startswith("FP"):
                values.extend([j / 3 for j in range(n)])
            elif datatype.startswith("UINT"):
                values.extend([j * 7 for j in range(n)])
            else:
                values.extend([j * 7 - 20 for j in range(n)])
    return wire(req)


@settings(max_examples=400, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), limits, element_limits, st.booleans())
def test_decode_is_bounded_or_refused(req, max_bytes, max_elements, utf8):
    try:
        out = decode_inputs(req, max_elements=max_elements, max_bytes=max_bytes, utf8=utf8)
    except TensorError as exc:
        assert str(exc) and len(str(exc)) < 600
        return
    total_nbytes = sum(a.nbytes for a in out.values())
    assert total_nbytes <= max_bytes
    assert sum(cost_of(inp.datatype, out[inp.name]) for inp in req.inputs) <= max_bytes
    for idx, inp in enumerate(req.inputs):
        arr = out[inp.name]
        assert arr.shape == tuple(inp.shape) and arr.size <= max(max_elements, 1)
        if req.raw_input_contents:
            blob = req.raw_input_contents[idx]
            if inp.datatype == "BYTES":
                items = [v.encode() if utf8 else v for v in arr.reshape(-1).tolist()]
                assert frame(items) == blob  # exactly the bytes present, nothing more or less
            else:
                assert arr.size * DATATYPES[inp.datatype].itemsize == len(blob)
        else:
            assert arr.size == len(getattr(inp.contents, TYPED_FIELD[inp.datatype]))


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=300), max_size=12), st.integers(0, 14), st.integers(-5, 5))
def test_bytes_framing_is_validated_exactly(items, claimed, cut):
    """Every prefix in bounds, count == shape, no trailing bytes; lengths >= 128 included."""
    blob = frame(items)
    blob = blob[:cut] if cut < 0 else blob + b"\x07" * cut
    try:
        got = decode_inputs(one_raw("BYTES", [claimed], blob), utf8=False)["x"]
    except TensorError as exc:
        assert "'x'" in str(exc)
        assert claimed != len(items) or cut != 0
        return
    assert got.shape == (claimed,)
    assert frame(got.tolist()) == blob


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text(max_size=6), max_size=10), st.sampled_from([b"\xff", b"\xc3", b"\xa9", b"\xed\xa0\x80"]),
       st.integers(0, 10))
def test_utf8_errors_name_the_element(texts, bad, where):
    items = [t.encode() for t in texts]
    where = min(where, len(items))
    items.insert(where, b"ok" + bad)
    with pytest.raises(TensorError, match=f"'x': BYTES element {where} is not valid UTF-8"):
        decode_inputs(one_raw("BYTES", [len(items)], frame(items)))
    assert decode_inputs(one_raw("BYTES", [len(items)], frame(items)), utf8=False)["x"].tolist() == items


# ---------------------------------------------------------------- BYTES at size: no per-element calls


def _big_bytes_request(n: int, text: str) -> tuple[pb.ModelInferRequest, list[str]]:
    rng = np.random.default_rng(1)
    lens = rng.integers(16, 25, n).tolist()
    pool = "abcdefghijklmnopqrstuvwxyz0123456789" if text == "ascii" else "abcdéfghijklmnöpqrstuvwxyz€"
    base = (pool * 2)[:24]
    items = [base[i % 7 : i % 7 + k] for i, k in zip(range(n), lens, strict=True)]
    req = pb.ModelInferRequest()
    req.inputs.add(name="s", datatype="BYTES", shape=[n])
    req.raw_input_contents.append(frame([s.encode() for s in items]))
    return wire(req), items


def _python_calls(fn) -> tuple[int, object]:
    """Calls made from Python code while ``fn`` runs (C functions called by C iterators such as
    ``map`` inside ``numpy.fromiter`` do not count: that is what "vectorised" means here)."""
    calls = 0

    def prof(frame, event, arg):
        nonlocal calls
        if event in ("call", "c_call"):
            calls += 1

    sys.setprofile(prof)
    try:
        result = fn()
    finally:
        sys.setprofile(None)
    return calls, result


@pytest.mark.parametrize("text", ["ascii", "utf8"])
def test_big_bytes_request_decodes_without_per_element_calls(text):
    n = 1_000_000 if text == "ascii" else 200_000  # ascii: the 24 MB request of the report
    req, items = _big_bytes_request(n, text)
    calls, out = _python_calls(lambda: decode_inputs(req, max_elements=64 << 20, max_bytes=1 << 30))
    assert isinstance(out, dict)
    arr = out["s"]
    assert arr.dtype == object and arr.shape == (n,)
    assert arr[0] == items[0] and arr[-1] == items[-1] and arr.tolist() == items
    assert calls < 3000, f"{calls} Python-level calls for {n} elements"  # a few per 32,768-element chunk
    resp = pb.ModelInferResponse()
    calls, _ = _python_calls(lambda: encode_outputs(resp, {"o": arr}))
    assert calls < 3000
    assert resp.raw_output_contents[0] == req.raw_input_contents[0]


def test_uniform_lengths_and_empty_elements():
    for items in ([b""] * 1000, [b"abcd"] * 1000, [b"\0\0\0\0"] * 3, [b"xy"] * 999 + [b"yx"]):
        got = decode_inputs(one_raw("BYTES", [len(items)], frame(items)), utf8=False)["x"]
        assert got.tolist() == items
    # the total matches count x (4 + first length) but the lengths differ: not the uniform path
    items = [b"ab", b"", b"abcd"]
    assert len(frame(items)) == 3 * (4 + 2)
    assert decode_inputs(one_raw("BYTES", [3], frame(items)), utf8=False)["x"].tolist() == items
    with pytest.raises(TensorError):
        decode_inputs(one_raw("BYTES", [3], frame([b"ab", b"abc", b"a"])[:-1] + b"zz"))


def test_decode_is_thread_safe():
    req, items = _big_bytes_request(20_000, "utf8")
    results: list[object] = []

    def work():
        for _ in range(5):
            results.append(decode_inputs(req)["s"].tolist())

    threads = [threading.Thread(target=work) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 20 and all(r == items for r in results)


# ---------------------------------------------------------------- the cost estimate


def test_request_payload_bytes():
    req = pb.ModelInferRequest()
    req.inputs.add(name="a", datatype="FP32", shape=[1000, 256])
    req.inputs.add(name="s", datatype="BYTES", shape=[10])
    req.raw_input_contents.extend([b"", b""])
    assert request_payload_bytes(req) == 1000 * 256 * 4 + 10 * BYTES_ITEM_COST
    typed = pb.ModelInferRequest()
    typed.inputs.add(name="a", datatype="INT64", shape=[2]).contents.int64_contents.extend([1, 2, 3])
    typed.inputs.add(name="s", datatype="BYTES", shape=[1]).contents.bytes_contents.append(b"x")
    assert request_payload_bytes(typed) == 3 * 8 + BYTES_ITEM_COST
    huge = pb.ModelInferRequest()
    huge.inputs.add(name="a", datatype="FP64", shape=[2**62, 2**62, -1])
    huge.raw_input_contents.append(b"")
    assert request_payload_bytes(huge) == (1 << 40) * 8  # capped, never a giant int
    assert request_payload_bytes(pb.ModelInferRequest()) == 0


# ---------------------------------------------------------------- ONNX inputs with no shape


def _identity(path, shape, elem=TensorProto.FLOAT):
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "identity",
        [helper.make_tensor_value_info("x", elem, shape)],
        [helper.make_tensor_value_info("y", elem, shape)],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    path.write_bytes(model.SerializeToString())
    return path


def test_no_shape_input_accepts_any_rank_end_to_end(tmp_path):
    sess = load_session("noshape", _identity(tmp_path / "noshape.onnx", None))
    spec = sess.inputs["x"]
    assert spec == TensorSpec("x", "FP32", [-1], any_rank=True)
    assert sess.outputs["y"].any_rank
    # what ModelMetadata reports: valid protobuf, [-1] (V2 has no "unknown rank")
    meta = pb.ModelMetadataResponse(name="noshape")
    meta.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
    assert list(pb.ModelMetadataResponse.FromString(meta.SerializeToString()).inputs[0].shape) == [-1]
    for shape in [(3,), (2, 3), (2, 1, 4), ()]:
        x = np.arange(int(np.prod(shape)), dtype=np.float32).reshape(shape)
        req = pb.ModelInferRequest()
        req.inputs.add(name="x", datatype="FP32", shape=list(shape))
        req.raw_input_contents.append(x.tobytes())
        inputs = decode_inputs(wire(req), sess.inputs)
        np.testing.assert_array_equal(sess.run(inputs)["y"], x)
    with pytest.raises(TensorError, match="datatype FP64"):
        decode_inputs(one_raw("FP64", [1], b"\0" * 8), sess.inputs)


def test_no_shape_string_input(tmp_path):
    sess = load_session("s", _identity(tmp_path / "s.onnx", None, TensorProto.STRING))
    assert sess.inputs["x"].any_rank and sess.inputs["x"].datatype == "BYTES"
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="BYTES", shape=[2, 2])
    req.raw_input_contents.append(frame([s.encode() for s in ["a", "é", "", "zz"]]))
    out = sess.run(decode_inputs(wire(req), sess.inputs))["y"]
    assert out.tolist() == [["a", "é"], ["", "zz"]]


def test_true_scalar_and_dynamic_dims_keep_their_rank(tmp_path):
    scalar = load_session("scalar", _identity(tmp_path / "scalar.onnx", []))
    assert scalar.inputs["x"] == TensorSpec("x", "FP32", [])
    assert decode_inputs(one_raw("FP32", [], b"\0" * 4), scalar.inputs)["x"].shape == ()
    with pytest.raises(TensorError, match="rank 1"):
        decode_inputs(one_raw("FP32", [1], b"\0" * 4), scalar.inputs)
    dyn = load_session("dyn", _identity(tmp_path / "dyn.onnx", [None, "batch"]))
    assert dyn.inputs["x"] == TensorSpec("x", "FP32", [-1, -1])
    with pytest.raises(TensorError, match="rank 1.*rank 2"):
        decode_inputs(one_raw("FP32", [1], b"\0" * 4), dyn.inputs)


def test_unreadable_model_file_means_any_rank(tmp_path):
    from plane.runtime import _shapeless

    assert _shapeless(tmp_path / "missing.onnx", {"x"}) == {"x"}
    bad = tmp_path / "bad.onnx"
    bad.write_bytes(b"\x3a\xff\xff\xff\xff\x0f")  # field 7 claiming 4 GiB
    assert _shapeless(bad, {"x"}) == {"x"}
    good = _identity(tmp_path / "good.onnx", [2])
    assert _shapeless(good, {"x", "y"}) == set()

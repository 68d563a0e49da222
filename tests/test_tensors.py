"""KServe V2 tensor decoding/encoding (plane.tensors): round trips, every validation error,
property-based robustness, and onnxruntime interop of the decoded arrays."""

from __future__ import annotations

import struct

import numpy as np
import onnxruntime as ort
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from onnx import TensorProto, helper

from plane import demo
from plane.proto import inference_pb2 as pb
from plane.tensors import (
    DATATYPES,
    TensorError,
    TensorSpec,
    datatype_of,
    decode_inputs,
    encode_outputs,
    onnx_type_to_datatype,
    specs_from_ort,
)

NUMERIC = [d for d in DATATYPES if d != "BYTES"]
TYPED_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "INT64": "int64_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}
ALL_FIELDS = sorted(set(TYPED_FIELD.values()))


# ---------------------------------------------------------------- helpers (independent of the module)


def frame(items) -> bytes:
    """Reference BYTES framing: 4-byte little-endian length prefix per element."""
    out = b""
    for item in items:
        if isinstance(item, str):
            item = item.encode()
        out += struct.pack("<I", len(item)) + item
    return out


def sample(datatype: str, shape=(2, 3)) -> np.ndarray:
    n = int(np.prod(shape))
    if datatype == "BYTES":
        return np.array([f"é{i}" * (i % 3) for i in range(n)], dtype=object).reshape(shape)
    if datatype == "BOOL":
        return (np.arange(n) % 3 == 0).reshape(shape)
    dtype = DATATYPES[datatype]
    if dtype.kind == "f":
        return (np.arange(n) * 1.5 - 2).astype(dtype).reshape(shape)
    info = np.iinfo(dtype)
    # Include the extremes of the type to catch truncation and sign errors.
    vals = np.array([info.min, info.max] + list(range(n - 2)), dtype=dtype)[:n]
    return vals.reshape(shape)


def raw_request(arrays: dict[str, tuple[str, np.ndarray]]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    for name, (datatype, arr) in arrays.items():
        req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        if datatype == "BYTES":
            req.raw_input_contents.append(frame(arr.reshape(-1).tolist()))
        else:
            req.raw_input_contents.append(arr.astype(arr.dtype.newbyteorder("<")).tobytes())
    # Go through the wire so that the request is exactly what a server receives.
    return pb.ModelInferRequest.FromString(req.SerializeToString())


def typed_request(arrays: dict[str, tuple[str, np.ndarray]]) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    for name, (datatype, arr) in arrays.items():
        inp = req.inputs.add(name=name, datatype=datatype, shape=list(arr.shape))
        values = arr.reshape(-1).tolist()
        if datatype == "BYTES":
            values = [v.encode() if isinstance(v, str) else v for v in values]
        getattr(inp.contents, TYPED_FIELD[datatype]).extend(values)
    return pb.ModelInferRequest.FromString(req.SerializeToString())


def one_raw(datatype: str, shape, blob: bytes, name="x") -> pb.ModelInferRequest:
    req = pb.ModelInferRequest()
    req.inputs.add(name=name, datatype=datatype, shape=list(shape))
    req.raw_input_contents.append(blob)
    return req


def unframe(blob: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(blob):
        (n,) = struct.unpack_from("<I", blob, pos)
        out.append(blob[pos + 4 : pos + 4 + n])
        pos += 4 + n
    assert pos == len(blob)
    return out


# ---------------------------------------------------------------- datatype tables


def test_datatypes_table():
    assert set(DATATYPES) == {
        "BOOL", "UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64",
        "FP16", "FP32", "FP64", "BYTES",
    }  # fmt: skip
    assert DATATYPES["FP32"] == np.float32
    assert DATATYPES["BYTES"] == np.dtype(object)
    assert DATATYPES["UINT16"] == np.uint16


@pytest.mark.parametrize(
    "onnx_type,datatype",
    [
        ("tensor(float)", "FP32"),
        ("tensor(double)", "FP64"),
        ("tensor(float16)", "FP16"),
        ("tensor(int64)", "INT64"),
        ("tensor(uint8)", "UINT8"),
        ("tensor(bool)", "BOOL"),
        ("tensor(string)", "BYTES"),
    ],
)
def test_onnx_type_to_datatype(onnx_type, datatype):
    assert onnx_type_to_datatype(onnx_type) == datatype


def test_onnx_type_unknown():
    with pytest.raises(TensorError, match="bfloat16"):
        onnx_type_to_datatype("tensor(bfloat16)")


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_datatype_of(datatype):
    assert datatype_of(sample(datatype)) == datatype


def test_datatype_of_strings_and_errors():
    assert datatype_of(np.array(["a", "b"])) == "BYTES"
    assert datatype_of(np.array([b"a"])) == "BYTES"
    with pytest.raises(TensorError, match="complex"):
        datatype_of(np.zeros(2, dtype=np.complex64))
    with pytest.raises(TensorError):
        datatype_of([1, 2])


# ---------------------------------------------------------------- round trips


@pytest.mark.parametrize("datatype", list(DATATYPES))
def test_raw_roundtrip_every_datatype(datatype):
    arr = sample(datatype)
    out = decode_inputs(raw_request({"x": (datatype, arr)}))
    got = out["x"]
    assert got.shape == (2, 3)
    assert got.dtype == DATATYPES[datatype]
    assert got.flags.c_contiguous and got.dtype.isnative
    np.testing.assert_array_equal(got, arr)

    # And back out through encode_outputs: raw, little-endian, correct metadata.
    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"y": got})
    resp = pb.ModelInferResponse.FromString(resp.SerializeToString())
    assert [(o.name, o.datatype, list(o.shape)) for o in resp.outputs] == [("y", datatype, [2, 3])]
    assert not resp.outputs[0].HasField("contents")
    assert len(resp.raw_output_contents) == 1
    blob = resp.raw_output_contents[0]
    if datatype == "BYTES":
        assert unframe(blob) == [s.encode() for s in arr.reshape(-1)]
    elif datatype == "BOOL":
        assert blob == arr.astype(np.uint8).tobytes()
    else:
        assert blob == arr.astype(arr.dtype.newbyteorder("<")).tobytes()


@pytest.mark.parametrize("datatype", [d for d in DATATYPES if d != "FP16"])
def test_typed_roundtrip_every_datatype(datatype):
    arr = sample(datatype, (3, 2))
    out = decode_inputs(typed_request({"x": (datatype, arr)}))
    got = out["x"]
    assert got.shape == (3, 2)
    assert got.dtype == DATATYPES[datatype]
    assert got.flags.c_contiguous
    np.testing.assert_array_equal(got, arr)


def test_raw_is_little_endian_on_the_wire():
    blob = struct.pack("<3i", 1, -2, 300)
    got = decode_inputs(one_raw("INT32", [3], blob))["x"]
    assert got.tolist() == [1, -2, 300]
    assert got.dtype.isnative


def test_fp16_typed_is_refused():
    req = pb.ModelInferRequest()
    req.inputs.add(name="h", datatype="FP16", shape=[1]).contents.fp32_contents.append(1.0)
    with pytest.raises(TensorError, match="'h'.*raw_input_contents"):
        decode_inputs(req)


def test_multiple_inputs_keep_order_and_scalars():
    arrays = {
        "a": ("FP32", np.array([[1.0, 2.0]], dtype=np.float32)),
        "b": ("INT64", np.array(7, dtype=np.int64)),  # scalar, shape []
        "c": ("BYTES", np.array(["x", ""], dtype=object)),
        "d": ("FP64", np.zeros((0, 4))),  # zero elements
    }
    out = decode_inputs(raw_request(arrays))
    assert list(out) == ["a", "b", "c", "d"]
    assert out["b"].shape == () and int(out["b"]) == 7
    assert out["c"].tolist() == ["x", ""]
    assert out["d"].shape == (0, 4)


def test_raw_bool_nonzero_bytes_are_true():
    got = decode_inputs(one_raw("BOOL", [4], bytes([0, 1, 2, 255])))["x"]
    assert got.dtype == np.bool_
    assert got.tolist() == [False, True, True, True]


def test_bytes_utf8_and_binary():
    blob = frame([b"\xff\x00", b"ok"])
    got = decode_inputs(one_raw("BYTES", [2], blob), utf8=False)["x"]
    assert got.tolist() == [b"\xff\x00", b"ok"]
    with pytest.raises(TensorError, match="'x'.*UTF-8"):
        decode_inputs(one_raw("BYTES", [2], blob))
    got = decode_inputs(one_raw("BYTES", [1, 2], frame(["été", "ok"])))["x"]
    assert got.shape == (1, 2) and got.tolist() == [["été", "ok"]]


def test_bytes_typed_contents():
    req = pb.ModelInferRequest()
    req.inputs.add(name="s", datatype="BYTES", shape=[2]).contents.bytes_contents.extend([b"a", b"bc"])
    assert decode_inputs(req)["s"].tolist() == ["a", "bc"]
    assert decode_inputs(req, utf8=False)["s"].tolist() == [b"a", b"bc"]


def test_encode_bytes_outputs_str_and_bytes():
    resp = pb.ModelInferResponse()
    encode_outputs(
        resp,
        {
            "s": np.array([["α", "b"]], dtype=object),
            "b": np.array([b"\x00\x01", b""], dtype=object),
            "u": np.array(["hi", "there"]),
        },
    )
    assert [o.datatype for o in resp.outputs] == ["BYTES"] * 3
    assert list(resp.outputs[0].shape) == [1, 2]
    assert unframe(resp.raw_output_contents[0]) == ["α".encode(), b"b"]
    assert unframe(resp.raw_output_contents[1]) == [b"\x00\x01", b""]
    assert unframe(resp.raw_output_contents[2]) == [b"hi", b"there"]


def test_encode_bytes_bad_element():
    with pytest.raises(TensorError, match="'o'.*int"):
        encode_outputs(pb.ModelInferResponse(), {"o": np.array([1, "a"], dtype=object)})


def test_encode_sequence_of_maps_is_refused():
    with pytest.raises(TensorError, match="zipmap"):
        encode_outputs(pb.ModelInferResponse(), {"p": [{0: 0.5, 1: 0.5}]})


def test_encode_non_contiguous_and_big_endian():
    arr = np.arange(12, dtype=np.int32).reshape(3, 4).T  # Fortran-ordered view
    big = np.array([1.5, -2.0], dtype=">f8")
    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"t": arr, "big": big})
    assert list(resp.outputs[0].shape) == [4, 3]
    assert resp.raw_output_contents[0] == np.ascontiguousarray(arr).astype("<i4").tobytes()
    assert resp.outputs[1].datatype == "FP64"
    assert resp.raw_output_contents[1] == struct.pack("<2d", 1.5, -2.0)


def test_encode_scalar():
    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"s": np.float32(2.5) * np.ones((), np.float32)})
    assert list(resp.outputs[0].shape) == []
    assert resp.raw_output_contents[0] == struct.pack("<f", 2.5)


def test_requested_outputs_filter_and_order():
    outputs = {
        "label": np.array([1, 2], dtype=np.int64),
        "probabilities": np.ones((2, 3), dtype=np.float32),
        "extra": np.zeros(1, dtype=np.uint8),
    }
    resp = pb.ModelInferResponse()
    encode_outputs(resp, outputs, ["probabilities", "label"])
    assert [o.name for o in resp.outputs] == ["probabilities", "label"]
    assert len(resp.raw_output_contents) == 2
    assert resp.raw_output_contents[1] == np.array([1, 2], "<i8").tobytes()

    resp = pb.ModelInferResponse()
    encode_outputs(resp, outputs, None)
    assert [o.name for o in resp.outputs] == ["label", "probabilities", "extra"]
    resp = pb.ModelInferResponse()
    encode_outputs(resp, outputs, [])
    assert len(resp.outputs) == 3


def test_requested_output_unknown():
    with pytest.raises(TensorError, match="'nope'.*available.*'label'"):
        encode_outputs(pb.ModelInferResponse(), {"label": np.zeros(1)}, ["nope"])


def test_requested_output_duplicate():
    with pytest.raises(TensorError, match="duplicate"):
        encode_outputs(pb.ModelInferResponse(), {"label": np.zeros(1)}, ["label", "label"])


# ---------------------------------------------------------------- decode errors


def test_unknown_datatype():
    with pytest.raises(TensorError, match="'x'.*unknown datatype 'FLOAT32'"):
        decode_inputs(one_raw("FLOAT32", [1], b"\0" * 4))


def test_negative_dim():
    with pytest.raises(TensorError, match="'x'.*negative"):
        decode_inputs(one_raw("FP32", [-1, 4], b""))


@pytest.mark.parametrize("shape", [[1 << 40], [1 << 20, 1 << 20], [2**62, 2**62, 4], [0, 1 << 40]])
def test_huge_dims(shape):
    with pytest.raises(TensorError, match="'x'.*limit"):
        decode_inputs(one_raw("FP32", shape, b""))


def test_max_elements_setting():
    blob = np.zeros(100, np.float32).tobytes()
    assert decode_inputs(one_raw("FP32", [10, 10], blob), max_elements=100)["x"].shape == (10, 10)
    with pytest.raises(TensorError, match="limit of 99"):
        decode_inputs(one_raw("FP32", [10, 10], blob), max_elements=99)


def test_rank_limit():
    with pytest.raises(TensorError, match="rank"):
        decode_inputs(one_raw("FP32", [1] * 100, b"\0" * 4))


@pytest.mark.parametrize("n_bytes", [0, 11, 13, 24])
def test_raw_byte_count_mismatch(n_bytes):
    with pytest.raises(TensorError, match=rf"'x'.*{n_bytes} bytes, expected 12"):
        decode_inputs(one_raw("FP32", [3], b"\0" * n_bytes))


def test_raw_and_typed_mixed():
    req = one_raw("FP32", [1], b"\0" * 4)
    req.inputs.add(name="y", datatype="FP32", shape=[1]).contents.fp32_contents.append(1.0)
    req.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(TensorError, match="'y'.*typed contents.*raw_input_contents"):
        decode_inputs(req)


def test_raw_count_mismatch():
    req = one_raw("FP32", [1], b"\0" * 4)
    req.inputs.add(name="y", datatype="FP32", shape=[1])
    with pytest.raises(TensorError, match="1 entries but the request has 2 inputs"):
        decode_inputs(req)
    req = one_raw("FP32", [1], b"\0" * 4)
    req.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(TensorError, match="2 entries but the request has 1 inputs"):
        decode_inputs(req)


def test_typed_count_mismatch():
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="INT64", shape=[2, 2]).contents.int64_contents.extend([1, 2, 3])
    with pytest.raises(TensorError, match="'x'.*int64_contents has 3 values.*needs 4"):
        decode_inputs(req)


def test_typed_missing_contents():
    req = pb.ModelInferRequest()
    req.inputs.add(name="x", datatype="FP32", shape=[2])
    with pytest.raises(TensorError, match="'x'.*has 0 values"):
        decode_inputs(req)


@pytest.mark.parametrize(
    "datatype,field",
    [
        ("FP32", "fp64_contents"),
        ("INT64", "int_contents"),
        ("UINT8", "int_contents"),
        ("BOOL", "int_contents"),
    ],
)
def test_typed_wrong_field(datatype, field):
    req = pb.ModelInferRequest()
    inp = req.inputs.add(name="x", datatype=datatype, shape=[1])
    getattr(inp.contents, field).append(1)
    with pytest.raises(TensorError, match=rf"'x'.*{TYPED_FIELD[datatype]}.*{field}"):
        decode_inputs(req)


def test_typed_right_and_wrong_field_together():
    req = pb.ModelInferRequest()
    inp = req.inputs.add(name="x", datatype="FP32", shape=[1])
    inp.contents.fp32_contents.append(1.0)
    inp.contents.fp64_contents.append(1.0)
    with pytest.raises(TensorError, match="fp64_contents"):
        decode_inputs(req)


@pytest.mark.parametrize("datatype,value", [("INT8", 128), ("INT8", -129), ("INT16", 40000), ("UINT8", 256)])
def test_typed_out_of_range(datatype, value):
    req = pb.ModelInferRequest()
    inp = req.inputs.add(name="x", datatype=datatype, shape=[2])
    getattr(inp.contents, TYPED_FIELD[datatype]).extend([0, value])
    with pytest.raises(TensorError, match=rf"'x'.*out of range for {datatype}"):
        decode_inputs(req)


def test_duplicate_input_names():
    req = one_raw("FP32", [1], b"\0" * 4)
    req.inputs.add(name="x", datatype="FP32", shape=[1])
    req.raw_input_contents.append(b"\0" * 4)
    with pytest.raises(TensorError, match="'x' appears more than once"):
        decode_inputs(req)


def test_empty_input_name():
    with pytest.raises(TensorError, match="no name"):
        decode_inputs(one_raw("FP32", [1], b"\0" * 4, name=""))


@pytest.mark.parametrize(
    "blob,shape,match",
    [
        (b"\x01\x00", [1], "truncated length prefix"),
        (frame([b"ab"]) + b"\x05\x00\x00", [2], "truncated length prefix"),
        (struct.pack("<I", 10) + b"abc", [1], "declares 10 bytes but only 3 remain"),
        (frame([b"a", b"b"]), [1], "trailing bytes"),
        (frame([b"a"]), [2], "truncated length prefix"),
        (frame([b"a"]) + b"x", [1], "1 trailing bytes"),
        (b"", [1], "truncated"),
    ],
)
def test_bytes_framing_errors(blob, shape, match):
    with pytest.raises(TensorError, match=f"'x'.*{match}"):
        decode_inputs(one_raw("BYTES", shape, blob))


def test_bytes_huge_length_prefix():
    with pytest.raises(TensorError, match="declares 4294967295 bytes"):
        decode_inputs(one_raw("BYTES", [1], b"\xff\xff\xff\xff" + b"a"))


# ---------------------------------------------------------------- decode against a model signature

SPECS = {
    "input": TensorSpec("input", "FP32", [-1, 4]),
    "mask": TensorSpec("mask", "BOOL", [-1]),
}


def spec_request(**overrides):
    arrays = {
        "input": ("FP32", np.ones((2, 4), np.float32)),
        "mask": ("BOOL", np.array([True, False])),
    }
    arrays.update(overrides)
    return raw_request({k: v for k, v in arrays.items() if v is not None})


def test_specs_ok():
    out = decode_inputs(spec_request(), SPECS)
    assert out["input"].shape == (2, 4) and out["mask"].tolist() == [True, False]


def test_specs_unknown_input():
    req = spec_request(extra=("FP32", np.ones(1, np.float32)))
    with pytest.raises(TensorError, match="unknown input 'extra'.*'input', 'mask'"):
        decode_inputs(req, SPECS)


def test_specs_missing_input():
    with pytest.raises(TensorError, match="missing input.*'mask'"):
        decode_inputs(spec_request(mask=None), SPECS)


def test_specs_datatype_mismatch():
    req = spec_request(input=("FP64", np.ones((2, 4))))
    with pytest.raises(TensorError, match="'input'.*FP64.*FP32"):
        decode_inputs(req, SPECS)


def test_specs_rank_mismatch():
    req = spec_request(input=("FP32", np.ones(8, np.float32)))
    with pytest.raises(TensorError, match="'input'.*rank 1.*rank 2"):
        decode_inputs(req, SPECS)


def test_specs_dim_mismatch():
    req = spec_request(input=("FP32", np.ones((2, 5), np.float32)))
    with pytest.raises(TensorError, match="'input'.*dimension 1 is 5.*expects 4"):
        decode_inputs(req, SPECS)


# ---------------------------------------------------------------- onnxruntime interop


def test_decoded_raw_arrays_run_in_onnxruntime(tmp_path):
    path = tmp_path / "tiny.onnx"
    demo.make_tiny_model(path)
    sess = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    specs = specs_from_ort(sess.get_inputs())
    assert specs == {"x": TensorSpec("x", "FP32", [-1, 4])}
    assert specs_from_ort(sess.get_outputs()) == {"y": TensorSpec("y", "FP32", [-1, 4])}
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inputs = decode_inputs(raw_request({"x": ("FP32", x)}), specs)
    assert not inputs["x"].flags.writeable  # zero-copy view of the request bytes
    names = [o.name for o in sess.get_outputs()]
    result = dict(zip(names, sess.run(None, inputs), strict=True))
    resp = pb.ModelInferResponse()
    encode_outputs(resp, result)
    y = np.frombuffer(resp.raw_output_contents[0], "<f4").reshape(list(resp.outputs[0].shape))
    np.testing.assert_array_equal(y, x * 2 + 1)


def test_decoded_bytes_run_in_onnxruntime():
    s = helper.make_tensor_value_info("s", TensorProto.STRING, ["batch"])
    o = helper.make_tensor_value_info("o", TensorProto.STRING, [None])
    graph = helper.make_graph([helper.make_node("Identity", ["s"], ["o"])], "str", [s], [o])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    specs = specs_from_ort(sess.get_inputs())
    assert specs == {"s": TensorSpec("s", "BYTES", [-1])}  # symbolic dim "batch" -> -1
    inputs = decode_inputs(one_raw("BYTES", [2], frame(["héllo", "x"]), name="s"), specs)
    (out,) = sess.run(None, inputs)
    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"o": out})
    assert resp.outputs[0].datatype == "BYTES"
    assert unframe(resp.raw_output_contents[0]) == ["héllo".encode(), b"x"]


# ---------------------------------------------------------------- property-based robustness

# Weighted towards valid values so that both success and every error path are exercised.
datatypes = st.sampled_from(list(DATATYPES) * 4 + ["", "fp32", "FLOAT", "STRING"])
dims = st.sampled_from(list(range(5)) * 8 + [-1, -3, 1 << 30, 1 << 62, 2**63 - 1, -(2**63)])
shapes = st.lists(dims, max_size=5)


def _length_for(datatype, shape):
    n = 1
    for d in shape:
        n *= max(d, 0)
    size = DATATYPES[datatype].itemsize if datatype in DATATYPES and datatype != "BYTES" else 1
    return min(n * size, 4096)


@st.composite
def raw_blob(draw, datatype, shape):
    kind = draw(
        st.sampled_from(["exact"] * 3 + ["random", "framed"] + ["framed"] * 2 * (datatype == "BYTES"))
    )
    if kind == "exact":
        return b"\x01" * _length_for(datatype, shape)
    if kind == "framed":
        items = draw(st.lists(st.binary(max_size=6), max_size=8))
        blob = frame(items)
        cut = draw(st.integers(0, len(blob)))
        return blob[:cut] if draw(st.booleans()) else blob
    return draw(st.binary(max_size=64))


@st.composite
def requests(draw):
    req = pb.ModelInferRequest()
    n = draw(st.integers(0, 3))
    use_raw = draw(st.booleans())
    for i in range(n):
        datatype = draw(datatypes)
        shape = draw(shapes)
        name = draw(st.sampled_from([f"in{i}"] * 8 + ["dup", ""]))
        inp = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if use_raw:
            if draw(st.integers(0, 9)) > 0:  # sometimes leave a blob out
                req.raw_input_contents.append(draw(raw_blob(datatype, shape)))
            if draw(st.integers(0, 9)) == 0:  # sometimes mix in typed contents
                inp.contents.fp32_contents.append(1.0)
        else:
            field = draw(st.sampled_from(ALL_FIELDS + [TYPED_FIELD.get(datatype, "fp32_contents")] * 20))
            exact = _length_for("BOOL", shape)
            count = draw(st.sampled_from([exact] * 6 + [0, 1, exact + 1, max(exact - 1, 0)]))
            count = min(count, 512)
            target = getattr(inp.contents, field)
            if field == "bytes_contents":
                target.extend(draw(st.lists(st.binary(max_size=4), min_size=count, max_size=count)))
            elif field == "bool_contents":
                target.extend([bool(j % 2) for j in range(count)])
            elif field in ("fp32_contents", "fp64_contents"):
                target.extend([float(j) - 1.5 for j in range(count)])
            elif field.startswith("uint"):
                target.extend([draw(st.integers(0, 2**32 - 1)) for _ in range(count)])
            else:
                target.extend([draw(st.integers(-(2**31), 2**31 - 1)) for _ in range(count)])
    return req


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(requests(), st.booleans())
def test_decode_never_raises_other_exceptions(req, utf8):
    try:
        out = decode_inputs(req, max_elements=1 << 20, utf8=utf8)
    except TensorError as exc:
        assert str(exc)
        return
    assert len(out) == len(req.inputs)
    for inp in req.inputs:
        arr = out[inp.name]
        assert arr.shape == tuple(inp.shape)
        assert arr.dtype == DATATYPES[inp.datatype]
        assert arr.flags.c_contiguous and arr.dtype.isnative


@settings(max_examples=200, deadline=None)
@given(
    st.sampled_from(NUMERIC + ["BYTES"]),
    st.lists(st.integers(0, 4), max_size=4),
    st.data(),
)
def test_roundtrip_property(datatype, shape, data):
    n = int(np.prod(shape)) if shape else 1
    if datatype == "BYTES":
        items = data.draw(st.lists(st.text(max_size=5), min_size=n, max_size=n))
        arr = np.array(items + [None], dtype=object)[:-1].reshape(shape)
    else:
        raw = data.draw(
            st.binary(min_size=n * DATATYPES[datatype].itemsize, max_size=n * DATATYPES[datatype].itemsize)
        )
        arr = np.frombuffer(raw, dtype=DATATYPES[datatype].newbyteorder("<")).reshape(shape)
        if datatype == "BOOL":
            arr = arr.view(np.uint8) != 0
    resp = pb.ModelInferResponse()
    encode_outputs(resp, {"t": arr})
    # Feed the response's raw tensor back in as a request input.
    req = one_raw(resp.outputs[0].datatype, resp.outputs[0].shape, resp.raw_output_contents[0], name="t")
    got = decode_inputs(req)["t"]
    assert got.shape == tuple(shape)
    if datatype.startswith("FP"):
        np.testing.assert_array_equal(got.view(f"u{got.itemsize}"), arr.view(f"u{arr.itemsize}"))
    else:
        assert got.tolist() == arr.tolist()


@settings(max_examples=200, deadline=None)
@given(st.lists(st.binary(max_size=10), max_size=10), st.integers(0, 12), st.integers(-3, 3))
def test_bytes_framing_property(items, claimed, cut):
    blob = frame(items)
    if cut > 0:
        blob = blob[:-cut] if cut <= len(blob) else blob
    elif cut < 0:
        blob = blob + b"\x00" * -cut
    try:
        got = decode_inputs(one_raw("BYTES", [claimed], blob), utf8=False)["x"]
    except TensorError:
        assert claimed != len(items) or blob != frame(items)
        return
    assert got.shape == (claimed,)
    assert frame(got.tolist()) == blob

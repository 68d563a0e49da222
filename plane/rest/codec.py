"""KServe V2 JSON (and the binary tensor data extension) to protobuf and back.

The REST front door turns an HTTP body into the same ``ModelInferRequest`` a gRPC client would
send, so routing, forwarding and serving never know which protocol a request came in on; the
``ModelInferResponse`` is turned back into JSON here. Facts (SPEC section 7):

* ``data`` is row-major, flat or nested exactly as the shape; BYTES elements are strings
  (UTF-8). Inputs always go into ``raw_input_contents`` (little-endian, BYTES elements with a
  4-byte little-endian length), which is what the pod's decoder and its peers expect.
* Binary extension: ``Inference-Header-Content-Length: N`` says the first N bytes are the JSON;
  an input with ``"parameters": {"binary_data_size": B}`` takes the next B bytes of what
  follows, in input order, and every byte must be claimed. An output requested with
  ``"binary_data": true`` (or all outputs, with request-level ``"binary_data_output": true``)
  comes back the same way, with ``binary_data_size`` in its parameters.
* These three parameters describe the HTTP framing, not the model, so they are not passed on
  in the protobuf; every other parameter is (bool, int64 or string: the protobuf has no float).
* A BYTES output that is not valid UTF-8 cannot be a JSON string: its elements are sent base64
  encoded with ``"parameters": {"content_type": "base64"}`` (MLServer's convention).

Conversion is vectorised with numpy (one ``asarray`` to find what the JSON holds, one cast,
one ``tobytes``); only BYTES walks its elements. Sizes are checked against the shape before
anything is built, so a shape of a billion elements with four numbers costs nothing.
Every problem with the client's body raises :class:`CodecError` naming the tensor (a 400).
"""

from __future__ import annotations

import base64
import json
import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from plane.proto import inference_pb2 as ipb

__all__ = ["CodecError", "Decoded", "WIRE_DTYPES", "decode_infer_request", "dumps", "encode_infer_response",
           "metadata_json"]

#: V2 datatype -> little-endian numpy dtype of its raw form (BOOL is one byte, 0 or 1).
WIRE_DTYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.uint8), "UINT8": np.dtype("<u1"), "UINT16": np.dtype("<u2"), "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"), "INT8": np.dtype("<i1"), "INT16": np.dtype("<i2"), "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"), "FP16": np.dtype("<f2"), "FP32": np.dtype("<f4"), "FP64": np.dtype("<f8"),
}
_DATATYPES = (*WIRE_DTYPES, "BYTES")
_FRAMING = ("binary_data_size", "binary_data", "binary_data_output")  # HTTP framing, not model parameters
_MAX_RANK = 32
_INT64_MAX = 2**63 - 1
_TYPED_FIELD = {"BOOL": "bool_contents", "INT8": "int_contents", "INT16": "int_contents", "INT32": "int_contents",
                "INT64": "int64_contents", "UINT8": "uint_contents", "UINT16": "uint_contents",
                "UINT32": "uint_contents", "UINT64": "uint64_contents", "FP32": "fp32_contents",
                "FP64": "fp64_contents", "BYTES": "bytes_contents"}


_ENCODER = json.JSONEncoder(separators=(",", ":"))  # made once: json.dumps(separators=...) builds one per call


def dumps(doc: Any) -> bytes:
    return _ENCODER.encode(doc).encode()


def _q(name: str) -> str:
    """A client's name as quoted back to it (a name may be 10 KB), like the pod's errors quote."""
    text = repr(name)
    return text if len(text) <= 64 else text[:59] + "...'"


class CodecError(ValueError):
    """The body is not a valid V2 request; the message is meant for the client (HTTP 400)."""


@dataclass
class Decoded:
    """A request as protobuf, plus what the HTTP side must remember to answer it."""

    request: ipb.ModelInferRequest
    binary_all: bool = False  # request-level binary_data_output
    binary: dict[str, bool] = field(default_factory=dict)  # per requested output: binary_data
    timeout_s: float | None = None  # request parameter "timeout" (microseconds, tritonclient's)

    def wants_binary(self, name: str) -> bool:
        return self.binary.get(name, self.binary_all)


# -- request ------------------------------------------------------------------------------------------

def _obj(value: Any, what: str) -> dict[str, Any]:
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise CodecError(f"{what} must be a JSON object")
    return value


def _set_params(target: Any, params: dict[str, Any], what: str) -> None:
    for key, value in params.items():
        if key in _FRAMING:
            continue
        p = target[key]
        if isinstance(value, bool):
            p.bool_param = value
        elif isinstance(value, int):
            if not -_INT64_MAX - 1 <= value <= _INT64_MAX:
                raise CodecError(f"{what} parameter {_q(key)}: {value} does not fit in int64")
            p.int64_param = value
        elif isinstance(value, str):
            p.string_param = value
        else:
            raise CodecError(f"{what} parameter {_q(key)}: must be a boolean, an integer or a string "
                             f"(got {type(value).__name__})")


def _shape(name: str, shape: Any, max_elements: int) -> tuple[list[int], int]:
    if not isinstance(shape, list) or not all(isinstance(d, int) and not isinstance(d, bool) for d in shape):
        raise CodecError(f"input {_q(name)}: shape must be a list of integers")
    if len(shape) > _MAX_RANK:
        raise CodecError(f"input {_q(name)}: rank {len(shape)} exceeds the limit of {_MAX_RANK}")
    if any(d < 0 or d > _INT64_MAX for d in shape):
        raise CodecError(f"input {_q(name)}: shape {shape} has a negative or too large dimension")
    count = math.prod(shape)
    if count > max_elements:
        raise CodecError(f"input {_q(name)}: shape {shape} has {count} elements, more than the limit of {max_elements}")
    return shape, count


def _numeric(name: str, datatype: str, shape: list[int], count: int, data: Any) -> bytes:
    try:
        arr = np.asarray(data)
    except (ValueError, TypeError):
        raise CodecError(f"input {_q(name)}: data is ragged (nested lists of different lengths)") from None
    if arr.size != count:
        raise CodecError(f"input {_q(name)}: data has {arr.size} elements but shape {shape} needs {count}")
    if arr.ndim > 1 and list(arr.shape) != shape:
        raise CodecError(f"input {_q(name)}: data nested as {list(arr.shape)} does not match shape {shape}")
    if arr.size == 0:
        return b""
    kind = arr.dtype.kind
    wire = WIRE_DTYPES[datatype]
    if datatype == "BOOL":
        if kind != "b" and not (kind in "iu" and arr.min() >= 0 and arr.max() <= 1):
            raise CodecError(f"input {_q(name)}: BOOL data must be true/false")
    elif wire.kind == "f":
        if kind not in "iuf":
            raise CodecError(f"input {_q(name)}: {datatype} data must be numbers")
    else:
        if kind in "fO" and wire.itemsize == 8:
            # Integers on both sides of 2**63 make numpy guess float64 (lossy) or object: read them exactly.
            arr = np.array(data, dtype=object)
            if all(type(v) is int for v in arr.flat):  # the rare case: one check per element
                kind = "i"
        if kind not in "iu":
            raise CodecError(f"input {_q(name)}: {datatype} data must be integers within the range of {datatype}")
        info = np.iinfo(wire)
        if arr.min() < info.min or arr.max() > info.max:
            raise CodecError(f"input {_q(name)}: a value is out of the range of {datatype} [{info.min}, {info.max}]")
    return arr.astype(wire).tobytes()


def _strings(name: str, data: Any, out: list[bytes]) -> None:
    if isinstance(data, str):
        try:
            out.append(data.encode("utf-8"))
        except UnicodeEncodeError:
            raise CodecError(f"input {_q(name)}: a BYTES element is not valid Unicode (a lone surrogate)") from None
    elif isinstance(data, list):
        for item in data:
            _strings(name, item, out)
    else:
        raise CodecError(f"input {_q(name)}: BYTES data must be strings (got {type(data).__name__})")


def _bytes_raw(items: list[bytes]) -> bytes:
    return b"".join(len(b).to_bytes(4, "little") + b for b in items)


def _input(tensor: Any, i: int, max_elements: int, blob: memoryview, offset: int,
           req: ipb.ModelInferRequest) -> int:
    """Add one input; returns the offset in the binary part after the bytes it took."""
    if not isinstance(tensor, dict):
        raise CodecError(f"inputs[{i}] must be a JSON object")
    name = tensor.get("name")
    if not isinstance(name, str) or not name:
        raise CodecError(f"inputs[{i}]: 'name' must be a non-empty string")
    datatype = tensor.get("datatype")
    if datatype not in _DATATYPES:
        raise CodecError(f"input {_q(name)}: datatype {_q(str(datatype))} is not one of {', '.join(_DATATYPES)}")
    shape, count = _shape(name, tensor.get("shape"), max_elements)
    params = _obj(tensor.get("parameters"), f"input {_q(name)} parameters")
    size = params.get("binary_data_size")
    has_data = "data" in tensor
    if size is not None:
        if has_data:
            raise CodecError(f"input {_q(name)}: has both 'data' and binary_data_size")
        if not isinstance(size, int) or isinstance(size, bool) or size < 0:
            raise CodecError(f"input {_q(name)}: binary_data_size must be a non-negative integer")
        if offset + size > len(blob):
            raise CodecError(f"input {_q(name)}: binary_data_size {size} runs past the end of the body "
                             f"({len(blob) - offset} bytes left)")
        if datatype == "BYTES":
            if size < 4 * count:
                raise CodecError(f"input {_q(name)}: {size} bytes cannot hold {count} length-prefixed BYTES elements")
        elif size != count * WIRE_DTYPES[datatype].itemsize:
            raise CodecError(f"input {_q(name)}: binary_data_size {size} does not match shape {shape} of {datatype} "
                             f"({count * WIRE_DTYPES[datatype].itemsize} bytes)")
        raw = bytes(blob[offset:offset + size])
        offset += size
    elif not has_data:
        raise CodecError(f"input {_q(name)}: has no 'data' (and no binary_data_size)")
    elif datatype == "BYTES":
        items: list[bytes] = []
        try:
            _strings(name, tensor["data"], items)
        except RecursionError:
            raise CodecError(f"input {_q(name)}: data is nested too deeply") from None
        if len(items) != count:
            raise CodecError(f"input {_q(name)}: data has {len(items)} elements but shape {shape} needs {count}")
        raw = _bytes_raw(items)
    else:
        raw = _numeric(name, datatype, shape, count, tensor["data"])
    inp = req.inputs.add(name=name, datatype=datatype, shape=shape)
    _set_params(inp.parameters, params, f"input {_q(name)}")
    req.raw_input_contents.append(raw)
    return offset


def decode_infer_request(body: bytes, *, header_length: int | None, model_name: str, model_version: str = "",
                         max_elements: int) -> Decoded:
    """An infer request body (JSON, or JSON + binary with ``header_length``) as protobuf."""
    view = memoryview(body)
    if header_length is None:
        header_length = len(body)
    elif not 0 <= header_length <= len(body):
        raise CodecError(f"Inference-Header-Content-Length {header_length} is outside the body of {len(body)} bytes")
    try:
        doc = json.loads(view[:header_length].tobytes() if header_length < len(body) else body)
    except (ValueError, UnicodeDecodeError) as exc:
        raise CodecError(f"the body is not valid JSON: {exc}") from None
    except RecursionError:
        raise CodecError("the body's JSON is nested too deeply") from None
    if not isinstance(doc, dict):
        raise CodecError("the body must be a JSON object")
    req = ipb.ModelInferRequest(model_name=model_name, model_version=model_version)
    rid = doc.get("id")
    if rid is not None:
        if not isinstance(rid, str):
            raise CodecError("'id' must be a string")
        req.id = rid
    params = _obj(doc.get("parameters"), "request parameters")
    _set_params(req.parameters, params, "request")
    decoded = Decoded(req, binary_all=params.get("binary_data_output") is True)
    timeout = params.get("timeout")
    if isinstance(timeout, int) and not isinstance(timeout, bool) and timeout > 0:
        decoded.timeout_s = timeout / 1e6
    inputs = doc.get("inputs")
    if not isinstance(inputs, list) or not inputs:
        raise CodecError("'inputs' must be a non-empty list")
    blob = view[header_length:]
    offset = 0
    for i, tensor in enumerate(inputs):
        offset = _input(tensor, i, max_elements, blob, offset, req)
    if offset != len(blob):
        raise CodecError(f"{len(blob) - offset} bytes after the JSON are claimed by no input's binary_data_size")
    outputs = doc.get("outputs")
    if outputs is not None:
        if not isinstance(outputs, list):
            raise CodecError("'outputs' must be a list")
        for i, out in enumerate(outputs):
            if not isinstance(out, dict) or not isinstance(out.get("name"), str) or not out["name"]:
                raise CodecError(f"outputs[{i}] must be an object with a non-empty 'name'")
            oparams = _obj(out.get("parameters"), f"output {_q(out['name'])} parameters")
            requested = req.outputs.add(name=out["name"])
            _set_params(requested.parameters, oparams, f"output {_q(out['name'])}")
            if "binary_data" in oparams:
                decoded.binary[out["name"]] = oparams["binary_data"] is True
    return decoded


# -- response -----------------------------------------------------------------------------------------

def _param_value(p: ipb.InferParameter) -> Any:
    which = p.WhichOneof("parameter_choice")
    return getattr(p, which) if which else None


def _split_bytes(raw: bytes) -> list[bytes]:
    out = []
    view = memoryview(raw)
    pos, end = 0, len(raw)
    while pos < end:
        n = int.from_bytes(view[pos:pos + 4], "little")
        pos += 4
        if pos + n > end:
            raise ValueError("a BYTES output is truncated")
        out.append(bytes(view[pos:pos + n]))
        pos += n
    return out


def _typed_raw(out: Any) -> bytes:
    """Raw bytes from typed contents (a peer that answered typed; this plane's pods answer raw)."""
    values = getattr(out.contents, _TYPED_FIELD.get(out.datatype, "fp32_contents"))
    if out.datatype == "BYTES":
        return _bytes_raw(list(values))
    return np.asarray(values).astype(WIRE_DTYPES[out.datatype]).tobytes()


def _json_data(datatype: str, raw: bytes, params: dict[str, Any]) -> list[Any]:
    if datatype == "BYTES":
        items = _split_bytes(raw)
        try:
            return [b.decode("utf-8") for b in items]
        except UnicodeDecodeError:
            params["content_type"] = "base64"
            return [base64.b64encode(b).decode("ascii") for b in items]
    arr = np.frombuffer(raw, dtype=WIRE_DTYPES[datatype])
    if datatype == "BOOL":
        arr = arr.astype(np.bool_)
    result: list[Any] = arr.tolist()
    return result


def encode_infer_response(resp: ipb.ModelInferResponse, decoded: Decoded | None = None) -> tuple[bytes, int | None]:
    """The JSON body for ``resp``; with binary outputs, JSON + blobs and the JSON's length."""
    doc: dict[str, Any] = {"model_name": resp.model_name}
    if resp.model_version:
        doc["model_version"] = resp.model_version
    if resp.id:
        doc["id"] = resp.id
    if resp.parameters:
        doc["parameters"] = {k: _param_value(v) for k, v in resp.parameters.items()}
    raws = resp.raw_output_contents
    blobs: list[bytes] = []
    outputs = []
    for i, out in enumerate(resp.outputs):
        raw = raws[i] if i < len(raws) else _typed_raw(out)
        params = {k: _param_value(v) for k, v in out.parameters.items()} if out.parameters else {}
        entry: dict[str, Any] = {"name": out.name, "datatype": out.datatype, "shape": list(out.shape)}
        if decoded is not None and decoded.wants_binary(out.name):
            params["binary_data_size"] = len(raw)
            blobs.append(raw)
        else:
            entry["data"] = _json_data(out.datatype, raw, params)
        if params:
            entry["parameters"] = params
        outputs.append(entry)
    doc["outputs"] = outputs
    head = dumps(doc)
    if not blobs:
        return head, None
    return b"".join([head, *blobs]), len(head)


def metadata_json(resp: ipb.ModelMetadataResponse) -> dict[str, Any]:
    def tensors(items: Any) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {"name": resp.name, "versions": list(resp.versions), "platform": resp.platform,
            "inputs": tensors(resp.inputs), "outputs": tensors(resp.outputs)}

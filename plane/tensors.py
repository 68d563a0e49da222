"""KServe V2 tensor decoding and encoding for ``ModelInferRequest`` / ``ModelInferResponse``.

This module sits on every inference request, so it is written for low per-call overhead:
numeric raw tensors are turned into arrays with :func:`numpy.frombuffer` (no copy on
little-endian hosts), typed contents are converted with one ``numpy.fromiter`` call, and
``BYTES`` tensors are built in one C-level pass after their framing has been validated.

Decoding is bounded before anything is allocated: each input's element count (the product of
its shape, computed with Python ints and capped as it grows) must fit ``max_elements`` and match
the bytes actually present, and the decoded size of all inputs of a request must fit
``max_bytes`` (numeric: ``count x itemsize``; BYTES: the element data plus 64 bytes an element
for the object array's pointer and the Python object). A request that fails any of these costs
no more than its own bytes. :func:`request_payload_bytes` estimates a request's size without
touching its data, for a caller deciding whether to decode it off its event loop. Nothing here
keeps state between calls, so decoding is safe on worker threads.

Wire facts (see SPEC.md section 1):

* A request carries its input data either entirely in ``raw_input_contents`` (one blob per
  input, in input order, little-endian, row-major) or entirely in each input's typed
  ``contents`` field. Mixing the two is an error.
* ``BYTES`` elements in raw form are each prefixed by a 4-byte little-endian length.
* Typed fields: ``bool_contents`` (BOOL), ``int_contents`` (INT8/INT16/INT32),
  ``uint_contents`` (UINT8/UINT16/UINT32), ``int64_contents``, ``uint64_contents``,
  ``fp32_contents``, ``fp64_contents``, ``bytes_contents``. FP16 has no typed field.
* Responses are always written to ``raw_output_contents`` (tritonclient cannot read typed
  output contents).

Every validation failure raises :class:`TensorError`, a ``ValueError`` whose message names the
offending input and is meant to be returned to the client as ``INVALID_ARGUMENT``.

Layout: this module is the request/response level (signatures, names, counts, the order of
outputs) and the public API; :mod:`plane.tensor_wire` holds the datatype table,
:class:`TensorError` and the per-tensor wire codec (raw blobs, BYTES framing, typed contents).
Both names are re-exported here, so ``from plane.tensors import DATATYPES, TensorError`` is
the way to reach them.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from plane.tensor_wire import (
    _CONTENT_FIELD,
    _LITTLE,
    BYTES_ITEM_COST,
    DATATYPES,
    TensorError,
    _decode_raw,
    _decode_typed,
    _encode_bytes,
    _q,
)

__all__ = [
    "BYTES_ITEM_COST",
    "DATATYPES",
    "DEFAULT_MAX_BYTES",
    "TensorError",
    "TensorSpec",
    "datatype_of",
    "decode_inputs",
    "encode_outputs",
    "onnx_type_to_datatype",
    "request_payload_bytes",
    "specs_from_ort",
]

_ONNX_TYPES: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
}

# numpy dtype kind+itemsize -> V2 datatype, for datatype_of.
_DTYPE_TO_DATATYPE: dict[tuple[str, int], str] = {
    ("b", 1): "BOOL",
    ("u", 1): "UINT8",
    ("u", 2): "UINT16",
    ("u", 4): "UINT32",
    ("u", 8): "UINT64",
    ("i", 1): "INT8",
    ("i", 2): "INT16",
    ("i", 4): "INT32",
    ("i", 8): "INT64",
    ("f", 2): "FP16",
    ("f", 4): "FP32",
    ("f", 8): "FP64",
}

_MAX_NAMES_SHOWN = 20
_MAX_RANK = 32
#: default of ``decode_inputs(max_bytes=...)``: the decoded size of one request's inputs
DEFAULT_MAX_BYTES = 1 << 30


@dataclass
class TensorSpec:
    """A model's declared input or output: V2 datatype and shape (-1 marks a dynamic dim).

    ``any_rank`` marks a tensor declared with no shape at all (ONNX allows it; onnxruntime then
    runs any shape). KServe V2 metadata cannot say "unknown rank", so such a spec carries
    ``shape=[-1]`` -- what ModelMetadata reports, as Triton reports dynamic dims -- and
    :func:`decode_inputs` accepts an input of any shape for it.
    """

    name: str
    datatype: str
    shape: list[int] = field(default_factory=list)
    any_rank: bool = False


def onnx_type_to_datatype(onnx_type: str) -> str:
    """Map an onnxruntime type string such as ``"tensor(float)"`` to a V2 datatype (``"FP32"``)."""
    try:
        return _ONNX_TYPES[onnx_type]
    except KeyError:
        raise TensorError(f"ONNX type {onnx_type!r} has no KServe V2 datatype") from None


def specs_from_ort(node_args, unranked=()) -> dict[str, TensorSpec]:
    """TensorSpecs from onnxruntime ``NodeArg``s (``session.get_inputs()`` / ``get_outputs()``).

    Symbolic or unknown dims (``None`` or a name such as ``"batch"``) become -1. onnxruntime
    reports ``[]`` both for a scalar and for a tensor declared with no shape; the names in
    ``unranked`` are the latter and get ``any_rank`` specs (``plane.runtime`` reads which from
    the model file).
    """
    return {arg.name: _spec_from_ort(arg, onnx_type_to_datatype(arg.type), unranked) for arg in node_args}


def _spec_from_ort(arg, datatype: str, unranked=()) -> TensorSpec:
    if not arg.shape and arg.name in unranked:
        return TensorSpec(arg.name, datatype, [-1], any_rank=True)
    return TensorSpec(arg.name, datatype, [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])])


def datatype_of(array) -> str:
    """The V2 datatype of a numpy array (str/bytes/object arrays are ``BYTES``)."""
    dtype = getattr(array, "dtype", None)
    if not isinstance(dtype, np.dtype):
        raise TensorError(f"expected a numpy array, got {type(array).__name__}")
    kind = dtype.kind
    if kind in "OSU":
        return "BYTES"
    try:
        return _DTYPE_TO_DATATYPE[(kind, dtype.itemsize)]
    except KeyError:
        raise TensorError(f"numpy dtype {dtype} has no KServe V2 datatype") from None


def _names(names) -> str:
    names = sorted(names)
    shown = ", ".join(_q(n) for n in names[:_MAX_NAMES_SHOWN])
    if len(names) > _MAX_NAMES_SHOWN:
        shown += f", ... ({len(names)} in all)"
    return shown or "none"


def _element_count(name: str, shape, max_elements: int) -> int:
    """The product of ``shape``: Python ints, every dim checked, and capped as it grows (the
    product of the non-zero dims may not pass ``max_elements``), so it never gets big."""
    if len(shape) > _MAX_RANK:
        raise TensorError(f"input {_q(name)}: rank {len(shape)} exceeds the limit of {_MAX_RANK}")
    count = 1
    extent = 1  # product of the non-zero dims, bounded so that reshape can never overflow
    for dim in shape:
        if dim < 0:
            raise TensorError(f"input {_q(name)}: shape {list(shape)} has a negative dimension")
        count *= dim
        if dim:
            extent *= dim
        if extent > max_elements:
            raise TensorError(
                f"input {_q(name)}: shape {list(shape)} exceeds the limit of {max_elements} elements"
            )
    return count


def _check_spec(name: str, datatype: str, shape, spec: TensorSpec) -> None:
    if spec.datatype != datatype:
        raise TensorError(f"input {_q(name)}: datatype {datatype} does not match the model's {spec.datatype}")
    if spec.any_rank:
        return
    if len(shape) != len(spec.shape):
        raise TensorError(
            f"input {_q(name)}: shape {list(shape)} has rank {len(shape)}, "
            f"the model expects rank {len(spec.shape)} {list(spec.shape)}"
        )
    for i, (got, want) in enumerate(zip(shape, spec.shape, strict=True)):
        if want is not None and want >= 0 and got != want:
            raise TensorError(
                f"input {_q(name)}: dimension {i} is {got}, the model expects {want} "
                f"(shape {list(spec.shape)}, -1 = any)"
            )


def request_payload_bytes(request) -> int:
    """About how many bytes a ``ModelInferRequest``'s tensors decode to, without touching their
    data: a caller's cue to decode and run the request off its event loop (above ~1 MB).

    Declared sizes only, as :func:`decode_inputs` charges them: a numeric input's element count
    x itemsize (typed contents: the values present; raw: what the shape needs -- the decoder
    refuses any other blob size); a BYTES input's element count x 64 (typed: the values present).
    The data is not read because with protobuf's upb backend every read of a bytes field copies
    it (``len(request.raw_input_contents[0])`` copies the blob: ~50 ms for 60 MB). The blind
    spot is a few huge BYTES elements; a caller that has the serialized size (its deserializer
    sees it) should use ``max(that, this)``. Invalid shapes count as large.
    """
    use_raw = len(request.raw_input_contents) > 0
    total = 0
    for inp in request.inputs:
        datatype = inp.datatype
        item = BYTES_ITEM_COST if datatype == "BYTES" else getattr(DATATYPES.get(datatype), "itemsize", 8)
        if not use_raw and datatype in _CONTENT_FIELD:
            total += len(getattr(inp.contents, _CONTENT_FIELD[datatype])) * item
            continue
        count = 1
        for dim in inp.shape:
            count = min(count * dim, 1 << 40) if dim >= 0 else 1 << 40
        total += count * item
    return total


def decode_inputs(
    request,
    specs: Mapping[str, TensorSpec] | None = None,
    *,
    max_elements: int = 1 << 28,
    max_bytes: int = DEFAULT_MAX_BYTES,
    utf8: bool = True,
) -> dict[str, np.ndarray]:
    """Decode a ``ModelInferRequest``'s inputs into native-endian, C-contiguous numpy arrays.

    ``specs`` (input name -> :class:`TensorSpec`), when given, is the model's input signature:
    unknown or missing inputs, datatype mismatches and shape mismatches against non-dynamic
    dims are rejected (an ``any_rank`` spec takes any shape). ``max_elements`` bounds the
    element count of any single input; ``max_bytes`` the decoded size of all inputs together
    (numeric: ``count x itemsize``; BYTES: data + 64 bytes an element). Both are checked, and
    the element count against the bytes present, before anything is allocated for an input.

    BYTES inputs become 1-D-then-reshaped object arrays; with ``utf8`` (the default) their
    elements are decoded to ``str`` (onnxruntime's ``tensor(string)`` needs ``str``; it would
    turn ``bytes`` objects into their repr), otherwise they stay ``bytes``.

    Numeric arrays decoded from raw data may be read-only views of the request buffer
    (onnxruntime accepts read-only inputs). Raises :class:`TensorError` on any invalid input.
    """
    inputs = request.inputs
    raw = request.raw_input_contents
    n_inputs = len(inputs)
    n_raw = len(raw)
    use_raw = n_raw > 0
    if use_raw and n_raw != n_inputs:
        raise TensorError(f"raw_input_contents has {n_raw} entries but the request has {n_inputs} inputs")
    result: dict[str, np.ndarray] = {}
    used = 0
    for idx in range(n_inputs):
        inp = inputs[idx]
        name = inp.name
        if not name:
            raise TensorError(f"input #{idx} has no name")
        if name in result:
            raise TensorError(f"input {_q(name)} appears more than once")
        datatype = inp.datatype
        if datatype not in DATATYPES:
            raise TensorError(
                f"input {_q(name)}: unknown datatype {_q(datatype)} (expected one of {', '.join(DATATYPES)})"
            )
        shape = inp.shape
        if len(shape) > _MAX_RANK:
            raise TensorError(f"input {_q(name)}: rank {len(shape)} exceeds the limit of {_MAX_RANK}")
        if specs is not None:
            spec = specs.get(name)
            if spec is None:
                raise TensorError(f"unknown input {_q(name)}; the model expects {_names(specs)}")
            _check_spec(name, datatype, shape, spec)
        count = _element_count(name, shape, max_elements)
        if use_raw:
            if inp.HasField("contents") and inp.contents.ListFields():
                raise TensorError(
                    f"input {_q(name)}: has typed contents while the request uses raw_input_contents; "
                    "send all inputs one way"
                )
            arr, cost = _decode_raw(name, datatype, raw[idx], count, utf8, max_bytes - used)
        else:
            arr, cost = _decode_typed(name, datatype, inp.contents, count, utf8, max_bytes - used)
        used += cost
        result[name] = arr.reshape(tuple(shape))
    if specs is not None and len(result) != len(specs):
        missing = [n for n in specs if n not in result]
        raise TensorError(f"missing input(s) {_names(missing)}; the model expects {_names(specs)}")
    return result


def encode_outputs(
    response,
    outputs: Mapping[str, np.ndarray],
    requested: Sequence[str] | None = None,
) -> None:
    """Append ``outputs`` to a ``ModelInferResponse`` as raw tensors.

    Each output gets an ``outputs`` entry (name, datatype, shape) and one
    ``raw_output_contents`` blob (little-endian, row-major; BYTES with 4-byte length
    prefixes, ``str`` encoded as UTF-8). Typed contents are never used. ``requested`` selects
    and orders the outputs; ``None`` or empty means all, in the order of ``outputs``. A
    requested name the model does not produce raises :class:`TensorError`.
    """
    if requested:
        names = list(requested)
        unknown = [n for n in names if n not in outputs]
        if unknown:
            raise TensorError(
                f"requested output(s) {_names(unknown)} not produced by the model; "
                f"available: {_names(outputs)}"
            )
        if len(set(names)) != len(names):
            raise TensorError(f"requested outputs contain duplicates: {names}")
    else:
        names = list(outputs)
    out_list = response.outputs
    raw_list = response.raw_output_contents
    for name in names:
        arr = outputs[name]
        if not isinstance(arr, np.ndarray):
            if isinstance(arr, list | tuple) and arr and isinstance(arr[0], dict):
                raise TensorError(
                    f"output {name!r} is a sequence of maps, which KServe V2 cannot carry "
                    "(convert classifiers with zipmap disabled)"
                )
            arr = np.asarray(arr)
        datatype = datatype_of(arr)
        if datatype == "BYTES":
            data = _encode_bytes(name, arr)
        else:
            dtype = arr.dtype
            if dtype.byteorder == ">" or (dtype.byteorder == "=" and not _LITTLE):
                arr = arr.astype(dtype.newbyteorder("<"))
            data = arr.tobytes()
        out_list.add(name=name, datatype=datatype, shape=arr.shape)
        raw_list.append(data)

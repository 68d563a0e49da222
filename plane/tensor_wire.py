"""One tensor's bytes on the KServe V2 wire: raw blobs, BYTES length framing, typed contents.

:mod:`plane.tensors` validates a whole request or response (input names, signatures, element
counts, requested outputs) and calls down here to turn one input's data into an array, or one
BYTES output into its raw blob. This is the per-element part of the hot path, so it is kept
small and allocation-light:

* numeric raw tensors are little-endian and become arrays with :func:`numpy.frombuffer` (no
  copy on little-endian hosts; unaligned buffers are copied, BOOL is any non-zero byte);
* ``BYTES`` elements in raw form are each prefixed by a 4-byte little-endian length; the blob
  must hold exactly the element count the shape asks for;
* typed contents come from the one ``*_contents`` field of the datatype (FP16 has none), with
  a range check where the field is wider than the datatype (INT8/INT16/UINT8/UINT16).

The datatype table and :class:`TensorError` live here because both layers need them; import
them from :mod:`plane.tensors`, which re-exports them.
"""

from __future__ import annotations

import struct
import sys

import numpy as np


class TensorError(ValueError):
    """An invalid tensor in a request or response; the message is safe to show to a client."""


#: V2 datatype string -> numpy dtype (native byte order). BYTES maps to ``object``.
DATATYPES: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype(np.uint8),
    "UINT16": np.dtype(np.uint16),
    "UINT32": np.dtype(np.uint32),
    "UINT64": np.dtype(np.uint64),
    "INT8": np.dtype(np.int8),
    "INT16": np.dtype(np.int16),
    "INT32": np.dtype(np.int32),
    "INT64": np.dtype(np.int64),
    "FP16": np.dtype(np.float16),
    "FP32": np.dtype(np.float32),
    "FP64": np.dtype(np.float64),
    "BYTES": np.dtype(object),
}

# Little-endian wire dtypes for the fixed-size datatypes.
_WIRE_DTYPES: dict[str, np.dtype] = {
    name: dt.newbyteorder("<") for name, dt in DATATYPES.items() if name not in ("BYTES", "BOOL")
}
_WIRE_DTYPES["BOOL"] = np.dtype(np.uint8)

# Typed-contents field that carries each datatype (FP16 has none).
_CONTENT_FIELD: dict[str, str] = {
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

# Datatypes whose typed field is wider than the datatype: values need a range check.
_NARROW = {"INT8", "INT16", "UINT8", "UINT16"}

_LITTLE = sys.byteorder == "little"
_LEN = struct.Struct("<I")


def _decode_bytes_raw(name: str, blob: bytes, count: int, utf8: bool) -> np.ndarray:
    out = np.empty(count, dtype=object)
    view = memoryview(blob)
    end = len(blob)
    pos = 0
    unpack = _LEN.unpack_from
    for i in range(count):
        if pos + 4 > end:
            raise TensorError(
                f"input {name!r}: BYTES element {i} has a truncated length prefix "
                f"(expected {count} elements, data ends at byte {end})"
            )
        (length,) = unpack(view, pos)
        pos += 4
        if pos + length > end:
            raise TensorError(
                f"input {name!r}: BYTES element {i} declares {length} bytes but only {end - pos} remain"
            )
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != end:
        raise TensorError(
            f"input {name!r}: {end - pos} trailing bytes after {count} BYTES elements "
            "(element count does not match the shape)"
        )
    if utf8:
        _to_str(name, out)
    return out


def _to_str(name: str, out: np.ndarray) -> None:
    try:
        for i in range(out.shape[0]):
            out[i] = out[i].decode("utf-8")
    except UnicodeDecodeError as exc:
        raise TensorError(f"input {name!r}: BYTES element {i} is not valid UTF-8 ({exc.reason})") from None


def _decode_raw(name: str, datatype: str, blob: bytes, count: int, utf8: bool) -> np.ndarray:
    if datatype == "BYTES":
        return _decode_bytes_raw(name, blob, count, utf8)
    wire = _WIRE_DTYPES[datatype]
    expected = count * wire.itemsize
    if len(blob) != expected:
        raise TensorError(
            f"input {name!r}: raw data has {len(blob)} bytes, expected {expected} "
            f"({count} x {datatype} of {wire.itemsize} bytes)"
        )
    arr = np.frombuffer(blob, dtype=wire)
    if datatype == "BOOL":
        return arr != 0
    if not _LITTLE and wire.itemsize > 1:
        return arr.astype(DATATYPES[datatype])
    if not arr.flags.aligned:
        return arr.copy()
    return arr


def _decode_typed(name: str, datatype: str, contents, count: int, utf8: bool) -> np.ndarray:
    wanted = _CONTENT_FIELD.get(datatype)
    if wanted is None:
        raise TensorError(f"input {name!r}: {datatype} data can only be sent in raw_input_contents")
    present = [fd.name for fd, _ in contents.ListFields()]
    if present and present != [wanted]:
        wrong = [p for p in present if p != wanted]
        raise TensorError(
            f"input {name!r}: datatype {datatype} must use contents.{wanted}, "
            f"got {', '.join('contents.' + w for w in wrong)}"
        )
    values = getattr(contents, wanted)
    n = len(values)
    if n != count:
        raise TensorError(f"input {name!r}: contents.{wanted} has {n} values, the shape needs {count}")
    if datatype == "BYTES":
        out = np.empty(count, dtype=object)
        if count:
            out[:] = list(values)
            if utf8:
                _to_str(name, out)
        return out
    dtype = DATATYPES[datatype]
    if datatype in _NARROW:
        wide = np.array(values, dtype=np.int64 if datatype.startswith("INT") else np.uint64)
        if n:
            info = np.iinfo(dtype)
            lo, hi = wide.min(), wide.max()
            if lo < info.min or hi > info.max:
                raise TensorError(
                    f"input {name!r}: value out of range for {datatype} "
                    f"([{info.min}, {info.max}], got {lo if lo < info.min else hi})"
                )
        return wide.astype(dtype)
    return np.array(values, dtype=dtype)



def _encode_bytes(name: str, arr: np.ndarray) -> bytes:
    pack = _LEN.pack
    parts: list[bytes] = []
    append = parts.append
    for item in arr.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        elif not isinstance(item, bytes | bytearray | memoryview):
            raise TensorError(
                f"output {name!r}: BYTES element of type {type(item).__name__} is not str or bytes"
            )
        append(pack(len(item)))
        append(bytes(item))
    return b"".join(parts)

"""One tensor's bytes on the KServe V2 wire: raw blobs, BYTES length framing, typed contents.

:mod:`plane.tensors` validates a whole request or response (input names, signatures, element
counts, the request's size budget, requested outputs) and calls down here to turn one input's
data into an array, or one BYTES output into its raw blob. Every decoder checks what the data
will cost *before* allocating anything for it: the element count the shape asks for must match
the bytes actually present, and the decoded size (:func:`decoded_cost`) must fit the budget the
request has left.

* numeric raw tensors are little-endian and become arrays with :func:`numpy.frombuffer` (no
  copy on little-endian hosts; unaligned buffers are copied, BOOL is any non-zero byte);
* ``BYTES`` elements in raw form are each prefixed by a 4-byte little-endian length. The
  framing is walked once, storing only offsets (one tight loop; when every prefix is equal it
  is checked with numpy instead), and validated in full -- element count, every length in
  bounds, no trailing bytes -- before any element object exists. Elements are then built in
  one C-level pass (``numpy.fromiter`` over ``map``): for ASCII data, slices of one ``str``
  decoded at once; otherwise one ``bytes.decode`` per element;
* typed contents come from the one ``*_contents`` field of the datatype (FP16 has none), with
  a range check where the field is wider than the datatype (INT8/INT16/UINT8/UINT16);
* BYTES outputs are framed with numpy: one ``join`` of the payload, the length prefixes
  scattered into place.

Nothing here keeps state between calls: every function is safe to run on several threads.

The datatype table and :class:`TensorError` live here because both layers need them; import
them from :mod:`plane.tensors`, which re-exports them.
"""

from __future__ import annotations

import itertools
import struct
import sys
from array import array
from typing import NoReturn

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

#: What one decoded BYTES element costs besides its data: the object array's pointer (8) and
#: the ``str``/``bytes`` object header (33-80 bytes in CPython), rounded up.
BYTES_ITEM_COST = 64

_LITTLE = sys.byteorder == "little"
_LEN = struct.Struct("<I")
_NATIVE_U32 = _LITTLE and struct.calcsize("I") == 4  # memoryview.cast("I") reads the wire's lengths
_NAME_SHOWN = 64


def _q(name: str) -> str:
    """A client-supplied name (or datatype) quoted for a message, cut to ~64 characters."""
    if len(name) <= _NAME_SHOWN:
        return repr(name)
    return repr(name[:_NAME_SHOWN]) + f"...({len(name)} chars)"


def decoded_cost(datatype: str, count: int, data_bytes: int = 0) -> int:
    """Bytes that ``count`` decoded elements hold: ``count x itemsize`` for the numeric
    datatypes; for BYTES the element data plus :data:`BYTES_ITEM_COST` per element."""
    if datatype == "BYTES":
        return count * BYTES_ITEM_COST + data_bytes
    return count * DATATYPES[datatype].itemsize


def _check_budget(name: str, cost: int, budget: int) -> None:
    if cost > budget:
        raise TensorError(
            f"input {_q(name)}: decodes to {cost} bytes, more than the {max(budget, 0)} bytes left "
            "of the request's limit"
        )


# --- BYTES framing ------------------------------------------------------------------------

def _bytes_offsets(name: str, blob: bytes, count: int):
    """``(starts, ends)`` of the ``count`` elements of a framed BYTES blob, as sequences of
    Python ints, after validating the whole framing. Nothing is allocated per element."""
    end = len(blob)
    if count * 4 > end:
        raise TensorError(
            f"input {_q(name)}: truncated length prefix: {count} BYTES elements need at least "
            f"{count * 4} bytes, the data has {end}"
        )
    if count == 0:
        if end:
            raise TensorError(f"input {_q(name)}: {end} trailing bytes after 0 BYTES elements")
        return range(0), range(0)
    (first,) = _LEN.unpack_from(blob, 0)
    step = 4 + first
    if end == count * step:  # every element may be the same length: one vectorised check
        prefixes = np.frombuffer(blob, np.uint8).reshape(count, step)[:, :4]
        if (prefixes == prefixes[0]).all():
            return range(4, end + 4, step), range(step, end + step, step)
    ends = array("q", [0]) * count  # 8 bytes an element, bounded by the blob (>= 4 each)
    pos = 0
    i = 0
    if _NATIVE_U32:  # the length at pos is word pos >> 2 of the uint32 view at phase pos & 3
        whole = memoryview(blob)
        views = [whole[k : k + (end - k) // 4 * 4].cast("I") for k in range(4)]
        try:
            for i in range(count):
                pos += 4 + views[pos & 3][pos >> 2]
                ends[i] = pos
        except IndexError:  # a prefix at or past the end of the data
            _framing_error(name, end, count, i, pos, ends)
        finally:
            for view in views:
                view.release()
            whole.release()
    else:
        unpack_from = _LEN.unpack_from
        try:
            for i in range(count):
                pos += 4 + unpack_from(blob, pos)[0]
                ends[i] = pos
        except struct.error:
            _framing_error(name, end, count, i, pos, ends)
    if pos != end:
        _framing_error(name, end, count, count, pos, ends)
    stop = np.frombuffer(ends, dtype=np.int64)
    start = np.empty_like(stop)
    start[0] = 4
    np.add(stop[:-1], 4, out=start[1:])
    return start.data, stop.data  # memoryviews: iterating them yields Python ints


def _framing_error(name: str, end: int, count: int, i: int, pos: int, ends) -> NoReturn:
    """Raise the error for element ``i``'s prefix at ``pos`` being unreadable (``i < count``)
    or for the walk stopping at ``pos`` instead of at ``end`` (``i == count``); ``ends`` holds
    the end of every element before ``i``."""
    if pos > end:  # the previous element ran past the end: that one is wrong
        start = (ends[i - 2] if i >= 2 else 0) + 4
        raise TensorError(
            f"input {_q(name)}: BYTES element {i - 1} declares {ends[i - 1] - start} bytes but only "
            f"{end - start} remain"
        )
    if i < count:
        raise TensorError(
            f"input {_q(name)}: BYTES element {i} has a truncated length prefix "
            f"(expected {count} elements, data ends at byte {end})"
        )
    raise TensorError(
        f"input {_q(name)}: {end - pos} trailing bytes after {count} BYTES elements "
        "(element count does not match the shape)"
    )


def _decode_bytes_raw(name: str, blob: bytes, count: int, utf8: bool, budget: int) -> tuple[np.ndarray, int]:
    cost = decoded_cost("BYTES", count, max(len(blob) - 4 * count, 0))
    if count * 4 <= len(blob):  # otherwise the framing error below is the better message
        _check_budget(name, cost, budget)
    starts, ends = _bytes_offsets(name, blob, count)
    if not utf8:
        return _chunked(map(blob.__getitem__, map(slice, starts, ends)), count), cost
    if blob.isascii():  # prefixes and payload all ASCII: slice one str decoded at once
        text = blob.decode("ascii")
        return _chunked(map(text.__getitem__, map(slice, starts, ends)), count), cost
    try:
        items = _chunked(map(bytes.decode, map(blob.__getitem__, map(slice, starts, ends))), count)
    except UnicodeDecodeError:
        _utf8_error(name, map(blob.__getitem__, map(slice, starts, ends)))
    return items, cost


CHUNK = 32768  # elements built per C call: the GIL is free between chunks (a worker thread
# decoding a huge request must not stall the event loop for the whole decode)


def _chunked(items, count: int) -> np.ndarray:
    """``np.fromiter(items, object, count)`` in slices of CHUNK elements."""
    if count <= CHUNK:
        return np.fromiter(items, dtype=object, count=count)
    out = np.empty(count, dtype=object)
    for lo in range(0, count, CHUNK):
        n = min(CHUNK, count - lo)
        out[lo:lo + n] = np.fromiter(itertools.islice(items, n), dtype=object, count=n)
    return out


def _utf8_error(name: str, items) -> NoReturn:
    for i, item in enumerate(items):
        try:
            item.decode("utf-8")
        except UnicodeDecodeError as exc:
            raise TensorError(f"input {_q(name)}: BYTES element {i} is not valid UTF-8 ({exc.reason})") from None
    raise TensorError(f"input {_q(name)}: BYTES data is not valid UTF-8")  # pragma: no cover


# --- raw and typed decoding -----------------------------------------------------------------

def _decode_raw(name: str, datatype: str, blob: bytes, count: int, utf8: bool, budget: int) -> tuple[np.ndarray, int]:
    """One input's raw blob as a flat array, and what it costs (see :func:`decoded_cost`)."""
    if datatype == "BYTES":
        return _decode_bytes_raw(name, blob, count, utf8, budget)
    wire = _WIRE_DTYPES[datatype]
    expected = count * wire.itemsize
    if len(blob) != expected:
        raise TensorError(
            f"input {_q(name)}: raw data has {len(blob)} bytes, expected {expected} "
            f"({count} x {datatype} of {wire.itemsize} bytes)"
        )
    _check_budget(name, expected, budget)
    arr = np.frombuffer(blob, dtype=wire)
    if datatype == "BOOL":
        return arr != 0, expected
    if not _LITTLE and wire.itemsize > 1:
        return arr.astype(DATATYPES[datatype]), expected
    if not arr.flags.aligned:
        return arr.copy(), expected
    return arr, expected


def _decode_typed(name: str, datatype: str, contents, count: int, utf8: bool, budget: int) -> tuple[np.ndarray, int]:
    """One input's typed ``contents`` as a flat array, and what it costs."""
    wanted = _CONTENT_FIELD.get(datatype)
    if wanted is None:
        raise TensorError(f"input {_q(name)}: {datatype} data can only be sent in raw_input_contents")
    present = [fd.name for fd, _ in contents.ListFields()]
    if present and present != [wanted]:
        wrong = [p for p in present if p != wanted]
        raise TensorError(
            f"input {_q(name)}: datatype {datatype} must use contents.{wanted}, "
            f"got {', '.join('contents.' + w for w in wrong)}"
        )
    values = getattr(contents, wanted)
    n = len(values)
    if n != count:
        raise TensorError(f"input {_q(name)}: contents.{wanted} has {n} values, the shape needs {count}")
    if datatype == "BYTES":
        _check_budget(name, decoded_cost("BYTES", count), budget)
        items = list(values)  # one C-level pass; each element is copied out of the message
        cost = decoded_cost("BYTES", count, sum(map(len, items)))
        _check_budget(name, cost, budget)
        if not utf8:
            return np.fromiter(items, dtype=object, count=count), cost
        try:
            return np.fromiter(map(bytes.decode, items), dtype=object, count=count), cost
        except UnicodeDecodeError:
            _utf8_error(name, items)
    cost = decoded_cost(datatype, count)
    _check_budget(name, cost, budget)
    dtype = DATATYPES[datatype]
    if datatype in _NARROW:
        wide = np.fromiter(values, dtype=np.int64 if datatype.startswith("INT") else np.uint64, count=n)
        if n:
            info = np.iinfo(dtype)
            lo, hi = wide.min(), wide.max()
            if lo < info.min or hi > info.max:
                raise TensorError(
                    f"input {_q(name)}: value out of range for {datatype} "
                    f"([{info.min}, {info.max}], got {lo if lo < info.min else hi})"
                )
        return wide.astype(dtype), cost
    return np.fromiter(values, dtype=dtype, count=n), cost


# --- BYTES encoding -------------------------------------------------------------------------

def _frame(name: str, payload: bytes, lens: np.ndarray) -> bytes:
    """``payload`` (the elements back to back) with a 4-byte little-endian length before each."""
    n = lens.shape[0]
    if int(lens.max()) > 0xFFFFFFFF:
        raise TensorError(f"output {_q(name)}: a BYTES element of 4 GiB or more does not fit a length prefix")
    out = np.empty(4 * n + len(payload), dtype=np.uint8)
    prefix_at = np.empty(n, dtype=np.int64)
    prefix_at[0] = 0
    np.cumsum(lens[:-1] + 4, out=prefix_at[1:])
    le = lens.astype("<u4").view(np.uint8).reshape(n, 4)
    is_data = np.ones(out.shape[0], dtype=bool)
    for k in range(4):
        at = prefix_at + k
        out[at] = le[:, k]
        is_data[at] = False
    out[is_data] = np.frombuffer(payload, dtype=np.uint8)
    return out.tobytes()


def _encode_bytes(name: str, arr: np.ndarray) -> bytes:
    flat = arr.reshape(-1)
    if flat.shape[0] > CHUNK:  # frame big outputs chunk by chunk (the GIL is free in between)
        return b"".join(_encode_bytes(name, flat[lo:lo + CHUNK]) for lo in range(0, flat.shape[0], CHUNK))
    items = flat.tolist()
    n = len(items)
    if not n:
        return b""
    try:
        try:
            text = "".join(items)  # TypeError unless every element is a str
        except TypeError:
            if set(map(type, items)) != {bytes}:
                items = [_as_bytes(name, item) for item in items]
        else:
            payload = text.encode("utf-8")
            if len(payload) == len(text):  # ASCII: byte lengths are the str lengths
                return _frame(name, payload, np.fromiter(map(len, items), dtype=np.int64, count=n))
            items = list(map(str.encode, items))
    except UnicodeEncodeError as exc:
        raise TensorError(f"output {_q(name)}: a BYTES element is not encodable as UTF-8 ({exc.reason})") from None
    return _frame(name, b"".join(items), np.fromiter(map(len, items), dtype=np.int64, count=n))


def _as_bytes(name: str, item) -> bytes:
    if isinstance(item, str):
        return item.encode("utf-8")
    if isinstance(item, bytes | bytearray | memoryview):
        return bytes(item)
    raise TensorError(f"output {_q(name)}: BYTES element of type {type(item).__name__} is not str or bytes")

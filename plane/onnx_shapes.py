"""Which inputs and outputs an ONNX file declares with no shape at all: a walk of the protobuf
wire format.

onnxruntime reports ``[]`` both for a scalar and for a tensor declared without a shape (and runs
any shape for either); only the file tells them apart. The file is mapped, not read: weights are
skipped by their length prefixes, so a multi-GB model costs a few page faults.
"""

from __future__ import annotations

import mmap
import pathlib
from collections.abc import Iterator

__all__ = ["shapeless"]


def _varint(buf, pos: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return value, pos
        shift += 7


def _fields(buf, pos: int, stop: int) -> Iterator[tuple[int, int, int]]:
    """``(field number, start, end)`` of the length-delimited fields of the message in
    ``buf[pos:stop]``; other fields are skipped, their contents never read."""
    while pos < stop:
        key, pos = _varint(buf, pos)
        wire = key & 7
        if wire == 0:
            pos = _varint(buf, pos)[1]
        elif wire in (1, 5):
            pos += 8 if wire == 1 else 4
        elif wire == 2:
            size, pos = _varint(buf, pos)
            yield key >> 3, pos, pos + size
            pos += size
        else:
            raise ValueError("unsupported wire type")
    if pos != stop:
        raise ValueError("truncated message")


def _has_shape(buf, pos: int, stop: int) -> bool:
    """Whether a TypeProto (tensor_type = 1, sparse_tensor_type = 8) carries a shape (= 2)."""
    for num, start, end in _fields(buf, pos, stop):
        if num in (1, 8):
            return any(n == 2 for n, _, _ in _fields(buf, start, end))
    return True  # not a tensor: its rank is not ours to relax


def shapeless(path: pathlib.Path, names: set[str]) -> set[str]:
    """Which of ``names`` the model file declares with no shape at all (ModelProto.graph = 7,
    GraphProto.input = 11 / output = 12, ValueInfoProto name = 1, type = 2). The file is mapped,
    not read: weights are skipped by length. If it cannot be walked, all of ``names`` (accepting
    any shape is what onnxruntime does for them anyway)."""
    try:
        with open(path, "rb") as f, mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ) as buf:
            ranked: set[str] = set()
            for num, start, end in _fields(buf, 0, len(buf)):
                if num != 7:
                    continue
                for gnum, gstart, gend in _fields(buf, start, end):
                    if gnum not in (11, 12):
                        continue
                    vi = {n: (a, b) for n, a, b in _fields(buf, gstart, gend)}
                    if 1 in vi and (2 not in vi or _has_shape(buf, *vi[2])):
                        ranked.add(bytes(buf[vi[1][0]:vi[1][1]]).decode("utf-8", "replace"))
            return names - ranked
    except (OSError, ValueError, IndexError):
        return set(names)

"""Coverage-guided fuzzing of ``plane.tensors.decode_inputs`` with atheris (libFuzzer for Python).

What it checks, for every input the fuzzer makes:

* ``decode_inputs`` either returns arrays or raises :class:`plane.tensors.TensorError`; any other
  exception (IndexError, struct.error, numpy errors, MemoryError, ...) is a crash;
* a returned array has exactly the request's shape, the datatype's numpy dtype, native byte
  order and C-contiguous layout; a BYTES array holds only ``str`` (utf8) or ``bytes`` items;
* the limits hold: no input has more than ``max_elements`` elements, and the request's arrays
  hold no more than ``max_bytes`` (their ``nbytes``, and the decoder's own charge: BYTES data +
  64 bytes an element), with ``max_bytes`` drawn per input from 0 bytes to 1 MiB;
* what was decoded is exactly what was sent: a numeric raw blob is ``count x itemsize`` bytes,
  a BYTES blob re-framed from the decoded elements is the blob (every prefix in bounds, the
  element count equal to the shape, no trailing bytes), typed contents have ``count`` values;
* with a model signature (``specs``) given, success means every input matched it (an
  ``any_rank`` spec matches any shape);
* :func:`plane.tensors.request_payload_bytes` returns a non-negative int for any request.

Inputs come two ways, chosen by the first byte: the rest is parsed as a serialized
``ModelInferRequest`` (what arrives on the wire), or it drives a ``FuzzedDataProvider`` that
builds a structured request (names, datatypes, shapes up to 2**63 - 1, raw blobs or typed
contents; BYTES blobs framed, cut, padded, with lying or all-equal prefixes, long or non-ASCII
or invalid UTF-8 elements) so that the fuzzer reaches the deep paths quickly.

Run (not part of CI; atheris is not a project dependency, so install it beside the venv)::

    .venv/bin/python -m pip install --target /tmp/atheris-site atheris
    mkdir -p /tmp/fuzz-corpus
    PYTHONPATH=/tmp/atheris-site:. .venv/bin/python bench/fuzz_tensors.py /tmp/fuzz-corpus \
        -max_total_time=120 -rss_limit_mb=2048 -timeout=10

``-rss_limit_mb`` and ``-timeout`` make an unbounded allocation or a slow path a crash too.

Any libFuzzer flag works (``-runs=N``, ``-jobs=N``, ``-dict=...``). A crash writes
``crash-<sha1>`` in the working directory; replay it with
``python bench/fuzz_tensors.py crash-<sha1>``. Without atheris installed, ``--smoke N`` runs N
random inputs through the same checks (no coverage guidance)::

    .venv/bin/python bench/fuzz_tensors.py --smoke 20000
"""

from __future__ import annotations

import os
import random
import struct
import sys

try:
    import atheris
except ImportError:  # the --smoke mode needs only the standard library
    atheris = None

if atheris is not None:
    with atheris.instrument_imports(include=["plane"]):
        from plane import tensors
else:
    from plane import tensors

import numpy as np
from google.protobuf.message import DecodeError

from plane.proto import inference_pb2 as pb
from plane.tensor_wire import _CONTENT_FIELD, BYTES_ITEM_COST

MAX_ELEMENTS = 1 << 16  # keeps every run small: decode must refuse anything bigger with TensorError
MAX_BYTES = [1 << 20, 4096, 256, 0]  # chosen by the mode byte
DATATYPES = list(tensors.DATATYPES) + ["BYTES"] * 4 + ["", "FP8", "fp32", "STRING", "INT128"]
FIELDS = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
          "fp32_contents", "fp64_contents", "bytes_contents"]
DIMS = [0, 1, 2, 3, 4, 7, 16, -1, -2, 1 << 16, 1 << 26, 1 << 31, 1 << 62, (1 << 63) - 1, -(1 << 63)]
SPECS = {
    "x": tensors.TensorSpec("x", "FP32", [-1, 4]),
    "s": tensors.TensorSpec("s", "BYTES", [-1]),
    "b": tensors.TensorSpec("b", "BOOL", [2, -1]),
    "u": tensors.TensorSpec("u", "INT64", [-1], any_rank=True),
}
ITEMS = [b"", b"a", "é".encode(), b"\xff", b"\xc3", b"\xed\xa0\x80", b"\0\0\0\0", b"x" * 130, "€".encode() * 50]


class _Rng:
    """The same interface over atheris' FuzzedDataProvider or random.Random (smoke mode)."""

    def __init__(self, data: bytes, rnd: random.Random | None = None):
        self.fdp = atheris.FuzzedDataProvider(data) if rnd is None else None
        self.rnd = rnd

    def int(self, lo: int, hi: int) -> int:
        return self.fdp.ConsumeIntInRange(lo, hi) if self.fdp else self.rnd.randint(lo, hi)

    def pick(self, seq):
        return seq[self.int(0, len(seq) - 1)]

    def bytes(self, n: int) -> bytes:
        return self.fdp.ConsumeBytes(n) if self.fdp else self.rnd.randbytes(self.rnd.randint(0, n))

    def text(self, n: int) -> str:
        if self.fdp:
            return self.fdp.ConsumeUnicodeNoSurrogates(n)
        return "".join(chr(self.rnd.randint(32, 0x2FF)) for _ in range(self.rnd.randint(0, n)))

    def floats(self, n: int) -> list[float]:
        if self.fdp:
            return [self.fdp.ConsumeRegularFloat() for _ in range(n)]
        return [self.rnd.uniform(-1e6, 1e6) for _ in range(n)]


def _frame(items: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(i)) + i for i in items)


def _bytes_blob(rng: _Rng, count: int) -> bytes:
    """A BYTES blob for ``count`` elements, right or wrong in one of several ways."""
    kind = rng.int(0, 5)
    n = min(count, 64)
    if kind == 0:  # right count, mixed elements (long ones have prefix bytes >= 0x80)
        return _frame([rng.pick(ITEMS) if rng.int(0, 1) else rng.bytes(8) for _ in range(n)])
    if kind == 1:  # all prefixes equal (the vectorised path), maybe one byte off
        item = rng.pick(ITEMS)
        return _frame([item] * n) + b"\0" * rng.int(0, 1)
    if kind == 2:  # a prefix claiming more than is there
        return struct.pack("<I", rng.pick([1, 9, 1 << 20, 2**32 - 1])) + rng.bytes(8)
    if kind == 3:  # few bytes for a huge element count
        return b"\0" * rng.int(0, 12)
    blob = _frame([rng.bytes(8) for _ in range(rng.int(0, 6))])
    return blob[: rng.int(0, len(blob))] if kind == 4 else blob + rng.bytes(3)


def _count(shape) -> int:
    count = 1
    for d in shape:
        count *= max(d, 0)
    return count


def build_request(rng: _Rng) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    if rng.int(0, 3) == 0:  # one BYTES input "s", a plausible shape: the framing paths in depth
        shape = [rng.int(0, 70)] if rng.int(0, 3) else [rng.int(0, 5), rng.int(0, 5)]
        req.inputs.add(name="s", datatype="BYTES", shape=shape)
        req.raw_input_contents.append(_bytes_blob(rng, _count(shape)))
        return req
    n = rng.int(0, 3)
    use_raw = rng.int(0, 1) == 1
    for i in range(n):
        name = rng.pick(["x", "s", "b", "u", f"in{i}", "", "x", "n" * 300])
        datatype = rng.pick(DATATYPES)
        shape = [rng.pick(DIMS) for _ in range(rng.int(0, 4))]
        inp = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if use_raw:
            if rng.int(0, 9):  # sometimes leave a blob out
                kind = 1 if datatype == "BYTES" and rng.int(0, 1) else rng.int(0, 3)
                if kind == 0:
                    size = tensors.DATATYPES[datatype].itemsize if datatype in tensors.DATATYPES else 1
                    req.raw_input_contents.append(b"\x01" * min(_count(shape) * size, 4096))
                elif kind == 1:
                    req.raw_input_contents.append(_bytes_blob(rng, _count(shape)))
                else:
                    req.raw_input_contents.append(rng.bytes(256))
            if rng.int(0, 15) == 0:  # sometimes mix in typed contents
                inp.contents.fp32_contents.append(1.0)
        else:
            field = rng.pick(FIELDS)
            count = min(_count(shape), 40) if rng.int(0, 1) else rng.int(0, 40)
            target = getattr(inp.contents, field)
            if field == "bytes_contents":
                target.extend(rng.pick(ITEMS) if rng.int(0, 1) else rng.bytes(6) for _ in range(count))
            elif field == "bool_contents":
                target.extend(bool(rng.int(0, 1)) for _ in range(count))
            elif field in ("fp32_contents", "fp64_contents"):
                target.extend(rng.floats(count))
            elif field == "int_contents":
                target.extend(rng.int(-(2**31), 2**31 - 1) for _ in range(count))
            elif field == "int64_contents":
                target.extend(rng.int(-(2**63), 2**63 - 1) for _ in range(count))
            elif field == "uint_contents":
                target.extend(rng.int(0, 2**32 - 1) for _ in range(count))
            else:
                target.extend(rng.int(0, 2**64 - 1) for _ in range(count))
    return req


def _cost(datatype: str, arr: np.ndarray) -> int:
    if datatype != "BYTES":
        return arr.nbytes
    data = sum(len(v.encode() if isinstance(v, str) else v) for v in arr.reshape(-1).tolist())
    return arr.size * BYTES_ITEM_COST + data


def check(req: pb.ModelInferRequest, specs, utf8: bool, max_bytes: int = 1 << 20) -> None:
    estimate = tensors.request_payload_bytes(req)
    if not isinstance(estimate, int) or estimate < 0:
        raise AssertionError(f"request_payload_bytes gave {estimate!r}")
    try:
        out = tensors.decode_inputs(req, specs, max_elements=MAX_ELEMENTS, max_bytes=max_bytes, utf8=utf8)
    except tensors.TensorError as exc:
        if not str(exc) or len(str(exc)) > 1000:
            raise AssertionError(f"TensorError message of {len(str(exc))} chars") from exc
        return
    if len(out) != len(req.inputs):
        raise AssertionError(f"{len(out)} arrays for {len(req.inputs)} inputs")
    if sum(a.nbytes for a in out.values()) > max_bytes:
        raise AssertionError(f"arrays hold more than max_bytes={max_bytes}")
    if sum(_cost(inp.datatype, out[inp.name]) for inp in req.inputs) > max_bytes:
        raise AssertionError(f"decoded size over max_bytes={max_bytes}")
    for idx, inp in enumerate(req.inputs):
        arr = out[inp.name]
        if arr.size > max(MAX_ELEMENTS, 1):
            raise AssertionError(f"{inp.name}: {arr.size} elements > max_elements")
        if req.raw_input_contents:
            blob = req.raw_input_contents[idx]
            if inp.datatype == "BYTES":
                items = [v.encode() if isinstance(v, str) else v for v in arr.reshape(-1).tolist()]
                if _frame(items) != blob:
                    raise AssertionError(f"{inp.name}: decoded BYTES do not re-frame to the blob")
            elif arr.size * tensors.DATATYPES[inp.datatype].itemsize != len(blob):
                raise AssertionError(f"{inp.name}: {len(blob)}-byte blob decoded to {arr.size} elements")
        elif arr.size != len(getattr(inp.contents, _CONTENT_FIELD[inp.datatype])):
            raise AssertionError(f"{inp.name}: typed values and decoded element count differ")
        if arr.shape != tuple(inp.shape):
            raise AssertionError(f"{inp.name}: shape {arr.shape} != {tuple(inp.shape)}")
        if arr.dtype != tensors.DATATYPES[inp.datatype]:
            raise AssertionError(f"{inp.name}: dtype {arr.dtype} for {inp.datatype}")
        if not (arr.flags.c_contiguous and arr.dtype.isnative):
            raise AssertionError(f"{inp.name}: not native C-contiguous")
        if inp.datatype == "BYTES":
            want = str if utf8 else bytes
            if not all(isinstance(v, want) for v in arr.reshape(-1)):
                raise AssertionError(f"{inp.name}: BYTES items are not all {want.__name__}")
        if specs is not None:
            spec = specs[inp.name]
            rank_ok = spec.any_rank or len(spec.shape) == len(inp.shape)
            if spec.datatype != inp.datatype or not rank_ok:
                raise AssertionError(f"{inp.name}: accepted against spec {spec}")


def one_input(data: bytes, rnd: random.Random | None = None) -> None:
    if not data and rnd is None:
        return
    mode = data[0] if data else rnd.randint(0, 255)
    specs = SPECS if mode & 2 else None
    utf8 = not (mode & 4)
    max_bytes = MAX_BYTES[(mode >> 3) & 3]
    if mode & 1 and rnd is None:
        try:
            req = pb.ModelInferRequest.FromString(data[1:])
        except (DecodeError, RecursionError, ValueError):
            return
    else:
        req = build_request(_Rng(data[1:], rnd))
        # through the wire, exactly as a server receives it
        req = pb.ModelInferRequest.FromString(req.SerializeToString())
    check(req, specs, utf8, max_bytes)


def smoke(n: int, seed: int = 0) -> None:
    rnd = random.Random(seed)
    for i in range(n):
        one_input(b"", rnd)
        if i and i % 5000 == 0:
            print(f"{i} inputs ok", flush=True)
    print(f"smoke: {n} random inputs, no failure")


def main() -> None:
    np.seterr(all="ignore")
    if len(sys.argv) >= 2 and sys.argv[1] == "--smoke":
        smoke(int(sys.argv[2]) if len(sys.argv) > 2 else 10000)
        return
    if atheris is None:
        sys.exit("atheris is not installed: `pip install atheris` (or run with --smoke N)")
    os.environ.setdefault("MESH_TEST", "1")
    atheris.Setup(sys.argv, one_input)
    atheris.Fuzz()


if __name__ == "__main__":
    main()

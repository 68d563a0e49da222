"""Coverage-guided fuzzing of ``plane.tensors.decode_inputs`` with atheris (libFuzzer for Python).

What it checks, for every input the fuzzer makes:

* ``decode_inputs`` either returns arrays or raises :class:`plane.tensors.TensorError`; any other
  exception (IndexError, struct.error, numpy errors, MemoryError, ...) is a crash;
* a returned array has exactly the request's shape, the datatype's numpy dtype, native byte
  order and C-contiguous layout; a BYTES array holds only ``str`` (utf8) or ``bytes`` items;
* with a model signature (``specs``) given, success means every input matched it.

Inputs come two ways, chosen by the first byte: the rest is parsed as a serialized
``ModelInferRequest`` (what arrives on the wire), or it drives a ``FuzzedDataProvider`` that
builds a structured request (names, datatypes, shapes, raw blobs or typed contents) so that
the fuzzer reaches the deep paths quickly.

Run (not part of CI)::

    /work/venv/bin/uv pip install --python /work/venv/bin/python atheris
    mkdir -p /tmp/fuzz-corpus
    python bench/fuzz_tensors.py /tmp/fuzz-corpus -max_total_time=120 -rss_limit_mb=2048 -timeout=10

Any libFuzzer flag works (``-runs=N``, ``-jobs=N``, ``-dict=...``). A crash writes
``crash-<sha1>`` in the working directory; replay it with
``python bench/fuzz_tensors.py crash-<sha1>``. Without atheris installed, ``--smoke N`` runs N
random inputs through the same checks (no coverage guidance)::

    python bench/fuzz_tensors.py --smoke 20000
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

MAX_ELEMENTS = 1 << 16  # keeps every run small: decode must refuse anything bigger with TensorError
DATATYPES = list(tensors.DATATYPES) + ["", "FP8", "fp32", "STRING", "INT128"]
FIELDS = ["bool_contents", "int_contents", "int64_contents", "uint_contents", "uint64_contents",
          "fp32_contents", "fp64_contents", "bytes_contents"]
DIMS = [0, 1, 2, 3, 4, 7, 16, -1, -2, 1 << 16, 1 << 31, 1 << 62, (1 << 63) - 1, -(1 << 63)]
SPECS = {
    "x": tensors.TensorSpec("x", "FP32", [-1, 4]),
    "s": tensors.TensorSpec("s", "BYTES", [-1]),
    "b": tensors.TensorSpec("b", "BOOL", [2, -1]),
}


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


def build_request(rng: _Rng) -> pb.ModelInferRequest:
    req = pb.ModelInferRequest(model_name="m")
    n = rng.int(0, 3)
    use_raw = rng.int(0, 1) == 1
    for i in range(n):
        name = rng.pick(["x", "s", "b", f"in{i}", "", "x"])
        datatype = rng.pick(DATATYPES)
        shape = [rng.pick(DIMS) for _ in range(rng.int(0, 4))]
        inp = req.inputs.add(name=name, datatype=datatype, shape=shape)
        if use_raw:
            if rng.int(0, 9):  # sometimes leave a blob out
                kind = rng.int(0, 3)
                if kind == 0:
                    count = 1
                    for d in shape:
                        count *= max(d, 0)
                    size = tensors.DATATYPES[datatype].itemsize if datatype in tensors.DATATYPES else 1
                    req.raw_input_contents.append(b"\x01" * min(count * size, 4096))
                elif kind == 1:
                    items = [rng.bytes(8) for _ in range(rng.int(0, 6))]
                    blob = _frame(items)
                    req.raw_input_contents.append(blob[: rng.int(0, len(blob))])
                else:
                    req.raw_input_contents.append(rng.bytes(256))
            if rng.int(0, 15) == 0:  # sometimes mix in typed contents
                inp.contents.fp32_contents.append(1.0)
        else:
            field = rng.pick(FIELDS)
            count = rng.int(0, 40)
            target = getattr(inp.contents, field)
            if field == "bytes_contents":
                target.extend(rng.bytes(6) for _ in range(count))
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


def check(req: pb.ModelInferRequest, specs, utf8: bool) -> None:
    try:
        out = tensors.decode_inputs(req, specs, max_elements=MAX_ELEMENTS, utf8=utf8)
    except tensors.TensorError as exc:
        if not str(exc):
            raise AssertionError("TensorError without a message") from exc
        return
    if len(out) != len(req.inputs):
        raise AssertionError(f"{len(out)} arrays for {len(req.inputs)} inputs")
    for inp in req.inputs:
        arr = out[inp.name]
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
            if spec.datatype != inp.datatype or len(spec.shape) != len(inp.shape):
                raise AssertionError(f"{inp.name}: accepted against spec {spec}")


def one_input(data: bytes, rnd: random.Random | None = None) -> None:
    if not data and rnd is None:
        return
    mode = data[0] if data else rnd.randint(0, 255)
    specs = SPECS if mode & 2 else None
    utf8 = not (mode & 4)
    if mode & 1 and rnd is None:
        try:
            req = pb.ModelInferRequest.FromString(data[1:])
        except (DecodeError, RecursionError, ValueError):
            return
    else:
        req = build_request(_Rng(data[1:], rnd))
        # through the wire, exactly as a server receives it
        req = pb.ModelInferRequest.FromString(req.SerializeToString())
    check(req, specs, utf8)


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

"""BYTES tensors: decode and encode time of the codec in plane.tensors vs the per-element loop it replaced.

For each request size (default 1, 8, 24, 60 MB) it builds one raw BYTES input of ~20-byte
elements (lengths 16-24, so not the all-equal fast path; ``--fixed`` makes them all 20 bytes,
``--text utf8`` puts a non-ASCII character in every element), then times, best of ``--repeat``:

* decode: the old approach (reimplemented below as it was: a Python loop that unpacks each
  prefix, copies each element out of a memoryview into the object array, then a second loop
  decoding each to ``str``) against ``plane.tensors.decode_inputs`` (``str`` elements, which is
  what onnxruntime's string inputs need);
* encode: the old loop (``tolist``, encode each ``str``, pack each prefix, ``join``) against
  ``plane.tensors.encode_outputs``; both append the blob to a ``ModelInferResponse``.

Both sides check that they produce the same result. Run::

    .venv/bin/python bench/bytes_decode.py            # 1 8 24 60 MB
    .venv/bin/python bench/bytes_decode.py --sizes 24 --repeat 5 --fixed

Old and new runs alternate, so the machine's other load hits both alike; still, compare the
ratios rather than the absolute times on a shared machine.
"""

from __future__ import annotations

import argparse
import struct
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from plane.proto import inference_pb2 as pb  # noqa: E402
from plane.tensors import TensorError, decode_inputs, encode_outputs  # noqa: E402

_LEN = struct.Struct("<I")


# --- the old approach, as plane/tensor_wire.py had it ---------------------------------------

def old_decode(name: str, blob: bytes, count: int) -> np.ndarray:
    out = np.empty(count, dtype=object)
    view = memoryview(blob)
    end = len(blob)
    pos = 0
    unpack = _LEN.unpack_from
    for i in range(count):
        if pos + 4 > end:
            raise TensorError(f"input {name!r}: BYTES element {i} has a truncated length prefix")
        (length,) = unpack(view, pos)
        pos += 4
        if pos + length > end:
            raise TensorError(f"input {name!r}: BYTES element {i} declares {length} bytes")
        out[i] = bytes(view[pos : pos + length])
        pos += length
    if pos != end:
        raise TensorError(f"input {name!r}: {end - pos} trailing bytes")
    for i in range(out.shape[0]):
        out[i] = out[i].decode("utf-8")
    return out


def old_encode(arr: np.ndarray) -> bytes:
    pack = _LEN.pack
    parts: list[bytes] = []
    append = parts.append
    for item in arr.reshape(-1).tolist():
        if isinstance(item, str):
            item = item.encode("utf-8")
        append(pack(len(item)))
        append(bytes(item))
    return b"".join(parts)


# --- the benchmark --------------------------------------------------------------------------

def make_blob(megabytes: float, fixed: bool, text: str, seed: int = 0) -> tuple[bytes, int]:
    rng = np.random.default_rng(seed)
    target = int(megabytes * 1e6)
    count = target // 24  # ~20 bytes of data + 4 of prefix an element
    lens = np.full(count, 20) if fixed else rng.integers(16, 25, count)
    letters = np.frombuffer(b"abcdefghijklmnopqrstuvwxyz0123456789 ", np.uint8)
    data = rng.choice(letters, int(lens.sum())).tobytes()
    items = []
    pos = 0
    for n in lens.tolist():
        item = data[pos : pos + n]
        if text == "utf8":
            item = "é".encode() + item[2:]
        items.append(_LEN.pack(len(item)) + item)
        pos += n
    return b"".join(items), count


def best_of(old, new, repeat: int) -> tuple[float, float, object, object]:
    """Best time of each, runs alternating so that the machine's load hits both alike."""
    times: tuple[list[float], list[float]] = ([], [])
    results: list[object] = [None, None]
    for _ in range(repeat):
        for k, fn in enumerate((old, new)):
            results[k] = None  # the previous result is freed before the next run
            t0 = time.perf_counter()
            results[k] = fn()
            times[k].append(time.perf_counter() - t0)
    return min(times[0]), min(times[1]), results[0], results[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--sizes", type=float, nargs="+", default=[1, 8, 24, 60], help="request sizes, MB")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--fixed", action="store_true", help="all elements 20 bytes")
    ap.add_argument("--text", choices=["ascii", "utf8"], default="ascii")
    args = ap.parse_args()
    print(f"BYTES, {'fixed 20' if args.fixed else '16-24'}-byte {args.text} elements, best of {args.repeat}")
    print(f"{'MB':>6} {'elements':>10} | {'decode old':>10} {'new':>8} {'ratio':>6} | "
          f"{'encode old':>10} {'new':>8} {'ratio':>6}")
    for mb in args.sizes:
        blob, count = make_blob(mb, args.fixed, args.text)
        req = pb.ModelInferRequest()
        req.inputs.add(name="s", datatype="BYTES", shape=[count])
        req.raw_input_contents.append(blob)
        req = pb.ModelInferRequest.FromString(req.SerializeToString())
        raw = req.raw_input_contents[0]
        t_old, t_new, a_old, a_new = best_of(
            lambda raw=raw, count=count: old_decode("s", raw, count),
            lambda req=req: decode_inputs(req, max_elements=1 << 30, max_bytes=1 << 34)["s"],
            args.repeat)
        assert isinstance(a_old, np.ndarray) and isinstance(a_new, np.ndarray)
        if a_old.tolist() != a_new.tolist():
            raise SystemExit("old and new decoders disagree")
        def encode_old(a=a_new):
            resp = pb.ModelInferResponse()
            resp.outputs.add(name="o", datatype="BYTES", shape=a.shape)
            resp.raw_output_contents.append(old_encode(a))
            return resp

        def encode_new(a=a_new):
            resp = pb.ModelInferResponse()
            encode_outputs(resp, {"o": a})
            return resp

        e_old, e_new, r_old, r_new = best_of(encode_old, encode_new, args.repeat)
        assert isinstance(r_old, pb.ModelInferResponse) and isinstance(r_new, pb.ModelInferResponse)
        if r_old.raw_output_contents[0] != r_new.raw_output_contents[0] or r_new.raw_output_contents[0] != blob:
            raise SystemExit("old and new encoders disagree")
        print(f"{len(blob) / 1e6:6.1f} {count:10d} | {t_old:9.3f}s {t_new:7.3f}s {t_old / t_new:5.1f}x | "
              f"{e_old:9.3f}s {e_new:7.3f}s {e_old / e_new:5.1f}x", flush=True)


if __name__ == "__main__":
    main()

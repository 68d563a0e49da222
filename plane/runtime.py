"""onnxruntime sessions: load a model file, describe its tensors, measure its memory, infer.

The measurement (:func:`measure`) is shared: every runtime in :mod:`plane.runtimes` (ONNX,
scikit-learn, XGBoost, LightGBM) measures its models with it, so sizes mean the same thing
whatever the format. ``ModelSession`` and ``ModelLoadError`` live in :mod:`plane.runtimes.base`
and are importable from here as before.

Memory accounting. A model's ``size`` is the heap memory its session holds: the growth of
the C allocator's bytes in use across creating the session *and* running it once on a
zero-filled input (dynamic dims become 1; onnxruntime allocates some state lazily on the
first run, and that belongs to the model; a run that fails does not fail the load). On
glibc it is read with ``mallinfo2()``: ``uordblks`` (in use in all arenas, thread arenas
included) plus ``hblkhd`` (mmapped chunks), with the session alive. ``size_method`` on the
ModelSession says which method was used. The figure is floored at the file size.

It replaced the growth of RSS, which page reuse hides: one 8.8 kB model loaded six times
in one pod measured 8,805 B (the file-size floor) five times and 57,344 B once, and about
20 of 50 demo models measured the 4,096 B floor. What makes the allocator figure repeatable:

* glibc's per-thread cache (tcache: up to 7 freed chunks per size up to 1 KiB) counts as
  in use, and its fill level differs before and after a load and between worker threads:
  repeated loads of one file spread up to 1.2×. Before each reading this module mallocs and
  frees 7 chunks of every tcache size on the loading thread (~0.3 ms), so the cache is
  full at both readings and cancels out.
* onnxruntime's CPU arena is off (``enable_cpu_mem_arena = False``). With it the first run
  reserves a 1 MiB chunk per session, which then grows with the largest request and is
  kept, so the figure would mostly be arena reservation. Per-request run time did not
  change measurably (off/on 0.93-1.03, ``bench/model_sizes.py --timing``).
* measured builds run alone (:class:`plane.size_memo.BuildLock`), Python's cyclic GC is
  paused while measuring, and a session measuring under 4 MiB is created three times (all
  alive, readings chained) and the median kept, so a one-off allocation elsewhere (a worker
  thread starting) is not charged to a 70 kB model. That costs a few ms per small model;
  larger ones load once.
* the readings' ~900 ``malloc``/``free`` calls go through ``ctypes.PyDLL``, which keeps the
  GIL: through ``ctypes.CDLL`` every call released and re-took it, and with the pod's event
  loop busy each re-take waited its turn, so one reading took 2-10 ms instead of 0.2 ms.

A file measured once is not measured again: inside :func:`plane.size_memo.measured_once`
(what a pod wraps each load in), :func:`measure` builds a file whose size is already known
once, without readings, and reports the size measured at the first load of that file
(``Measurement.reused``). Such builds may overlap each other, never a measured one.

Measured on a 2-core machine (``bench/model_sizes.py --models 7 --no-plane``): the 50 demo
models (0.1-6 kB files) hold 67-198 KiB each, all different, the 100-tree forest (3.6 MB
file) 17.8 MiB, the memory-bomb model (261 B file) 256.1 MiB. The same file over 6 loads in
one process and the first load in 2 fresh processes spreads at most 1.014× (max/min, three
runs). The count is process-wide: threads that allocate during the window still add noise;
with another thread running inference non-stop, 70-150 kB models spread up to 1.2× (18 MiB:
1.01×).

Without ``mallinfo2`` (not glibc) the RSS growth across the same window is used, floored at
the file size and 4096 (``size_method="rss"``).
"""

from __future__ import annotations

import ctypes
import gc
import pathlib
import time
from collections.abc import Callable, Collection, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Generic, TypeVar

import numpy as np
import onnxruntime as ort
import psutil

from plane import size_memo
from plane.onnx_shapes import shapeless as _shapeless
from plane.runtimes.base import ModelLoadError, ModelSession
from plane.tensors import DATATYPES, TensorError, TensorSpec, onnx_type_to_datatype

__all__ = ["Measurement", "ModelSession", "ModelLoadError", "load_session", "measure", "memory_in_use", "warm_up"]

_builds = size_memo.BuildLock()  # allocator deltas mean something only when no other build overlaps
T = TypeVar("T")


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _specs(args: list, unranked: Collection[str] = ()) -> dict[str, TensorSpec]:
    """TensorSpecs of onnxruntime NodeArgs. onnxruntime reports ``[]`` both for a scalar and
    for a tensor declared with no shape (and runs any shape for either); the names in
    ``unranked`` are the latter (see :func:`_shapeless`) and get ``any_rank`` specs, which
    ModelMetadata shows as ``[-1]``."""
    out: dict[str, TensorSpec] = {}
    for arg in args:
        try:
            datatype = onnx_type_to_datatype(arg.type)
        except (KeyError, ValueError, TensorError) as exc:
            raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type} which KServe V2 cannot carry") from exc
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
        unknown_rank = not shape and arg.name in unranked
        out[arg.name] = TensorSpec(arg.name, datatype, [-1] if unknown_rank else shape, any_rank=unknown_rank)
    return out


# --- allocator readings ---------------------------------------------------------------------

class _MallInfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in (
        "arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


# Request sizes that land in each of glibc's 64 tcache bins (chunk sizes 32 .. 1040 bytes).
_TCACHE_SIZES = [24 + 16 * i for i in range(64)]
_TCACHE_COUNT = 7  # glibc's default glibc.malloc.tcache_count


def _glibc_reader() -> Callable[[], int] | None:
    try:
        libc = ctypes.PyDLL(None)  # keeps the GIL across each call (see the module doc)
        mallinfo2 = libc.mallinfo2  # glibc >= 2.33
        malloc, free = libc.malloc, libc.free
    except (OSError, AttributeError):
        return None
    mallinfo2.restype = _MallInfo2
    mallinfo2.argtypes = []
    malloc.restype = ctypes.c_void_p
    malloc.argtypes = [ctypes.c_size_t]
    free.restype = None
    free.argtypes = [ctypes.c_void_p]
    sizes = [s for s in _TCACHE_SIZES for _ in range(_TCACHE_COUNT)]

    def in_use() -> int:
        # Fill this thread's tcache: freed chunks parked there count as in use, so the
        # cache must be equally full at both readings of a delta. (About 0.3 ms.)
        held = list(map(malloc, sizes))
        list(map(free, held))
        info = mallinfo2()
        return int(info.uordblks + info.hblkhd)

    return in_use


_in_use = _glibc_reader()


def memory_in_use() -> tuple[int, str]:
    """``(bytes, method)``: the allocator's bytes in use ("mallinfo2"), normalised for the
    calling thread's tcache (see the module doc), or without glibc the process RSS ("rss")."""
    if _in_use is not None:
        return _in_use(), "mallinfo2"
    return psutil.Process().memory_info().rss, "rss"


@contextmanager
def _gc_paused() -> Iterator[None]:
    was_enabled = gc.isenabled()
    gc.disable()
    try:
        yield
    finally:
        if was_enabled:
            gc.enable()


def _zero_inputs(specs: dict[str, TensorSpec]) -> dict[str, np.ndarray] | None:
    """A zero-filled batch of one for every input (dynamic dims become 1), or None if the
    model has an input this module cannot build."""
    feed: dict[str, np.ndarray] = {}
    for name, spec in specs.items():
        dtype = DATATYPES.get(spec.datatype)
        if dtype is None:
            return None
        shape = [1 if d < 0 else d for d in spec.shape]
        if dtype == np.dtype(object):
            feed[name] = np.full(shape, "", dtype=object)
        else:
            feed[name] = np.zeros(shape, dtype=dtype)
    return feed


def _first_run(sess: ort.InferenceSession, specs: dict[str, TensorSpec]) -> bool:
    feed = _zero_inputs(specs)
    if feed is None:
        return False
    try:
        sess.run(None, feed)
    except Exception:  # noqa: BLE001 - a model may reject zeros; what it allocated is still counted
        return False
    return True


def _session_options(intra_threads: int) -> ort.SessionOptions:
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, intra_threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    # Without the arena, memory a run needs is returned to the allocator afterwards, so the
    # measured size is what the session holds rather than a 1 MiB+ reservation per session.
    opts.enable_cpu_mem_arena = False
    return opts


# Sessions that measure smaller than this are created three times and the median delta is
# kept: a one-off allocation elsewhere in the process (a thread starting, a container of
# onnxruntime's growing) is then not charged to a model of a few dozen kB. Larger models
# are measured once; the same noise is a fraction of a percent of them.
_REPEAT_BELOW = 4 << 20
_REPEATS = 3


@dataclass
class Measurement(Generic[T]):
    """What :func:`measure` found: the object built first (kept alive) and what it holds."""

    value: T
    delta: int  # allocator bytes in use that the object holds (median of three when small)
    method: str  # "mallinfo2", or "rss" without glibc
    reused: bool = False  # delta and method are those measured at an earlier load of the same file


def measure(build: Callable[[], T], *, prepare: Callable[[], object] | None = None,
            repeats: int | Callable[[int], int] = _REPEATS, collect: bool = False) -> Measurement[T]:
    """Measure what ``build()`` (load a model *and* run it once) leaves allocated.

    Under the module's load lock, with the cyclic GC paused: the bytes in use before and after
    ``build()``, with its result alive. A result holding under 4 MiB is built ``repeats - 1``
    more times (``repeats`` may be a function of the first delta; all alive, each reading
    chained to the previous one) and the median delta kept;
    the extra results are freed before the lock is released. ``prepare`` runs under the lock
    before the first reading (a library's one-time setup, which no model should be charged).
    ``collect`` runs a young-generation collection before each reading, for libraries whose
    Python wrappers leave reference cycles behind (XGBoost's per-call proxy matrices): garbage is
    not model memory. Exceptions from ``build`` propagate.

    Inside :func:`plane.size_memo.measured_once` for a file measured before: one build, no
    readings, no ``prepare``, the earlier figure (``reused``); otherwise the figure measured here
    is handed to the memo.
    """
    memo = size_memo.current()
    if memo is not None and memo.known is not None:
        with _builds.shared(blocking=not memo.inline):  # no readings: no one-time setup to keep out either
            value = build()
        memo.reused = True
        return Measurement(value, memo.known[0], memo.known[1], reused=True)
    if memo is not None and memo.inline:
        raise size_memo.BuildBusy("this file's size is not known: it must be measured")
    found = _measure(build, prepare, repeats, collect)
    if memo is not None:
        memo.measured = (found.delta, found.method)
    return found


def _measure(build: Callable[[], T], prepare: Callable[[], object] | None, repeats: int | Callable[[int], int],
             collect: bool) -> Measurement[T]:
    def reading() -> tuple[int, str]:
        if collect:
            gc.collect(0)
        return memory_in_use()

    with _builds.exclusive(), _gc_paused():
        if prepare is not None:
            prepare()
        before, method = reading()
        first = build()
        after, _ = reading()
        delta = after - before
        if method != "mallinfo2" or delta >= _REPEAT_BELOW:
            return Measurement(first, delta, method)
        extra = []  # all stay alive until measured; each "before" is the previous "after"
        deltas = [delta]
        for _ in range((repeats(delta) if callable(repeats) else repeats) - 1):
            before = after
            again = build()
            after, _ = reading()
            extra.append(again)
            deltas.append(after - before)
        extra.clear()  # the extra results are freed here, inside the lock, not during another load
        deltas.sort()
        return Measurement(first, deltas[len(deltas) // 2], method)


@dataclass
class _Built:
    session: ort.InferenceSession
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    load_ms: float
    warm_run: bool


def _create(path: pathlib.Path, opts: ort.SessionOptions) -> _Built:
    """Create a session and run it once (what :func:`measure` measures)."""
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
        raise ModelLoadError(f"not a valid ONNX model: {_short(exc)}") from exc
    load_ms = (time.perf_counter() - t0) * 1000
    inputs = _specs(sess.get_inputs())
    outputs = _specs(sess.get_outputs())
    warm = _first_run(sess, inputs)
    return _Built(sess, inputs, outputs, load_ms, warm)


def load_session(model_id: str, path: pathlib.Path, *, intra_threads: int = 1, source: str = "") -> ModelSession:
    """Create an onnxruntime session for ``path`` and measure what it costs in memory."""
    path = pathlib.Path(path)
    try:
        file_size = path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file: {exc.strerror}") from exc
    opts = _session_options(intra_threads)
    measured = measure(lambda: _create(path, opts))
    m, delta = measured.value, measured.delta
    size = max(delta, file_size, 4096) if measured.method == "rss" else max(delta, file_size)
    sess = m.session
    inputs, outputs = m.inputs, m.outputs
    bare = {s.name for s in (*inputs.values(), *outputs.values()) if not s.shape}
    if bare:  # scalar or no shape at all? onnxruntime does not say; the file does
        unranked = _shapeless(path, bare)
        inputs, outputs = _specs(sess.get_inputs(), unranked), _specs(sess.get_outputs(), unranked)
    return ModelSession(
        model_id=model_id,
        session=sess,
        inputs=inputs,
        outputs=outputs,
        output_names=[o.name for o in sess.get_outputs()],
        size=size,
        file_size=file_size,
        load_ms=m.load_ms,
        source=source,
        size_method=measured.method,
        warm_run=m.warm_run,
    )


def warm_up() -> float:
    """Create and run one tiny session, so onnxruntime's one-time process setup (thread
    pools, allocators: several MiB) is paid at pod start and not charged to the first model
    loaded. Also proves the runtime works before the pod reports ready. Returns ms taken."""
    from onnx import TensorProto, helper

    t0 = time.perf_counter()
    graph = helper.make_graph(
        [helper.make_node("Identity", ["x"], ["y"])],
        "warmup",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 1])],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    with _builds.exclusive():
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=_session_options(1),
                                    providers=["CPUExecutionProvider"])
        out = sess.run(None, {"x": np.ones((1, 1), dtype=np.float32)})
        memory_in_use()  # sets up the allocator reading (ctypes, tcache) before the first load
    if float(out[0][0, 0]) != 1.0:
        raise ModelLoadError("onnxruntime self-test gave a wrong answer")
    return (time.perf_counter() - t0) * 1000

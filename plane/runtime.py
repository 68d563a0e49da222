"""onnxruntime sessions: load a model file, describe its tensors, measure its memory, infer.

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
* loads are serialised by a module lock, Python's cyclic GC is paused while measuring, and
  a session measuring under 4 MiB is created three times (all alive, readings chained) and
  the median kept, so a one-off allocation elsewhere (a worker thread starting) is not
  charged to a 70 kB model. That costs a few ms per small model; larger ones load once.

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
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import psutil

from plane.tensors import DATATYPES, TensorError, TensorSpec, onnx_type_to_datatype

__all__ = ["ModelSession", "ModelLoadError", "load_session", "memory_in_use", "warm_up"]

_load_lock = threading.Lock()  # allocator deltas are only meaningful when loads do not overlap


class ModelLoadError(Exception):
    """The file is not a model onnxruntime can run; the message says why."""


@dataclass
class ModelSession:
    model_id: str
    session: ort.InferenceSession
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    output_names: list[str]
    size: int
    file_size: int
    load_ms: float
    source: str = ""
    avg_run_us: float = 0.0
    runs: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)
    #: how ``size`` was measured: "mallinfo2" (allocator bytes in use) or "rss" (fallback)
    size_method: str = "mallinfo2"
    #: whether the zero-filled first run inside the measurement succeeded
    warm_run: bool = False

    def run(self, inputs: dict[str, np.ndarray], requested: list[str] | None = None) -> dict[str, np.ndarray]:
        names = requested or self.output_names
        for name in names:
            if name not in self.outputs:
                raise TensorError(
                    f"model {self.model_id} has no output {name!r}; outputs are {', '.join(self.output_names)}"
                )
        t0 = time.perf_counter()
        try:
            results = self.session.run(names, inputs)
        except (ort.capi.onnxruntime_pybind11_state.InvalidArgument,
                ort.capi.onnxruntime_pybind11_state.InvalidGraph) as exc:
            raise TensorError(f"model {self.model_id} rejected the input: {_short(exc)}") from exc
        except ort.capi.onnxruntime_pybind11_state.Fail as exc:
            raise TensorError(f"model {self.model_id} could not run on the input: {_short(exc)}") from exc
        dt = (time.perf_counter() - t0) * 1e6
        # An exponential average of run time decides whether requests run inline on the
        # event loop (tiny models) or on a worker thread (models that would stall it).
        self.avg_run_us = dt if self.runs == 0 else 0.9 * self.avg_run_us + 0.1 * dt
        self.runs += 1
        return dict(zip(names, results, strict=True))


def _short(exc: Exception) -> str:
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


def _specs(args: list) -> dict[str, TensorSpec]:
    out: dict[str, TensorSpec] = {}
    for arg in args:
        try:
            datatype = onnx_type_to_datatype(arg.type)
        except (KeyError, ValueError, TensorError) as exc:
            raise ModelLoadError(f"tensor {arg.name!r} has type {arg.type} which KServe V2 cannot carry") from exc
        shape = [d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or [])]
        out[arg.name] = TensorSpec(arg.name, datatype, shape)
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
        libc = ctypes.CDLL(None)
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
class _Measured:
    session: ort.InferenceSession
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    load_ms: float
    warm_run: bool
    delta: int
    method: str
    after: int


def _create(path: pathlib.Path, opts: ort.SessionOptions, before: int | None = None) -> _Measured:
    """Create a session and run it once; the delta is what it holds with the session alive."""
    if before is None:
        before, method = memory_in_use()
    else:
        method = "mallinfo2"
    t0 = time.perf_counter()
    try:
        sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
    except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
        raise ModelLoadError(f"not a valid ONNX model: {_short(exc)}") from exc
    load_ms = (time.perf_counter() - t0) * 1000
    inputs = _specs(sess.get_inputs())
    outputs = _specs(sess.get_outputs())
    warm = _first_run(sess, inputs)
    after, _ = memory_in_use()
    return _Measured(sess, inputs, outputs, load_ms, warm, after - before, method, after)


def _measure(path: pathlib.Path, opts: ort.SessionOptions) -> tuple[_Measured, int]:
    first = _create(path, opts)
    if first.method != "mallinfo2" or first.delta >= _REPEAT_BELOW:
        return first, first.delta
    runs = [first]  # all stay alive until measured; each "before" is the previous "after"
    for _ in range(_REPEATS - 1):
        runs.append(_create(path, opts, runs[-1].after))
    deltas = sorted(m.delta for m in runs)
    runs.clear()  # the extra sessions are freed here, inside the lock, not during another load
    return first, deltas[len(deltas) // 2]


def load_session(model_id: str, path: pathlib.Path, *, intra_threads: int = 1, source: str = "") -> ModelSession:
    """Create an onnxruntime session for ``path`` and measure what it costs in memory."""
    path = pathlib.Path(path)
    try:
        file_size = path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file: {exc.strerror}") from exc
    opts = _session_options(intra_threads)
    with _load_lock, _gc_paused():
        m, delta = _measure(path, opts)
    size = max(delta, file_size, 4096) if m.method == "rss" else max(delta, file_size)
    sess = m.session
    return ModelSession(
        model_id=model_id,
        session=sess,
        inputs=m.inputs,
        outputs=m.outputs,
        output_names=[o.name for o in sess.get_outputs()],
        size=size,
        file_size=file_size,
        load_ms=m.load_ms,
        source=source,
        size_method=m.method,
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
    with _load_lock:
        sess = ort.InferenceSession(model.SerializeToString(), sess_options=_session_options(1),
                                    providers=["CPUExecutionProvider"])
        out = sess.run(None, {"x": np.ones((1, 1), dtype=np.float32)})
        memory_in_use()  # sets up the allocator reading (ctypes, tcache) before the first load
    if float(out[0][0, 0]) != 1.0:
        raise ModelLoadError("onnxruntime self-test gave a wrong answer")
    return (time.perf_counter() - t0) * 1000

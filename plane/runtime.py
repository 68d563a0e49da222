"""onnxruntime sessions: load a model file, describe its tensors, measure its memory, infer.

Memory accounting: a loaded model's size is the growth of this process's resident memory
(RSS) across session creation, not the file size. That is the figure the operating system
charges the pod for, and it includes what onnxruntime allocates for initializers and its
graph optimisations, which its Python API does not report. Loads are serialised per pod by
default (``max_concurrent_loads=1``), so the growth is attributable to one model. RSS can
shrink when the allocator returns memory during a load, so the measurement is floored at
the file size (the initializers must be resident somewhere).
"""

from __future__ import annotations

import pathlib
import threading
import time
from dataclasses import dataclass, field

import numpy as np
import onnxruntime as ort
import psutil

from plane.tensors import TensorError, TensorSpec, onnx_type_to_datatype

__all__ = ["ModelSession", "ModelLoadError", "load_session", "warm_up"]

_load_lock = threading.Lock()  # RSS deltas are only meaningful when loads do not overlap


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


def load_session(model_id: str, path: pathlib.Path, *, intra_threads: int = 1, source: str = "") -> ModelSession:
    """Create an onnxruntime session for ``path`` and measure what it costs in memory."""
    path = pathlib.Path(path)
    try:
        file_size = path.stat().st_size
    except OSError as exc:
        raise ModelLoadError(f"cannot read model file: {exc.strerror}") from exc
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = max(1, intra_threads)
    opts.inter_op_num_threads = 1
    opts.log_severity_level = 3
    proc = psutil.Process()
    with _load_lock:
        before = proc.memory_info().rss
        t0 = time.perf_counter()
        try:
            sess = ort.InferenceSession(str(path), sess_options=opts, providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises several types for bad files
            raise ModelLoadError(f"not a valid ONNX model: {_short(exc)}") from exc
        load_ms = (time.perf_counter() - t0) * 1000
        after = proc.memory_info().rss
    inputs = _specs(sess.get_inputs())
    outputs = _specs(sess.get_outputs())
    size = max(after - before, file_size, 4096)
    return ModelSession(
        model_id=model_id,
        session=sess,
        inputs=inputs,
        outputs=outputs,
        output_names=[o.name for o in sess.get_outputs()],
        size=size,
        file_size=file_size,
        load_ms=load_ms,
        source=source,
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
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    sess = ort.InferenceSession(model.SerializeToString(),
                                sess_options=opts, providers=["CPUExecutionProvider"])
    out = sess.run(None, {"x": np.ones((1, 1), dtype=np.float32)})
    if float(out[0][0, 0]) != 1.0:
        raise ModelLoadError("onnxruntime self-test gave a wrong answer")
    return (time.perf_counter() - t0) * 1000

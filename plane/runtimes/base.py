"""What every runtime hands the pod: a :class:`ModelSession`, and the parts tabular runtimes share.

The pod (``plane/pod/copies.py``, ``plane/pod/serving.py``) knows one kind of loaded model: a
``ModelSession`` with its tensor signature, its measured size and ``run(inputs, requested)``.
Each runtime fills one in; what differs is the ``session`` object inside, which answers
``session.run(output_names, input_feed) -> list[np.ndarray]`` as an ``onnxruntime.InferenceSession``
does. For onnxruntime that *is* the InferenceSession; scikit-learn, XGBoost and LightGBM models
are wrapped in a :class:`TabularPredictor`, which checks the one feature matrix they take and
computes only the outputs asked for.

Tabular models speak the ONNX demo models' dialect: one input ``input`` FP32 ``[-1, n_features]``
(FP64 is cast), classifiers answer ``label`` (INT64, or BYTES for string class labels) and
``probabilities`` (FP32 ``[-1, n_classes]``), regressors ``prediction`` (FP32 ``[-1]`` or
``[-1, n_targets]``). MLServer's output names ``predict`` and ``predict_proba`` work as requested
outputs too (:attr:`ModelSession.aliases`), so a client written for MLServer's sklearn, xgboost and
lightgbm runtimes keeps working.
"""

from __future__ import annotations

import pathlib
import sys
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np

from plane.tensors import TensorError, TensorSpec

__all__ = [
    "INPUT_NAME",
    "LABEL",
    "PREDICTION",
    "PROBABILITIES",
    "tabular_repeats",
    "LoadOptions",
    "ModelLoadError",
    "ModelSession",
    "Predictor",
    "TabularPredictor",
    "Built",
    "build_tabular",
    "files_size",
    "first_run",
    "label_array",
    "label_datatype",
    "short_error",
    "tabular_session",
]

INPUT_NAME = "input"
LABEL = "label"
PROBABILITIES = "probabilities"
PREDICTION = "prediction"
def tabular_repeats(delta: int) -> int:
    """How many times a tabular model is built when measured (the median delta is kept). One
    build of a small XGBoost model holds its ~10 kB give or take 1.5 kB (allocations inside
    XGBoost's first prediction and load vary from build to build), so models under 64 kB are
    built nine times, under 4 MiB three times (as ONNX sessions), larger ones once."""
    return 9 if delta < 64 << 10 else 3
#: MLServer's output names, as aliases of ours.
CLASSIFIER_ALIASES = {"predict": LABEL, "predict_proba": PROBABILITIES}
REGRESSOR_ALIASES = {"predict": PREDICTION}



def _ort_input_error(model_id: str, exc: Exception) -> TensorError | None:
    """onnxruntime's errors about a request's input, as TensorErrors (None for any other error).
    onnxruntime is looked up, not imported: a process that never loaded an ONNX model (the CLI
    validating a type) does not pay for importing it."""
    ort = sys.modules.get("onnxruntime")
    if ort is None:
        return None
    state = ort.capi.onnxruntime_pybind11_state
    if isinstance(exc, state.InvalidArgument | state.InvalidGraph):
        return TensorError(f"model {model_id} rejected the input: {short_error(exc)}")
    if isinstance(exc, state.Fail):
        return TensorError(f"model {model_id} could not run on the input: {short_error(exc)}")
    return None


class ModelLoadError(Exception):
    """The file is not a model its runtime can run; the message says why (and names the format)."""


def short_error(exc: BaseException) -> str:
    """The first line of an exception's message (libraries append stack traces), at most 300 chars."""
    text = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
    return text[:300]


class Predictor(Protocol):
    """What a session object answers: ``onnxruntime.InferenceSession.run``'s signature."""

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> list[np.ndarray]: ...


@dataclass
class ModelSession:
    """A loaded model as the pod sees it. Constructible with an ``onnxruntime.InferenceSession``
    exactly as before runtimes existed; other runtimes pass a :class:`Predictor`."""

    model_id: str
    session: Any  # onnxruntime.InferenceSession, or a Predictor
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    output_names: list[str]  # answered when a request names no outputs
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
    #: the runtime that loaded it (one of plane.runtimes.RUNTIMES)
    runtime: str = "onnx"
    #: the platform ModelMetadata reports (Triton's name for onnxruntime models)
    platform: str = "onnxruntime_onnx"
    #: other names a request may ask for, mapped to the output they mean (MLServer's ``predict``)
    aliases: dict[str, str] = field(default_factory=dict)
    #: datatypes an input takes besides its declared one (cast by ``run``): {"input": ("FP64",)}
    accepted_datatypes: dict[str, tuple[str, ...]] = field(default_factory=dict)
    #: the model type and local path it was loaded with (what a child process needs to load it too)
    model_type: str = ""
    local_path: str = ""

    @property
    def has_strings(self) -> bool:
        """Whether any input or output is a BYTES tensor (converted element by element)."""
        return any(s.datatype == "BYTES" for s in (*self.inputs.values(), *self.outputs.values()))

    def run(self, inputs: dict[str, np.ndarray], requested: list[str] | None = None) -> dict[str, np.ndarray]:
        names = requested or self.output_names
        actual = [self._output(name) for name in names]
        t0 = time.perf_counter()
        try:
            results = self.session.run(actual, inputs)
        except TensorError:
            raise
        except Exception as exc:
            err = _ort_input_error(self.model_id, exc)
            if err is None:
                raise
            raise err from exc
        dt = (time.perf_counter() - t0) * 1e6
        # An exponential average of run time decides whether requests run inline on the
        # event loop (tiny models) or on a worker thread (models that would stall it).
        self.avg_run_us = dt if self.runs == 0 else 0.9 * self.avg_run_us + 0.1 * dt
        self.runs += 1
        return dict(zip(names, results, strict=True))

    def _output(self, name: str) -> str:
        if name in self.outputs:
            return name
        if name in self.aliases:
            return self.aliases[name]
        also = f" (also {', '.join(self.aliases)})" if self.aliases else ""
        raise TensorError(f"model {self.model_id} has no output {name!r}; "
                          f"outputs are {', '.join(self.outputs)}{also}")


@dataclass
class LoadOptions:
    """How to load, beyond the file: from the pod's settings and an optional ``model-settings.json``."""

    allow_pickle: bool = True
    intra_threads: int = 1
    input_name: str = INPUT_NAME
    #: outputs answered when a request names none (default: all of the model's)
    default_outputs: list[str] = field(default_factory=list)


def label_datatype(classes: np.ndarray) -> str:
    """The V2 datatype of a classifier's ``label`` output, from its ``classes_``."""
    kind = np.asarray(classes).dtype.kind
    if kind in "iu":
        return "INT64"
    if kind == "b":
        return "BOOL"
    if kind == "f":
        return "FP64"
    return "BYTES"


def label_array(values: Any, datatype: str) -> np.ndarray:
    """Predicted labels as the array ``label_datatype`` promised (strings as ``str`` objects)."""
    arr = np.asarray(values)
    if datatype == "INT64":
        return arr.astype(np.int64, copy=False)
    if datatype == "BOOL":
        return arr.astype(bool, copy=False)
    if datatype == "FP64":
        return arr.astype(np.float64, copy=False)
    out = np.empty(arr.shape, dtype=object)
    out.reshape(-1)[:] = [v.decode("utf-8", "replace") if isinstance(v, bytes) else str(v) for v in arr.reshape(-1)]
    return out


class TabularPredictor(ABC):
    """A model over one feature matrix ``[rows, n_features]``; subclasses compute outputs by name.

    ``n_features`` is -1 when the model does not say (then any width is passed on and the
    library judges). Errors the library raises while predicting become ``TensorError``s: the
    input, not the pod, is at fault.
    """

    def __init__(self, model_id: str, n_features: int, input_name: str = INPUT_NAME):
        self.model_id = model_id
        self.n_features = n_features
        self.input_name = input_name

    def input_specs(self) -> dict[str, TensorSpec]:
        return {self.input_name: TensorSpec(self.input_name, "FP32", [-1, self.n_features])}

    def features(self, feed: dict[str, np.ndarray]) -> np.ndarray:
        if set(feed) != {self.input_name}:
            raise TensorError(f"model {self.model_id} takes one input {self.input_name!r}, "
                              f"got {', '.join(map(repr, feed)) or 'none'}")
        x = np.asarray(feed[self.input_name])
        if x.dtype.kind != "f" or x.dtype.itemsize not in (4, 8):
            raise TensorError(f"input {self.input_name!r}: datatype must be FP32 (or FP64), got {x.dtype}")
        if x.ndim != 2 or (self.n_features >= 0 and x.shape[1] != self.n_features):
            raise TensorError(f"input {self.input_name!r}: shape {list(x.shape)} does not match "
                              f"[-1, {self.n_features}] (rows x features)")
        return np.ascontiguousarray(x, dtype=np.float32)

    def zero_feed(self) -> dict[str, np.ndarray] | None:
        """One all-zero row, for the first run inside the memory measurement."""
        if self.n_features < 0:
            return None
        return {self.input_name: np.zeros((1, self.n_features), dtype=np.float32)}

    def run(self, output_names: list[str], input_feed: dict[str, np.ndarray]) -> list[np.ndarray]:
        x = self.features(input_feed)
        try:
            return self.compute(x, output_names)
        except TensorError:
            raise
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - libraries raise ValueError, XGBoostError, LightGBMError ...
            raise TensorError(f"model {self.model_id} could not run on the input: {short_error(exc)}") from exc

    @abstractmethod
    def compute(self, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        """The outputs ``names`` (each one of the model's output names) for the rows ``x``."""


def first_run(predictor: TabularPredictor, names: list[str]) -> tuple[list[str], dict[str, np.ndarray] | None]:
    """Run once on a zero row: what a model allocates lazily belongs to its size. Returns the
    outputs the model can answer and their results; when all of them fail together, each is
    tried alone and those that fail are dropped (an XGBoost ``multi:softmax`` model has no
    probabilities). ``(names, None)`` when nothing ran (a model may reject zeros; what it
    allocated is still counted)."""
    feed = predictor.zero_feed()
    if feed is None:
        return names, None
    try:
        return names, dict(zip(names, predictor.run(names, feed), strict=True))
    except Exception:  # noqa: BLE001 - see below
        pass
    results: dict[str, np.ndarray] = {}
    for name in names:
        try:
            results[name] = predictor.run([name], feed)[0]
        except Exception:  # noqa: BLE001 - this output cannot be computed on zeros
            continue
    if not results:
        return names, None
    return [n for n in names if n in results], results


def _shape(result: np.ndarray | None, fallback: list[int]) -> list[int]:
    """A dynamic-batch shape from a first-run result ``[1, ...]``, or ``fallback``."""
    if result is None or result.ndim == 0:
        return fallback
    return [-1, *result.shape[1:]]


@dataclass
class Built:
    """A tabular model loaded and run once: what ``plane.runtime.measure`` keeps alive."""

    predictor: TabularPredictor
    outputs: dict[str, TensorSpec]
    load_ms: float
    warm_run: bool
    classifier: bool


def build_tabular(predictor: TabularPredictor, load_ms: float, *, classifier: bool, label_type: str = "INT64",
                  n_classes: int = 0, proba: bool = True) -> Built:
    """Run the first prediction and describe the outputs: ``label`` (``label_type``) and, with
    ``proba``, ``probabilities`` ``[-1, n_classes]`` for a classifier; ``prediction`` otherwise.
    Result shapes come from the first run (``[-1]`` or ``[-1, k]``)."""
    wanted = ([LABEL, PROBABILITIES] if proba else [LABEL]) if classifier else [PREDICTION]
    names, warm = first_run(predictor, wanted)
    outputs: dict[str, TensorSpec] = {}
    for name in names:
        result = warm.get(name) if warm else None
        if name == LABEL:
            outputs[name] = TensorSpec(name, label_type, _shape(result, [-1]))
        elif name == PROBABILITIES:
            outputs[name] = TensorSpec(name, "FP32", [-1, n_classes])
        else:
            outputs[name] = TensorSpec(name, "FP32", _shape(result, [-1]))
    return Built(predictor, outputs, load_ms, warm is not None, classifier)


def tabular_session(model_id: str, built: Built, *, delta: int, method: str, file_size: int, runtime: str,
                    source: str, options: LoadOptions) -> ModelSession:
    """The ModelSession of a measured tabular model: size floored at its files' bytes (and at
    4096 with the RSS fallback, as for ONNX sessions); MLServer's names as aliases."""
    aliases = dict(CLASSIFIER_ALIASES if built.classifier else REGRESSOR_ALIASES)
    aliases = {k: v for k, v in aliases.items() if v in built.outputs}
    floor = 4096 if method == "rss" else 0
    return ModelSession(
        model_id=model_id,
        session=built.predictor,
        inputs=built.predictor.input_specs(),
        outputs=built.outputs,
        output_names=_default_outputs(model_id, built.outputs, aliases, options.default_outputs),
        size=max(delta, file_size, floor),
        file_size=file_size,
        load_ms=built.load_ms,
        source=source,
        size_method=method,
        warm_run=built.warm_run,
        runtime=runtime,
        platform=runtime,
        aliases=aliases,
        accepted_datatypes={built.predictor.input_name: ("FP64",)},
    )


def _default_outputs(model_id: str, outputs: dict[str, TensorSpec], aliases: dict[str, str],
                     wanted: list[str]) -> list[str]:
    """The outputs answered by default: ``wanted`` (from model-settings.json) if given, else all."""
    if not wanted:
        return list(outputs)
    unknown = [w for w in wanted if w not in outputs and w not in aliases]
    if unknown:
        raise ModelLoadError(f"model-settings.json of {model_id} names output(s) {', '.join(unknown)}; "
                             f"the model has {', '.join([*outputs, *aliases])}")
    return list(wanted)


def files_size(file: pathlib.Path, path: pathlib.Path | None, what: str) -> int:
    """Bytes of the model's files: everything under ``path`` when it is a directory, else ``file``."""
    target = path if path is not None and pathlib.Path(path).is_dir() else file
    try:
        if pathlib.Path(target).is_file():
            return pathlib.Path(target).stat().st_size
        return sum(p.stat().st_size for p in pathlib.Path(target).rglob("*") if p.is_file())
    except OSError as exc:
        raise ModelLoadError(f"cannot read {what} model file: {exc.strerror}") from exc

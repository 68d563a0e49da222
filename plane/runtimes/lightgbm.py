"""The LightGBM runtime: text models written by ``Booster.save_model`` (``model.txt``, or
``model.bst`` as MLServer's lightgbm runtime names them), loaded with ``lightgbm.Booster``.

The file is read once, checked by :mod:`plane.runtimes.lightgbm_text` (LightGBM's own loader
crashes the process on a truncated file) and handed to LightGBM as that same text.

Classifiers (objective ``binary``, ``multiclass``, ``multiclassova``) answer ``label`` and
``probabilities`` exactly as ``LGBMClassifier.predict``/``predict_proba`` would: the booster's
output, as ``[1 - p, p]`` columns for binary models, and the arg-max class. The class labels an
``LGBMClassifier`` was fitted with are not in the file (its label encoder is not saved), so
``label`` is the class index 0..n-1, INT64. Everything else (regression, ranking, cross-entropy)
answers ``prediction``, the booster's ``predict``. MLServer's lightgbm runtime answers
``predict`` with the raw booster output; here ``predict`` is an alias of ``label`` for
classifiers, consistent with the other runtimes (request ``predict_proba`` for probabilities).
"""

from __future__ import annotations

import functools
import logging
import pathlib
import time
from collections.abc import Sequence
from typing import Any

import numpy as np

from plane.runtime import measure
from plane.runtimes.base import (
    LABEL,
    PROBABILITIES,
    Built,
    LoadOptions,
    ModelLoadError,
    ModelSession,
    TabularPredictor,
    build_tabular,
    files_size,
    short_error,
    tabular_repeats,
    tabular_session,
)
from plane.runtimes.lightgbm_text import Header, check

__all__ = ["LightGBMPredictor", "load", "warm"]

log = logging.getLogger("mesh.runtime.lightgbm")

_CLASSIFIERS = {"binary", "multiclass", "multiclassova"}


class LightGBMPredictor(TabularPredictor):
    """A ``lightgbm.Booster`` answering ``label``/``probabilities`` or ``prediction``."""

    def __init__(self, model_id: str, booster: Any, header: Header, threads: int, input_name: str):
        super().__init__(model_id, int(booster.num_feature()), input_name)
        self.booster = booster
        self.threads = max(1, threads)
        self.classifier = header.objective in _CLASSIFIERS
        self.n_classes = (2 if header.num_class == 1 else header.num_class) if self.classifier else 0

    def _proba(self, x: np.ndarray) -> np.ndarray:
        raw = np.asarray(self.booster.predict(x, num_threads=self.threads))
        if raw.ndim == 1:  # binary: LGBMClassifier.predict_proba stacks the other class's column
            return np.vstack((1.0 - raw, raw)).transpose()
        return raw

    def compute(self, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        if self.classifier:
            proba = self._proba(x)
            done = {LABEL: np.argmax(proba, axis=1).astype(np.int64), PROBABILITIES: proba.astype(np.float32)}
        else:
            done = {n: np.asarray(self.booster.predict(x, num_threads=self.threads), dtype=np.float32)
                    for n in set(names)}
        return [done[n] for n in names]


def _booster(data: bytes) -> tuple[Any, Header]:
    import lightgbm as lgb

    header = check(data)
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise ModelLoadError(f"not a valid LightGBM text model: not UTF-8 text ({exc.reason})") from exc
    try:
        return lgb.Booster(model_str=text), header
    except MemoryError:
        raise
    except Exception as exc:  # noqa: BLE001 - LightGBMError, or json errors in pandas_categorical
        raise ModelLoadError(f"not a valid LightGBM text model: {short_error(exc)}") from exc


def _build(model_id: str, file: pathlib.Path, options: LoadOptions) -> Built:
    t0 = time.perf_counter()
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read LightGBM model file: {exc.strerror}") from exc
    booster, header = _booster(data)
    del data
    load_ms = (time.perf_counter() - t0) * 1000
    p = LightGBMPredictor(model_id, booster, header, options.intra_threads, options.input_name)
    return build_tabular(p, load_ms, classifier=p.classifier, n_classes=p.n_classes)


@functools.cache
def warm() -> None:
    """Route LightGBM's messages to logging, and train and run a two-tree model once per process,
    so LightGBM's and OpenMP's one-time setup is not charged to the first model measured."""
    import lightgbm as lgb

    lgb.register_logger(log)
    x = np.arange(40, dtype=np.float64).reshape(20, 2)
    params = {"objective": "binary", "num_leaves": 2, "min_data_in_leaf": 1, "num_threads": 1, "verbose": -1}
    booster = lgb.train(params, lgb.Dataset(x, label=np.arange(20) % 2), num_boost_round=2)
    lgb.Booster(model_str=booster.model_to_string()).predict(x, num_threads=1)


def load(model_id: str, file: pathlib.Path, *, source: str = "", options: LoadOptions | None = None,
         path: pathlib.Path | None = None) -> ModelSession:
    """Load the LightGBM text model in ``file``, measure it, and wrap it as a ModelSession."""
    options = options or LoadOptions()
    file = pathlib.Path(file)
    file_size = files_size(file, path, "LightGBM")
    measured = measure(lambda: _build(model_id, file, options), prepare=warm, repeats=tabular_repeats, collect=True)
    return tabular_session(model_id, measured.value, delta=measured.delta, method=measured.method,
                           file_size=file_size, runtime="lightgbm", source=source, options=options)

"""The scikit-learn runtime: estimators and pipelines saved with joblib or pickle.

ModelMesh's sklearn format is "a model serialized using joblib.dump" (pickle files work too),
as MLServer's sklearn runtime loads it. Both are pickles, and **unpickling runs whatever code
the file names**: a model file from an untrusted source is code from an untrusted source. Pods
with ``MESH_ALLOW_PICKLE=false`` refuse these files before opening them (ONNX, XGBoost JSON/UBJ
and LightGBM text models carry no code and are not affected).

Signature: ``input`` FP32 ``[-1, n_features_in_]``; classifiers answer ``label`` (``predict``;
INT64, or BYTES when the class labels are strings) and, when they have ``predict_proba``,
``probabilities`` FP32 ``[-1, n_classes]``; regressors answer ``prediction`` FP32 (``[-1]``, or
``[-1, n_targets]``). MLServer's ``predict``/``predict_proba`` are aliases. An estimator fitted on a
pandas DataFrame (``feature_names_in_``) gets one, columns in order, so a ColumnTransformer that
selects columns by name works. Values are the estimator's own ``predict``/``predict_proba``
(probabilities and regression values cast to FP32).

Memory is measured as for ONNX sessions (``plane.runtime.measure``): unpickle and one prediction
on a zero row. Unpickling a model of a new kind imports modules (``sklearn.ensemble`` ...); if
the measured load imported any, it is measured again, so the imports are not charged to it.
"""

from __future__ import annotations

import logging
import pathlib
import sys
import time
import warnings
from collections.abc import Sequence
from typing import Any

import numpy as np

from plane.runtime import measure
from plane.runtimes.base import (
    LABEL,
    PREDICTION,
    PROBABILITIES,
    Built,
    LoadOptions,
    ModelLoadError,
    ModelSession,
    TabularPredictor,
    build_tabular,
    files_size,
    label_array,
    label_datatype,
    short_error,
    tabular_repeats,
    tabular_session,
)

__all__ = ["SklearnPredictor", "load", "PICKLE_REFUSED"]

log = logging.getLogger("mesh.runtime.sklearn")

PICKLE_REFUSED = ("scikit-learn models are pickles (joblib files too), and loading a pickle runs code the file "
                  "names; this pod refuses them (MESH_ALLOW_PICKLE=false). Convert the model to ONNX (skl2onnx) "
                  "or allow pickles for trusted model sources")


def _is_classifier(est: Any) -> bool:
    from sklearn.base import is_classifier

    try:
        if is_classifier(est):
            return True
    except Exception:  # noqa: BLE001 - not an sklearn estimator: judge by its attributes
        pass
    return hasattr(est, "classes_")


class SklearnPredictor(TabularPredictor):
    """An estimator answering ``label``/``probabilities`` or ``prediction`` by name."""

    def __init__(self, model_id: str, est: Any, input_name: str):
        n = getattr(est, "n_features_in_", None)
        super().__init__(model_id, int(n) if isinstance(n, int | np.integer) else -1, input_name)
        self.est = est
        names = getattr(est, "feature_names_in_", None)
        self.columns = [str(c) for c in names] if names is not None else None
        classes = getattr(est, "classes_", None)
        # A classifier without classes_ (not sklearn's) cannot say its labels' type: its
        # predict is answered as a regressor's.
        self.classifier = classes is not None and _is_classifier(est)
        # Multi-output classifiers keep a list of class arrays: labels only, no probabilities.
        self.multi = isinstance(classes, list)
        self.classes = np.asarray([]) if classes is None or self.multi else np.asarray(classes)
        first = classes[0] if self.multi and classes else self.classes
        self.label_type = label_datatype(first) if self.classifier else ""
        self.has_proba = self.classifier and not self.multi and hasattr(est, "predict_proba")

    def output_names(self) -> list[str]:
        if not self.classifier:
            return [PREDICTION]
        return [LABEL, PROBABILITIES] if self.has_proba else [LABEL]

    def frame(self, x: np.ndarray) -> Any:
        if self.columns is None or len(self.columns) != x.shape[1]:
            return x
        import pandas as pd

        return pd.DataFrame(x, columns=self.columns, copy=False)

    def compute(self, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        data = self.frame(x)
        done: dict[str, np.ndarray] = {}
        for name in names:
            if name in done:
                continue
            if name == LABEL:
                done[name] = label_array(self.est.predict(data), self.label_type)
            elif name == PROBABILITIES:
                done[name] = np.asarray(self.est.predict_proba(data), dtype=np.float32)
            else:
                done[name] = np.asarray(self.est.predict(data), dtype=np.float32)
        return [done[n] for n in names]


def _unpickle(file: pathlib.Path) -> Any:
    import joblib

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        try:
            obj = joblib.load(file)
        except MemoryError:
            raise
        except ModuleNotFoundError as exc:
            raise ModelLoadError(f"scikit-learn model (joblib/pickle) needs Python module {exc.name!r}, "
                                 "which this pod does not have") from exc
        except Exception as exc:  # noqa: BLE001 - a bad pickle raises almost anything
            raise ModelLoadError(f"not a valid scikit-learn model (joblib/pickle): {short_error(exc)}") from exc
    for w in caught[:3]:
        log.warning("%s: %s", file.name, short_error(Exception(str(w.message))))
    if not callable(getattr(obj, "predict", None)):
        raise ModelLoadError(f"the joblib/pickle file holds a {type(obj).__name__}, not a scikit-learn "
                             "estimator (it has no predict method)")
    return obj


def _limit_threads(est: Any, threads: int) -> None:
    """``n_jobs`` of the estimator and its steps := the pod's threads per model (a pickled forest
    with ``n_jobs=-1`` would otherwise use every core of the pod for each request)."""
    try:
        keys = [k for k in est.get_params(deep=True) if k == "n_jobs" or k.endswith("__n_jobs")]
        if keys:
            est.set_params(**dict.fromkeys(keys, max(1, threads)))
    except Exception:  # noqa: BLE001 - not every estimator has sklearn's params API
        pass


def _build(model_id: str, file: pathlib.Path, options: LoadOptions) -> Built:
    t0 = time.perf_counter()
    est = _unpickle(file)
    _limit_threads(est, options.intra_threads)
    load_ms = (time.perf_counter() - t0) * 1000
    p = SklearnPredictor(model_id, est, options.input_name)
    return build_tabular(p, load_ms, classifier=p.classifier, label_type=p.label_type, n_classes=len(p.classes),
                         proba=p.has_proba)


def load(model_id: str, file: pathlib.Path, *, source: str = "", options: LoadOptions | None = None,
         path: pathlib.Path | None = None) -> ModelSession:
    """Unpickle the estimator in ``file``, measure it, and wrap it as a ModelSession."""
    options = options or LoadOptions()
    if not options.allow_pickle:
        raise ModelLoadError(PICKLE_REFUSED)
    file = pathlib.Path(file)
    file_size = files_size(file, path, "scikit-learn")
    modules = len(sys.modules)
    measured = measure(lambda: _build(model_id, file, options), repeats=tabular_repeats, collect=True)
    if len(sys.modules) != modules:  # the load imported modules: measure without their cost
        measured = measure(lambda: _build(model_id, file, options), repeats=tabular_repeats, collect=True)
    return tabular_session(model_id, measured.value, delta=measured.delta, method=measured.method,
                           file_size=file_size, runtime="sklearn", source=source, options=options)

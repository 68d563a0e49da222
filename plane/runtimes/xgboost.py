"""The XGBoost runtime: models saved with ``save_model`` as JSON or UBJSON (``.json``, ``.ubj``,
``.bst``, ``.model``), served through XGBoost's scikit-learn wrapper as MLServer's xgboost runtime
does, so ``label``/``probabilities`` are exactly ``XGBClassifier.predict``/``predict_proba`` and
``prediction`` is ``XGBRegressor.predict`` (FP32).

Which wrapper: the one the model was saved from (the ``scikit_learn`` attribute XGBoost writes
at the start of the file); a model trained with ``xgboost.train`` has none and is a classifier
when its objective is ``binary:*`` or ``multi:*``, else a regressor (ranking and survival scores
included). The file is read once into memory and handed to XGBoost as a buffer, so the format
is detected from its content, never guessed from the suffix.

The legacy binary format (XGBoost < 1.0's ``.bst``, or ``.model`` from Triton's FIL examples) is
read by XGBoost 2.x only; XGBoost 3 refuses it, and so does this runtime, saying how to convert
it. No XGBoost format is a pickle (a pickled ``XGBClassifier`` is a scikit-learn-runtime model).
"""

from __future__ import annotations

import functools
import pathlib
import re
import time
from collections.abc import Callable, Sequence
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
    short_error,
    tabular_repeats,
    tabular_session,
)

__all__ = ["XGBoostPredictor", "load", "warm"]

_CLASSIFY = re.compile(r"^(binary|multi):")
# The scikit-learn wrapper's record of what it was; XGBoost writes attributes first.
_ESTIMATOR_TYPE = re.compile(rb'_estimator_type\\?"\s*:\s*\\?"(classifier|regressor|ranker)')
# XGBoost's error texts start with the time and the C++ source line: "[07:10:22] /src/json.cc:409: ".
_XGB_PREFIX = re.compile(r"^\[[0-9:]+\] \S+:[0-9]+: ")


def _xgb() -> Any:
    import xgboost

    return xgboost


class XGBoostPredictor(TabularPredictor):
    """A loaded sklearn-wrapper model answering ``label``/``probabilities`` or ``prediction``."""

    def __init__(self, model_id: str, est: Any, input_name: str):
        super().__init__(model_id, int(est.get_booster().num_features()), input_name)
        xgb = _xgb()
        self.est = est
        self.classifier = isinstance(est, xgb.XGBClassifier) and bool(_CLASSIFY.match(str(est.objective)))
        # A Booster with a regression objective loaded into XGBClassifier: XGBModel's predict is
        # XGBRegressor's (it does not override it).
        self._predict: Callable[[Any], Any] = (
            est.predict if self.classifier or not isinstance(est, xgb.XGBClassifier)
            else functools.partial(xgb.XGBModel.predict, est))
        self.n_classes = int(getattr(est, "n_classes_", 0)) if self.classifier else 0

    def output_names(self) -> list[str]:
        return [LABEL, PROBABILITIES] if self.classifier else [PREDICTION]

    def compute(self, x: np.ndarray, names: Sequence[str]) -> list[np.ndarray]:
        done: dict[str, np.ndarray] = {}
        for name in names:
            if name in done:
                continue
            if name == LABEL:
                done[name] = label_array(self._predict(x), "INT64")
            elif name == PROBABILITIES:
                done[name] = np.asarray(self.est.predict_proba(x), dtype=np.float32)
            else:
                done[name] = np.asarray(self._predict(x), dtype=np.float32)
        return [done[n] for n in names]


def _read(file: pathlib.Path) -> bytes:
    try:
        data = file.read_bytes()
    except OSError as exc:
        raise ModelLoadError(f"cannot read XGBoost model file: {exc.strerror}") from exc
    xgb = _xgb()
    major = int(str(xgb.__version__).split(".")[0])
    if not data.lstrip()[:1] == b"{" and major >= 3:
        raise ModelLoadError(
            f"not an XGBoost JSON/UBJSON model ({file.name}): if it is a legacy binary model, XGBoost "
            f"{xgb.__version__} cannot read it; load it with xgboost 2.x and save_model('model.json')")
    return data


def _wrap(data: bytes, threads: int) -> Any:
    """The file loaded into the sklearn wrapper it was saved from (XGBClassifier if none)."""
    xgb = _xgb()
    kinds = {"classifier": xgb.XGBClassifier, "regressor": xgb.XGBRegressor, "ranker": xgb.XGBRanker}
    seen = _ESTIMATOR_TYPE.search(data[:16384])
    order = [kinds[seen.group(1).decode()]] if seen else []
    order += [c for c in kinds.values() if c not in order]
    for cls in order:
        est = cls(n_jobs=max(1, threads))
        try:
            est.load_model(bytearray(data))
        except TypeError:  # "Loading an estimator with different type": try the next wrapper
            continue
        except MemoryError:
            raise
        except Exception as exc:  # noqa: BLE001 - XGBoostError for a bad file
            raise ModelLoadError(f"not a valid XGBoost model: {_XGB_PREFIX.sub('', short_error(exc))}") from exc
        return est
    raise ModelLoadError("not a valid XGBoost model: no scikit-learn wrapper accepts it")


def _build(model_id: str, file: pathlib.Path, options: LoadOptions) -> Built:
    t0 = time.perf_counter()
    est = _wrap(_read(file), options.intra_threads)
    load_ms = (time.perf_counter() - t0) * 1000
    p = XGBoostPredictor(model_id, est, options.input_name)
    return build_tabular(p, load_ms, classifier=p.classifier, n_classes=p.n_classes)


@functools.cache
def warm() -> None:
    """Train and run a two-tree model once per process, so XGBoost's and OpenMP's one-time
    setup is not charged to the first model measured."""
    xgb = _xgb()
    x = np.arange(16, dtype=np.float32).reshape(8, 2)
    booster = xgb.train({"nthread": 1, "max_depth": 1}, xgb.DMatrix(x, label=np.arange(8) % 2), 2)
    booster.inplace_predict(x)
    est = xgb.XGBClassifier(n_jobs=1)
    est.load_model(booster.save_raw("ubj"))
    est.predict_proba(x)


def load(model_id: str, file: pathlib.Path, *, source: str = "", options: LoadOptions | None = None,
         path: pathlib.Path | None = None) -> ModelSession:
    """Load the XGBoost model in ``file``, measure it, and wrap it as a ModelSession."""
    options = options or LoadOptions()
    file = pathlib.Path(file)
    file_size = files_size(file, path, "XGBoost")
    measured = measure(lambda: _build(model_id, file, options), prepare=warm, repeats=tabular_repeats, collect=True)
    return tabular_session(model_id, measured.value, delta=measured.delta, method=measured.method,
                           file_size=file_size, runtime="xgboost", source=source, options=options)

"""Real, small demo models trained on scikit-learn's bundled datasets: ONNX by default, and
scikit-learn (joblib), XGBoost (JSON) and LightGBM (text) files on request.

Nothing is downloaded: ``digits``, ``iris``, ``wine`` and ``breast_cancer`` ship with
scikit-learn. Models are trained with a handful of estimator kinds and converted with
skl2onnx. Classifiers are converted with ``zipmap`` disabled so that every output is a plain
tensor (``label``: INT64 ``[N]``, ``probabilities``: FP32 ``[N, n_classes]``); regressors
output ``variable``: FP32 ``[N, 1]``. Every model takes one input ``input``: FP32
``[N, n_features]``.

:func:`generate_models` writes ONNX models unless ``formats`` asks for a mix (shares such as
``{"onnx": 0.5, "sklearn": 0.2, "xgboost": 0.15, "lightgbm": 0.15}``). The other formats are the
files those runtimes load (``model.joblib``: the same fitted scikit-learn estimator, pickled;
``model.json``: an ``XGBClassifier``/``XGBRegressor`` of a few shallow trees; ``model.txt``: an
``LGBMClassifier``/``LGBMRegressor`` booster), trained on the same rows, so :func:`sample_input`
fits every model of a dataset. Served by ``plane.runtimes``, they answer the ONNX models' names
(``label``/``probabilities``; regressors ``prediction``). Model ``i`` of a mix is the same model
it would be in an all-ONNX set when it is ONNX, so sizes and ids of ONNX models do not move.

Helpers for benchmarks and cache tests: :func:`make_medium_model` (a random forest of a few
MB), :func:`make_tiny_model` (``y = x * 2 + 1`` built with ``onnx.helper``),
:func:`make_memory_bomb_model` (a file of a few hundred bytes whose session holds 256 MiB)
and :func:`make_corrupt_model` (bytes that are not an ONNX model).
"""

from __future__ import annotations

import functools
import json
import pathlib
import warnings
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

__all__ = [
    "DATASETS",
    "ESTIMATORS",
    "FORMATS",
    "DemoModel",
    "generate_models",
    "make_corrupt_model",
    "make_medium_model",
    "make_memory_bomb_model",
    "make_tiny_model",
    "parse_formats",
    "sample_input",
]

#: Bundled scikit-learn datasets used for demo models.
DATASETS: tuple[str, ...] = ("digits", "iris", "wine", "breast_cancer")

#: Estimator kinds, cycled over by :func:`generate_models`.
ESTIMATORS: tuple[str, ...] = ("logreg", "tree", "forest", "gnb", "mlp", "ridge", "treereg")

_REGRESSORS = {"ridge", "treereg"}

#: Model formats :func:`generate_models` can write, and the file each is written to.
FORMATS: dict[str, str] = {"onnx": "model.onnx", "sklearn": "model.joblib", "xgboost": "model.json",
                           "lightgbm": "model.txt"}

INPUT_NAME = "input"
MANIFEST = "manifest.json"


@dataclass
class DemoModel:
    """One generated model; ``path`` is relative to the output directory."""

    model_id: str
    path: str
    dataset: str
    estimator: str
    n_features: int
    file_size: int
    type: str = "onnx"  # the model type to register it with (one of FORMATS)


@functools.cache
def _load(dataset: str) -> tuple[np.ndarray, np.ndarray]:
    from sklearn import datasets as skd

    loaders = {
        "digits": skd.load_digits,
        "iris": skd.load_iris,
        "wine": skd.load_wine,
        "breast_cancer": skd.load_breast_cancer,
    }
    try:
        loader = loaders[dataset]
    except KeyError:
        raise ValueError(f"unknown dataset {dataset!r}; choose one of {', '.join(DATASETS)}") from None
    bunch = loader()
    x = np.ascontiguousarray(bunch.data, dtype=np.float32)
    y = np.asarray(bunch.target)
    if dataset in ("wine", "breast_cancer"):
        # Standardise features with very different scales so the linear models converge fast.
        # The scaling is part of the data (sample_input returns the same scaled rows).
        x = ((x - x.mean(axis=0)) / (x.std(axis=0) + 1e-6)).astype(np.float32)
    elif dataset == "digits":
        x = (x / np.float32(16.0)).astype(np.float32)
    x.setflags(write=False)
    return x, y


def sample_input(dataset: str, n_rows: int = 1) -> np.ndarray:
    """``n_rows`` float32 feature rows of ``dataset`` (wrapping around), shape ``[n_rows, n_features]``."""
    if n_rows < 0:
        raise ValueError("n_rows must be >= 0")
    x, _ = _load(dataset)
    return np.ascontiguousarray(x[np.arange(n_rows) % x.shape[0]])


def _make_estimator(kind: str, variant: int, seed: int):
    from sklearn.ensemble import RandomForestClassifier
    from sklearn.linear_model import LogisticRegression, Ridge
    from sklearn.naive_bayes import GaussianNB
    from sklearn.neural_network import MLPClassifier
    from sklearn.tree import DecisionTreeClassifier, DecisionTreeRegressor

    rs = seed * 1000 + variant
    if kind == "logreg":
        return LogisticRegression(C=(0.1, 0.5, 1.0, 5.0)[variant % 4], max_iter=200)
    if kind == "tree":
        return DecisionTreeClassifier(max_depth=3 + variant % 6, random_state=rs)
    if kind == "forest":
        return RandomForestClassifier(
            n_estimators=3 + variant % 5, max_depth=4 + variant % 4, random_state=rs, n_jobs=1
        )
    if kind == "gnb":
        return GaussianNB(var_smoothing=10.0 ** -(5 + variant % 6))
    if kind == "mlp":
        return MLPClassifier(
            hidden_layer_sizes=(8 + 4 * (variant % 4),), max_iter=60, random_state=rs, tol=1e-3
        )
    if kind == "ridge":
        return Ridge(alpha=(0.1, 1.0, 10.0)[variant % 3])
    if kind == "treereg":
        return DecisionTreeRegressor(max_depth=3 + variant % 5, random_state=rs)
    raise ValueError(f"unknown estimator kind {kind!r}; choose one of {', '.join(ESTIMATORS)}")


def _to_onnx(model, n_features: int, name: str) -> bytes:
    from skl2onnx import convert_sklearn
    from skl2onnx.common.data_types import FloatTensorType

    options = {id(model): {"zipmap": False}} if hasattr(model, "classes_") else None
    onx = convert_sklearn(
        model,
        initial_types=[(INPUT_NAME, FloatTensorType([None, n_features]))],
        options=options,
        name=name,  # skl2onnx would otherwise use a random graph name
    )
    return onx.SerializeToString()


def _train(dataset: str, kind: str, variant: int, seed: int):
    from sklearn.exceptions import ConvergenceWarning

    x, y = _load(dataset)
    # A different random ~85% subsample per model, so that every file differs.
    rng = np.random.default_rng([seed, variant])
    rows = rng.random(x.shape[0]) < 0.85
    est = _make_estimator(kind, variant, seed)
    target = y[rows].astype(np.float32) if kind in _REGRESSORS else y[rows]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est.fit(x[rows], target)
    return est


def _write(path: pathlib.Path, data: bytes) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    tmp.replace(path)
    return len(data)


def parse_formats(text: str) -> dict[str, float]:
    """``mesh demo --formats``: ``onnx,sklearn`` (equal shares), ``all``, or names with relative
    shares, ``onnx=0.5,sklearn=0.2,xgboost=0.15,lightgbm=0.15`` (a bare name counts 1). Raises
    ValueError naming what is wrong."""
    shares: dict[str, float] = {}
    for item in (part.strip() for part in text.split(",")):
        if not item:
            continue
        name, _, share = item.partition("=")
        name = name.strip().lower()
        names = list(FORMATS) if name == "all" else [name]
        if name not in FORMATS and name != "all":
            raise ValueError(f"unknown model format {name!r}; choose from {', '.join(FORMATS)} (or all)")
        try:
            weight = float(share) if share.strip() else 1.0
        except ValueError:
            raise ValueError(f"the share of {name!r} must be a number, not {share.strip()!r}") from None
        if weight < 0 or weight != weight or weight == float("inf"):
            raise ValueError(f"the share of {name!r} must be a finite number >= 0")
        for n in names:
            shares[n] = shares.get(n, 0.0) + weight
    if not any(shares.values()):
        raise ValueError(f"name at least one format with a share above 0 ({', '.join(FORMATS)})")
    return shares


def _assign_formats(n: int, formats: dict[str, float] | None) -> list[str]:
    """The format of each of ``n`` models: shares spread evenly through the sequence (smooth
    weighted round robin, deterministic), so any prefix of the set has about the same mix."""
    if formats is None:
        return ["onnx"] * n
    unknown = sorted(set(formats) - set(FORMATS))
    if unknown:
        raise ValueError(f"unknown model format(s) {', '.join(unknown)}; choose from {', '.join(FORMATS)}")
    shares = {f: float(w) for f, w in formats.items() if w}
    if any(w < 0 for w in shares.values()) or not shares:
        raise ValueError("format shares must be >= 0 and not all zero")
    total = sum(shares.values())
    credit = dict.fromkeys(shares, 0.0)
    out = []
    for _ in range(n):
        for f in credit:
            credit[f] += shares[f] / total
        chosen = max(credit, key=lambda f: credit[f])  # first of the largest: dict order breaks ties
        credit[chosen] -= 1.0
        out.append(chosen)
    return out


def _train_boosted(fmt: str, dataset: str, regressor: bool, variant: int, seed: int):
    """A few shallow trees of XGBoost or LightGBM, on the same subsample scheme as :func:`_train`."""
    x, y = _load(dataset)
    rng = np.random.default_rng([seed, variant])
    rows = rng.random(x.shape[0]) < 0.85
    rs = seed * 1000 + variant
    trees, depth = 3 + variant % 5, 2 + variant % 3
    if fmt == "xgboost":
        import xgboost as xgb

        cls = xgb.XGBRegressor if regressor else xgb.XGBClassifier
        est = cls(n_estimators=trees, max_depth=depth, learning_rate=0.3, random_state=rs, n_jobs=1)
    else:
        import lightgbm as lgb

        lcls = lgb.LGBMRegressor if regressor else lgb.LGBMClassifier
        est = lcls(n_estimators=trees, num_leaves=2 ** depth, min_child_samples=5, random_state=rs, n_jobs=1,
                   verbose=-1)
    target = y[rows].astype(np.float32) if regressor else y[rows]
    return est.fit(x[rows], target)


def _serialize(fmt: str, est, n_features: int, model_id: str, path: pathlib.Path) -> bytes:
    if fmt == "onnx":
        return _to_onnx(est, n_features, model_id)
    if fmt == "sklearn":
        import io

        import joblib

        buf = io.BytesIO()
        joblib.dump(est, buf)
        return buf.getvalue()
    if fmt == "xgboost":
        path.parent.mkdir(parents=True, exist_ok=True)
        scratch = path.with_name(".scratch-" + path.name)  # XGBoost picks the format by the suffix
        est.save_model(str(scratch))
        data = scratch.read_bytes()
        scratch.unlink()
        return data
    return est.booster_.model_to_string().encode()


def generate_models(
    out_dir: pathlib.Path,
    n: int,
    *,
    seed: int = 0,
    progress: Callable[[int, int], None] | None = None,
    formats: dict[str, float] | None = None,
) -> list[DemoModel]:
    """Train and write ``n`` demo models to ``out_dir/<model_id>/model.<ext>`` plus ``manifest.json``.

    Model ``i`` uses dataset ``DATASETS[i % 4]`` and estimator ``ESTIMATORS[i % 7]`` (so all
    28 combinations appear within 28 models), with hyperparameters and a row subsample that
    depend on ``i`` and ``seed``. Ids look like ``demo-digits-logreg-0000``. ``progress`` is
    called as ``progress(done, n)`` after each model.

    ``formats`` (shares by format, see :data:`FORMATS`; default: all ONNX) mixes in other
    formats: a scikit-learn model is estimator ``ESTIMATORS[i % 7]`` pickled
    (``demo-iris-forest-sklearn-0005``); XGBoost and LightGBM models are classifiers, or
    regressors where the estimator would be one (``demo-wine-xgb-0002``, ``demo-iris-lgbmreg-0006``).
    ``DemoModel.type`` is the model type to register each with.
    """
    out_dir = pathlib.Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    models: list[DemoModel] = []
    for i, fmt in enumerate(_assign_formats(n, formats)):
        dataset = DATASETS[i % len(DATASETS)]
        kind = ESTIMATORS[i % len(ESTIMATORS)]
        ds = dataset.replace("_", "-")
        if fmt in ("onnx", "sklearn"):
            model_id = f"demo-{ds}-{kind}-{i:04d}" if fmt == "onnx" else f"demo-{ds}-{kind}-sklearn-{i:04d}"
            est = _train(dataset, kind, i, seed)
        else:
            regressor = kind in _REGRESSORS
            kind = ("xgb" if fmt == "xgboost" else "lgbm") + ("reg" if regressor else "")
            model_id = f"demo-{ds}-{kind}-{i:04d}"
            est = _train_boosted(fmt, dataset, regressor, i, seed)
        rel = f"{model_id}/{FORMATS[fmt]}"
        n_features = _load(dataset)[0].shape[1]
        size = _write(out_dir / rel, _serialize(fmt, est, n_features, model_id, out_dir / rel))
        models.append(DemoModel(model_id, rel, dataset, kind, n_features, size, fmt))
        if progress is not None:
            progress(i + 1, n)
    manifest = {"seed": seed, "count": n, "models": [asdict(m) for m in models]}
    _write(out_dir / MANIFEST, json.dumps(manifest, indent=2).encode())
    return models


def make_medium_model(path: pathlib.Path, *, n_estimators: int = 100, seed: int = 0) -> int:
    """Write a random forest (``n_estimators`` trees) on digits, a few MB; returns its size in bytes.

    Input ``input`` FP32 ``[N, 64]``; outputs ``label`` INT64 ``[N]``, ``probabilities`` FP32 ``[N, 10]``.
    """
    from sklearn.ensemble import RandomForestClassifier

    x, y = _load("digits")
    est = RandomForestClassifier(n_estimators=n_estimators, random_state=seed, n_jobs=1).fit(x, y)
    return _write(pathlib.Path(path), _to_onnx(est, x.shape[1], "demo-medium-forest"))


def make_tiny_model(path: pathlib.Path) -> int:
    """Write ``y = x * 2 + 1`` (input ``x`` FP32 ``[N, 4]``, output ``y``); returns its size in bytes."""
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    two = helper.make_tensor("two", TensorProto.FLOAT, [], [2.0])
    one = helper.make_tensor("one", TensorProto.FLOAT, [], [1.0])
    graph = helper.make_graph(
        [helper.make_node("Mul", ["x", "two"], ["x2"]), helper.make_node("Add", ["x2", "one"], ["y"])],
        "tiny",
        [x],
        [y],
        [two, one],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mesh-plane-demo"
    )
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    return _write(pathlib.Path(path), model.SerializeToString())


def make_memory_bomb_model(path: pathlib.Path) -> int:
    """Write a model of ~250 bytes whose session holds 256 MiB; returns the file size in bytes.

    ``y = x + table[int(x)]`` (input ``x`` FP32 ``[N, 4]``, output ``y``), where ``table`` is
    ``ConstantOfShape([64 Mi])`` filled with 1.0, so ``y = x + 1`` for ``x`` in
    ``[-2**26, 2**26)``. onnxruntime's constant folding (on by default) computes ``table``
    when the session is created and keeps it as a 256 MiB initializer for the session's
    life. For tests of memory accounting and of a pod refusing a model larger than its cache.
    """
    from onnx import TensorProto, helper

    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 4])
    shape = helper.make_tensor("shape", TensorProto.INT64, [1], [64 * 1024 * 1024])
    one = helper.make_tensor("one", TensorProto.FLOAT, [1], [1.0])
    graph = helper.make_graph(
        [
            helper.make_node("ConstantOfShape", ["shape"], ["table"], value=one),
            helper.make_node("Cast", ["x"], ["index"], to=TensorProto.INT64),
            helper.make_node("Gather", ["table", "index"], ["looked_up"], axis=0),
            helper.make_node("Add", ["x", "looked_up"], ["y"]),
        ],
        "memory-bomb",
        [x],
        [y],
        [shape],
    )
    model = helper.make_model(
        graph, opset_imports=[helper.make_opsetid("", 13)], producer_name="mesh-plane-demo"
    )
    model.ir_version = 8  # readable by any onnxruntime >= 1.10
    return _write(pathlib.Path(path), model.SerializeToString())


def make_corrupt_model(path: pathlib.Path) -> int:
    """Write bytes that are not a valid ONNX model; returns the size in bytes."""
    data = b"this is not an ONNX model\x00\xff\xfe" + bytes(range(256)) * 4
    return _write(pathlib.Path(path), data)

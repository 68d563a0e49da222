"""Runtimes (plane/runtimes/) with the real libraries: scikit-learn, XGBoost, LightGBM, onnxruntime.

Each runtime must answer what the library itself answers (``predict``/``predict_proba``), refuse
bad files with a ModelLoadError naming the format (never crash the process), measure sizes the
way ONNX sessions are measured, and find model files inside directories.
"""

from __future__ import annotations

import json
import pathlib
import subprocess
import sys

import joblib
import lightgbm as lgb
import numpy as np
import onnx
import pandas as pd
import pytest
import xgboost as xgb
from onnx import TensorProto, helper, numpy_helper
from sklearn.compose import ColumnTransformer
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris
from sklearn.ensemble import RandomForestClassifier
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.tree import DecisionTreeRegressor

from plane import operations, runtimes
from plane.runtime import ModelLoadError, ModelSession, memory_in_use, warm_up
from plane.runtimes import find_model_file, parse_type, resolve_type
from plane.settings import MeshSettings
from plane.tensors import TensorError

REPO = pathlib.Path(__file__).resolve().parents[2]
glibc_only = pytest.mark.skipif(memory_in_use()[1] != "mallinfo2", reason="needs glibc's mallinfo2")


def _data(name: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"iris": load_iris, "cancer": load_breast_cancer, "diabetes": load_diabetes}[name]
    x, y = loader(return_X_y=True)
    return np.ascontiguousarray(x, dtype=np.float32), y


@pytest.fixture(scope="module")
def models(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[str, pathlib.Path, object, np.ndarray]]:
    """name -> (model type, file, the fitted estimator/booster, rows to predict)."""
    warm_up()
    root = tmp_path_factory.mktemp("runtime-models")
    iris, cancer, diabetes = _data("iris"), _data("cancer"), _data("diabetes")
    out: dict[str, tuple[str, pathlib.Path, object, np.ndarray]] = {}

    def dump(name: str, est: object, x: np.ndarray, kind: str = "sklearn") -> None:
        path = root / name
        joblib.dump(est, path)
        out[name] = (kind, path, est, x)

    dump("forest.joblib", RandomForestClassifier(n_estimators=5, max_depth=4, random_state=0).fit(*iris), iris[0])
    dump("pipeline.joblib", make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(*cancer), cancer[0])
    names = np.array(["setosa", "versicolor", "virginica"])[iris[1]]
    dump("strings.pkl", RandomForestClassifier(n_estimators=3, random_state=0).fit(iris[0], names), iris[0])
    dump("ridge.pkl", Ridge().fit(*diabetes), diabetes[0])
    dump("tree2.joblib", DecisionTreeRegressor(max_depth=3).fit(diabetes[0], np.c_[diabetes[1], -diabetes[1]]),
         diabetes[0])

    def save_xgb(name: str, est: xgb.XGBModel, x: np.ndarray) -> None:
        path = root / name
        est.save_model(str(path))
        out[name] = ("xgboost", path, est, x)

    save_xgb("xgb-multi.json", xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(*iris), iris[0])
    save_xgb("xgb-binary.ubj", xgb.XGBClassifier(n_estimators=20, max_depth=3).fit(*cancer), cancer[0])
    save_xgb("xgb-reg.json", xgb.XGBRegressor(n_estimators=20, max_depth=3).fit(*diabetes), diabetes[0])
    booster = xgb.train({"objective": "binary:logistic", "max_depth": 2}, xgb.DMatrix(cancer[0], label=cancer[1]), 5)
    booster.save_model(str(root / "booster.json"))
    out["booster.json"] = ("xgboost", root / "booster.json", booster, cancer[0])

    def save_lgb(name: str, est: lgb.LGBMModel, x: np.ndarray) -> None:
        path = root / name
        est.booster_.save_model(str(path))
        out[name] = ("lightgbm", path, est, x)

    save_lgb("lgb-multi.txt", lgb.LGBMClassifier(n_estimators=10, num_leaves=8, verbose=-1).fit(*iris), iris[0])
    save_lgb("lgb-binary.bst", lgb.LGBMClassifier(n_estimators=10, num_leaves=8, verbose=-1).fit(*cancer), cancer[0])
    save_lgb("lgb-reg.txt", lgb.LGBMRegressor(n_estimators=10, num_leaves=8, verbose=-1).fit(*diabetes), diabetes[0])
    return out


CLASSIFIERS = ["forest.joblib", "pipeline.joblib", "strings.pkl", "xgb-multi.json", "xgb-binary.ubj",
               "lgb-multi.txt", "lgb-binary.bst"]
REGRESSORS = ["ridge.pkl", "tree2.joblib", "xgb-reg.json", "lgb-reg.txt"]


@pytest.mark.parametrize("name", CLASSIFIERS)
def test_classifiers_answer_what_the_library_predicts(models, name: str) -> None:
    kind, path, est, x = models[name]
    sess = runtimes.load(kind, name, path)
    assert sess.runtime == kind and sess.platform == kind
    assert sess.output_names == ["label", "probabilities"]
    assert sess.inputs["input"].datatype == "FP32" and sess.inputs["input"].shape == [-1, x.shape[1]]
    got = sess.run({"input": x})
    np.testing.assert_array_equal(got["label"], est.predict(x))
    np.testing.assert_allclose(got["probabilities"], est.predict_proba(x), rtol=1e-6, atol=1e-7)
    assert got["probabilities"].dtype == np.float32
    spec = sess.outputs["probabilities"]
    assert spec.datatype == "FP32" and spec.shape == [-1, len(est.classes_)]
    expected_label = "BYTES" if name == "strings.pkl" else "INT64"
    assert sess.outputs["label"].datatype == expected_label and sess.outputs["label"].shape == [-1]
    # MLServer's names work as requested outputs, in the order asked.
    both = sess.run({"input": x[:3]}, ["predict_proba", "predict"])
    assert list(both) == ["predict_proba", "predict"]
    np.testing.assert_array_equal(both["predict"], est.predict(x[:3]))


@pytest.mark.parametrize("name", REGRESSORS)
def test_regressors_answer_what_the_library_predicts(models, name: str) -> None:
    kind, path, est, x = models[name]
    sess = runtimes.load(kind, name, path)
    assert sess.output_names == ["prediction"]
    expected = est.predict(x)
    got = sess.run({"input": x})["prediction"]
    assert got.dtype == np.float32 and got.shape == expected.shape
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-3)
    assert sess.outputs["prediction"].shape == [-1, *expected.shape[1:]]
    np.testing.assert_allclose(sess.run({"input": x[:2]}, ["predict"])["predict"], expected[:2], rtol=1e-5, atol=1e-3)


def test_a_booster_trained_without_the_wrapper_is_a_classifier_by_its_objective(models) -> None:
    _, path, booster, x = models["booster.json"]
    sess = runtimes.load("xgboost", "booster", path)
    p = booster.predict(xgb.DMatrix(x))
    got = sess.run({"input": x})
    np.testing.assert_allclose(got["probabilities"], np.c_[1 - p, p], rtol=1e-6, atol=1e-7)
    np.testing.assert_array_equal(got["label"], (p > 0.5).astype(np.int64))


def test_pipelines_fitted_on_dataframes_select_columns_by_name(tmp_path: pathlib.Path) -> None:
    x, y = _data("iris")
    frame = pd.DataFrame(x, columns=["sl", "sw", "pl", "pw"])
    pipe = make_pipeline(ColumnTransformer([("petals", StandardScaler(), ["pl", "pw"])]),
                         LogisticRegression(max_iter=300)).fit(frame, y)
    joblib.dump(pipe, tmp_path / "model.joblib")
    sess = runtimes.load("mt:sklearn:0", "cols", tmp_path)
    np.testing.assert_array_equal(sess.run({"input": x})["label"], pipe.predict(frame))


def test_bad_inputs_and_unknown_outputs_are_tensor_errors(models) -> None:
    kind, path, est, x = models["xgb-multi.json"]
    sess = runtimes.load(kind, "m", path)
    got = sess.run({"input": x[:4].astype(np.float64)})  # FP64 is cast
    np.testing.assert_array_equal(got["label"], est.predict(x[:4]))
    assert sess.accepted_datatypes == {"input": ("FP64",)}
    with pytest.raises(TensorError, match=r"shape \[2, 3\]"):
        sess.run({"input": x[:2, :3]})
    with pytest.raises(TensorError, match="FP32"):
        sess.run({"input": x[:2].astype(np.int32)})
    with pytest.raises(TensorError, match="takes one input 'input'"):
        sess.run({"x": x[:2]})
    with pytest.raises(TensorError, match="outputs are label, probabilities.*predict, predict_proba"):
        sess.run({"input": x[:2]}, ["scores"])


BAD_BYTES = b"this is not a model\x00\xff\xfe" + bytes(range(256))


@pytest.mark.parametrize(("kind", "suffix", "named"), [
    ("onnx", ".onnx", "ONNX"), ("sklearn", ".joblib", "scikit-learn"), ("xgboost", ".json", "XGBoost"),
    ("lightgbm", ".txt", "LightGBM")])
def test_garbage_and_truncated_files_are_load_errors_naming_the_format(models, tmp_path, kind, suffix, named) -> None:
    good = {"onnx": None, "sklearn": "forest.joblib", "xgboost": "xgb-multi.json", "lightgbm": "lgb-multi.txt"}[kind]
    if good is None:
        from plane import demo

        demo.make_medium_model(tmp_path / "good.onnx", n_estimators=3)
        data = (tmp_path / "good.onnx").read_bytes()
    else:
        data = models[good][1].read_bytes()
    # LightGBM's text ends with optional sections; cut inside the parameters (which crashes LightGBM)
    near_end = data.index(b"end of parameters") - 3 if kind == "lightgbm" else len(data) - 7
    for i, blob in enumerate([BAD_BYTES, b"", data[: len(data) // 2], data[:near_end]]):
        path = tmp_path / f"bad{i}{suffix}"
        path.write_bytes(blob)
        with pytest.raises(ModelLoadError, match=named):
            runtimes.load(kind, f"bad{i}", path)


def test_lightgbm_files_cut_anywhere_never_crash_the_process(models, tmp_path: pathlib.Path) -> None:
    """LightGBM's own loader aborts or segfaults on most of these: each is checked first. In a
    child process, so a crash fails this test instead of ending the run."""
    src = models["lgb-multi.txt"][1]
    code = (
        "import pathlib, sys\n"
        "from plane import runtimes\n"
        "data = pathlib.Path(sys.argv[1]).read_bytes()\n"
        "cuts = sorted({i + 1 for i, c in enumerate(data) if c == 10} | set(range(0, len(data), 97)))\n"
        "tmp = pathlib.Path(sys.argv[2])\n"
        "refused = 0\n"
        "for cut in cuts:\n"
        "    tmp.write_bytes(data[:cut])\n"
        "    try:\n"
        "        runtimes.load('lightgbm', 'm', tmp)\n"
        "    except runtimes.ModelLoadError as exc:\n"
        "        assert 'LightGBM' in str(exc), exc\n"
        "        refused += 1\n"
        "print(len(cuts), refused)\n"
    )
    done = subprocess.run([sys.executable, "-c", code, str(src), str(tmp_path / "cut.txt")], cwd=REPO,
                          capture_output=True, text=True, timeout=240)
    assert done.returncode == 0, done.stderr[-2000:]
    cuts, refused = map(int, done.stdout.split())
    assert refused >= 0.9 * cuts  # only cuts after the trees (feature importances) still load


def test_legacy_binary_xgboost_is_refused_with_how_to_convert(tmp_path: pathlib.Path) -> None:
    path = tmp_path / "model.bst"
    path.write_bytes(b"binf" + bytes(200))
    with pytest.raises(ModelLoadError, match="legacy binary.*save_model"):
        runtimes.load("xgboost", "old", path)


def test_pickles_are_refused_when_not_allowed(models) -> None:
    path = models["forest.joblib"][1]
    refuse = MeshSettings(allow_pickle=False)
    with pytest.raises(ModelLoadError, match="MESH_ALLOW_PICKLE"):
        runtimes.load("sklearn", "f", path, settings=refuse)
    # formats that carry no code still load
    kind, xpath, _, _ = models["xgb-reg.json"]
    assert runtimes.load(kind, "x", xpath, settings=refuse).runtime == "xgboost"
    assert runtimes.load("sklearn", "f", path, settings=MeshSettings(allow_pickle=True)).runtime == "sklearn"


@glibc_only
@pytest.mark.parametrize("name", ["forest.joblib", "xgb-multi.json", "xgb-reg.json", "lgb-multi.txt", "lgb-reg.txt"])
def test_sizes_are_measured_and_repeat_within_10_percent(models, name: str) -> None:
    kind, path, _, _ = models[name]
    kept = [runtimes.load(kind, f"{name}-{i}", path) for i in range(3)]
    sizes = [s.size for s in kept]
    assert all(s.size_method == "mallinfo2" and s.warm_run for s in kept)
    assert min(sizes) >= path.stat().st_size > 0
    assert max(sizes) / min(sizes) <= 1.1, sizes


# --- types ------------------------------------------------------------------------------------------

@pytest.mark.parametrize(("text", "runtime"), [
    ("onnx", "onnx"), ("ONNX", "onnx"), ("onnxruntime", "onnx"), ("sklearn", "sklearn"), ("xgboost", "xgboost"),
    ("LightGBM", "lightgbm"), ("mt:onnx", "onnx"), ("mt:onnx:1", "onnx"), ("mt:sklearn:0", "sklearn"),
    ("MT:XGBoost:1", "xgboost"), ("mt:lightgbm:3", "lightgbm"), ("mt:sklearn|pv:grpc-v2", "sklearn"),
    ("rt:mlserver-1.x", "auto"), ("rt:mlserver-0.x", "auto"), ("rt:triton-2.x", "auto"),
    ("rt:kserve-sklearnserver", "sklearn"), ("rt:kserve-lgbserver", "lightgbm"), ("auto", "auto")])
def test_accepted_type_spellings(text: str, runtime: str) -> None:
    assert parse_type(text) == runtime
    assert parse_type(runtime) == runtime


def test_runtime_names_say_which_formats_they_may_mean() -> None:
    assert resolve_type("rt:mlserver-1.x").candidates == ("sklearn", "xgboost", "lightgbm")
    assert resolve_type("rt:triton-2.x").candidates == ("onnx", "xgboost", "lightgbm")
    assert resolve_type("mt:sklearn:0").format == "sklearn" and resolve_type("mt:sklearn:0").version == "0"


@pytest.mark.parametrize(("text", "why"), [
    ("tensorflow", "no runtime for"), ("mt:pytorch", "no runtime for"), ("mt:openvino_ir:opset1", "no runtime"),
    ("rt:ovms-1.x", "OpenVINO"), ("rt:torchserve-0.x", "TorchServe"), ("rt:my-runtime", "no runtime here"),
    ("mt:sklearn|pv:grpc-v1", "V2"), ("pickle", "not a model format"), ("mt:", "not a model format"), (" ", "empty")])
def test_refused_type_spellings_say_what_is_accepted(text: str, why: str) -> None:
    with pytest.raises(runtimes.UnknownType, match=why) as info:
        parse_type(text)
    assert "Accepted: onnx; sklearn; xgboost; lightgbm" in str(info.value)


def test_registration_accepts_exactly_what_is_served() -> None:
    ok = operations.ModelSpec("m", "rf/model.joblib", type="mt:sklearn:0")
    operations.check_spec(ok)
    rec = operations.record_for(ok, load_now=False)
    assert rec.type == "mt:sklearn:0" and parse_type(rec.type) == "sklearn"  # stored as given
    with pytest.raises(operations.ValidationError, match="tensorflow.*Accepted"):
        operations.check_spec(operations.ModelSpec("m", "tf/model", type="tensorflow"))
    assert "sklearn" in operations.SERVED_TYPES and "onnx" in operations.SERVED_TYPES


def test_model_session_is_constructible_as_before() -> None:
    import onnxruntime as ort

    from plane import demo

    sess = ort.InferenceSession(demo_tiny_bytes(), providers=["CPUExecutionProvider"])
    ms = ModelSession("t", sess, {}, {"y": None}, ["y"], 1, 1, 0.0)  # type: ignore[dict-item]
    np.testing.assert_array_equal(ms.run({"x": np.ones((1, 4), np.float32)})["y"], np.full((1, 4), 3.0))
    assert ms.runtime == "onnx" and ms.platform == "onnxruntime_onnx"
    with pytest.raises(TensorError, match="rejected the input"):
        ms.run({"x": np.ones((1, 4), np.int64)})
    assert demo.INPUT_NAME == runtimes.INPUT_NAME


def demo_tiny_bytes() -> bytes:
    import tempfile

    from plane import demo

    with tempfile.TemporaryDirectory() as d:
        demo.make_tiny_model(pathlib.Path(d) / "t.onnx")
        return (pathlib.Path(d) / "t.onnx").read_bytes()


# --- directories --------------------------------------------------------------------------------

def test_onnx_directory_with_external_data(tmp_path: pathlib.Path) -> None:
    weights = np.random.default_rng(0).random((256, 256), dtype=np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["x", "w"], ["y"])], "ext",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [None, 256])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [None, 256])],
        [numpy_helper.from_array(weights, "w")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    d = tmp_path / "ext"
    d.mkdir()
    onnx.save_model(model, str(d / "model.onnx"), save_as_external_data=True, all_tensors_to_one_file=True,
                    location="weights.bin", size_threshold=0)
    assert (d / "model.onnx").stat().st_size < 1000 and (d / "weights.bin").stat().st_size == weights.nbytes
    assert find_model_file("onnx", d) == d / "model.onnx"
    sess = runtimes.load("mt:onnx:1", "ext", d)
    x = np.ones((2, 256), np.float32)
    np.testing.assert_allclose(sess.run({"x": x})["y"], x @ weights, rtol=1e-4)
    assert sess.file_size == (d / "model.onnx").stat().st_size + weights.nbytes
    assert sess.size >= sess.file_size


def test_sklearn_directory_with_any_file_name_and_model_settings(models, tmp_path: pathlib.Path) -> None:
    _, path, est, x = models["forest.joblib"]
    d = tmp_path / "forest"
    d.mkdir()
    (d / "mnist-svm.joblib").write_bytes(path.read_bytes())
    assert find_model_file("sklearn", d) == d / "mnist-svm.joblib"
    sess = runtimes.load("sklearn", "dir", d)
    np.testing.assert_array_equal(sess.run({"input": x})["label"], est.predict(x))
    # MLServer's model-settings.json: the implementation picks the runtime, uri the file, outputs the default
    (d / "other.joblib").write_bytes(b"not this one")
    (d / "model-settings.json").write_text(json.dumps({
        "name": "forest", "implementation": "mlserver_sklearn.SKLearnModel",
        "parameters": {"uri": "./mnist-svm.joblib"}, "outputs": [{"name": "predict"}]}))
    sess = runtimes.load("rt:mlserver-1.x", "dir", d)
    assert sess.runtime == "sklearn" and sess.output_names == ["predict"]
    assert list(sess.run({"input": x[:2]})) == ["predict"]
    (d / "model-settings.json").write_text(json.dumps({"parameters": {"uri": "../../etc/passwd"}}))
    with pytest.raises(ModelLoadError, match="outside"):
        runtimes.load("sklearn", "dir", d)


def test_runtime_chosen_from_the_file_for_runtime_types(models, tmp_path: pathlib.Path) -> None:
    for name, runtime in [("lgb-binary.bst", "lightgbm"), ("xgb-binary.ubj", "xgboost")]:
        d = tmp_path / runtime
        d.mkdir()
        (d / "model.bst").write_bytes(models[name][1].read_bytes())  # MLServer's name for both
        assert runtimes.locate("rt:mlserver-1.x", d) == (runtime, d / "model.bst")
        assert runtimes.load("rt:mlserver-1.x", name, d / "model.bst").runtime == runtime
    # Triton's layout: config.pbtxt next to version directories; the highest version is served
    t = tmp_path / "triton"
    (t / "1").mkdir(parents=True)
    (t / "3").mkdir()
    (t / "config.pbtxt").write_text('backend: "fil"')
    (t / "1" / "xgboost.json").write_bytes(b"{}")
    (t / "3" / "xgboost.json").write_bytes(models["xgb-multi.json"][1].read_bytes())
    assert runtimes.locate("rt:triton-2.x", t) == ("xgboost", t / "3" / "xgboost.json")
    with pytest.raises(ModelLoadError, match="no onnx/xgboost/lightgbm model file"):
        runtimes.locate("rt:triton-2.x", tmp_path / "lightgbm" / "..")

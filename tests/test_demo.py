"""Demo ONNX models (plane.demo): generated from bundled scikit-learn datasets, loadable by
onnxruntime, with tensor-only outputs that the V2 encoder can carry."""

from __future__ import annotations

import json

import numpy as np
import onnxruntime as ort
import pytest

from plane import demo
from plane.proto import inference_pb2 as pb
from plane.tensors import decode_inputs, encode_outputs, specs_from_ort


def session(path) -> ort.InferenceSession:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])


@pytest.fixture(scope="module")
def generated(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo")
    calls = []
    models = demo.generate_models(out, 6, seed=3, progress=lambda done, total: calls.append((done, total)))
    return out, models, calls


def test_generate_writes_models_and_manifest(generated):
    out, models, calls = generated
    assert len(models) == 6
    assert calls == [(i, 6) for i in range(1, 7)]
    assert len({m.model_id for m in models}) == 6
    assert {m.dataset for m in models} == set(demo.DATASETS)
    assert len({m.estimator for m in models}) == 6
    for m in models:
        assert m.model_id.startswith(f"demo-{m.dataset.replace('_', '-')}-{m.estimator}-")
        assert m.path == f"{m.model_id}/model.onnx"
        assert (out / m.path).stat().st_size == m.file_size > 0
    manifest = json.loads((out / "manifest.json").read_text())
    assert [e["model_id"] for e in manifest["models"]] == [m.model_id for m in models]
    assert manifest["models"][0]["n_features"] == models[0].n_features
    # Every file is different.
    assert len({(out / m.path).read_bytes() for m in models}) == 6


def test_models_run_with_tensor_outputs(generated):
    out, models, _ = generated
    for m in models:
        sess = session(out / m.path)
        (inp,) = sess.get_inputs()
        assert inp.name == "input" and inp.type == "tensor(float)" and inp.shape[1] == m.n_features
        for o in sess.get_outputs():
            assert o.type.startswith("tensor("), (m.model_id, o.name, o.type)
        x = demo.sample_input(m.dataset, 5)
        assert x.dtype == np.float32 and x.shape == (5, m.n_features)
        results = sess.run(None, {"input": x})
        names = [o.name for o in sess.get_outputs()]
        for name, r in zip(names, results, strict=True):
            assert isinstance(r, np.ndarray), (m.model_id, name, type(r))
            assert r.shape[0] == 5
        if m.estimator in ("ridge", "treereg"):
            assert names == ["variable"] and results[0].shape == (5, 1)
        else:
            assert names == ["label", "probabilities"]
            assert results[0].dtype == np.int64 and results[1].dtype == np.float32
            np.testing.assert_allclose(results[1].sum(axis=1), 1.0, rtol=1e-4)

        resp = pb.ModelInferResponse()
        encode_outputs(resp, dict(zip(names, results, strict=True)))
        assert [o.name for o in resp.outputs] == names
        assert len(resp.raw_output_contents) == len(names)
        for o, blob, r in zip(resp.outputs, resp.raw_output_contents, results, strict=True):
            assert list(o.shape) == list(r.shape)
            assert len(blob) == r.nbytes


def test_full_v2_path_through_a_demo_model(generated):
    """A raw V2 request decoded against the model's signature, run, and encoded back."""
    out, models, _ = generated
    m = models[0]
    sess = session(out / m.path)
    specs = specs_from_ort(sess.get_inputs())
    x = demo.sample_input(m.dataset, 2)
    req = pb.ModelInferRequest(model_name=m.model_id)
    req.inputs.add(name="input", datatype="FP32", shape=[2, m.n_features])
    req.raw_input_contents.append(x.astype("<f4").tobytes())
    inputs = decode_inputs(pb.ModelInferRequest.FromString(req.SerializeToString()), specs)
    names = [o.name for o in sess.get_outputs()]
    resp = pb.ModelInferResponse()
    encode_outputs(resp, dict(zip(names, sess.run(None, inputs), strict=True)), ["label"])
    assert [o.name for o in resp.outputs] == ["label"]
    labels = np.frombuffer(resp.raw_output_contents[0], "<i8")
    np.testing.assert_array_equal(labels, sess.run(["label"], {"input": x})[0])


def test_generation_is_deterministic(tmp_path):
    a = demo.generate_models(tmp_path / "a", 3, seed=1)
    b = demo.generate_models(tmp_path / "b", 3, seed=1)
    assert [(tmp_path / "a" / m.path).read_bytes() for m in a] == [
        (tmp_path / "b" / m.path).read_bytes() for m in b
    ]


def test_sample_input():
    x = demo.sample_input("iris", 3)
    assert x.shape == (3, 4) and x.dtype == np.float32 and x.flags.c_contiguous
    assert demo.sample_input("digits").shape == (1, 64)
    assert demo.sample_input("wine", 200).shape == (200, 13)  # wraps around the 178 rows
    with pytest.raises(ValueError, match="unknown dataset"):
        demo.sample_input("mnist")


def test_tiny_model(tmp_path):
    size = demo.make_tiny_model(tmp_path / "tiny.onnx")
    assert size == (tmp_path / "tiny.onnx").stat().st_size
    sess = session(tmp_path / "tiny.onnx")
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    (y,) = sess.run(None, {"x": x})
    np.testing.assert_array_equal(y, x * 2 + 1)


def test_medium_model(tmp_path):
    size = demo.make_medium_model(tmp_path / "medium.onnx", n_estimators=30)
    assert size > 500_000
    sess = session(tmp_path / "medium.onnx")
    label, proba = sess.run(None, {"input": demo.sample_input("digits", 4)})
    assert label.shape == (4,) and proba.shape == (4, 10)


def test_corrupt_model_fails_to_load(tmp_path):
    path = tmp_path / "bad" / "model.onnx"
    demo.make_corrupt_model(path)
    assert path.stat().st_size > 0
    with pytest.raises(Exception) as info:
        session(path)
    assert "onnxruntime" in type(info.value).__module__ or "INVALID" in str(info.value).upper()


def test_mixed_formats_load_with_their_runtimes_and_take_the_same_rows(tmp_path):
    from plane import runtimes

    shares = {"onnx": 0.4, "sklearn": 0.2, "xgboost": 0.2, "lightgbm": 0.2}
    models = demo.generate_models(tmp_path / "mix", 10, seed=3, formats=shares)
    assert {m.type: sum(x.type == m.type for x in models) for m in models} == {
        "onnx": 4, "sklearn": 2, "xgboost": 2, "lightgbm": 2}
    only_onnx = demo.generate_models(tmp_path / "onnx", 10, seed=3)
    by_index = {m.model_id[-4:]: m for m in only_onnx}
    manifest = json.loads((tmp_path / "mix" / "manifest.json").read_text())
    assert [e["type"] for e in manifest["models"]] == [m.type for m in models]
    for m in models:
        assert m.path.endswith(demo.FORMATS[m.type]) and m.file_size == (tmp_path / "mix" / m.path).stat().st_size
        if m.type == "onnx":  # the same model as in an all-ONNX set
            twin = by_index[m.model_id[-4:]]
            assert m.model_id == twin.model_id
            assert (tmp_path / "mix" / m.path).read_bytes() == (tmp_path / "onnx" / twin.path).read_bytes()
        sess = runtimes.load(m.type, m.model_id, tmp_path / "mix" / m.path)
        out = sess.run({"input": demo.sample_input(m.dataset, 3)})
        assert sess.inputs["input"].shape[1] == m.n_features
        assert set(out) in ({"label", "probabilities"}, {"prediction"}, {"variable"})
    with pytest.raises(ValueError, match="unknown model format"):
        demo.generate_models(tmp_path / "x", 1, formats={"tensorflow": 1.0})

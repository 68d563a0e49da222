"""bench/formats_vs_mlserver.py without servers: arguments, tables, the results sections, and the
models it trains (saved in the formats both the plane and MLServer load). No timings asserted."""

from __future__ import annotations

import json
import pathlib
import sys

import numpy as np
import pytest

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[2] / "bench"))

import formats_vs_mlserver as fb  # noqa: E402


def test_defaults_full_and_quick():
    full = fb.parse_args([])
    assert (full.seconds, full.reps, full.warmup, full.trees, full.forest_trees) == (3.0, 3, 0.5, 100, 50)
    assert full.concurrency == [1, 8] and full.models == ["xgboost", "lightgbm", "sklearn"]
    assert full.write is True and full.rest_model == "xgboost" and full.output == "predict"
    quick = fb.parse_args(["--quick"])
    assert (quick.seconds, quick.reps, quick.trees) == (1.0, 2, 30)
    assert quick.write is False
    assert fb.parse_args(["--quick", "--write"]).write is True
    assert fb.parse_args(["--no-write", "--seconds", "2"]).seconds == 2.0
    assert "--quick" in fb.command_line(quick) and "--concurrency 1 8" in fb.command_line(quick)
    assert "--models sklearn" in fb.command_line(fb.parse_args(["--models", "sklearn"]))
    line = fb.command_line(fb.parse_args(["--trees", "7", "--no-rest", "--lightgbm-learning-rate", "0.1"]))
    assert line.endswith("--trees 7 --lightgbm-learning-rate 0.1 --no-rest")


@pytest.mark.parametrize("argv", [["--reps", "0"], ["--concurrency", "0"], ["--models", "onnx"], ["--rows", "0"]])
def test_bad_arguments_exit(argv):
    with pytest.raises(SystemExit):
        fb.parse_args(argv)


def test_rotated_gives_every_system_a_turn_first():
    assert fb.rotated(["a", "b", "c"], 0) == ["a", "b", "c"]
    assert fb.rotated(["a", "b", "c"], 4) == ["b", "c", "a"]
    assert fb.rotated([], 3) == []


def _results() -> fb.Results:
    res = fb.Results()
    for rep, (p, m) in enumerate([(1000.0, 500.0), (900.0, 300.0), (1100.0, 500.0)]):
        res.add("grpc", "xgboost", "plane", 1, fb.Run(p, 1.0 + rep, 2.0, 400.0))
        res.add("grpc", "xgboost", "mlserver", 1, fb.Run(m, 2.0, 8.0, 1600.0))
        for system, rps in (("plane-rest", p / 2), ("mlserver-rest", m / 4), ("plane-grpc", p), ("mlserver-grpc", m)):
            res.add("rest", "xgboost", system, 8, fb.Run(rps, 3.0, 9.0, 500.0))
    return res


def test_ratios_are_medians_of_per_repetition_ratios():
    res = _results()
    plane, mls = res.get("grpc", "xgboost", "plane", 1), res.get("grpc", "xgboost", "mlserver", 1)
    assert fb.ratio(plane, mls, "rps") == pytest.approx(2.2)  # 2.0, 3.0, 2.2
    assert fb.ratio(plane, mls, "p99") == pytest.approx(0.25)
    assert fb.ratio(plane, [], "rps") is None


def test_grpc_and_rest_tables():
    res = _results()
    rows = fb.grpc_rows(res, ["xgboost"], [1, 8])
    assert rows[0][:5] == ["xgboost", "1", "1,000 ±100", "500 ±100", "2.20×"]
    assert rows[0][-1] == "400 / 1,600"
    assert rows[1][2:5] == ["-", "-", "-"]  # c=8 was not measured on the gRPC table
    text = fb.table(fb.GRPC_HEADERS, rows)
    assert text.splitlines()[0].startswith("| model") and len(text.splitlines()) == 4
    rest = fb.rest_rows(res, "xgboost", [8])
    assert rest[0][0] == "8" and rest[0][-1] == "500 · 500 · 500 · 500"
    assert rest[0][5:8] == ["4.40×", "0.50×", "0.25×"]  # plane REST/MLServer REST, plane REST/gRPC, MLServer's
    summary = fb.ratio_summary(res, ["xgboost"], [1, 8], "xgboost")
    assert summary == [["xgboost gRPC: plane/MLServer", "2.20×", "-"], ["xgboost REST: plane/MLServer", "-", "4.40×"],
                       ["xgboost plane REST/plane gRPC", "-", "0.50×"]]


def test_load_line():
    line = fb.load_line([(1.0, 2.0, 3.0), (4.5, 2.0, 3.0), (2.0, 2.0, 3.0)])
    assert "1.00 / 2.00 / 3.00 at start" in line and "1-min range 1.00–4.50" in line
    assert fb.load_line([]) == "load average: ?"


def test_sections_are_appended_once_then_replaced_in_place():
    doc = "# Results\n\n## other\n\nkeep me\n"
    once = fb.replace_section(doc, "table v1", heading="## formats_vs_mlserver")
    assert once.startswith(doc.rstrip("\n")) and once.count("## formats_vs_mlserver") == 1
    assert "table v1" in once
    edited = once + "\n## later section\n\nalso kept\n"
    twice = fb.replace_section(edited, "table v2", heading="## formats_vs_mlserver")
    assert "table v1" not in twice and "table v2" in twice
    assert twice.count(fb.start_marker()) == 1 and "keep me" in twice and twice.endswith("also kept\n")


def test_rest_body_is_a_v2_request():
    x = fb.sample_rows(2)
    doc = json.loads(fb.rest_body(x, "predict"))
    assert doc["inputs"][0]["shape"] == [2, 64] and doc["inputs"][0]["datatype"] == "FP32"
    assert len(doc["inputs"][0]["data"]) == 128 and doc["outputs"] == [{"name": "predict"}]


def test_trained_models_load_in_their_libraries_and_in_the_plane(tmp_path):
    import joblib
    import lightgbm as lgb
    import xgboost as xgb

    from plane import runtimes

    models = fb.train_models(tmp_path, trees=3, forest_trees=3)
    assert [m.kind for m in models] == ["xgboost", "lightgbm", "sklearn"]
    x = fb.sample_rows(5)
    by_kind = {m.kind: m for m in models}
    for m in models:
        assert m.path.is_file() and m.file_size == m.path.stat().st_size > 0
        assert m.path.relative_to(tmp_path).as_posix() == m.rel and m.n_features == 64
    xg = xgb.XGBClassifier()
    xg.load_model(by_kind["xgboost"].path)
    booster = lgb.Booster(model_file=str(by_kind["lightgbm"].path))
    forest = joblib.load(by_kind["sklearn"].path)
    expected = {"xgboost": xg.predict(x), "lightgbm": booster.predict(x).argmax(axis=1), "sklearn": forest.predict(x)}
    for m in models:
        sess = runtimes.load(m.kind, m.name, m.path)
        (label,) = sess.session.run(["label"], {"input": x})
        np.testing.assert_array_equal(np.asarray(label).reshape(-1), np.asarray(expected[m.kind]).reshape(-1))
    settings = fb.mlserver_model_settings(models)
    assert settings["fmt-lightgbm"] == {"implementation": "mlserver_lightgbm.LightGBMModel",
                                        "parameters": {"uri": str(by_kind["lightgbm"].path)}}

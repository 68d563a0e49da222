"""A corrupt model file of each format, registered and loaded through real pods, is LOADING_FAILED
with a reason that names the format, in the status, the failure records and the event log."""

from __future__ import annotations

import pathlib

import grpc
import numpy as np
import pytest

from plane import demo
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from tests.support import uid, wait_for

pytestmark = pytest.mark.slow

GARBAGE = b"this is not a model\x00\xff\xfe" + bytes(range(256)) * 4


def _truncated(path: pathlib.Path, make) -> bytes:
    make(path)
    data = path.read_bytes()
    path.unlink()
    return data[: len(data) // 2]


def _sklearn(path: pathlib.Path) -> None:
    import joblib
    from sklearn.linear_model import LogisticRegression

    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
    joblib.dump(LogisticRegression().fit(x, y), path)


def _xgboost(path: pathlib.Path) -> None:
    import xgboost as xgb

    x, y = np.arange(40, dtype=np.float32).reshape(20, 2), np.arange(20) % 2
    xgb.XGBClassifier(n_estimators=3, max_depth=2).fit(x, y).save_model(path)


def _lightgbm(path: pathlib.Path) -> None:
    import lightgbm as lgb

    x, y = np.arange(80, dtype=np.float64).reshape(40, 2), np.arange(40) % 2
    lgb.LGBMClassifier(n_estimators=3, num_leaves=3, min_child_samples=2, verbose=-1).fit(x, y) \
        .booster_.save_model(str(path))


# (model type as registered, file name, how the file is broken, the format named in the reason)
CASES = [
    ("onnx", "model.onnx", "garbage", "ONNX"),
    ("onnx", "model.onnx", "truncated", "ONNX"),
    ("sklearn", "model.joblib", "garbage", "scikit-learn"),
    ("mt:sklearn", "model.joblib", "truncated", "scikit-learn"),
    ("xgboost", "model.json", "garbage", "XGBoost"),
    ("mt:xgboost", "model.json", "truncated", "XGBoost"),
    ("lightgbm", "model.txt", "garbage", "LightGBM"),
    ("mt:lightgbm", "model.txt", "truncated", "LightGBM"),
]
MAKERS = {"onnx": demo.make_tiny_model, "sklearn": _sklearn, "xgboost": _xgboost, "lightgbm": _lightgbm}


@pytest.fixture(scope="module")
def bad_storage(plane_client, tmp_path_factory) -> tuple[str, pathlib.Path]:
    root = tmp_path_factory.mktemp("bad-models")
    key = uid("bad")
    plane_client.set_storage(key, "local", {"path": str(root)})
    return key, root


@pytest.mark.parametrize(("model_type", "name", "how", "fmt"), CASES, ids=[f"{c[0]}-{c[2]}" for c in CASES])
def test_a_corrupt_file_fails_to_load_naming_its_format(plane_client, endpoints, bad_storage, model_type, name, how,
                                                        fmt):
    key, root = bad_storage
    directory = root / uid(f"{model_type.replace(':', '-')}-{how}")
    directory.mkdir()
    runtime = model_type.removeprefix("mt:")
    data = GARBAGE if how == "garbage" else _truncated(directory / name, MAKERS[runtime])
    (directory / name).write_bytes(data)
    model_id = uid(f"bad-{runtime}-{how}")
    plane_client.register_model(model_id, path=f"{directory.name}/{name}", storage_key=key, type=model_type)
    with pytest.raises(Exception) as exc:  # noqa: B017 - ManagementError or an RpcError, both carry the reason
        plane_client.ensure_loaded(model_id, sync=True, timeout=60)
    assert fmt in str(exc.value), str(exc.value)
    with grpc.insecure_channel(endpoints[-1]) as ch:
        status = mgrpc.ModelMeshStub(ch).getModelStatus(mpb.GetStatusRequest(modelId=model_id), timeout=30)
    assert status.status == mpb.ModelStatusInfo.LOADING_FAILED, status
    assert status.errors and all(fmt in e for e in status.errors), status.errors
    rec = wait_for(lambda: (r := plane_client.get_model(model_id)) and r.failed and r, what="failure recorded")
    assert not rec.copies
    assert all(fmt in f.message and "failed on" in f.message for f in rec.failed.values()), rec.failed
    reasons = wait_for(lambda: [e.reason for e in plane_client.events(limit=0)
                                if e.model == model_id and e.kind == "load-failed"], what="load-failed event")
    assert all(fmt in r for r in reasons), reasons

"""scikit-learn, XGBoost and LightGBM files registered and served by real pods, through a pod
that does not hold the model; answers equal the library's own predictions."""

from __future__ import annotations

import joblib
import numpy as np
import pytest
import tritonclient.grpc as tc
from sklearn.datasets import load_iris

from tests.support import uid, wait_for

pytestmark = pytest.mark.slow


def _files(root):
    import lightgbm as lgb
    import xgboost as xgb
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    x, y = load_iris(return_X_y=True)
    x = x.astype(np.float32)
    (root / "fmt").mkdir(exist_ok=True)
    sk = make_pipeline(StandardScaler(), LogisticRegression(max_iter=300)).fit(x, y)
    joblib.dump(sk, root / "fmt" / "model.joblib")
    xg = xgb.XGBClassifier(n_estimators=5, max_depth=2).fit(x, y)
    xg.save_model(root / "fmt" / "model.json")
    lg = lgb.LGBMClassifier(n_estimators=5, num_leaves=4, verbose=-1).fit(x, y)
    lg.booster_.save_model(str(root / "fmt" / "model.txt"))
    return x, {"sklearn": (sk, "fmt/model.joblib"), "xgboost": (xg, "fmt/model.json"),
               "lightgbm": (lg, "fmt/model.txt")}


@pytest.mark.parametrize("kind", ["sklearn", "mt:xgboost", "lightgbm"])
def test_a_model_file_of_each_format_is_served(plane_client, model_dir, endpoints, kind):
    x, files = _files(model_dir)
    est, path = files[kind.removeprefix("mt:")]
    model_id = uid(kind.replace(":", "-"))
    plane_client.register_model(model_id, path=path, type=kind)
    client = tc.InferenceServerClient(endpoints[0])
    inp = tc.InferInput("input", [5, 4], "FP32")
    inp.set_data_from_numpy(x[:5])
    outs = [tc.InferRequestedOutput("label"), tc.InferRequestedOutput("probabilities")]
    res = client.infer(model_id, [inp], outputs=outs)
    np.testing.assert_allclose(res.as_numpy("probabilities"), est.predict_proba(x[:5]), rtol=1e-4, atol=1e-5)
    np.testing.assert_array_equal(res.as_numpy("label").reshape(-1), est.predict(x[:5]).reshape(-1))
    # the answer comes as soon as the session exists; the registry hears of the copy right after
    rec = wait_for(lambda: (r := plane_client.get_model(model_id)).loaded_on() and r, 10, "the copy in the registry")
    assert rec.size > 0

"""The `mesh` command as an operator runs it: a subprocess, embedded etcd, --json output."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from plane import local

pytestmark = pytest.mark.slow


def run(env, *args, check=True):
    proc = subprocess.run([sys.executable, "-m", "plane.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180)
    if check and proc.returncode != 0:
        raise AssertionError(f"mesh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}")
    return proc


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    state = tmp_path_factory.mktemp("cli-state")
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_STATE_DIR=str(state), MESH_GRPC_PORT=str(local.free_port()), MESH_CAPACITY="64MiB")
    up = run(env, "up", "--pods", "2", "--json")
    yield env, json.loads(up.stdout), up
    run(env, "down", check=False)


def test_up_starts_embedded_etcd_and_pods(embedded):
    env, data, up = embedded
    assert len(data["pods"]) == 2
    assert "waiting for pod-0" in up.stderr  # progress is shown
    status = json.loads(run(env, "status", "--json").stdout)
    assert status["mode"] == "embedded"
    assert [p["endpoint"] for p in status["pods"]] == [p["endpoint"] for p in data["pods"]]
    assert all(p["capacity"] == 64 * 1024**2 for p in status["pods"])


def test_up_twice_says_already_up(embedded):
    env, _, _ = embedded
    again = run(env, "up", "--pods", "2")
    assert "already up" in again.stdout


def test_demo_models_storage_and_vmodels(embedded, tmp_path):
    env, _, _ = embedded
    demo = json.loads(run(env, "demo", "--models", "5", "--json").stdout)
    assert demo["registered"] == 5
    models = json.loads(run(env, "models", "list", "--json").stdout)
    assert {m["model_id"] for m in models} == {m["model_id"] for m in demo["models"]}
    first = models[0]["model_id"]
    loaded = json.loads(run(env, "models", "load", first, "--sync", "--json").stdout)
    assert loaded["status"] == "LOADED" and loaded["loaded_on"]
    status = json.loads(run(env, "models", "status", first, "--json").stdout)
    assert status["size"] > 0 and status["io"]["inputs"][0][0] == "input"

    vm = json.loads(run(env, "vmodels", "set", "prod", first, "--sync", "--json").stdout)
    assert vm["active"] == first and vm["status"] == "DEFINED"
    assert [v["vmodel_id"] for v in json.loads(run(env, "vmodels", "list", "--json").stdout)] == ["prod"]
    refused = run(env, "models", "unregister", first, check=False)
    assert refused.returncode == 1 and "vmodel" in refused.stderr
    run(env, "vmodels", "delete", "prod")
    run(env, "models", "unregister", first)
    assert first not in {m["model_id"] for m in json.loads(run(env, "models", "list", "--json").stdout)}
    events = json.loads(run(env, "events", "--json", "--limit", "0").stdout)
    assert {"register", "load", "loaded", "unregister"} <= {e["kind"] for e in events}


def test_storage_secret_from_env_is_never_printed(embedded):
    env, _, _ = embedded
    secret = "sEcReT-KEY-for-cli-test-0123456789"
    env2 = dict(env, MY_S3_SECRET=secret)
    out = run(env2, "storage", "set", "minio", "--type", "s3", "--endpoint-url", "http://127.0.0.1:9",
              "--bucket", "b", "--access-key-id", "AKIA-cli-test-access", "--secret-access-key-env", "MY_S3_SECRET")
    listed = run(env, "storage", "list", "--json")
    tested = run(env, "storage", "test", "minio", check=False)
    for text in (out.stdout, out.stderr, listed.stdout, tested.stdout, tested.stderr):
        assert secret not in text
    configs = {c["key"]: c for c in json.loads(listed.stdout)}
    assert configs["minio"]["secret_access_key"].startswith("****")
    assert tested.returncode == 1 and "cannot reach the S3 endpoint" in tested.stdout
    run(env, "storage", "remove", "minio")


def test_bad_input_gets_clear_errors(embedded):
    env, _, _ = embedded
    bad = run(env, "models", "register", "../evil", "--path", "x.onnx", check=False)
    assert bad.returncode == 2 and "invalid model id" in bad.stderr
    bad = run(env, "models", "register", "ok-id", "--path", "../../etc/passwd", check=False)
    assert bad.returncode == 2 and "leaves the storage root" in bad.stderr
    missing = run(env, "models", "status", "nope", check=False)
    assert missing.returncode == 1 and "not registered" in missing.stderr


def test_no_plane_running_says_how_to_start_one(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_STATE_DIR"] = str(tmp_path)
    proc = run(env, "models", "list", check=False)
    assert proc.returncode == 3 and "mesh up" in proc.stderr
    assert "no plane is running" in run(env, "down").stdout


def test_pod_with_unreachable_etcd_exits_with_a_clear_error(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_ETCD=f"127.0.0.1:{local.free_port()}", MESH_GRPC_PORT=str(local.free_port()),
               MESH_METRICS_PORT="0", MESH_STATE_DIR=str(tmp_path))
    proc = subprocess.run([sys.executable, "-m", "plane.pod"], env=env, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 3
    assert "cannot reach etcd" in proc.stderr and "Traceback" not in proc.stderr


def test_console_flags_pass_through(tmp_path):
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_STATE_DIR"] = str(tmp_path)
    proc = run(env, "console", "--help")
    assert "--readonly" in proc.stdout

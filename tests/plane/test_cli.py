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


def _flush_usage(client, model_id: str, rpm: float, stamp: int) -> None:
    """What a pod's usage flush writes after serving requests (plane.pod._flush_usage)."""
    from plane import usage

    def change(m):
        usage.note_requests(m, 10, stamp)
        m.last_used_ms = max(m.last_used_ms, stamp)
        m.used_ms = stamp
        usage.update_rate(m, "pod-0", rpm, stamp)
        return m

    client.run_async(client.registry.update_model(model_id, change))


def _table_rows(text: str) -> dict[str, list[str]]:
    rows = {}
    for line in text.splitlines():
        cells = [c.strip() for c in line.replace("┃", "│").strip("│ ").split("│")]
        if len(cells) >= 6:
            rows[cells[0]] = cells
    return rows


def test_models_show_the_rate_now_and_never_for_unused_models(settings):
    """An idle model's last report (239 req/min two minutes ago) must not read as its rate, and
    a model never used must not read as used at its registration-time eviction order."""
    from plane.api import PlaneClient
    from plane.registry import now_ms

    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(MESH_ETCD=settings.etcd, MESH_ETCD_PREFIX=settings.etcd_prefix, MESH_STATE_DIR=str(settings.state_dir))
    client = PlaneClient.connect(settings)
    try:
        for name in ("idle-2m", "never-used", "busy"):
            client.register_model(name, path=f"{name}.onnx")
        now = now_ms()
        _flush_usage(client, "idle-2m", 239.0, now - 120_000)
        _flush_usage(client, "busy", 60.0, now - 1000)
    finally:
        client.close()

    listed = run(env, "models", "list").stdout
    rows = _table_rows(listed)
    assert rows["model"][4:6] == ["last used", "req/min"], listed
    assert rows["idle-2m"][4:6] == ["2m ago", "0"], listed
    assert rows["never-used"][4:6] == ["never", "0"], listed
    assert 0 < float(rows["busy"][5]) < 60, listed  # 60/min reported a second or two ago, decaying

    models = {m["model_id"]: m for m in json.loads(run(env, "models", "list", "--json").stdout)}
    idle, never, busy = models["idle-2m"], models["never-used"], models["busy"]
    assert idle["rpm_now"] == 0 and idle["rpm"] == 239.0  # the new key decays; the old keeps its meaning
    assert idle["used_ms"] == now - 120_000 and idle["last_used_ms"] == now - 120_000
    assert never["used_ms"] == 0 and never["rpm_now"] == 0
    assert 0 < never["last_used_ms"] < now - 3600_000  # the eviction order, still reported as it was
    assert 0 < busy["rpm_now"] < 60 and busy["rpm"] == 60.0

    status = run(env, "models", "status", "idle-2m").stdout
    assert "last used 2m ago, 0 req/min" in status, status
    status = run(env, "models", "status", "never-used").stdout
    assert "last used never, 0 req/min" in status, status
    one = json.loads(run(env, "models", "status", "never-used", "--json").stdout)
    assert one["used_ms"] == 0 and one["rpm_now"] == 0


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

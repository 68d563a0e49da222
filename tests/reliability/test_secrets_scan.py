"""A realistic operator session with a known S3 secret, then a search for that secret (and for
the access key id, which botocore's DEBUG records carry in ``Credential=``) in everything the
session produced: pod logs, the etcd event records (and every other key of the plane), the
CLI's stdout/stderr, and ``PlaneClient.list_storage()``. They may appear only in the storage
records themselves. test_secrets_everywhere.py does the same for every storage type.

Pods run with ``MESH_LOG_LEVEL=DEBUG`` so that a secret logged at debug level is caught too;
the session includes failure paths (an unreachable endpoint, a wrong object path), where
secrets tend to leak into error messages.
"""

from __future__ import annotations

import json
import os
from concurrent.futures import ThreadPoolExecutor

import grpc
import pytest

from plane import local

from .conftest import check_tiny_response, infer_stub, run_cli, start_plane, tiny_request, uid

pytestmark = pytest.mark.slow


def windows(secret: str, width: int = 10) -> list[str]:
    """Every ``width``-character piece of the secret: a partial leak is a leak."""
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]


def leaks(text: str, *secrets: str) -> list[str]:
    return [w for secret in secrets for w in windows(secret) if w in text]


def test_secret_never_leaks(s3_server, rel_models, etcd_endpoint, tmp_path, monkeypatch):
    secret = s3_server["secret_access_key"]
    key_id = s3_server["access_key_id"]
    assert len(secret) >= 20 and len(key_id) >= 16
    s3 = s3_server["client"]
    obj = f"secrets/{uid('tiny')}.onnx"
    s3.put_object(Bucket="models", Key=obj, Body=(rel_models / "tiny" / "model.onnx").read_bytes())

    monkeypatch.setenv("MESH_LOG_LEVEL", "DEBUG")
    with start_plane(etcd_endpoint, tmp_path / "state", None, pods=2) as plane:
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["OPS_S3_SECRET"] = secret
        common = ["--etcd", plane.settings.etcd, "--prefix", plane.settings.etcd_prefix]
        outputs: list[tuple[str, str, str]] = []

        def mesh(*args: str, ok: bool = True):
            proc = run_cli(env, *args, *common, timeout=90)
            outputs.append((" ".join(args), proc.stdout, proc.stderr))
            if ok:
                assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            return proc

        dead_port = local.free_port()
        s3args = ["--type", "s3", "--bucket", "models", "--access-key-id", s3_server["access_key_id"],
                  "--secret-access-key-env", "OPS_S3_SECRET"]
        mesh("storage", "set", "s3sec", "--endpoint-url", s3_server["endpoint_url"], *s3args)
        mesh("storage", "set", "s3dead", "--endpoint-url", f"http://127.0.0.1:{dead_port}", *s3args, "--json")
        with ThreadPoolExecutor(2) as pool:
            tests = [pool.submit(mesh, "storage", "test", "s3sec", "--json", "--path", "secrets/"),
                     pool.submit(mesh, "storage", "test", "s3dead", ok=False)]
            assert json.loads(tests[0].result().stdout)["ok"] is True
            assert tests[1].result().returncode == 1

        good, dead, missing = uid("sec"), uid("sec-dead"), uid("sec-missing")
        mesh("models", "register", good, "--path", obj, "--storage", "s3sec", "--load-now", "--sync", "--json")
        plane.client.register_model(dead, path=obj, storage_key="s3dead")
        plane.client.register_model(missing, path="secrets/no-such.onnx", storage_key="s3sec")
        for model, expect_ok in ((good, True), (dead, False), (missing, False)):
            for ep in plane.endpoints:
                ch, stub = infer_stub(ep)
                with ch:
                    try:
                        check_tiny_response(stub.ModelInfer(tiny_request(model), timeout=60))
                        assert expect_ok, model
                    except grpc.RpcError as exc:
                        assert not expect_ok, exc
                        outputs.append((f"infer {model}", "", exc.details() or ""))
        with ThreadPoolExecutor(2) as pool:
            calls = [pool.submit(mesh, "models", "load", dead, "--sync", ok=False)]
            for args in (("status", "--json"), ("models", "list", "--json"), ("storage", "list", "--json"),
                         ("storage", "list"), ("events", "--json", "--limit", "0")):
                calls.append(pool.submit(mesh, *args))
            for c in calls:
                c.result()
        listed = plane.client.list_storage()
        overview = plane.client.overview()
        events = plane.client.events(limit=0)

        # the session did what it should
        assert {e.kind for e in events} >= {"register", "load", "loaded", "load-failed"}
        assert plane.client.get_model(good).loaded_on()
        assert plane.client.get_storage("s3sec").params["secret_access_key"] == secret  # stored for the pods

        # -- the scan -------------------------------------------------------------------------------------
        found: list[str] = []
        for cmd, out, err in outputs:
            for where, text in (("stdout", out), ("stderr", err)):
                if leaks(text, secret, key_id):
                    found.append(f"CLI `mesh {cmd}` {where}")
        logs = plane.logs()
        assert set(logs) == {"pod-0.log", "pod-1.log"} and all(logs.values())
        for name, text in logs.items():
            if leaks(text, secret, key_id):
                found.append(f"pod log {name}")
        if leaks(json.dumps(listed), secret, key_id) or leaks(repr(listed), secret, key_id):
            found.append("PlaneClient.list_storage()")
        if leaks(repr(overview), secret, key_id):
            found.append("PlaneClient.overview()")
        reg = plane.client.registry
        tables, _ = plane.client.run_async(reg.snapshot_with_revision())
        holders = []
        for table, rows in tables.items():
            for name, value in rows:
                if leaks(value.decode(errors="replace"), secret, key_id) or leaks(name, secret, key_id):
                    holders.append(f"{table}/{name}")
        assert sorted(holders) == ["storage/s3dead", "storage/s3sec"], holders
        events = plane.client.run_async(reg.list_raw("events"))  # snapshots leave the event log out
        assert events, "no event records to scan"
        for name, value, _ in events:
            if leaks(value.decode(errors="replace"), secret, key_id) or leaks(name, secret, key_id):
                found.append(f"event {name}")
        assert found == [], f"the S3 secret or access key id leaked into: {found}"
        # and the masked form is what operators see
        assert any(c.get("secret_access_key", "").startswith("****") for c in listed)

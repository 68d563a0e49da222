"""Known secrets for every storage type, exercised through every front door, then searched for in
everything the session produced.

test_secrets_scan.py follows one S3 secret key. This test extends it to every secret a storage
config can hold (SPEC section 4): S3 keys, URL userinfo (``http://user:pass@host:9000``) in an
S3 endpoint and in an http URL, http ``headers``, and the gcs/azure credentials, which this
plane refuses (unsupported types) without echoing them. The session sets them through
``PlaneClient`` and through the CLI (``--from-file`` too), lists and tests every config, loads
models through S3 endpoints carrying userinfo (one unreachable, so that boto3's error text goes
through pod logs, events, the models' failure records and status; one reachable, which works)
and with a wrong secret. Pods log at DEBUG: botocore's debug records
(request URLs, signed headers) are searched too. The scan covers CLI stdout/stderr,
PlaneClient results and errors, gRPC error details, the pods' /metrics, pod log files and every
etcd key; the secrets may appear only in the storage records that hold them (for the pods).
"""

from __future__ import annotations

import base64
import json
import os
import urllib.request
from typing import Any

import grpc
import pytest

from plane import local
from plane.api import ValidationError

from .conftest import check_tiny_response, infer_stub, run_cli, start_plane, tiny_request, uid, wait_for

pytestmark = pytest.mark.slow

UINFO_USER = "uinfo-user-7Q2xK"
UINFO_PASS = "UinfoPa55word-9d3kQ"
HTTP_USER = "http-user-M4rp0"
HTTP_PASS = "HttpUrlPa55-Zk81Lw"
HEADER_TOKEN = "hdr-token-5c1f0a9e7b2d"
HEADER_KEY = "hdr-apikey-77c2e1b0"
WRONG_SECRET = "WrongSecretKey-that-S3-refuses-12345"
GCS = {"type": "gcs", "bucket": "models",
       "base64_service_account": base64.b64encode(json.dumps({
           "type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----gcsPrivKeyBody42"}).encode()).decode(),
       "private_key": "gcsPrivateKey-Qw3rty-0099", "client_secret": "gcsClientSecret-Zx81-7777"}
AZURE = {"type": "azure", "account_name": "meshacct", "container": "models",
         "account_key": "azureAccountKey+Base64/Value0123456789==",
         "connection_string": "DefaultEndpointsProtocol=https;AccountName=meshacct;"
                              "AccountKey=azureConnStrKey+9876543210;EndpointSuffix=core.windows.net",
         "client_secret": "azureClientSecret-Lm55-1212", "sas_token": "sv=2022-11-02&sig=azureSasSig%2B31415926"}


def windows(secret: str, width: int = 10) -> list[str]:
    """Every ``width``-character piece of the secret: a partial leak is a leak."""
    if len(secret) <= width:
        return [secret]
    return [secret[i : i + width] for i in range(len(secret) - width + 1)]


def gcs_azure_secrets() -> list[str]:
    b64 = GCS["base64_service_account"]
    return [b64, "gcsPrivKeyBody42", GCS["private_key"], GCS["client_secret"], AZURE["account_key"],
            "azureConnStrKey+9876543210", AZURE["client_secret"], "azureSasSig%2B31415926"]


def test_no_secret_of_any_storage_type_leaks(s3_server, rel_models, etcd_endpoint, tmp_path, monkeypatch):
    s3 = s3_server["client"]
    obj = f"everywhere/{uid('tiny')}.onnx"
    s3.put_object(Bucket="models", Key=obj, Body=(rel_models / "tiny" / "model.onnx").read_bytes())
    moto_port = int(s3_server["endpoint_url"].rsplit(":", 1)[1])
    dead_port = local.free_port()
    uinfo = f"{UINFO_USER}:{UINFO_PASS}"
    secrets = {  # what to look for -> where it may be stored
        "s3 access_key_id": s3_server["access_key_id"], "s3 secret_access_key": s3_server["secret_access_key"],
        "wrong s3 secret": WRONG_SECRET, "s3 userinfo": uinfo, "s3 userinfo user": UINFO_USER,
        "s3 userinfo password": UINFO_PASS, "http userinfo": f"{HTTP_USER}:{HTTP_PASS}",
        "http userinfo password": HTTP_PASS, "http header token": HEADER_TOKEN, "http header key": HEADER_KEY,
        **{f"gcs/azure secret {i}": s for i, s in enumerate(gcs_azure_secrets())},
    }

    monkeypatch.setenv("MESH_LOG_LEVEL", "DEBUG")
    with start_plane(etcd_endpoint, tmp_path / "state", None, pods=2) as plane:
        client = plane.client
        env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
        env["OPS_S3_SECRET"] = s3_server["secret_access_key"]
        common = ["--etcd", plane.settings.etcd, "--prefix", plane.settings.etcd_prefix]
        outputs: list[tuple[str, str]] = []  # (where, text)

        def mesh(*args: str, ok: bool | None = True):
            proc = run_cli(env, *args, *common, timeout=90)
            label = " ".join(args[:3])  # the arguments themselves may hold secrets
            outputs.append((f"CLI `mesh {label} ...` stdout", proc.stdout))
            outputs.append((f"CLI `mesh {label} ...` stderr", proc.stderr))
            if ok is True:
                assert proc.returncode == 0, (args, proc.stdout, proc.stderr)
            elif ok is False:
                assert proc.returncode != 0, (args, proc.stdout, proc.stderr)
            return proc

        def seen(where: str, value: Any) -> Any:
            outputs.append((where, value if isinstance(value, str) else f"{value!r}\n{json.dumps(value, default=str)}"))
            return value

        key_args = ["--bucket", "models", "--access-key-id", s3_server["access_key_id"]]
        # -- configs, through the CLI and through PlaneClient ------------------------------------------------
        mesh("storage", "set", "s3good", "--type", "s3", "--endpoint-url", s3_server["endpoint_url"], *key_args,
             "--secret-access-key-env", "OPS_S3_SECRET")
        mesh("storage", "set", "s3uinfo-dead", "--type", "s3", "--endpoint-url",
             f"http://{uinfo}@127.0.0.1:{dead_port}", *key_args, "--secret-access-key-env", "OPS_S3_SECRET", "--json")
        client.set_storage("s3uinfo-live", "s3", {"endpoint_url": f"http://{uinfo}@127.0.0.1:{moto_port}",
                                                  "bucket": "models", "access_key_id": s3_server["access_key_id"],
                                                  "secret_access_key": s3_server["secret_access_key"]})
        client.set_storage("s3wrong", "s3", {"endpoint_url": s3_server["endpoint_url"], "bucket": "models",
                                             "access_key_id": s3_server["access_key_id"],
                                             "secret_access_key": WRONG_SECRET})
        http_file = tmp_path / "http.json"
        http_file.write_text(json.dumps({"type": "http", "url": f"https://{HTTP_USER}:{HTTP_PASS}@files.example/m",
                                         "headers": {"Authorization": f"Bearer {HEADER_TOKEN}",
                                                     "X-Api-Key": HEADER_KEY}}))
        mesh("storage", "set", "httpcfg", "--from-file", str(http_file))
        for typ, doc in (("gcs", GCS), ("azure", AZURE)):
            f = tmp_path / f"{typ}.json"
            f.write_text(json.dumps(doc))
            proc = mesh("storage", "set", f"{typ}cfg", "--from-file", str(f), ok=False)
            assert f"storage type '{typ}' is not supported by this plane yet" in proc.stdout + proc.stderr
            mesh("storage", "set", f"{typ}cfg", "--from-file", str(f), "--json", ok=False)
            with pytest.raises(ValidationError) as err:
                client.set_storage(f"{typ}cfg", typ, {k: v for k, v in doc.items() if k != "type"})
            seen(f"PlaneClient.set_storage({typ}) error", str(err.value))
            assert "use s3 (any S3-compatible endpoint" in str(err.value)
            assert client.get_storage(f"{typ}cfg") is None  # refused: nothing stored
        s3keys = ["s3good", "s3uinfo-dead", "s3uinfo-live", "s3wrong"]
        assert sorted(c["key"] for c in client.list_storage()) == sorted([*s3keys, "httpcfg"])

        # -- list and test every config, both ways ----------------------------------------------------------
        working = {"s3good", "s3uinfo-live"}
        for key in [*s3keys, "httpcfg"]:
            res = seen(f"PlaneClient.test_storage({key})", client.test_storage(key, path="everywhere/"))
            assert res.ok == (key in working), (key, res)
            mesh("storage", "test", key, "--path", "everywhere/", ok=key in working)
            mesh("storage", "test", key, "--json", ok=None)
        dead_test = client.test_storage("s3uinfo-dead")
        assert dead_test.message.startswith(f"cannot reach the S3 endpoint http://****@127.0.0.1:{dead_port}")
        mesh("storage", "list")
        mesh("storage", "list", "--json")
        listed = seen("PlaneClient.list_storage()", client.list_storage())
        by_key = {c["key"]: c for c in listed}
        assert by_key["s3uinfo-dead"]["endpoint_url"] == f"http://****@127.0.0.1:{dead_port}"
        assert set(by_key["httpcfg"]["headers"]) == {"Authorization", "X-Api-Key"}

        # -- loads that fail with boto3's texts, and one that works ----------------------------------------------
        good, dead, live, wrong, http_model = (uid("ev-good"), uid("ev-dead"), uid("ev-live"), uid("ev-wrong"),
                                               uid("ev-http"))
        mesh("models", "register", good, "--path", obj, "--storage", "s3good", "--load-now", "--sync", "--json")
        for model, key in ((dead, "s3uinfo-dead"), (live, "s3uinfo-live"), (wrong, "s3wrong"),
                           (http_model, "httpcfg")):
            client.register_model(model, path=obj, storage_key=key)
        for model in (good, dead, live, wrong, http_model):
            for ep in plane.endpoints:
                ch, stub = infer_stub(ep)
                with ch:
                    try:
                        check_tiny_response(stub.ModelInfer(tiny_request(model), timeout=60))
                        assert model in (good, live), f"{model} loaded"
                    except grpc.RpcError as exc:
                        assert model not in (good, live), exc
                        seen(f"gRPC error of infer {model} on {ep}", exc.details() or "")
        mesh("models", "load", dead, "--sync", ok=False)
        mesh("models", "load", wrong, "--sync", ok=False)
        assert client.get_model(live).loaded_on()
        failures = {m: wait_for(lambda m=m: client.get_model(m).failed, what=f"failure of {m} recorded")
                    for m in (dead, wrong, http_model)}
        for model, failed in failures.items():
            seen(f"failure records of {model}", {p: f.message for p, f in failed.items()})
        assert all(f"http://****@127.0.0.1:{dead_port}" in f.message for f in failures[dead].values())
        assert all("refused the credentials" in f.message for f in failures[wrong].values())
        for args in (("status", "--json"), ("status",), ("models", "list", "--json"), ("models", "list"),
                     ("events", "--json", "--limit", "0"), ("events", "--limit", "0")):
            mesh(*args)
        events = seen("PlaneClient.events()", [e.reason for e in client.events(limit=0)])
        seen("PlaneClient.overview()", client.overview())
        assert any(f"http://****@127.0.0.1:{dead_port}" in r for r in events), "the userinfo failure is an event"
        assert {e.kind for e in client.events(limit=0)} >= {"register", "load", "loaded", "load-failed"}
        for pod in plane.pods:
            text = urllib.request.urlopen(f"http://127.0.0.1:{pod.metrics_port}/metrics", timeout=10).read().decode()
            assert "mesh_model_requests_total" in text
            seen(f"/metrics of {pod.pod_id}", text)
        assert client.get_storage("s3good").params["secret_access_key"] == s3_server["secret_access_key"]

        # -- the scan -----------------------------------------------------------------------------------------
        found: list[str] = []
        logs = plane.logs()
        assert set(logs) == {"pod-0.log", "pod-1.log"} and all(logs.values())
        assert any("Sending http request" in t for t in logs.values()), "pods did not log botocore at DEBUG"
        sources = [*outputs, *((f"pod log {name}", text) for name, text in logs.items())]
        reg = client.registry
        tables, _ = client.run_async(reg.snapshot_with_revision())
        records = [(f"{table}/{name}", value.decode(errors="replace"))
                   for table, rows in tables.items() for name, value in rows]
        records += [(f"event {name}", value.decode(errors="replace"))
                    for name, value, _ in client.run_async(reg.list_raw("events"))]
        storage_holders: set[str] = set()
        for what, secret in secrets.items():
            pieces = windows(secret)
            for where, text in sources:
                if any(p in text for p in pieces):
                    found.append(f"{what} in {where}")
            for where, text in records:
                if any(p in text for p in pieces):
                    if where.startswith("storage/"):
                        storage_holders.add(where)
                    else:
                        found.append(f"{what} in etcd {where}")
        assert found == [], "secrets leaked:\n" + "\n".join(found)
        # only the configs that hold them (for the pods) do; gcs/azure were never stored
        assert storage_holders == {f"storage/{k}" for k in [*s3keys, "httpcfg"]}, storage_holders

"""Storage types http(s) and pvc, end to end: a real HTTP server on loopback (http.server in a
thread, serving a directory), a PVC root in a temporary folder, a real pod that loads from both,
the `mesh storage` commands that set, list, test and remove them (header values masked), and
the refusal to remove a storage key that models use."""

from __future__ import annotations

import http.server
import json
import os
import pathlib
import threading
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc
from tritonclient.utils import InferenceServerException

from plane import demo, local, storage
from plane.api import PlaneClient, ValidationError
from plane.cli import main
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.registry import StorageConfig
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN, uid, wait_for

TOKEN = "web-header-token-8f3a1c77d2"
API_KEY = "x-api-key-value-55e0b9a4"


class _Server:
    """A directory served over HTTP on 127.0.0.1. ``/private/...`` needs ``Authorization: Bearer
    TOKEN``; ``/nohead/...`` refuses HEAD (405); ``/redirect/<rest>`` answers 302 to ``target``
    + ``/<rest>``. Every request's method, path and headers are kept in ``seen``."""

    def __init__(self, root: pathlib.Path, target: str = ""):
        self.root, self.target = root, target
        self.seen: list[tuple[str, str, dict[str, str]]] = []
        outer = self

        class Handler(http.server.SimpleHTTPRequestHandler):
            def __init__(self, *args, **kwargs):
                super().__init__(*args, directory=str(outer.root), **kwargs)

            def log_message(self, *args):  # quiet
                pass

            def _gate(self) -> bool:
                outer.seen.append((self.command, self.path, dict(self.headers.items())))
                if self.path.startswith("/redirect/"):
                    self.send_response(302)
                    self.send_header("Location", outer.target + self.path[len("/redirect"):])
                    self.send_header("Content-Length", "0")
                    self.end_headers()
                    return False
                if self.path.startswith("/private/") and self.headers.get("Authorization") != f"Bearer {TOKEN}":
                    self.send_error(401)
                    return False
                return True

            def do_GET(self):
                if self._gate():
                    super().do_GET()

            def do_HEAD(self):
                if self.path.startswith("/nohead/"):
                    outer.seen.append((self.command, self.path, dict(self.headers.items())))
                    self.send_error(405)
                elif self._gate():
                    super().do_HEAD()

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.httpd.server_address[1]
        self.url = f"http://127.0.0.1:{self.port}"
        threading.Thread(target=self.httpd.serve_forever, name="test-http", daemon=True).start()

    def close(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()


@pytest.fixture(scope="module")
def web(tmp_path_factory):
    """The main server (with a tiny ONNX model at /m/tiny.onnx, /private/tiny.onnx, /nohead/tiny.onnx)
    and a second one, reached as ``localhost`` (another host), that /redirect/ points at."""
    root = tmp_path_factory.mktemp("web")
    other_root = tmp_path_factory.mktemp("web-other")
    for d in (root / "m", root / "private", root / "nohead", other_root / "m"):
        d.mkdir()
        demo.make_tiny_model(d / "tiny.onnx")
    other = _Server(other_root)
    main_server = _Server(root, target=f"http://localhost:{other.port}")
    try:
        yield main_server, other
    finally:
        main_server.close()
        other.close()


def _http(server: _Server, base: str = "", **params) -> StorageConfig:
    return storage.validate_config("web", "http", {"url": server.url + base, **params})


def _auth() -> dict[str, str]:
    return {"Authorization": f"Bearer {TOKEN}", "X-Api-Key": API_KEY}


def _clean(text: str) -> bool:
    return TOKEN not in text and API_KEY not in text


# -- configs ------------------------------------------------------------------------------------------------


def test_http_and_pvc_configs_are_checked():
    cfg = storage.validate_config("w", "https", {"url": "https://models.example/repo",
                                                 "headers": json.dumps({"Authorization": "Bearer abc"})})
    assert cfg.type == "http" and cfg.params["headers"] == {"Authorization": "Bearer abc"}
    assert storage.validate_config("w", "http", {"url": "http://h/x", "headers": {"A": ["1", "2"]}}).params[
        "headers"] == {"A": ["1", "2"]}
    bad = [({}, "needs 'url'"), ({"url": "ftp://h/x"}, "must start with http:// or https://"),
           ({"url": "http://:80/x"}, "names no host"),
           ({"url": "http://h/x", "headers": ["A: b"]}, "must be an object"),
           ({"url": "http://h/x", "headers": {"Bad Name": "v"}}, "not a valid HTTP header name"),
           ({"url": "http://h/x", "headers": {"A": "v\r\nInjected: 1"}}, "must not contain line breaks"),
           ({"url": "http://h/x", "headers": {"A": 5}}, "string or a list of strings"),
           ({"url": "http://h/x", "headers": "{not json"}, "JSON object")]
    for params, message in bad:
        with pytest.raises(ValidationError, match=message) as err:
            storage.validate_config("w", "http", params)
        assert "Injected" not in str(err.value)  # header values are never echoed
    listed = storage.validate_config("w", "http", {"url": "http://h/x", "headers": {"A": ["first-secret-1", "2nd"]}})
    assert listed.masked()["headers"] == {"A": ["****-1", "****"]}  # each value of a list masked
    assert storage.validate_config("p", "pvc", {"name": "my-models-pvc"}).params == {"name": "my-models-pvc"}
    for params, message in (({}, "needs 'name'"), ({"name": "../etc"}, "must be a volume name"),
                            ({"name": "a/b"}, "must be a volume name")):
        with pytest.raises(ValidationError, match=message):
            storage.validate_config("p", "pvc", params)
    assert storage.DEFAULT_PVC_ROOT == "/pvc_mounts" == str(MeshSettings().pvc_root)  # ModelMesh's mount root


# -- http, storage level --------------------------------------------------------------------------------------


def test_http_fetch_goes_through_the_disk_cache(web, tmp_path):
    server, _ = web
    cfg = _http(server, "/m")
    cache = storage.DiskCache(tmp_path / "dc", 10**6)
    expected = (server.root / "m" / "tiny.onnx").read_bytes()
    path, source = storage.fetch_model_file(cfg, "tiny.onnx", cache)
    assert source == "http" and path.read_bytes() == expected and cache.root in path.parents
    assert storage.object_size(cfg, "tiny.onnx") == len(expected)
    again, source2 = storage.fetch_model_file(cfg, "tiny.onnx", cache)
    assert source2 == "disk-cache" and again == path
    os.utime(server.root / "m" / "tiny.onnx", (1_700_000_000, 1_700_000_000))  # Last-Modified changes
    _, source3 = storage.fetch_model_file(cfg, "tiny.onnx", cache)
    assert source3 == "http"
    # the server gone: the last version this process pulled still serves
    gone = StorageConfig("web", "http", {"url": f"http://127.0.0.1:{local.free_port()}/m"})
    stale, source4 = storage.fetch_model_file(gone, "tiny.onnx", cache)
    assert source4 == "disk-cache" and stale.read_bytes() == expected


def test_http_errors_are_clear_and_never_show_header_values(web, tmp_path):
    server, _ = web
    cache = storage.DiskCache(tmp_path / "dc", 10**6)
    private = _http(server, "/private", headers=_auth())
    path, _ = storage.fetch_model_file(private, "tiny.onnx", cache)
    assert path.stat().st_size > 0
    got = [h for m, p, h in server.seen if p == "/private/tiny.onnx" and m == "GET"][-1]
    assert got["Authorization"] == f"Bearer {TOKEN}" and got["X-Api-Key"] == API_KEY
    cases = [
        (private, "missing.onnx", "answered HTTP 404 Not Found: check the storage's url and the model path"),
        (_http(server, "/private"), "tiny.onnx", "answered HTTP 401 Unauthorized: check the storage's headers"),
        (StorageConfig("web", "http", {"url": f"http://127.0.0.1:{local.free_port()}/x", "headers": _auth()}),
         "tiny.onnx", "connection refused"),
        (StorageConfig("web", "http", {"url": f"http://u-{TOKEN}:{API_KEY}@127.0.0.1:{local.free_port()}",
                                       "headers": _auth()}), "m.onnx", "cannot reach http://****@127.0.0.1:"),
    ]
    fresh = storage.DiskCache(tmp_path / "fresh", 10**6)  # `cache` holds tiny.onnx: unreachable would serve it
    for cfg, path_in, message in cases:
        with pytest.raises(storage.StorageError) as err:
            storage.fetch_model_file(cfg, path_in, fresh)
        assert message in str(err.value) and _clean(str(err.value)), str(err.value)
        assert err.value.__cause__ is None
    # the URL is the storage's url + "/" + the model path, percent-encoded
    assert storage.storage_http.model_url("http://h/a/?v=1", "b c/d.onnx") == "http://h/a/b%20c/d.onnx?v=1"
    assert storage.storage_http.model_url("http://h/a", "") == "http://h/a"


def test_userinfo_is_basic_auth_and_headers_do_not_follow_a_redirect_elsewhere(web, tmp_path):
    server, other = web
    cache = storage.DiskCache(tmp_path / "dc", 10**6)
    cfg = storage.validate_config("web", "http", {"url": f"http://alice:pa55word@127.0.0.1:{server.port}/m"})
    storage.fetch_model_file(cfg, "tiny.onnx", cache)
    sent = [h for m, p, h in server.seen if p == "/m/tiny.onnx"][-1]
    assert sent["Authorization"] == "Basic YWxpY2U6cGE1NXdvcmQ="  # alice:pa55word
    path, _ = storage.fetch_model_file(_http(server, "/redirect/m", headers=_auth()), "tiny.onnx", cache)
    assert path.read_bytes() == (other.root / "m" / "tiny.onnx").read_bytes()
    followed = [h for _, p, h in other.seen if p == "/m/tiny.onnx"]
    assert followed and all("Authorization" not in h and "X-Api-Key" not in h for h in followed)


def test_http_head_refused_falls_back_to_get(web, tmp_path):
    server, _ = web
    cfg = _http(server, "/nohead")
    path, source = storage.fetch_model_file(cfg, "tiny.onnx", storage.DiskCache(tmp_path / "dc", 10**6))
    assert source == "http" and path.read_bytes() == (server.root / "nohead" / "tiny.onnx").read_bytes()
    assert ("HEAD", "/nohead/tiny.onnx") in [(m, p) for m, p, _ in server.seen]


def test_http_download_past_an_unwritable_cache(web, tmp_path):
    server, _ = web
    afile = tmp_path / "afile"
    afile.write_text("x")
    warnings: list[str] = []
    path, source = storage.fetch_model_file(_http(server, "/m"), "tiny.onnx", storage.DiskCache(afile / "c", 10**6),
                                            warn=warnings.append)
    assert source.startswith("http (disk cache unavailable") and len(warnings) == 1
    assert path.read_bytes() == (server.root / "m" / "tiny.onnx").read_bytes()
    assert storage.release_model_file(path) and not path.exists()


def test_storage_test_for_http(web):
    server, _ = web
    ok = storage.test_config(_http(server, "/m"), path="tiny.onnx")
    assert ok.ok and "answered HTTP 200" in ok.message and ok.objects == ["tiny.onnx"]
    assert storage.test_config(_http(server, "/m")).ok  # the base URL itself (a directory listing here)
    assert storage.test_config(_http(server, "/nowhere")).ok  # 404 for a base URL: reachable, says so
    missing = storage.test_config(_http(server, "/m"), path="missing.onnx")
    assert not missing.ok and "HTTP 404" in missing.message
    denied = storage.test_config(_http(server, "/private"), path="tiny.onnx")
    assert not denied.ok and "HTTP 401" in denied.message


# -- pvc, storage level -------------------------------------------------------------------------------------


def test_pvc_reads_under_the_configured_root(tmp_path, monkeypatch):
    monkeypatch.setenv("MESH_PVC_ROOT", str(tmp_path / "mounts"))
    (tmp_path / "mounts" / "claim" / "dir").mkdir(parents=True)
    demo.make_tiny_model(tmp_path / "mounts" / "claim" / "dir" / "model.onnx")
    cfg = storage.validate_config("p", "pvc", {"name": "claim"})
    path, source = storage.fetch_model_file(cfg, "dir/model.onnx", None)
    assert source == "pvc" and path == (tmp_path / "mounts" / "claim" / "dir" / "model.onnx").resolve()
    path, _ = storage.fetch_model_file(cfg, "dir", None)
    assert path.is_dir()
    assert storage.object_size(cfg, "dir") == path.joinpath("model.onnx").stat().st_size
    assert storage.test_config(cfg).objects == ["dir/model.onnx"]
    with pytest.raises(storage.StorageError, match="resolves outside the storage root|leaves the storage root"):
        storage.fetch_model_file(cfg, "../claim2/x", None)
    absent = storage.validate_config("p", "pvc", {"name": "not-mounted"})
    with pytest.raises(storage.StorageError, match="is not mounted at .*not-mounted: mount the volume there"):
        storage.fetch_model_file(absent, "dir/model.onnx", None)
    result = storage.test_config(absent)
    assert not result.ok and "not mounted" in result.message and "MESH_PVC_ROOT" in result.message


# -- a real pod, and the CLI ----------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def one_pod(etcd_endpoint, tmp_path_factory):
    """One runtime pod whose PVC root is a temporary folder holding the PVC 'models-pvc'."""
    state = tmp_path_factory.mktemp("types-state")
    pvc_root = tmp_path_factory.mktemp("pvc_mounts")
    (pvc_root / "models-pvc" / "tiny").mkdir(parents=True)
    demo.make_tiny_model(pvc_root / "models-pvc" / "tiny" / "model.onnx")
    settings = MeshSettings(etcd=etcd_endpoint, etcd_prefix=f"types-{uuid.uuid4().hex[:8]}", state_dir=state,
                            grpc_port=local.free_port(), capacity=64 * 1024**2, lease_ttl_s=2, usage_flush_s=0.5,
                            load_timeout_s=30, peer_token=TEST_PEER_TOKEN, pvc_root=pvc_root)
    lp = local.up(settings, pods=1)
    client = PlaneClient.connect(settings)
    try:
        yield lp.pods[0].endpoint, settings, client
    finally:
        client.close()
        local.down(state)


def _tiny(endpoint: str, model_id: str) -> np.ndarray:
    x = np.arange(8, dtype=np.float32).reshape(2, 4)
    inp = tc.InferInput("x", [2, 4], "FP32")
    inp.set_data_from_numpy(x)
    y = tc.InferenceServerClient(endpoint).infer(model_id, [inp]).as_numpy("y")
    np.testing.assert_allclose(y, x * 2 + 1)
    return y


def _failure(endpoint: str, model_id: str, expected: str) -> str:
    """The request fails, and the model's status is LOADING_FAILED, both saying ``expected``."""
    with pytest.raises(InferenceServerException) as exc:
        _tiny(endpoint, model_id)
    with grpc.insecure_channel(endpoint) as ch:
        status = mgrpc.ModelMeshStub(ch).getModelStatus(mpb.GetStatusRequest(modelId=model_id), timeout=30)
    assert status.status == mpb.ModelStatusInfo.LOADING_FAILED, status
    assert expected in status.errors[0] and expected in str(exc.value), (status.errors, str(exc.value))
    return status.errors[0]


@pytest.mark.slow
def test_a_pod_serves_http_and_pvc_models_and_says_why_it_cannot(one_pod, web):
    endpoint, _, client = one_pod
    server, _ = web
    client.set_storage("web-ok", "http", {"url": f"{server.url}/private", "headers": _auth()})
    client.set_storage("claim", "pvc", {"name": "models-pvc"})
    client.set_storage("claim-absent", "pvc", {"name": "no-such-pvc"})
    served = {uid("http-ok"): ("web-ok", "tiny.onnx"), uid("pvc-ok"): ("claim", "tiny")}
    for model_id, (key, path) in served.items():
        client.register_model(model_id, path=path, storage_key=key)
        _tiny(endpoint, model_id)
        wait_for(lambda m=model_id: client.get_model(m).loaded_on(), what=f"copy of {model_id} in the registry")
    reasons = wait_for(lambda: (r := {e.model: e.reason for e in client.events(limit=0) if e.kind == "loaded"})
                       and set(served) <= set(r) and r, what="loaded events")
    assert [reasons[m].split(" in ")[0] for m in served] == ["from http", "from pvc"]

    wrong = uid("http-404")
    client.register_model(wrong, path="nope/model.onnx", storage_key="web-ok")
    reason = _failure(endpoint, wrong, f"{server.url}/private/nope/model.onnx answered HTTP 404")
    assert _clean(reason)
    failed = client.get_model(wrong).failed
    assert failed and all("HTTP 404" in f.message and _clean(f.message) for f in failed.values())
    unmounted = uid("pvc-absent")
    client.register_model(unmounted, path="tiny", storage_key="claim-absent")
    _failure(endpoint, unmounted, "'no-such-pvc' (storage 'claim-absent') is not mounted at")
    events = [e.reason for e in client.events(limit=0) if e.kind == "load-failed" and e.model in (wrong, unmounted)]
    assert len(events) >= 2 and all(_clean(r) for r in events)


def _mesh(capsys, settings, *args) -> tuple[int, str, str]:
    code = main([*args, "--etcd", settings.etcd, "--prefix", settings.etcd_prefix])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


@pytest.mark.slow
def test_mesh_storage_commands_for_http_and_pvc(one_pod, web, capsys, monkeypatch):
    _, settings, client = one_pod
    server, _ = web
    monkeypatch.setenv("TEST_WEB_API_KEY", API_KEY)
    code, out, err = _mesh(capsys, settings, "storage", "set", "cli-web", "--type", "https", "--url",
                           f"{server.url}/private", "--header", f"Authorization: Bearer {TOKEN}",
                           "--header-env", "X-Api-Key=TEST_WEB_API_KEY")
    assert code == 0 and "storage 'cli-web' (http) saved" in out and _clean(out + err)
    assert client.get_storage("cli-web").params["headers"] == _auth()  # stored as given, for the pods
    code, out, err = _mesh(capsys, settings, "storage", "set", "cli-pvc", "--type", "pvc", "--pvc-name", "models-pvc")
    assert code == 0, err
    code, out, _ = _mesh(capsys, settings, "storage", "list", "--json")
    listed = {c["key"]: c for c in json.loads(out)}
    assert code == 0 and _clean(out)
    assert listed["cli-web"]["headers"] == {"Authorization": "****" + TOKEN[-2:], "X-Api-Key": "****" + API_KEY[-2:]}
    assert listed["cli-pvc"] == {"key": "cli-pvc", "type": "pvc", "name": "models-pvc"}
    code, out, _ = _mesh(capsys, settings, "storage", "list")
    assert code == 0 and _clean(out) and "cli-web" in out
    code, out, _ = _mesh(capsys, settings, "storage", "test", "cli-web", "--path", "tiny.onnx")
    assert code == 0 and "answered HTTP 200" in out and _clean(out)
    code, out, _ = _mesh(capsys, settings, "storage", "test", "cli-web", "--path", "missing.onnx", "--json")
    result = json.loads(out)
    assert code == 1 and not result["ok"] and "HTTP 404" in result["message"] and _clean(out)
    for args, message in ((("--type", "http"), "needs 'url'"), (("--type", "pvc"), "needs 'name'"),
                          (("--type", "http", "--url", "http://h", "--header", "no-colon"), "'Name: value'"),
                          (("--type", "gcs"), "not supported by this plane yet")):
        code, _, err = _mesh(capsys, settings, "storage", "set", "cli-bad", *args)
        assert code == 2 and message in err, (args, err)
    assert client.get_storage("cli-bad") is None


@pytest.mark.slow
def test_removing_storage_that_models_use_is_refused_unless_forced(one_pod, capsys):
    _, settings, client = one_pod
    key = uid("in-use")
    client.set_storage(key, "local", {"path": "/tmp"})
    users = sorted(uid(f"user{i}") for i in range(2))
    for model_id in users:
        client.register_model(model_id, path="m.onnx", storage_key=key)
    code, _, err = _mesh(capsys, settings, "storage", "remove", key)
    assert code == 2 and f"storage '{key}' is used by 2 model(s): {', '.join(users)}" in err and "--force" in err
    assert client.get_storage(key) is not None
    with pytest.raises(ValidationError, match="used by 2 model"):  # the same rule for the console and dashboard
        client.remove_storage_unused(key)
    code, out, _ = _mesh(capsys, settings, "storage", "remove", key, "--force", "--json")
    assert code == 0 and json.loads(out) == {"removed": key} and client.get_storage(key) is None
    unused = uid("unused")
    client.set_storage(unused, "local", {"path": "/tmp"})
    assert _mesh(capsys, settings, "storage", "remove", unused)[0] == 0
    assert _mesh(capsys, settings, "storage", "remove", unused)[0] == 1  # gone: nothing to remove

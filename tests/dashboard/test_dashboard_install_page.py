"""The Install page: the real embedded plane started and stopped from the page, and the
Kubernetes section driving plane.kube against a recording API server."""

from __future__ import annotations

import http.server
import json
import threading

import pytest
from dashsupport import button, errors, open_page, table

from plane import local
from plane.api import PlaneClient
from plane.settings import MeshSettings


@pytest.fixture
def embedded_env(monkeypatch, tmp_path):
    """No MESH_ETCD: the dashboard finds (or starts) the embedded plane in this state dir."""
    state_dir = tmp_path / "state"
    monkeypatch.delenv("MESH_ETCD", raising=False)
    monkeypatch.setenv("MESH_STATE_DIR", str(state_dir))
    monkeypatch.setenv("MESH_ETCD_PREFIX", "mesh")
    monkeypatch.setenv("MESH_GRPC_PORT", str(local.free_port()))
    try:
        yield state_dir
    finally:
        local.down(state_dir)


@pytest.mark.slow
def test_start_and_stop_the_embedded_plane(embedded_env):
    at = open_page("install")
    assert any("not running" in i.value for i in at.info)
    at.number_input(key="up_pods").set_value(2)
    at.text_input(key="up_capacity").input("64MiB")
    button(at, "up_start").click().run(timeout=120)
    assert not errors(at), errors(at)
    assert any("plane up: etcd" in s.value and "2 pod(s)" in s.value for s in at.success)
    plane = local.status(embedded_env)
    assert plane is not None and len(plane.pods) == 2
    pods = table(at, "install_pods")
    assert list(pods["pod"]) == ["pod-0", "pod-1"] and all(pods["alive"])
    # the other pages now show the embedded plane, found through the state dir
    other = open_page("overview")
    assert not errors(other)
    assert {m.label: m.value for m in other.metric}["Pods ready"] == "2 / 2"
    with PlaneClient.connect(MeshSettings(etcd=plane.etcd_endpoint)) as c:
        assert [p.pod_id for p in c.pods()] == ["pod-0", "pod-1"]
    # a second start is refused by plane.local (the form is gone while it runs)
    assert not [b for b in at.button if b.key == "up_start"]

    button(at, "down").click().run(timeout=60)
    assert any("plane stopped" in s.value for s in at.success)
    assert local.status(embedded_env) is None
    assert any("not running" in i.value for i in at.info)


# -- Kubernetes ----------------------------------------------------------------------------------------


class _Recorder(http.server.BaseHTTPRequestHandler):
    calls: list[tuple[str, str]] = []

    def _answer(self) -> None:
        n = int(self.headers.get("Content-Length") or 0)
        if n:
            self.rfile.read(n)
        self.calls.append((self.command, self.path.split("?")[0]))
        body = json.dumps({"kind": "Status", "status": "Success"}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_PATCH = do_DELETE = do_GET = _answer

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def kube_api(monkeypatch, tmp_path):
    """A kubeconfig whose context 'recorder' points at an HTTP server that accepts every call."""
    _Recorder.calls = []
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    cfg = tmp_path / "kubeconfig"
    cfg.write_text(json.dumps({
        "apiVersion": "v1", "kind": "Config", "current-context": "recorder",
        "clusters": [{"name": "c", "cluster": {"server": f"http://127.0.0.1:{server.server_address[1]}"}}],
        "users": [{"name": "u", "user": {"token": "t"}}],
        "contexts": [{"name": "recorder", "context": {"cluster": "c", "user": "u"}}],
    }))
    monkeypatch.setenv("KUBECONFIG", str(cfg))
    try:
        yield _Recorder.calls
    finally:
        server.shutdown()


def test_kubernetes_preview_masks_secrets(app_env):
    pytest.importorskip("plane.kube")
    at = open_page("install")
    at.checkbox(key="k_quickstart").set_value(True)
    at.number_input(key="k_pods").set_value(2)
    button(at, "k_preview").click().run()
    assert not errors(at)
    yaml_text = at.code[0].value
    assert "kind: StatefulSet" in yaml_text and "replicas: 2" in yaml_text
    assert "kind: Secret" in yaml_text and "****" in yaml_text
    from plane import kube

    for secret in kube.quickstart_storage_config()["default"].values():
        if isinstance(secret, str) and len(secret) >= 12 and "secret" in secret.lower():
            assert secret not in yaml_text
    at.text_input(key="k_capacity").input("huge")
    button(at, "k_preview").click().run()
    assert any("cannot render the manifests" in e for e in errors(at))


def test_kubernetes_install_and_uninstall_through_plane_kube(app_env, kube_api):
    pytest.importorskip("plane.kube")
    at = open_page("install")
    at.text_input(key="k_namespace").input("mesh-test")
    at.checkbox(key="k_wait").set_value(False)
    button(at, "k_install").click().run(timeout=60)
    assert not errors(at), errors(at)
    assert any("installed:" in s.value and "mesh-test" in s.value for s in at.success)
    patched = [p for m, p in kube_api if m == "PATCH"]
    assert any("/namespaces/mesh-test/statefulsets/" in p for p in patched)
    kube_api.clear()
    button(at, "k_uninstall").click().run()
    assert any("Remove the plane from namespace **mesh-test**?" in w.value for w in at.warning)
    button(at, "k_uninstall_confirm").click().run(timeout=60)
    assert any("uninstalled:" in s.value for s in at.success), (errors(at), [s.value for s in at.success])
    assert any(m == "DELETE" and "/namespaces/mesh-test/" in p for m, p in kube_api)


def test_kubernetes_without_a_configuration_says_so(app_env, monkeypatch, tmp_path):
    pytest.importorskip("plane.kube")
    monkeypatch.setenv("KUBECONFIG", str(tmp_path / "missing"))
    at = open_page("install")
    at.text_input(key="k_context").input("nowhere")
    button(at, "k_install").click().run(timeout=60)
    assert any("cannot load a Kubernetes configuration for context 'nowhere'" in e for e in errors(at))

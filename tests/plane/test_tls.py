"""Transport security with generated certificates: etcd over mTLS with user/password auth,
pods serving mTLS, pod-to-pod forwarding over TLS, and clients without the right credentials
refused."""

from __future__ import annotations

import pathlib
import shutil
import subprocess
import uuid

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc

from plane import certs, local
from plane.api import PlaneClient
from plane.registry import RegistryError
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN, pin_headers

pytestmark = pytest.mark.slow


def etcdctl(endpoint: str, paths: dict, *args: str, user: str | None = None) -> str:
    binary = shutil.which("etcdctl") or str(pathlib.Path(local.find_etcd_binary()).with_name("etcdctl"))
    cmd = [binary, f"--endpoints=https://{endpoint}", f"--cacert={paths['ca']}", f"--cert={paths['client']}",
           f"--key={paths['client_key']}"]
    if user:
        cmd.append(f"--user={user}")
    return subprocess.run([*cmd, *args], check=True, capture_output=True, text=True, timeout=30).stdout


@pytest.fixture(scope="module")
def secure_plane(tmp_path_factory, model_dir):
    root = tmp_path_factory.mktemp("tls")
    paths = certs.generate(root / "certs")
    proc, endpoint = local.start_etcd(root / "etcd", tls=(paths["ca"], paths["server"], paths["server_key"]),
                                      client_cert_auth=True)
    password = "etcd-" + uuid.uuid4().hex
    etcdctl(endpoint, paths, "user", "add", "root", f"--new-user-password={password}")
    etcdctl(endpoint, paths, "user", "grant-role", "root", "root")
    etcdctl(endpoint, paths, "auth", "enable")
    settings = MeshSettings(
        etcd=endpoint, etcd_prefix="tls", state_dir=root / "state", grpc_port=local.free_port(),
        etcd_ca_file=paths["ca"], etcd_cert_file=paths["client"], etcd_key_file=paths["client_key"],
        etcd_username="root", etcd_password=password,
        tls_cert_file=paths["server"], tls_key_file=paths["server_key"], tls_ca_file=paths["ca"],
        tls_client_auth=True, capacity=64 * 1024**2, peer_token=TEST_PEER_TOKEN,
    )
    try:
        lp = local.up(settings, pods=2)
        client = PlaneClient.connect(settings)
        client.set_storage("default", "local", {"path": str(model_dir)})
        yield lp, settings, client, paths
        client.close()
        local.down(settings.state_dir)
    finally:
        local.stop_process(proc)


def infer(endpoint, paths, model_id, *, cert=True, headers=None):
    kwargs = {"ssl": True, "root_certificates": str(paths["ca"])}
    if cert:
        kwargs.update(private_key=str(paths["client_key"]), certificate_chain=str(paths["client"]))
    client = tc.InferenceServerClient(endpoint, **kwargs)
    inp = tc.InferInput("x", [1, 4], "FP32")
    inp.set_data_from_numpy(np.ones((1, 4), np.float32))
    return client.infer(model_id, [inp], headers=headers, client_timeout=30).as_numpy("y")


def test_mtls_inference_and_forwarding(secure_plane):
    lp, settings, client, paths = secure_plane
    client.register_model("tls-tiny", path="tiny/model.onnx")
    infer(lp.pods[0].endpoint, paths, "tls-tiny", headers=pin_headers())  # loads on pod-0
    # pod-1 forwards to pod-0 over TLS with its own certificate
    np.testing.assert_allclose(infer(lp.pods[1].endpoint, paths, "tls-tiny"), [[3, 3, 3, 3]])
    assert client.get_model("tls-tiny").loaded_on() == [lp.pods[0].pod_id]


def test_clients_without_credentials_are_refused(secure_plane):
    from plane.proto import inference_pb2, inference_pb2_grpc

    lp, _, _, paths = secure_plane
    with grpc.insecure_channel(lp.pods[0].endpoint) as ch:  # plaintext to a TLS port
        stub = inference_pb2_grpc.GRPCInferenceServiceStub(ch)
        with pytest.raises(grpc.RpcError) as exc:
            stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=3)
    assert exc.value.code() in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.DEADLINE_EXCEEDED)
    with pytest.raises(Exception) as exc2:  # TLS without a client certificate under mTLS
        infer(lp.pods[0].endpoint, paths, "tls-tiny", cert=False)
    assert "UNAVAILABLE" in str(exc2.value) or "handshake" in str(exc2.value).lower()
    # with the certificate the same call works
    np.testing.assert_allclose(infer(lp.pods[0].endpoint, paths, "tls-tiny"), [[3, 3, 3, 3]])


def test_etcd_refuses_wrong_password_and_plaintext(secure_plane):
    _, settings, _, _ = secure_plane
    with pytest.raises(RegistryError, match="refused the credentials"):
        PlaneClient.connect(settings.model_copy(update={"etcd_password": "wrong"}))
    with pytest.raises(RegistryError):
        PlaneClient.connect(settings.model_copy(update={"etcd_ca_file": None, "etcd_cert_file": None,
                                                        "etcd_key_file": None}), timeout=2)

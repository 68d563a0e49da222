"""dashboard.launch: the `mesh dashboard` entry starts Streamlit on a port, prints the URL, and
stops whole on SIGTERM, SIGINT and SIGHUP (as does `mesh console`)."""

from __future__ import annotations

import contextlib
import os
import pty
import select
import signal
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest
from dashsupport import ROOT

from dashboard import launch
from plane import local


def test_command_is_headless_streamlit_run_of_the_app():
    cmd = launch.streamlit_command(8555)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(ROOT / "dashboard" / "server.py")  # st.App("app.py") + the base-URL middleware
    args = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert args["--server.port"] == "8555"
    assert args["--server.headless"] == "true"
    assert args["--browser.gatherUsageStats"] == "false"
    assert args["--server.showEmailPrompt"] == "false"


def test_a_taken_port_is_refused_with_a_message(capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert launch.main(["--port", str(port)]) == 2
    assert f"port {port} is taken" in capsys.readouterr().err


def test_main_serves_the_app_and_prints_its_url(settings):
    port = local.free_port()
    env = settings.child_env()
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.launch", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    try:
        line = ""
        for line in proc.stdout:  # noqa: B007 - the first line that names the URL
            if line.startswith("dashboard: "):
                break
        assert line.startswith(f"dashboard: http://localhost:{port}"), line
        with urllib.request.urlopen(f"http://localhost:{port}/_stcore/health", timeout=5) as resp:
            assert resp.status == 200
        for page in ("", "placement", "events"):  # a page's own URL tells the frontend the base URL too
            with urllib.request.urlopen(f"http://localhost:{port}/{page}", timeout=5) as resp:
                html = resp.read()
                assert resp.status == 200 and b"<div id=\"root\">" in html
                assert b"<head><script>window.__streamlit=" in html and b"BACKEND_BASE_URL" in html
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children, "the launcher runs Streamlit as its child"
    finally:
        proc.send_signal(signal.SIGTERM)  # the launcher stops its Streamlit child on the way out
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)
    assert proc.returncode == 0
    gone, alive = psutil.wait_procs(children, timeout=10)
    assert not alive, "the Streamlit server outlived the launcher"


def _listening(port: int) -> bool:
    return any(c.laddr and c.laddr.port == port and c.status == psutil.CONN_LISTEN
               for c in psutil.net_connections("tcp"))


def _wait(what: str, fn, timeout: float = 20.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if fn():
            return
        time.sleep(0.1)
    raise AssertionError(f"timed out waiting for {what}")


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_mesh_dashboard_stops_whole_on_a_signal(settings, sig):
    port = local.free_port()
    env = settings.child_env()
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "plane.cli", "dashboard", "--port", str(port)], env=env,
                            cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            start_new_session=True)
    tree: list[psutil.Process] = []
    try:
        seen = []
        for line in proc.stdout:
            seen.append(line)
            if line.startswith("dashboard: "):
                break
        assert seen and seen[-1].startswith(f"dashboard: http://localhost:{port}"), seen
        me = psutil.Process(proc.pid)
        assert me.cmdline()[1:3] == ["-m", "dashboard.launch"]  # `mesh` exec'd the launcher: one layer fewer
        tree = [me, *me.children(recursive=True)]
        assert any("streamlit" in " ".join(p.cmdline()) for p in tree[1:])
        assert _listening(port)
        proc.send_signal(sig)
        assert proc.wait(30) == 0
        gone, alive = psutil.wait_procs(tree, timeout=15)
        assert not alive, f"left behind after {sig.name}: {[p.pid for p in alive]}"
        _wait(f"nothing to listen on {port}", lambda: not _listening(port))
    finally:
        for p in [psutil.Process(proc.pid), *tree] if proc.poll() is None else tree:
            with contextlib.suppress(psutil.NoSuchProcess):
                p.kill()
        proc.wait(10)


def test_the_server_stops_when_its_launcher_is_killed_outright(settings):
    """SIGKILL leaves the launcher no chance to stop the server: the server notices by itself."""
    port = local.free_port()
    env = settings.child_env()
    env["PYTHONPATH"] = str(ROOT)
    proc = subprocess.Popen([sys.executable, "-m", "dashboard.launch", "--port", str(port)], env=env, cwd=ROOT,
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, start_new_session=True)
    children: list[psutil.Process] = []
    try:
        for line in proc.stdout:
            if line.startswith("dashboard: "):
                break
        children = psutil.Process(proc.pid).children(recursive=True)
        assert children and _listening(port)
        proc.kill()
        proc.wait(10)
        _, alive = psutil.wait_procs(children, timeout=20)
        assert not alive, "the server outlived its killed launcher"
        _wait(f"nothing to listen on {port}", lambda: not _listening(port))
    finally:
        for c in children:
            with contextlib.suppress(psutil.NoSuchProcess):
                c.kill()


@pytest.mark.slow
@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT, signal.SIGHUP], ids=lambda s: s.name)
def test_mesh_console_under_a_terminal_stops_whole_on_a_signal(sig):
    master, slave = pty.openpty()
    env = dict(os.environ, MESH_ETCD=f"127.0.0.1:{local.free_port()}", TERM="xterm-256color", PYTHONPATH=str(ROOT))
    proc = subprocess.Popen([sys.executable, "-m", "plane.cli", "console"], stdin=slave, stdout=slave,
                            stderr=slave, env=env, cwd=ROOT, start_new_session=True)
    os.close(slave)
    try:
        drawn = b""
        deadline = time.monotonic() + 30
        quiet_since = time.monotonic()
        # the console drew its screen and settled (a signal during start-up is the app's start-up)
        while time.monotonic() < deadline and (len(drawn) < 1000 or time.monotonic() - quiet_since < 1.0):
            ready, _, _ = select.select([master], [], [], 0.2)
            if ready:
                drawn += os.read(master, 65536)
                quiet_since = time.monotonic()
        assert len(drawn) >= 1000, drawn[-300:]
        me = psutil.Process(proc.pid)
        assert me.cmdline()[1:3] == ["-m", "console.app"] and not me.children(recursive=True)
        proc.send_signal(sig)
        proc.wait(20)
        assert not psutil.pid_exists(proc.pid) or psutil.Process(proc.pid).status() == psutil.STATUS_ZOMBIE
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(5)
        os.close(master)


@pytest.mark.parametrize("headless", [True, False])
def test_launch_passes_settings_as_environment(settings, headless, monkeypatch):
    captured = {}

    class FakePopen:
        def __init__(self, cmd, **kw):
            captured.update(cmd=cmd, **kw)

    monkeypatch.setattr(launch, "DashboardProcess", FakePopen)
    proc = launch.launch(port=9999, settings=settings, headless=headless)
    assert proc.dashboard_url == "http://localhost:9999"
    env = captured["env"]
    assert env["MESH_ETCD"] == settings.etcd and env["MESH_ETCD_PREFIX"] == settings.etcd_prefix
    assert env["PYTHONPATH"].split(os.pathsep)[0] == str(ROOT)
    assert ("true" if headless else "false") in captured["cmd"]

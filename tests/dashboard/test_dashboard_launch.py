"""dashboard.launch: the `mesh dashboard` entry starts Streamlit on a port and prints the URL."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import urllib.request

import psutil
import pytest
from dashsupport import ROOT

from dashboard import launch
from plane import local


def test_command_is_headless_streamlit_run_of_the_app():
    cmd = launch.streamlit_command(8555)
    assert cmd[:4] == [sys.executable, "-m", "streamlit", "run"]
    assert cmd[4] == str(ROOT / "dashboard" / "app.py")
    args = dict(zip(cmd[5::2], cmd[6::2], strict=True))
    assert args["--server.port"] == "8555"
    assert args["--server.headless"] == "true"
    assert args["--browser.gatherUsageStats"] == "false"


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
        with urllib.request.urlopen(f"http://localhost:{port}/", timeout=5) as resp:
            assert resp.status == 200 and b"<div id=\"root\">" in resp.read()
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

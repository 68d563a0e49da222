"""Start the dashboard: ``streamlit run dashboard/server.py`` (which serves app.py) as a child.

``mesh dashboard [--port P]`` becomes :func:`main` (it execs ``python -m dashboard.launch``);
tests call :func:`launch` and talk to the server it started. :func:`main` stops whole: on
SIGTERM, SIGINT or SIGHUP it forwards SIGTERM to the server, waits for it (SIGKILL to its
process group after ``STOP_TIMEOUT_S``) and exits 0.

The server never calls out: usage statistics are off (flag and environment), the page icon is
local, and fonts and plotly are Streamlit's own bundled files.
"""

from __future__ import annotations

import argparse
import os
import pathlib
import signal
import subprocess
import sys
import time

from plane import local
from plane.settings import MeshSettings

__all__ = ["APP_PATH", "SERVER_PATH", "STOP_SIGNALS", "DashboardProcess", "streamlit_command", "launch", "url_for",
           "wait_until_serving", "stop", "main"]

APP_PATH = pathlib.Path(__file__).resolve().parent / "app.py"
SERVER_PATH = APP_PATH.parent / "server.py"  # st.App(app.py) plus the base-URL middleware
DEFAULT_PORT = 8501
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 10.0
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)
# The same settings as environment, for any streamlit process started with this environment.
QUIET_ENV = {"STREAMLIT_BROWSER_GATHER_USAGE_STATS": "false", "STREAMLIT_SERVER_SHOW_EMAIL_PROMPT": "false",
             "STREAMLIT_SERVER_HEADLESS": "true"}


class DashboardProcess(subprocess.Popen[bytes]):
    """The Streamlit server process, with the port and the URL it serves on."""

    dashboard_port: int = 0
    dashboard_url: str = ""


def streamlit_command(port: int, *, headless: bool = True, address: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(SERVER_PATH),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
        "--server.showEmailPrompt", "false",
        "--client.showErrorDetails", "full",
        "--server.fileWatcherType", "none",
        "--server.runOnSave", "false",
        "--client.toolbarMode", "minimal",
        "--theme.base", "light",
    ]


def url_for(port: int, address: str = "127.0.0.1") -> str:
    return f"http://{'localhost' if address in ('127.0.0.1', '0.0.0.0') else address}:{port}"


def launch(*, port: int | None, settings: MeshSettings | None, headless: bool = True,
           address: str = "127.0.0.1", log_path: pathlib.Path | None = None) -> DashboardProcess:
    """Start the Streamlit server on ``port`` (a free one when None) with ``settings`` as MESH_*
    environment; returns at once (see :func:`wait_until_serving`). The port is in
    ``proc.args`` and in the attribute ``proc.dashboard_port``."""
    if port is None:
        port = DEFAULT_PORT if local.port_is_free(DEFAULT_PORT, address) else local.free_port(address)
    env = settings.child_env() if settings is not None else dict(os.environ)
    env.update(QUIET_ENV)
    env["MESH_DASHBOARD_PARENT_PID"] = str(os.getpid())  # server.py stops when this process is gone
    if not headless:
        env.pop("STREAMLIT_SERVER_HEADLESS")
    root = str(APP_PATH.parent.parent)
    env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
    out = open(log_path, "ab") if log_path else None  # noqa: SIM115 - handed to the child
    try:
        proc = DashboardProcess(
            streamlit_command(port, headless=headless, address=address),
            env=env,
            cwd=root,
            stdin=subprocess.DEVNULL,
            stdout=out if out else None,
            stderr=subprocess.STDOUT if out else None,
            start_new_session=True,
        )
    finally:
        if out:
            out.close()
    proc.dashboard_port = port
    proc.dashboard_url = url_for(port, address)
    return proc


def wait_until_serving(proc: DashboardProcess, *, timeout: float = START_TIMEOUT_S) -> str:
    """Block until the server answers its health check; returns the URL."""
    import urllib.error
    import urllib.request

    url = proc.dashboard_url
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the dashboard exited with code {proc.returncode} before serving")
        try:
            with urllib.request.urlopen(f"{url}/_stcore/health", timeout=1) as resp:
                if resp.status == 200:
                    return url
        except (urllib.error.URLError, OSError):
            pass
        time.sleep(0.2)
    raise TimeoutError(f"the dashboard did not answer at {url} within {timeout:.0f}s")


def stop(proc: subprocess.Popen[bytes], *, timeout: float = STOP_TIMEOUT_S) -> None:
    """Stop the server: SIGTERM, then SIGKILL to its whole process group (it runs in a session
    of its own) if it is still there after ``timeout`` seconds."""
    if proc.poll() is not None:
        return
    proc.send_signal(signal.SIGTERM)
    try:
        proc.wait(timeout)
    except subprocess.TimeoutExpired:
        try:
            os.killpg(proc.pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        proc.wait(5)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh dashboard", description="Start the browser dashboard.")
    parser.add_argument("--port", type=int, default=None, help=f"port to serve on (default {DEFAULT_PORT} "
                        "or a free one)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.port is not None and not local.port_is_free(args.port, args.address):
        print(f"port {args.port} is taken: choose another with --port", file=sys.stderr)
        return 2
    signalled: list[int] = []
    server: list[DashboardProcess] = []

    def on_signal(signum: int, frame: object) -> None:
        # Forward, then let the main flow wait for the server: nothing is left behind.
        signalled.append(signum)
        if server and server[0].poll() is None:
            server[0].send_signal(signal.SIGTERM)

    previous = {s: signal.signal(s, on_signal) for s in STOP_SIGNALS}  # before the child exists
    try:
        if signalled:
            return 0
        proc = launch(port=args.port, settings=None, address=args.address)
        server.append(proc)
        if signalled:  # a signal came while it was starting
            proc.send_signal(signal.SIGTERM)
        try:
            try:
                url = wait_until_serving(proc)
            except (RuntimeError, TimeoutError) as exc:
                if signalled:
                    return 0
                print(f"the dashboard did not start: {exc}", file=sys.stderr)
                return 1
            print(f"dashboard: {url}  (Ctrl-C stops it)", flush=True)
            while True:
                try:
                    code = proc.wait(0.5)
                    break
                except subprocess.TimeoutExpired:
                    if signalled:  # forwarded already: give it STOP_TIMEOUT_S, then kill
                        stop(proc)
                        code = 0
                        break
            return 0 if signalled else code
        finally:
            stop(proc)
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


if __name__ == "__main__":
    sys.exit(main())

"""Start the dashboard: ``streamlit run dashboard/app.py`` as a child process.

``mesh dashboard [--port P]`` calls :func:`main`; tests call :func:`launch` and talk to the
server it started.
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

__all__ = ["APP_PATH", "DashboardProcess", "streamlit_command", "launch", "url_for", "wait_until_serving", "main"]

APP_PATH = pathlib.Path(__file__).resolve().parent / "app.py"
DEFAULT_PORT = 8501
START_TIMEOUT_S = 60.0


class DashboardProcess(subprocess.Popen[bytes]):
    """The Streamlit server process, with the port and the URL it serves on."""

    dashboard_port: int = 0
    dashboard_url: str = ""


def streamlit_command(port: int, *, headless: bool = True, address: str = "127.0.0.1") -> list[str]:
    return [
        sys.executable, "-m", "streamlit", "run", str(APP_PATH),
        "--server.port", str(port),
        "--server.address", address,
        "--server.headless", "true" if headless else "false",
        "--browser.gatherUsageStats", "false",
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


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="mesh dashboard", description="Start the browser dashboard.")
    parser.add_argument("--port", type=int, default=None, help=f"port to serve on (default {DEFAULT_PORT} "
                        "or a free one)")
    parser.add_argument("--address", default="127.0.0.1", help="address to bind (default 127.0.0.1)")
    args = parser.parse_args(argv)
    if args.port is not None and not local.port_is_free(args.port, args.address):
        print(f"port {args.port} is taken: choose another with --port", file=sys.stderr)
        return 2
    proc = launch(port=args.port, settings=None, address=args.address)

    def stop(signum: int, frame: object) -> None:
        raise KeyboardInterrupt  # run the clean-up below on SIGTERM too

    signal.signal(signal.SIGTERM, stop)
    try:
        url = wait_until_serving(proc)
        print(f"dashboard: {url}  (Ctrl-C stops it)", flush=True)
        return proc.wait()
    except KeyboardInterrupt:
        return 0
    except (RuntimeError, TimeoutError) as exc:
        print(f"the dashboard did not start: {exc}", file=sys.stderr)
        return 1
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()


if __name__ == "__main__":
    sys.exit(main())

"""The plane itself: ``mesh up``, ``down``, ``status``, ``certs``, ``pod``, ``probe``, ``dashboard``, ``console``.

``mesh status`` tells apart no plane, etcd down, etcd not answering, some pods down and healthy
(docs/cli-json.md lists its JSON and exit codes).
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time
from typing import Any

from rich.table import Table

from plane.cli.connect import client_for, settings_for
from plane.cli.output import (
    EXIT_FAILED,
    EXIT_NO_PLANE,
    EXIT_OK,
    EXIT_USAGE,
    CliError,
    out,
    plain_progress,
    print_error,
    print_json,
)
from plane.settings import MeshSettings, format_size, parse_size

__all__ = ["DEFAULT_PODS", "cmd_up", "cmd_down", "cmd_status", "cmd_certs", "cmd_pod", "cmd_probe", "cmd_dashboard",
           "cmd_console"]

DEFAULT_PODS = 3  # `mesh up --pods`


# -- plane lifecycle ----------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from plane import local

    settings = settings_for(args)
    if args.port:
        settings = settings.model_copy(update={"grpc_port": args.port})
    capacity = parse_size(args.capacity) if args.capacity else None
    pods = DEFAULT_PODS if args.pods is None else args.pods
    if settings.etcd_endpoints() and local.status(settings.state_dir) is None:
        client_for(args).close()  # pods on an etcd that does not answer would only wait for it, then fail
    try:
        if not settings.rest_port:  # `mesh up`: REST on ModelMesh's port and the next ones
            settings = settings.model_copy(update={"rest_port": local.REST_BASE_PORT})
        plane = local.up(settings, pods=pods, capacity=capacity, progress=plain_progress(), tls=args.tls)
    except local.AlreadyUp as exc:
        if args.json:
            print_json({"already_up": True, "message": str(exc)})
        else:
            out.print(f"[yellow]{exc}[/]")
        return EXIT_OK
    except (RuntimeError, TimeoutError, OSError) as exc:  # what failed to start was stopped again
        raise CliError(f"mesh up failed: {exc}") from exc
    if args.json:
        print_json({**_local_json(plane), "restarted": plane.restarted})
        return EXIT_OK
    if plane.restarted:
        out.print(f"[green]plane up[/] — restarted {', '.join(plane.restarted)} on the same ports, data dir and "
                  f"settings; etcd {plane.etcd_endpoint}, state dir {plane.state_dir}")
        if args.pods is not None or args.capacity or args.tls or args.port:
            out.print("[yellow]--pods, --capacity, --port and --tls apply to a new plane: the running plane keeps "
                      "its settings (`mesh down`, then `mesh up`, to change them)[/]")
    else:
        out.print(f"[green]plane up[/] — etcd {plane.etcd_endpoint}, state dir {plane.state_dir}")
    table = Table("pod", "gRPC endpoint", "metrics", "pid", "capacity")
    for pod in plane.pods:
        restarted = " [green](restarted)[/]" if pod.pod_id in plane.restarted else ""
        table.add_row(pod.pod_id + restarted, pod.endpoint, _metrics_endpoint(pod), str(pod.pid),
                      format_size(plane.capacity))
    out.print(table)
    if not plane.restarted:
        out.print(f"KServe V2 inference and ModelMesh management on any pod, e.g. {plane.pods[0].endpoint}")
        out.print("next: `mesh demo --models 50` registers demo models; `mesh models list` shows them")
    return EXIT_OK


def _metrics_endpoint(pod: Any) -> str:
    return f"{pod.endpoint.rpartition(':')[0] or '127.0.0.1'}:{pod.metrics_port}"


def _local_json(plane: Any) -> dict[str, Any]:
    return {
        "state_dir": plane.state_dir,
        "etcd": plane.etcd_endpoint,
        "etcd_prefix": plane.etcd_prefix,
        "capacity": plane.capacity,
        "pods": [{"pod_id": p.pod_id, "endpoint": p.endpoint, "pid": p.pid,
                  "metrics_endpoint": _metrics_endpoint(p)} for p in plane.pods],
    }


def cmd_down(args: argparse.Namespace) -> int:
    from plane import local

    settings = settings_for(args)
    recorded = local.LocalPlane.load(settings.state_dir)
    if settings.etcd and recorded is not None and recorded.etcd_endpoint != settings.etcd:
        raise CliError(f"the plane in {settings.state_dir} uses etcd {recorded.etcd_endpoint}, not {settings.etcd}: "
                       "`mesh down` stops the plane `mesh up` started there (drop --etcd/MESH_ETCD to stop it)",
                       EXIT_USAGE)
    t0 = time.monotonic()
    stopped = local.down(settings.state_dir, progress=plain_progress())
    if args.json:
        print_json({"stopped": stopped})
    elif stopped:
        out.print(f"plane stopped ({time.monotonic() - t0:.1f}s)")
    else:
        out.print(f"no plane is running in {settings.state_dir}"
                  + (f" (`mesh down` stops only a plane `mesh up` started; etcd {settings.etcd} is not one)"
                     if settings.etcd else ""))
    return EXIT_OK


def _status_pods(snap: Any, health: Any) -> list[dict[str, Any]]:
    """One entry per pod: those plane.json records (alive or not), then the registry's others.
    Without a registry read (``snap`` None) the live figures are None: nothing knows them."""
    registered = {p.pod_id: p for p in snap.pods} if snap is not None else {}
    rows: list[dict[str, Any]] = []
    recorded = health.plane.pods if health is not None else []
    capacity = health.plane.pod_settings.get("capacity", health.plane.capacity) if health is not None else 0
    for pod in recorded:
        alive = health.pods_alive.get(pod.pod_id, False)
        rec = registered.pop(pod.pod_id, None)
        if rec is not None:
            row = {**_registered_pod(rec), "pid": pod.pid, "alive": alive}
            if not alive:  # its record outlives the process until its lease expires
                row["ready"] = False
            rows.append(row)
            continue
        rows.append({
            "pod_id": pod.pod_id, "endpoint": pod.endpoint, "metrics_endpoint": _metrics_endpoint(pod),
            "rest_endpoint": f"{pod.endpoint.rpartition(':')[0]}:{pod.rest_port}" if pod.rest_port else None,
            "ready": False if snap is not None or not alive else None, "shutting_down": None,
            "capacity": capacity, "used": None, "models_loaded": None, "loading": None, "rpm": None,
            "pid": pod.pid, "alive": alive, "registered": False if snap is not None else None,
        })
    rows.extend({**_registered_pod(rec), "alive": True} for _, rec in sorted(registered.items()))
    return rows


def _registered_pod(p: Any) -> dict[str, Any]:
    return {
        "pod_id": p.pod_id,
        "endpoint": p.endpoint,
        "metrics_endpoint": p.metrics_endpoint,
        "rest_endpoint": p.rest_endpoint or None,
        "ready": not p.shutting_down,
        "shutting_down": p.shutting_down,
        "capacity": p.capacity,
        "used": p.used,
        "models_loaded": p.count,
        "loading": p.loading,
        "rpm": p.rpm,
        "pid": p.pid,
        "registered": True,
    }


def cmd_status(args: argparse.Namespace) -> int:
    """Tells apart: no plane; etcd down (pods alive); etcd not answering; some pods down; healthy.
    See docs/cli-json.md for the JSON and exit codes."""
    from plane import local
    from plane.registry import RegistryError

    settings = settings_for(args)
    explicit = bool(settings.etcd)  # --etcd or MESH_ETCD
    health = local.inspect(settings.state_dir)
    if health is not None and explicit and (health.plane.etcd_endpoint, health.plane.etcd_prefix) != (
            settings.etcd, settings.etcd_prefix):
        health = None  # plane.json describes another plane than the one asked about
    if not explicit and (health is None or not health.any_alive):
        message = f"no plane is running (state dir {settings.state_dir}); start one with `mesh up`"
        if health is not None:
            message += f" (the plane recorded there has stopped: its etcd and {len(health.plane.pods)} pods are gone)"
        if args.json:
            print_json({"up": False, "state": "no_plane", "state_dir": str(settings.state_dir), "pods": [],
                   "message": message})
        else:
            out.print(message)
        return EXIT_NO_PLANE
    embedded = health is not None and health.embedded
    etcd: dict[str, Any] = {
        "endpoint": health.plane.etcd_endpoint if health is not None else settings.etcd,
        "pid": health.plane.etcd_pid if health is not None and embedded else None,
        "alive": health.etcd_alive if health is not None and embedded else None,  # None: not our process
        "reachable": False,
    }
    data: dict[str, Any] = {
        "mode": "external" if explicit else "embedded",
        "state_dir": str(settings.state_dir),
        "etcd": etcd["endpoint"],
        "etcd_prefix": health.plane.etcd_prefix if health is not None else settings.etcd_prefix,
        "etcd_status": etcd,
    }
    snap = None
    problem = ""
    if health is not None and health.state == "etcd_down":
        problem = "etcd_down"  # its process is gone: no point in waiting for a connection
    else:
        try:
            with client_for(args) as client:
                data["etcd"] = etcd["endpoint"] = client.etcd_endpoint
                snap = client.snapshot()
        except (CliError, RegistryError) as exc:
            problem, data["message"] = "etcd_unreachable", str(exc)
    etcd["reachable"] = snap is not None
    if etcd["alive"] is None:
        etcd["alive"] = etcd["reachable"]  # an external etcd: alive is what answers
    data["pods"] = _status_pods(snap, health)
    if problem or snap is None:
        return _status_down(args, data, problem or "etcd_unreachable", health)
    live = {p.pod_id for p in snap.pods}
    dead = [p for p in data["pods"] if not p["alive"]]
    data.update({
        "up": True,
        "state": "degraded" if dead else "healthy",
        "message": (f"{len(dead)} of {len(data['pods'])} pods down: {', '.join(p['pod_id'] for p in dead)}; "
                    "`mesh up` restarts them on the same ports") if dead else "",
        "models": {
            "registered": len(snap.models),
            "loaded": sum(1 for m in snap.models if any(p in live for p in m.loaded_on())),
            "failed": sum(1 for m in snap.models if m.failed and not m.loaded_on()),
        },
        "vmodels": len(snap.vmodels),
    })
    if args.json:
        print_json(data)
        return EXIT_OK
    out.print(f"plane ({data['mode']}) — etcd {data['etcd']} prefix {data['etcd_prefix']!r}")
    _status_table(data["pods"])
    m = data["models"]
    out.print(f"models: {m['registered']} registered, {m['loaded']} loaded, {m['failed']} failed; "
              f"{data['vmodels']} vmodels")
    if dead:
        out.print(f"[red]{data['message']}[/]")
    return EXIT_OK


def _status_down(args: argparse.Namespace, data: dict[str, Any], problem: str, health: Any) -> int:
    """etcd is down (its process is gone) or does not answer: what plane.json knows, exit 3."""
    alive = sum(1 for p in data["pods"] if p["alive"])
    pods = f"{alive} of {len(data['pods'])} pods alive"
    if problem == "etcd_down":
        pid = health.plane.etcd_pid
        data["message"] = (f"etcd is down ({data['etcd']}, pid {pid} no longer runs); {pods}, serving the models "
                           "they hold, but loads and registry changes wait for etcd; `mesh up` restarts etcd on "
                           "the same port and data dir, `mesh down` stops the pods")
    elif health is not None:
        data["message"] += f" ({pods})"
    data.update({"up": False, "state": problem})
    if args.json:
        print_json(data)
        return EXIT_NO_PLANE
    out.print(f"[red]{data['message']}[/]")
    if data["pods"]:
        _status_table(data["pods"])
    return EXIT_NO_PLANE


def _status_table(pods: list[dict[str, Any]]) -> None:
    table = Table("pod", "endpoint", "pid", "state", "used / capacity", "models", "loading", "req/min")
    for p in pods:
        if not p["alive"]:
            state = "[red]dead[/]"
        elif p["registered"] is None:
            state = "[yellow]alive (registry unknown)[/]"
        elif not p["registered"]:
            state = "[yellow]alive, not registered[/]"
        else:
            state = "[yellow]shutting down[/]" if p["shutting_down"] else "[green]ready[/]"
        used = "-" if p["used"] is None else format_size(p["used"])  # None: etcd down, nothing knows it
        rpm = None if p["rpm"] is None else round(p["rpm"])
        table.add_row(p["pod_id"], p["endpoint"], _dash(p["pid"]), state, f"{used} / {format_size(p['capacity'])}",
                      _dash(p["models_loaded"]), _dash(p["loading"]), _dash(rpm))
    out.print(table)


def _dash(value: Any) -> str:
    return "-" if value is None else str(value)


def cmd_certs(args: argparse.Namespace) -> int:
    from plane import certs

    paths = certs.generate(pathlib.Path(args.out), hosts=args.host)
    for name, path in paths.items():
        out.print(f"{name}: {path}")
    return EXIT_OK


def cmd_pod(args: argparse.Namespace) -> int:
    from plane import pod

    pod.main()
    return EXIT_OK


def cmd_probe(args: argparse.Namespace) -> int:
    import grpc

    from plane import tls
    from plane.proto import inference_pb2, inference_pb2_grpc

    settings = MeshSettings()
    endpoint = args.endpoint or f"127.0.0.1:{settings.grpc_port}"
    try:
        with tls.sync_channel(endpoint, settings) as ch:
            stub = inference_pb2_grpc.GRPCInferenceServiceStub(ch)
            if args.what == "live":
                ok = stub.ServerLive(inference_pb2.ServerLiveRequest(), timeout=args.timeout).live
            else:
                ok = stub.ServerReady(inference_pb2.ServerReadyRequest(), timeout=args.timeout).ready
    except grpc.RpcError as exc:
        print_error(f"{args.what} probe of {endpoint} failed: {exc.code().name}")
        return EXIT_FAILED
    if not ok:
        print_error(f"pod at {endpoint} is not {args.what}")
    return EXIT_OK if ok else EXIT_FAILED


# -- UIs ----------------------------------------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    # The UIs are separate packages that plane never imports: run them as programs. exec, not a
    # child: `mesh` becomes the launcher, so SIGTERM/SIGINT/SIGHUP reach the process that stops
    # the Streamlit server (dashboard.launch forwards them and waits), and nothing is orphaned.
    import os

    argv = [sys.executable, "-m", "dashboard.launch"]
    if args.port:
        argv += ["--port", str(args.port)]
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, argv)
    return EXIT_OK  # not reached


def cmd_console(args: argparse.Namespace) -> int:
    # exec, as for the dashboard: the console is then the process the terminal's signals reach.
    import os

    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "console.app", *args.rest])
    return EXIT_OK  # not reached

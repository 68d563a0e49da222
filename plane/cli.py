"""``mesh``: the operator's command line.

Every command is a thin layer over :mod:`plane.api` and :mod:`plane.local`; ``--json`` output
is a stable contract documented in docs/cli-json.md. Exit codes: 0 success, 1 operation
failed, 2 bad usage or input, 3 no plane running / registry unreachable.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import pathlib
import sys
import time
from collections.abc import Callable
from typing import Any

from rich.console import Console
from rich.table import Table

from plane.settings import MeshSettings, format_age, format_size, parse_size

__all__ = ["main", "build_parser"]

EXIT_OK, EXIT_FAILED, EXIT_USAGE, EXIT_NO_PLANE = 0, 1, 2, 3
DEFAULT_PODS = 3  # `mesh up --pods`

# Not a terminal (pipes, CI logs): a wide fixed width so ids are not cut.
out = Console(highlight=False, soft_wrap=True, width=None if sys.stdout.isatty() else 200)
err = Console(stderr=True, highlight=False, soft_wrap=True)


class CliError(Exception):
    def __init__(self, message: str, code: int = EXIT_FAILED):
        super().__init__(message)
        self.code = code


def _settings(args: argparse.Namespace) -> MeshSettings:
    update: dict[str, Any] = {}
    if getattr(args, "state_dir", None):
        update["state_dir"] = pathlib.Path(args.state_dir).expanduser()
    if getattr(args, "etcd", None):
        update["etcd"] = args.etcd
    if getattr(args, "prefix", None):
        update["etcd_prefix"] = args.prefix
    from plane import local

    return local.with_embedded_tls(MeshSettings().model_copy(update=update))


def _client(args: argparse.Namespace):
    from plane.api import PlaneClient
    from plane.registry import RegistryError

    try:
        return PlaneClient.connect(_settings(args))
    except RegistryError as exc:
        raise CliError(str(exc), EXIT_NO_PLANE) from exc


def _json(data: Any) -> None:
    sys.stdout.write(json.dumps(data, indent=2, sort_keys=True, default=str) + "\n")


def _ago(ms: int) -> str:
    return format_age(ms, time.time() * 1000)


def _plain_progress() -> Callable[[str, int, int], None]:
    """Progress as lines on stderr (works without a terminal, e.g. in CI logs)."""

    def report(message: str, done: int, total: int) -> None:
        err.print(f"[{done}/{total}] {message}")

    return report


# -- plane lifecycle ----------------------------------------------------------------------------------------------


def cmd_up(args: argparse.Namespace) -> int:
    from plane import local

    settings = _settings(args)
    if args.port:
        settings = settings.model_copy(update={"grpc_port": args.port})
    capacity = parse_size(args.capacity) if args.capacity else None
    pods = DEFAULT_PODS if args.pods is None else args.pods
    try:
        plane = local.up(settings, pods=pods, capacity=capacity, progress=_plain_progress(), tls=args.tls)
    except local.AlreadyUp as exc:
        if args.json:
            _json({"already_up": True, "message": str(exc)})
        else:
            out.print(f"[yellow]{exc}[/]")
        return EXIT_OK
    except (RuntimeError, TimeoutError, OSError) as exc:  # what failed to start was stopped again
        raise CliError(f"mesh up failed: {exc}") from exc
    if args.json:
        _json({**_local_json(plane), "restarted": plane.restarted})
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

    settings = _settings(args)
    t0 = time.monotonic()
    stopped = local.down(settings.state_dir, progress=_plain_progress())
    if args.json:
        _json({"stopped": stopped})
    elif stopped:
        out.print(f"plane stopped ({time.monotonic() - t0:.1f}s)")
    else:
        out.print(f"no plane is running in {settings.state_dir}")
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

    settings = _settings(args)
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
            _json({"up": False, "state": "no_plane", "state_dir": str(settings.state_dir), "pods": [],
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
            with _client(args) as client:
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
        _json(data)
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
        _json(data)
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
        err.print(f"{args.what} probe of {endpoint} failed: {exc.code().name}")
        return EXIT_FAILED
    if not ok:
        err.print(f"pod at {endpoint} is not {args.what}")
    return EXIT_OK if ok else EXIT_FAILED


# -- demo ---------------------------------------------------------------------------------------------------------


def cmd_demo(args: argparse.Namespace) -> int:
    from plane import demo
    from plane.api import ModelSpec

    settings = _settings(args)
    target = pathlib.Path(args.out).expanduser() if args.out else settings.state_dir / "demo-models"
    target.mkdir(parents=True, exist_ok=True)
    report = _plain_progress()
    last = [0.0]

    def gen_progress(done: int, total: int) -> None:
        if done == total or time.monotonic() - last[0] > 1:
            last[0] = time.monotonic()
            report(f"generating demo models in {target}", done, total)

    models = demo.generate_models(target, args.models, seed=args.seed, progress=gen_progress)
    if args.no_register:
        out.print(f"{len(models)} demo models written to {target}")
        return EXIT_OK
    with _client(args) as client:
        existing = {c["key"] for c in client.list_storage()}
        if args.storage_key not in existing:
            client.set_storage(args.storage_key, "local", {"path": str(target)})
            (err if args.json else out).print(f"storage {args.storage_key!r}: local directory {target}")
        specs = [ModelSpec(m.model_id, m.path, args.storage_key) for m in models]
        created = client.register_models(specs, progress=lambda d, t: report("registering", d, t))
        traffic = None
        if args.requests:
            from plane.demo_traffic import send_demo_traffic

            endpoints = [p.endpoint for p in client.pods() if not p.shutting_down]
            if not endpoints:
                raise CliError("no pod is running to send demo traffic to: `mesh up` first", EXIT_NO_PLANE)
            traffic = send_demo_traffic(endpoints, models, args.requests, settings=client.settings,
                                        progress=lambda d, t: report("demo traffic (Zipf over the models)", d, t))
    if args.json:
        _json({"generated": len(models), "registered": created, "directory": str(target),
               "models": [dataclasses.asdict(m) for m in models],
               "traffic": dataclasses.asdict(traffic) if traffic else None})
    else:
        out.print(f"[green]{len(models)} demo models[/] in {target}; {created} newly registered")
        if traffic:
            out.print(f"sent {traffic.requests} requests in {traffic.seconds:.1f}s, {traffic.errors} errors"
                      + (f" (e.g. {traffic.error_samples[0]})" if traffic.error_samples else "")
                      + "; `mesh events` shows the loads and evictions")
        if models:
            m = models[0]
            out.print(f"try: model_name={m.model_id!r}, input {m.n_features} FP32 features "
                      f"(dataset {m.dataset}); `mesh models list` shows them all")
    return EXIT_OK


# -- models -------------------------------------------------------------------------------------------------------


def _model_json(m: Any, live: set[str] | None = None) -> dict[str, Any]:
    from plane import usage

    d = dataclasses.asdict(m)  # every record field, "used_ms" included (0 = never used)
    d["status"] = m.status()
    d["loaded_on"] = [p for p in m.loaded_on() if live is None or p in live]
    d["rpm_now"] = usage.fresh_rpm(m, int(time.time() * 1000))  # the rate now, 0 a minute after the last request
    return d


def cmd_models_register(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.register_model(args.model_id, path=args.path, storage_key=args.storage, type=args.type,
                                    load_now=args.load_now, sync=args.sync, pinned=args.pin,
                                    min_copies=args.min_copies, max_copies=args.max_copies)
    if args.json:
        _json(_model_json(rec))
    else:
        out.print(f"registered {rec.model_id} ({rec.key}:{rec.path}) — {rec.status()}")
    return EXIT_OK


def _rate(rpm: float) -> str:
    """A model's request rate as the tables show it: whole numbers, one decimal below 10/min."""
    return f"{rpm:.0f}" if rpm >= 10 or rpm == 0 else f"{rpm:.1f}"


def cmd_models_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        snap = client.snapshot()
    live = {p.pod_id for p in snap.pods}
    models = snap.models
    if args.filter:
        models = [m for m in models if args.filter in m.model_id]
    if args.json:
        _json([_model_json(m, live) for m in models])
        return EXIT_OK
    from plane import usage

    now = int(time.time() * 1000)
    table = Table("model", "status", "copies", "size", "last used", "req/min", "failures")
    for m in models[: args.limit or None]:
        copies = ", ".join(f"{p}{'' if c.state == 'loaded' else ' (loading)'}" for p, c in sorted(m.copies.items())
                           if p in live) or "-"
        table.add_row(m.model_id, m.status(), copies, format_size(m.size) if m.size else "-",
                      usage.last_used_text(m, now), _rate(usage.fresh_rpm(m, now)),
                      str(len(m.failed)) if m.failed else "")
    out.print(table)
    shown = min(len(models), args.limit) if args.limit else len(models)
    out.print(f"{shown} of {len(models)} models shown")
    return EXIT_OK


def cmd_models_status(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.get_model(args.model_id)
        live = {p.pod_id for p in client.pods()}
    if rec is None:
        raise CliError(f"model {args.model_id!r} is not registered", EXIT_FAILED)
    if args.json:
        _json(_model_json(rec, live))
        return EXIT_OK
    from plane import usage

    now = int(time.time() * 1000)
    out.print(f"[bold]{rec.model_id}[/] — {rec.status()}  ({rec.key}:{rec.path}, type {rec.type})")
    out.print(f"size {format_size(rec.size) if rec.size else 'unknown (not loaded yet)'}, "
              f"last used {usage.last_used_text(rec, now)}, {_rate(usage.fresh_rpm(rec, now))} req/min"
              + (", pinned" if rec.pinned else ""))
    for pod, c in sorted(rec.copies.items()):
        gone = "" if pod in live else " [red](pod gone)[/]"
        out.print(f"  copy on {pod}: {c.state} since {_ago(c.since_ms)}, {format_size(c.size)}{gone}")
    for pod, f in sorted(rec.failed.items()):
        out.print(f"  [red]failed on {pod}[/] {_ago(f.time_ms)}: {f.message}")
    if rec.io:
        for kind in ("inputs", "outputs"):
            for name, dt, shape in rec.io.get(kind, []):
                out.print(f"  {kind[:-1]} {name}: {dt} {shape}")
    return EXIT_OK


def cmd_models_unregister(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.get_model(args.model_id)
        if rec is None:
            raise CliError(f"model {args.model_id!r} is not registered", EXIT_FAILED)
        if rec.refs:
            raise CliError(f"model {args.model_id!r} is the target of vmodel(s) {', '.join(rec.refs)}: "
                           "delete or repoint them first", EXIT_FAILED)
        client.unregister_model(args.model_id)
    if args.json:
        _json({"unregistered": args.model_id})
    else:
        out.print(f"unregistered {args.model_id}")
    return EXIT_OK


def cmd_models_load(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.ensure_loaded(args.model_id, sync=args.sync)
    if args.json:
        _json(_model_json(rec))
    else:
        out.print(f"{rec.model_id}: {rec.status()} on {', '.join(rec.loaded_on()) or '-'}")
    return EXIT_OK


def cmd_models_policy(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.set_model_policy(args.model_id, pinned=args.pin, min_copies=args.min_copies,
                                      max_copies=args.max_copies)
    if args.json:
        _json(_model_json(rec))
    else:
        out.print(f"{rec.model_id}: pinned={rec.pinned} min_copies={rec.min_copies} max_copies={rec.max_copies}")
    return EXIT_OK


# -- vmodels ------------------------------------------------------------------------------------------------------


def _vmodel_json(v: Any) -> dict[str, Any]:
    d = dataclasses.asdict(v)
    d["status"] = v.status()
    return d


def cmd_vmodels_set(args: argparse.Namespace) -> int:
    with _client(args) as client:
        rec = client.set_vmodel(args.vmodel_id, args.target, auto_delete=args.auto_delete, owner=args.owner,
                                sync=args.sync)
    if args.json:
        _json(_vmodel_json(rec))
    else:
        out.print(f"vmodel {rec.vmodel_id}: active {rec.active}, target {rec.target} — {rec.status()}")
    return EXIT_OK


def cmd_vmodels_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        vms = client.list_vmodels()
    if args.json:
        _json([_vmodel_json(v) for v in vms])
        return EXIT_OK
    table = Table("vmodel", "active", "target", "status", "owner")
    for v in vms:
        table.add_row(v.vmodel_id, v.active, v.target, v.status(), v.owner)
    out.print(table)
    return EXIT_OK


def cmd_vmodels_delete(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ok = client.delete_vmodel(args.vmodel_id)
    if not ok:
        raise CliError(f"vmodel {args.vmodel_id!r} does not exist", EXIT_FAILED)
    if args.json:
        _json({"deleted": args.vmodel_id})
    else:
        out.print(f"deleted vmodel {args.vmodel_id}")
    return EXIT_OK


# -- storage ------------------------------------------------------------------------------------------------------


def _secret_value(args: argparse.Namespace) -> str | None:
    if args.secret_access_key_env:
        value = os.environ.get(args.secret_access_key_env)
        if not value:
            raise CliError(f"environment variable {args.secret_access_key_env} is empty or unset", EXIT_USAGE)
        return value
    if args.secret_access_key_file:
        try:
            return pathlib.Path(args.secret_access_key_file).read_text().strip()
        except OSError as exc:
            raise CliError(f"cannot read {args.secret_access_key_file}: {exc.strerror}", EXIT_USAGE) from exc
    return args.secret_access_key


def cmd_storage_set(args: argparse.Namespace) -> int:
    params: dict[str, Any] = {}
    typ = args.type
    if args.from_file:
        try:
            data = json.loads(pathlib.Path(args.from_file).read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise CliError(f"cannot read storage config {args.from_file}: {exc}", EXIT_USAGE) from exc
        if not isinstance(data, dict):
            raise CliError(f"{args.from_file} must hold one JSON object (the SPEC storage-config format)", EXIT_USAGE)
        typ = typ or data.pop("type", None)
        params.update(data)
    if not typ:
        raise CliError("give --type local|s3 (or a --from-file with a 'type')", EXIT_USAGE)
    for name in ("path", "endpoint_url", "bucket", "region", "access_key_id"):
        value = getattr(args, name, None)
        if value:
            params[name] = value
    secret = _secret_value(args)
    if secret:
        params["secret_access_key"] = secret
    if args.secret_from_pod_env:
        params["secret_access_key_env"] = args.secret_from_pod_env
    if args.secret_from_pod_file:
        params["secret_access_key_file"] = args.secret_from_pod_file
    with _client(args) as client:
        cfg = client.set_storage(args.key, typ, params)
        masked = cfg.masked()
    if args.json:
        _json(masked)
    else:
        out.print(f"storage {cfg.key!r} ({cfg.type}) saved: " + ", ".join(
            f"{k}={v}" for k, v in masked.items() if k not in ("key", "type")))
    return EXIT_OK


def cmd_storage_list(args: argparse.Namespace) -> int:
    with _client(args) as client:
        configs = client.list_storage()
    if args.json:
        _json(configs)
        return EXIT_OK
    table = Table("key", "type", "settings (secrets masked)")
    for c in configs:
        table.add_row(c["key"], c["type"], ", ".join(f"{k}={v}" for k, v in c.items() if k not in ("key", "type")))
    out.print(table)
    return EXIT_OK


def cmd_storage_test(args: argparse.Namespace) -> int:
    with _client(args) as client:
        result = client.test_storage(args.key, path=args.path or "")
    if args.json:
        _json(dataclasses.asdict(result))
    else:
        colour = "green" if result.ok else "red"
        out.print(f"[{colour}]{'ok' if result.ok else 'failed'}[/]: {result.message}")
        for obj in result.objects:
            out.print(f"  {obj}")
    return EXIT_OK if result.ok else EXIT_FAILED


def cmd_storage_remove(args: argparse.Namespace) -> int:
    with _client(args) as client:
        ok = client.remove_storage(args.key)
    if not ok:
        raise CliError(f"no storage config named {args.key!r}", EXIT_FAILED)
    if args.json:
        _json({"removed": args.key})
    else:
        out.print(f"removed storage {args.key!r}")
    return EXIT_OK


# -- events -------------------------------------------------------------------------------------------------------


def cmd_events(args: argparse.Namespace) -> int:
    with _client(args) as client:
        since = int(time.time() * 1000 - args.minutes * 60_000) if args.minutes else 0
        events = client.events(since_ms=since, limit=0)
        if args.kind:
            events = [e for e in events if e.kind == args.kind]
        if args.model:
            events = [e for e in events if e.model == args.model]
        if args.limit:
            events = events[-args.limit:]
    if args.json:
        _json([{k: v for k, v in dataclasses.asdict(e).items() if k != "key"} for e in events])
        return EXIT_OK
    table = Table("time", "kind", "model", "pod", "size", "reason")
    for e in events:
        table.add_row(time.strftime("%H:%M:%S", time.localtime(e.time_ms / 1000)), e.kind, e.model, e.pod,
                      format_size(e.size) if e.size else "", e.reason)
    out.print(table)
    return EXIT_OK


# -- UIs ----------------------------------------------------------------------------------------------------------


def cmd_dashboard(args: argparse.Namespace) -> int:
    # The UIs are separate packages that plane never imports: start them as processes.
    import subprocess

    argv = [sys.executable, "-m", "dashboard.launch"]
    if args.port:
        argv += ["--port", str(args.port)]
    try:
        return subprocess.call(argv)
    except KeyboardInterrupt:
        return EXIT_OK


def cmd_console(args: argparse.Namespace) -> int:
    import subprocess

    try:
        return subprocess.call([sys.executable, "-m", "console.app", *args.rest])
    except KeyboardInterrupt:
        return EXIT_OK


# -- parser -------------------------------------------------------------------------------------------------------


def _common(p: argparse.ArgumentParser, *, json_flag: bool = True) -> None:
    p.add_argument("--state-dir", help="embedded plane state dir (default: the user's state dir; MESH_STATE_DIR)")
    p.add_argument("--etcd", help="etcd endpoint host:port of a running plane (MESH_ETCD)")
    p.add_argument("--prefix", help="registry root prefix (MESH_ETCD_PREFIX, default 'mesh')")
    if json_flag:
        p.add_argument("--json", action="store_true", help="machine-readable output (see docs/cli-json.md)")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="mesh", description="Multi-model serving plane for ONNX models.")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True

    p = sub.add_parser("up", help="start etcd and runtime pods on this machine")
    _common(p)
    p.add_argument("--pods", type=int, help=f"number of runtime pods (default {DEFAULT_PODS})")
    p.add_argument("--capacity", help="model cache per pod, e.g. 256MiB (default MESH_CAPACITY or 256MiB)")
    p.add_argument("--port", type=int, help="gRPC port of the first pod (default 8033; the next pods follow)")
    p.add_argument("--tls", action="store_true",
                   help="generate a CA and certificates; etcd, pods and clients then speak mutual TLS")
    p.set_defaults(func=cmd_up)

    p = sub.add_parser("certs", help="generate a CA with server and client certificates (PEM)")
    p.add_argument("--out", required=True, help="directory to write ca.pem, server*.pem, client*.pem")
    p.add_argument("--host", action="append", help="name or IP the server certificate is valid for (repeat)")
    p.set_defaults(func=cmd_certs)

    p = sub.add_parser("down", help="stop the embedded plane")
    _common(p)
    p.set_defaults(func=cmd_down)

    p = sub.add_parser("status", help="pods, capacity, used, models loaded")
    _common(p)
    p.set_defaults(func=cmd_status)

    p = sub.add_parser("demo", help="generate real ONNX demo models and register them")
    _common(p)
    p.add_argument("--models", type=int, default=50, help="how many models (default 50)")
    p.add_argument("--out", help="directory for the model files (default <state dir>/demo-models)")
    p.add_argument("--storage-key", default="default", help="storage key to register them under")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--no-register", action="store_true", help="only write the files")
    p.add_argument("--requests", type=int, default=0,
                   help="then send N requests (Zipf over the models, round robin over the pods)")
    p.set_defaults(func=cmd_demo)

    models = sub.add_parser("models", help="register, list, inspect and unregister models")
    msub = models.add_subparsers(dest="models_command", metavar="ACTION")
    msub.required = True
    p = msub.add_parser("register", help="register a model")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--path", required=True, help="file path inside the storage")
    p.add_argument("--storage", default="default", help="storage key (default 'default')")
    p.add_argument("--type", default="onnx", help="model type (onnx)")
    p.add_argument("--load-now", action="store_true", help="load it right away")
    p.add_argument("--sync", action="store_true", help="with --load-now: wait until loaded")
    p.add_argument("--pin", action="store_true", help="never evict it")
    p.add_argument("--min-copies", type=int, default=0)
    p.add_argument("--max-copies", type=int, default=0)
    p.set_defaults(func=cmd_models_register)
    p = msub.add_parser("list", help="name, status, copies, size, last used")
    _common(p)
    p.add_argument("--filter", help="only ids containing this text")
    p.add_argument("--limit", type=int, default=0, help="show at most N rows (table only)")
    p.set_defaults(func=cmd_models_list)
    p = msub.add_parser("status", help="one model in detail")
    _common(p)
    p.add_argument("model_id")
    p.set_defaults(func=cmd_models_status)
    p = msub.add_parser("unregister", help="remove a model (its copies are unloaded)")
    _common(p)
    p.add_argument("model_id")
    p.set_defaults(func=cmd_models_unregister)
    p = msub.add_parser("load", help="make sure a copy is loaded (ensureLoaded)")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--sync", action="store_true", help="wait until loaded")
    p.set_defaults(func=cmd_models_load)
    p = msub.add_parser("policy", help="pin a model, set min/max copies")
    _common(p)
    p.add_argument("model_id")
    p.add_argument("--pin", action=argparse.BooleanOptionalAction, default=None)
    p.add_argument("--min-copies", type=int)
    p.add_argument("--max-copies", type=int)
    p.set_defaults(func=cmd_models_policy)

    vmodels = sub.add_parser("vmodels", help="aliases that point at a model")
    vsub = vmodels.add_subparsers(dest="vmodels_command", metavar="ACTION")
    vsub.required = True
    p = vsub.add_parser("set", help="point a vmodel at a model (target loads first, then the switch)")
    _common(p)
    p.add_argument("vmodel_id")
    p.add_argument("target", help="target model id")
    p.add_argument("--auto-delete", action="store_true", help="unregister the old model after the switch")
    p.add_argument("--owner", default="")
    p.add_argument("--sync", action="store_true", help="wait until the switch is done")
    p.set_defaults(func=cmd_vmodels_set)
    p = vsub.add_parser("list")
    _common(p)
    p.set_defaults(func=cmd_vmodels_list)
    p = vsub.add_parser("delete")
    _common(p)
    p.add_argument("vmodel_id")
    p.set_defaults(func=cmd_vmodels_delete)

    st = sub.add_parser("storage", help="where model files come from (secrets are masked)")
    ssub = st.add_subparsers(dest="storage_command", metavar="ACTION")
    ssub.required = True
    p = ssub.add_parser("set", help="create or replace a storage config")
    _common(p)
    p.add_argument("key")
    p.add_argument("--type", choices=["local", "s3", "http", "gcs", "azure", "pvc"])
    p.add_argument("--from-file", help="JSON in the storage-config secret format")
    p.add_argument("--path", help="local: the directory")
    p.add_argument("--endpoint-url", dest="endpoint_url", help="s3: e.g. http://127.0.0.1:9000")
    p.add_argument("--bucket", help="s3: default bucket")
    p.add_argument("--region")
    p.add_argument("--access-key-id", dest="access_key_id")
    sec = p.add_mutually_exclusive_group()
    sec.add_argument("--secret-access-key", help="s3 secret (prefer --secret-access-key-env/-file)")
    sec.add_argument("--secret-access-key-env", help="read the s3 secret from this environment variable")
    sec.add_argument("--secret-access-key-file", help="read the s3 secret from this file")
    sec.add_argument("--secret-from-pod-env", metavar="VAR",
                     help="store no secret: the pods read it from their environment variable VAR")
    sec.add_argument("--secret-from-pod-file", metavar="PATH",
                     help="store no secret: the pods read it from the file PATH (e.g. a mounted Secret)")
    p.set_defaults(func=cmd_storage_set)
    p = ssub.add_parser("list")
    _common(p)
    p.set_defaults(func=cmd_storage_list)
    p = ssub.add_parser("test", help="list what the storage holds, or say why it cannot")
    _common(p)
    p.add_argument("key")
    p.add_argument("--path", help="prefix/path inside the storage")
    p.set_defaults(func=cmd_storage_test)
    p = ssub.add_parser("remove")
    _common(p)
    p.add_argument("key")
    p.set_defaults(func=cmd_storage_remove)

    p = sub.add_parser("events", help="the event log: loads, evictions, failures")
    _common(p)
    p.add_argument("--limit", type=int, default=100)
    p.add_argument("--minutes", type=float, default=0, help="only the last N minutes")
    p.add_argument("--kind", help="only this kind (load, loaded, evict, unload, load-failed, ...)")
    p.add_argument("--model")
    p.set_defaults(func=cmd_events)

    p = sub.add_parser("pod", help="run one runtime pod in the foreground (settings from MESH_*)")
    p.set_defaults(func=cmd_pod)

    p = sub.add_parser("probe", help="exit 0 if the local pod is ready / live (for Kubernetes probes)")
    p.add_argument("what", choices=["ready", "live"])
    p.add_argument("--endpoint", help="host:port (default 127.0.0.1:MESH_GRPC_PORT)")
    p.add_argument("--timeout", type=float, default=2.0)
    p.set_defaults(func=cmd_probe)

    p = sub.add_parser("dashboard", help="start the browser dashboard (Streamlit) and print its URL")
    p.add_argument("--port", type=int)
    p.set_defaults(func=cmd_dashboard)

    p = sub.add_parser("console", help="start the terminal console (mesh-console)")
    p.add_argument("rest", nargs=argparse.REMAINDER)
    p.set_defaults(func=cmd_console)

    try:
        from plane import cli_kube
    except ImportError:
        cli_kube = None  # type: ignore[assignment]
    if cli_kube is not None:
        cli_kube.add_commands(sub)
    return parser


def main(argv: list[str] | None = None) -> int:
    from plane.api import NotFound, ValidationError
    from plane.mgmt_client import ManagementError
    from plane.registry import EtcdUnavailable, RegistryError
    from plane.settings import MeshSettings as _S  # noqa: F401 - settings errors surface early

    raw = sys.argv[1:] if argv is None else list(argv)
    if raw[:1] == ["console"]:
        # everything after `console` belongs to mesh-console (argparse would claim its --flags)
        code = cmd_console(argparse.Namespace(rest=raw[1:]))
        if argv is None:
            sys.exit(code)
        return code
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        code = args.func(args)
    except CliError as exc:
        err.print(f"[red]error:[/] {exc}")
        code = exc.code
    except (ValidationError, ValueError) as exc:
        err.print(f"[red]error:[/] {exc}")
        code = EXIT_USAGE
    except NotFound as exc:
        err.print(f"[red]error:[/] {exc}")
        code = EXIT_FAILED
    except EtcdUnavailable as exc:
        err.print(f"[red]error:[/] {exc}")
        code = EXIT_NO_PLANE
    except (RegistryError, ManagementError) as exc:
        err.print(f"[red]error:[/] {exc}")
        code = EXIT_FAILED
    except KeyboardInterrupt:
        code = 130
    if __name__ == "__main__" or argv is None:
        sys.exit(code)
    return code


if __name__ == "__main__":
    main()

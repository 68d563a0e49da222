"""Settings for every part of the plane, read from ``MESH_*`` environment variables.

One class, so that a pod, the CLI and the UIs agree on names and defaults. Sizes
accept human units (``256MiB``, ``1.5GB``) as well as plain byte counts.
"""

from __future__ import annotations

import os
import pathlib
import re
from typing import Annotated

import platformdirs
from pydantic import BeforeValidator, Field
from pydantic_settings import BaseSettings, SettingsConfigDict

__all__ = ["MeshSettings", "parse_size", "format_size", "format_age", "default_state_dir"]

_UNITS = {
    "": 1,
    "b": 1,
    "k": 1000,
    "kb": 1000,
    "kib": 1024,
    "m": 1000**2,
    "mb": 1000**2,
    "mib": 1024**2,
    "g": 1000**3,
    "gb": 1000**3,
    "gib": 1024**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


def parse_size(value: str | int | float) -> int:
    """Parse ``"256MiB"``, ``"1.5G"``, ``"1048576"`` (or an int) into bytes."""
    if isinstance(value, bool):
        raise ValueError("size must be a number of bytes or a string such as 256MiB")
    if isinstance(value, int | float):
        if value < 0:
            raise ValueError("size must not be negative")
        return int(value)
    match = re.fullmatch(r"\s*([0-9]+(?:\.[0-9]+)?)\s*([a-zA-Z]*)\s*", str(value))
    if not match or match.group(2).lower() not in _UNITS:
        raise ValueError(f"cannot read size {value!r}: use bytes or a unit such as 256MiB, 2GiB, 500MB")
    return int(float(match.group(1)) * _UNITS[match.group(2).lower()])


def format_size(num: int | float | None) -> str:
    """Bytes as a short human string (binary units)."""
    if num is None:
        return "-"
    n = float(num)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


def format_age(then_ms: int | float, now_ms: int | float) -> str:
    """``4m ago`` style (the one wording the CLI, the console, the dashboard and event reasons
    share); ``-`` for a time that was never set."""
    if not then_ms:
        return "-"
    secs = int(max(0, (now_ms - then_ms) // 1000))
    if secs < 60:
        return f"{secs}s ago"
    if secs < 3600:
        return f"{secs // 60}m ago"
    if secs < 86400:
        return f"{secs // 3600}h{(secs % 3600) // 60:02d}m ago"
    return f"{secs // 86400}d ago"


Size = Annotated[int, BeforeValidator(parse_size)]


def default_state_dir() -> pathlib.Path:
    """Where the embedded plane keeps etcd data, pod logs and the pid file."""
    return pathlib.Path(platformdirs.user_state_dir("mesh-plane"))


class MeshSettings(BaseSettings):
    """All knobs of the plane. Environment: ``MESH_<FIELD>`` (case-insensitive)."""

    model_config = SettingsConfigDict(env_prefix="MESH_", extra="ignore", populate_by_name=True)

    etcd: str = Field(
        default="",
        description="etcd endpoint(s), 'host:port[,host:port]'. Empty: the embedded plane in state_dir.",
    )
    etcd_prefix: str = Field(default="mesh", description="Root key prefix of every registry table.")
    etcd_username: str | None = Field(default=None, description="etcd user (with etcd_password).")
    etcd_password: str | None = Field(default=None, description="etcd password.")
    etcd_ca_file: pathlib.Path | None = Field(default=None, description="CA of etcd's TLS certificate.")
    etcd_cert_file: pathlib.Path | None = Field(default=None, description="Client certificate for etcd (mTLS).")
    etcd_key_file: pathlib.Path | None = Field(default=None, description="Key of etcd_cert_file.")
    tls_cert_file: pathlib.Path | None = Field(default=None, description="Pod gRPC certificate (enables TLS).")
    tls_key_file: pathlib.Path | None = Field(default=None, description="Key of tls_cert_file.")
    tls_ca_file: pathlib.Path | None = Field(default=None, description="CA that signed pods'/clients' certs.")
    tls_client_auth: bool = Field(default=False, description="Pods require client certificates (mTLS).")
    tls_server_name: str | None = Field(default=None, description="Name checked in pod certificates.")
    state_dir: pathlib.Path = Field(
        default_factory=default_state_dir, description="Embedded mode: etcd data, logs, pid file."
    )
    host: str = Field(default="127.0.0.1", description="Address pods bind and advertise.")
    advertise_host: str | None = Field(
        default=None, description="Address peers use to reach this pod (default: host)."
    )
    grpc_port: int = Field(default=8033, description="Inference + management port of the first pod.")
    rest_port: int = Field(default=0, description="KServe V2 REST (HTTP/JSON) port of a pod (0: none). `mesh up` "
                           "gives its pods consecutive ports from 8008 (ModelMesh's REST port) unless this is set.")
    metrics_port: int = Field(default=2112, description="Prometheus metrics port of a pod (0: off).")
    pod_id: str | None = Field(default=None, description="This pod's id (default: hostname-port).")
    capacity: Size = Field(default=256 * 1024**2, description="Model cache capacity per pod, bytes.")
    size_multiplier: float = Field(
        default=3.0, description="Predicted memory of a model before load = file size x this + 160 KiB."
    )
    load_timeout_s: float = Field(default=90.0, description="A load that takes longer fails.")
    max_concurrent_loads: int = Field(default=1, description="Loads in progress at once per pod.")
    max_message_bytes: Size = Field(
        default=64 * 1024**2, description="Largest gRPC message a pod accepts or sends."
    )
    lease_ttl_s: int = Field(default=5, description="TTL of a pod's instance lease in etcd.")
    usage_flush_s: float = Field(default=2.0, description="How often last-used times reach etcd.")
    events_max: int = Field(default=5000, description="Events kept in the registry's event log.")
    disk_cache_dir: pathlib.Path | None = Field(
        default=None, description="Local copies of pulled model files (default: state_dir/disk-cache)."
    )
    disk_cache_bytes: Size = Field(default=2 * 1024**3, description="Bound of the local disk cache.")
    pvc_root: pathlib.Path = Field(
        default=pathlib.Path("/pvc_mounts"), description="Where pods find mounted PVCs: a pvc storage config "
        "{'name': N} reads models from <pvc_root>/N (modelmesh-serving mounts each PVC at /pvc_mounts/<name>).")
    max_load_failures: int = Field(default=3, description="Load attempts on different pods before giving up.")
    failure_expiry_s: float = Field(default=900.0, description="A recorded load failure is forgotten after.")
    route_retries: int = Field(default=3, description="Retries of a request after a stale copy.")
    scale_up_rpm: float = Field(default=2000.0, description="Add a copy when a model's rate per copy exceeds this.")
    planner_interval_s: float = Field(default=5.0, description="How often the leader plans copies and preloads.")
    preload: bool = Field(default=True, description="Leader preloads models whose usage predicts a request soon.")
    pressure_fraction: float = Field(default=0.9, description="Used/capacity above which cold extra copies go.")
    second_copy: bool = Field(
        default=True, description="A single-copy model used again 7-40 minutes after an earlier use gets a second "
        "copy on another pod, in free space only (ModelMesh's rule for availability).")
    per_model_metrics: bool = Field(
        default=True, description="Per-model metric series (labels modelId, vModelId; ModelMesh's MM_METRICS "
        "per_model_metrics, off by default there). Off: only per-pod and per-method series.")
    intra_threads: int = Field(default=1, description="onnxruntime intra-op threads per session.")
    allow_pickle: bool = Field(
        default=True, description="Load scikit-learn models, which are pickles (joblib files too). Loading a pickle "
        "runs any code the file names, so a model file is as trusted as a program: set false on pods whose model "
        "storage is not fully trusted, and they refuse pickle/joblib models (ONNX, XGBoost JSON/UBJ and LightGBM "
        "text models carry no code and still load).")
    peer_token: str | None = Field(
        default=None, description="Secret that pods present to each other on internal calls. Unset: the plane's "
        "token in etcd (created by the first pod), so only processes with etcd access can make internal calls.")
    hop_timeout_s: float = Field(
        default=5.0, description="A request forwarded to a pod holding a copy that gets no answer within this is "
        "retried on another copy (or a fresh load), and that pod is avoided for a while.")
    hop_port: int = Field(
        default=0, description="Port (on host) where a pod takes inference its peers forward to it, as plain "
        "length-prefixed frames rather than gRPC calls (plane/pod/hop.py; peers ask for it over gRPC). 0: any free "
        "port; -1: off, forward over gRPC only. Off as well when the pods' gRPC uses TLS.")
    etcd_timeout_s: float = Field(default=2.0, description="A pod's etcd calls fail after this (etcd down: fail fast).")
    batch_max_size: int = Field(
        default=32, description="Adaptive batching: most rows run together for one model (1: off). Only models "
        "whose inputs and outputs all have a batch dimension and whose run time exceeds batch_min_run_us.")
    batch_max_delay_ms: float = Field(
        default=0.0, description="Adaptive batching: extra wait to collect a batch (0: none; requests that arrive "
        "while a batch runs form the next one).")
    batch_min_run_us: float = Field(default=300.0, description="Adaptive batching: models faster than this run "
                                    "unbatched (the bookkeeping would cost more than it saves).")
    isolate_string_request_bytes: Size = Field(
        default=1024**2, description="Requests this large to models with BYTES (string) tensors run in a child "
        "process: onnxruntime converts strings one by one holding the GIL, which would stall the pod. 0: never.")
    offload_request_bytes: Size = Field(
        default=1024**2, description="Requests larger than this are decoded and run on a worker thread, so they "
        "never stall the pod's event loop.")

    def etcd_endpoints(self) -> list[tuple[str, int]]:
        """Parsed ``etcd`` endpoints; empty list means 'use the embedded plane'."""
        out: list[tuple[str, int]] = []
        for part in filter(None, (p.strip() for p in self.etcd.split(","))):
            part = re.sub(r"^https?://", "", part)
            host, _, port = part.rpartition(":")
            if not host:
                host, port = part, "2379"
            out.append((host, int(port)))
        return out

    def resolved_disk_cache_dir(self) -> pathlib.Path:
        return self.disk_cache_dir or (self.state_dir / "disk-cache")

    def child_env(self) -> dict[str, str]:
        """These settings as MESH_* variables, for processes started by this one."""
        env = dict(os.environ)
        for name, value in self.model_dump().items():
            if value is None:
                continue
            env[f"MESH_{name.upper()}"] = str(value)
        return env

"""What the Install view shows and reads: the running plane described (``plane.json`` and the
pods registered in etcd), and the Kubernetes form checked. No Textual here."""

from __future__ import annotations

import importlib.util
import pathlib
from typing import Any

from rich.text import Text

from console import formatting
from plane import local
from plane.registry import InstanceRecord
from plane.settings import format_size, parse_size

__all__ = ["describe_local", "running_capacity", "kube_available", "KubeForm", "DEFAULT_PODS", "KUBE_NAMESPACE",
           "KUBE_IMAGE"]

DEFAULT_PODS = 3
KUBE_NAMESPACE = "mesh-plane"  # plane.kube.DEFAULT_NAMESPACE, without importing it at start-up
KUBE_IMAGE = "mesh-plane:0.1.0"


def kube_available() -> bool:
    return importlib.util.find_spec("plane.kube") is not None


def describe_local(plane: local.LocalPlane | None, state_dir: pathlib.Path, now: int,
                   registered: list[InstanceRecord] | None = None) -> Text:
    """The embedded plane as ``plane.json`` records it (pods, ports, capacity); the pods the
    registry knows (``registered``) add their measured use and fill in for a plane that is not
    embedded here (an external etcd, a Kubernetes install)."""
    by_id = {p.pod_id: p for p in registered or []}
    if plane is None:
        text = Text()
        text.append(f"○ no embedded plane running here (state dir {state_dir})", style="yellow")
        if by_id:
            text.append(f"\n  connected plane: {len(by_id)} pods registered in etcd", style="bold")
            for reg in by_id.values():
                text.append(f"\n  ● {reg.pod_id:<7} {reg.endpoint:<21} capacity {format_size(reg.capacity)}")
        return text
    text = Text()
    text.append("● running", style="bold green")
    text.append(f"  etcd {plane.etcd_endpoint}")
    text.append(f"  started {formatting.ago(plane.started_ms, now)}", style="dim")
    for pod in plane.pods:
        alive = local.pid_alive(pod.pid)
        text.append(f"\n  {'●' if alive else '○'} ", style="green" if alive else "red")
        text.append(f"{pod.pod_id:<6} {pod.endpoint:<16}")
        if pod.metrics_port:
            text.append(f" metrics :{pod.metrics_port}", style="dim")
        rec = by_id.get(pod.pod_id)
        if rec is not None:
            text.append(f"  {formatting.count(rec.count, 'copy', 'copies')}")
    text.append(f"\n  capacity {format_size(running_capacity(plane))} per pod", style="dim")
    return text


def running_capacity(plane: local.LocalPlane) -> int:
    """The capacity the plane's pods were started with (plane.json)."""
    recorded = plane.pod_settings.get("capacity") if plane.pod_settings else None
    return int(plane.capacity or recorded or 0)


class KubeForm:
    """What the Kubernetes inputs say, checked."""

    def __init__(self, namespace: str, pods: str, capacity: str, image: str, context: str,
                 quickstart: bool) -> None:
        self.namespace = namespace.strip() or KUBE_NAMESPACE
        self.pods = int(pods or DEFAULT_PODS)
        if self.pods < 1:
            raise ValueError("pods must be at least 1")
        self.capacity = parse_size(capacity or "256MiB")
        self.image = image.strip() or KUBE_IMAGE
        self.context = context.strip() or None
        self.quickstart = quickstart

    def render(self) -> list[dict[str, Any]]:
        from plane import kube

        return kube.render_install(namespace=self.namespace, pods=self.pods, capacity_bytes=self.capacity,
                                   image=self.image, quickstart=self.quickstart)

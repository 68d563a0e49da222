"""Capacity bars: one line per pod with used / capacity and the number of copies."""

from __future__ import annotations

from collections.abc import Iterable

from rich.text import Text
from textual.widgets import Static

from console import formatting
from plane.registry import InstanceRecord

__all__ = ["PodCapacity", "render_pods"]

BAR_WIDTH = 24


def render_pods(pods: Iterable[InstanceRecord], *, changed: frozenset[str] = frozenset()) -> Text:
    out = Text()
    pods = list(pods)
    if not pods:
        out.append("no runtime pods registered in etcd", style="dim italic")
        return out
    width = max(len(p.pod_id) for p in pods)
    for i, pod in enumerate(pods):
        if i:
            out.append("\n")
        frac = pod.used / pod.capacity if pod.capacity else 0.0
        colour = "green" if frac < 0.7 else "yellow" if frac < 0.9 else "red"
        out.append(f"{pod.pod_id:<{width}} ", style="bold reverse" if pod.pod_id in changed else "bold")
        out.append(formatting.bar(pod.used, pod.capacity, BAR_WIDTH), style=colour)
        out.append(f" {frac:4.0%} ")
        out.append(f"{formatting.size(pod.used):>10} / {formatting.size(pod.capacity):<10}")
        out.append(f" {pod.count:>4} model{'' if pod.count == 1 else 's'}")
        if pod.loading:
            out.append(f"  {pod.loading} loading", style="yellow")
        if pod.shutting_down:
            out.append("  shutting down", style="red")
    return out


class PodCapacity(Static):
    def show(self, pods: Iterable[InstanceRecord], *, changed: frozenset[str] = frozenset()) -> None:
        self.update(render_pods(pods, changed=changed))

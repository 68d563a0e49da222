"""Plotly figures of placement: pure functions of a :class:`~plane.api.PlacementSnapshot`.

Nothing here talks to etcd or Streamlit, so every figure can be unit-tested with hand-made
snapshots. They stay legible at any scale: the heatmap draws a selection (top N, the rest in
one row, see :mod:`dashboard.placement_data`), and the treemap and a pod's bar chart draw the
biggest copies and one "other" tile for the rest. Activity figures live in
:mod:`dashboard.activity`.
"""

from __future__ import annotations

import zlib

import plotly.graph_objects as go

from dashboard.placement_data import Selection, copy_size, group_small, pod_columns, select
from plane.api import PlacementSnapshot
from plane.registry import ModelRecord
from plane.settings import format_size

__all__ = [
    "MIB",
    "HEATMAP_TOP",
    "PALETTE",
    "model_color",
    "heatmap_data",
    "placement_heatmap",
    "capacity_bars",
    "pod_memory_stacked",
    "pod_memory_treemap",
    "pod_copies_bar",
    "empty_figure",
]

MIB = 1024 * 1024
HEATMAP_TOP = 40
TREEMAP_KEEP = 14  # copies per pod drawn as their own tile ...
TREEMAP_MIN_SHARE = 0.004  # ... when each holds at least this share of the pod (a readable tile)
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}
# A qualitative palette (plotly's D3 + G10, without the greys): one colour per model, the same
# on every pod and every refresh.
PALETTE = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b", "#e377c2", "#bcbd22",
           "#17becf", "#3366cc", "#dc3912", "#109618", "#990099", "#0099c6", "#dd4477", "#66aa00",
           "#b82e2e", "#316395", "#aaaa11", "#22aa99")
OTHER_COLOR = "#c7c7c7"
LOADING_COLOR = "#c6dbef"


def _mib(n: int | float) -> float:
    return round(float(n) / MIB, 2)


def model_color(model_id: str) -> str:
    return PALETTE[zlib.crc32(model_id.encode()) % len(PALETTE)]


def empty_figure(message: str, *, height: int = 260) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 15, "color": "#888"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def heatmap_data(snap: PlacementSnapshot, sel: Selection | None = None):
    """Rows (model ids), columns (pod labels), z (MiB of the copy or None) and hover text of
    the selection's models (default: :func:`~dashboard.placement_data.select`). Pods that
    hold copies but have no live instance record are still columns, marked ``(gone)``."""
    sel = sel or select(snap)
    pods, labels = pod_columns(snap, sel.rows + sel.rest)
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    for m in sel.rows:
        z.append([_mib(copy_size(m, p)) if p in m.copies else None for p in pods])
        text.append([m.copies[p].state if p in m.copies else "" for p in pods])
    return [m.model_id for m in sel.rows], labels, z, text


def placement_heatmap(snap: PlacementSnapshot, sel: Selection | None = None) -> go.Figure:
    """Models x pods; a cell is the loaded size (MiB) of the model's copy on that pod. The
    models left out of the selection are the last row, on a grey band: per pod, how many of
    their copies it holds and how much memory they take (text only, so their sum never
    skews the colour scale of the shown models)."""
    sel = sel or select(snap)
    rows, cols, z, text = heatmap_data(snap, sel)
    if not rows:
        why = f"no placed model matches '{sel.needle}'" if sel.needle else "no model has a copy on any pod yet"
        return empty_figure(why)
    hover = [[f"{m.type}, #{sel.rank[m.model_id]:,} by {sel.by}"] * len(cols) for m in sel.rows]
    if sel.rest:
        pods, _ = pod_columns(snap, sel.rows + sel.rest)
        per = [sel.rest_per_pod.get(p, (0, 0)) for p in pods]
        rows = [*rows, sel.rest_label]
        z = [*z, [None] * len(cols)]
        text = [*text, [f"{n:,} cop{'y' if n == 1 else 'ies'}, {format_size(b)}" if n else "" for b, n in per]]
        hover = [*hover, ["the others"] * len(cols)]
    fig = go.Figure(go.Heatmap(
        z=z, x=cols, y=rows, text=text, customdata=hover, texttemplate="%{text}", colorscale="Blues",
        colorbar={"title": {"text": "MiB"}, "len": 0.5, "y": 1, "yanchor": "top"}, hoverongaps=False,
        hovertemplate="model %{y} (%{customdata})<br>pod %{x}<br>%{z} MiB (%{text})<extra></extra>",
        zmin=0, xgap=2, ygap=2, name="placement",
    ))
    if sel.rest:
        n = len(rows) - 1  # category rows sit at 0, 1, ...: the band covers the last one
        fig.add_shape(type="rect", xref="paper", x0=0, x1=1, yref="y", y0=n - 0.5, y1=n + 0.5,
                      fillcolor="#ececec", line={"width": 0}, layer="below")
    what = f"matching '{sel.needle}'" if sel.needle else "placed"
    fig.update_layout(
        title={"text": f"Placement: {len(sel.rows):,} of {sel.matched:,} {what} model(s), top by {sel.by}, "
                       f"on {len(cols)} pod(s)"},
        height=max(260, 110 + 24 * len(rows)),
        margin=MARGIN,
        yaxis={"autorange": "reversed", "type": "category", "categoryorder": "array", "categoryarray": rows,
               "dtick": 1},
        xaxis={"type": "category", "title": {"text": "pod"}, "side": "top"},
    )
    return fig


def capacity_bars(snap: PlacementSnapshot) -> go.Figure:
    """Per pod: used vs free capacity (MiB), horizontal stacked bars."""
    if not snap.pods:
        return empty_figure("no pod is running")
    pods = [p.pod_id + (" (stopping)" if p.shutting_down else "") for p in snap.pods]
    used = [_mib(min(p.used, p.capacity) if p.capacity else p.used) for p in snap.pods]
    free = [_mib(p.free) for p in snap.pods]
    pct = [f"{(100 * p.used / p.capacity):.0f}%" if p.capacity else "-" for p in snap.pods]
    fig = go.Figure()
    fig.add_bar(y=pods, x=used, orientation="h", name="used", marker_color="#1f77b4", text=pct,
                textposition="inside", customdata=[p.count for p in snap.pods],
                hovertemplate="%{y}: %{x} MiB used, %{customdata} model(s)<extra></extra>")
    fig.add_bar(y=pods, x=free, orientation="h", name="free", marker_color="#dfe7ef",
                hovertemplate="%{y}: %{x} MiB free<extra></extra>")
    fig.update_layout(barmode="stack", title={"text": "Capacity per pod (MiB)"},
                      height=max(200, 80 + 34 * len(pods)), margin=MARGIN,
                      yaxis={"autorange": "reversed", "type": "category"}, legend={"orientation": "h"})
    return fig


def pod_memory_stacked(snap: PlacementSnapshot, *, top: int = 12) -> go.Figure:
    """What fills each pod's memory: one bar per pod, one segment per model (the ``top``
    biggest models across pods get their own colour, the rest are summed as 'other')."""
    if not snap.pods and not any(m.copies for m in snap.models):
        return empty_figure("no pod is running")
    pods = [p.pod_id for p in snap.pods]
    totals: dict[str, int] = {}
    for m in snap.models:
        for p in m.copies:
            totals[m.model_id] = totals.get(m.model_id, 0) + copy_size(m, p)
    named = sorted(totals, key=lambda k: (-totals[k], k))[:top]
    fig = go.Figure()
    by_id = {m.model_id: m for m in snap.models}
    for mid in named:
        m = by_id[mid]
        fig.add_bar(x=pods, y=[_mib(copy_size(m, p)) if p in m.copies else 0 for p in pods], name=mid,
                    marker_color=model_color(mid), hovertemplate=f"{mid}<br>%{{x}}: %{{y}} MiB<extra></extra>")
    keep = set(named)
    rest = [m for m in snap.models if m.model_id not in keep and m.copies]
    if rest:
        counts = [sum(1 for m in rest if p in m.copies) for p in pods]
        fig.add_bar(x=pods, y=[_mib(sum(copy_size(m, p) for m in rest if p in m.copies)) for p in pods],
                    name=f"other ({len(rest):,} models)", marker_color=OTHER_COLOR, customdata=counts,
                    hovertemplate="other: %{customdata} copies<br>%{x}: %{y} MiB<extra></extra>")
    fig.update_layout(barmode="stack", title={"text": "What fills each pod (MiB)"}, height=380,
                      margin=MARGIN, xaxis={"type": "category"})
    return fig


def _tile(m: ModelRecord, pod_id: str) -> tuple[str, str]:
    loading = m.copies[pod_id].state != "loaded"
    return (m.model_id + (" (loading)" if loading else ""), LOADING_COLOR if loading else model_color(m.model_id))


def pod_memory_treemap(snap: PlacementSnapshot, *, keep: int = TREEMAP_KEEP,
                       min_share: float = TREEMAP_MIN_SHARE) -> go.Figure:
    """Treemap: pods, and inside each its biggest copies (area = MiB, one colour per model),
    the small ones grouped as one "other" tile, and the free memory."""
    ids: list[str] = []
    labels: list[str] = []
    parents: list[str] = []
    values: list[float] = []
    colors: list[str] = []

    def add(id_: str, label: str, parent: str, value: float, color: str) -> None:
        ids.append(id_)
        labels.append(label)
        parents.append(parent)
        values.append(value)
        colors.append(color)

    for pod in snap.pods:
        held = snap.pod_models(pod.pod_id)
        total = sum(size for _, size in held)
        add(pod.pod_id, pod.pod_id, "", 0.0, "#eeeeee")
        root = len(values) - 1
        named, n_other, other_bytes = group_small(held, keep=keep, min_share=min_share,
                                                  whole=max(pod.capacity, total))
        for m, size in named:
            label, color = _tile(m, pod.pod_id)
            add(f"{pod.pod_id}/{m.model_id}", label, pod.pod_id, _mib(size), color)
        if n_other:
            add(f"{pod.pod_id}/(other)", f"other: {n_other:,} copies", pod.pod_id, _mib(other_bytes), OTHER_COLOR)
        free = pod.capacity - total
        if free > 0:
            add(f"{pod.pod_id}/(free)", "(free)", pod.pod_id, _mib(free), "#ffffff")
        # branchvalues="total": a pod is exactly the sum of its (rounded) parts
        values[root] = round(sum(values[root + 1 :]), 2)
    if not ids:
        return empty_figure("no pod is running")
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
                               marker={"colors": colors, "line": {"width": 1, "color": "#ffffff"}},
                               textinfo="label+value", maxdepth=2, sort=False,  # pods in id order
                               hovertemplate="%{label}: %{value} MiB<extra>%{parent}</extra>"))
    fig.update_layout(title={"text": "Pod memory (MiB): biggest copies, small ones as 'other'"}, height=440,
                      margin=MARGIN)
    return fig


def pod_copies_bar(snap: PlacementSnapshot, pod_id: str, *, keep: int = 25) -> go.Figure:
    """One pod's copies by size (the ``keep`` biggest, then one bar for the others)."""
    held = snap.pod_models(pod_id)
    if not held:
        return empty_figure(f"{pod_id} holds no copy", height=200)
    named, n_other, other_bytes = group_small(held, keep=keep, min_share=0.0, whole=1)
    labels = [_tile(m, pod_id)[0] for m, _ in named]
    sizes = [_mib(s) for _, s in named]
    colors = [_tile(m, pod_id)[1] for m, _ in named]
    if n_other:
        labels.append(f"other: {n_other:,} copies")
        sizes.append(_mib(other_bytes))
        colors.append(OTHER_COLOR)
    fig = go.Figure(go.Bar(x=sizes, y=labels, orientation="h", marker_color=colors, name=pod_id,
                           hovertemplate="%{y}: %{x} MiB<extra></extra>"))
    fig.update_layout(title={"text": f"{pod_id}: {len(held):,} copies by size (MiB)"},
                      height=max(200, 90 + 22 * len(labels)), margin=MARGIN,
                      yaxis={"autorange": "reversed", "type": "category"})
    return fig

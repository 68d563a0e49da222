"""Plotly figures over plane data: pure functions of snapshots and event lists.

Nothing here talks to etcd or Streamlit, so every figure can be unit-tested with hand-made
:class:`~plane.api.PlacementSnapshot` and :class:`~plane.registry.Event` values.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable, Sequence

import plotly.graph_objects as go

from plane.api import PlacementSnapshot
from plane.registry import Event, ModelRecord

__all__ = [
    "MIB",
    "EVENT_COLORS",
    "TIMELINE_KINDS",
    "heatmap_data",
    "placement_heatmap",
    "capacity_bars",
    "pod_memory_stacked",
    "pod_memory_treemap",
    "events_timeline",
    "filter_events",
    "empty_figure",
]

MIB = 1024 * 1024
# The kinds drawn on the timeline and their colours (loads green, evictions orange, failures red).
EVENT_COLORS = {
    "load": "#9ecae1",
    "loaded": "#2ca02c",
    "unload": "#7f7f7f",
    "evict": "#ff7f0e",
    "load-failed": "#d62728",
    "register": "#1f77b4",
    "unregister": "#8c564b",
    "vmodel": "#9467bd",
}
# Drawn in this order: later kinds on top, so evictions and failures are never hidden by loads.
TIMELINE_KINDS = ("load", "unload", "loaded", "evict", "load-failed")
EVENT_SYMBOLS = {"evict": "x", "load-failed": "triangle-up", "unload": "circle-open"}
HEATMAP_MAX_MODELS = 60
MARGIN = {"l": 10, "r": 10, "t": 50, "b": 10}


def _mib(n: int | float) -> float:
    return round(float(n) / MIB, 2)


def empty_figure(message: str, *, height: int = 260) -> go.Figure:
    """A blank figure that says why it is blank."""
    fig = go.Figure()
    fig.add_annotation(text=message, x=0.5, y=0.5, xref="paper", yref="paper", showarrow=False,
                       font={"size": 15, "color": "#888"})
    fig.update_xaxes(visible=False)
    fig.update_yaxes(visible=False)
    fig.update_layout(height=height, margin={"l": 10, "r": 10, "t": 30, "b": 10})
    return fig


def _copy_size(m: ModelRecord, pod: str) -> int:
    c = m.copies[pod]
    return c.size or m.size


def heatmap_data(snap: PlacementSnapshot, *, max_models: int = HEATMAP_MAX_MODELS,
                 models: Iterable[str] | None = None):
    """Rows (model ids), columns (pod ids), z (MiB of the copy or None) and hover text.

    Only models with at least one copy are drawn (largest total footprint first, at most
    ``max_models``); ``models`` restricts the rows to those ids. Pods that hold copies but
    have no live instance record are still shown as columns, marked ``(gone)``.
    """
    wanted = set(models) if models is not None else None
    placed = [m for m in snap.models if m.copies and (wanted is None or m.model_id in wanted)]
    placed.sort(key=lambda m: (-sum(_copy_size(m, p) for p in m.copies), m.model_id))
    placed = placed[:max_models]
    live = [p.pod_id for p in snap.pods]
    extra = sorted({p for m in placed for p in m.copies} - set(live))
    pods = live + extra
    labels = [p if p in live else f"{p} (gone)" for p in pods]
    z: list[list[float | None]] = []
    text: list[list[str]] = []
    for m in placed:
        row: list[float | None] = []
        trow: list[str] = []
        for p in pods:
            c = m.copies.get(p)
            if c is None:
                row.append(None)
                trow.append("")
            else:
                row.append(_mib(_copy_size(m, p)))
                trow.append(c.state)
        z.append(row)
        text.append(trow)
    return [m.model_id for m in placed], labels, z, text


def placement_heatmap(snap: PlacementSnapshot, *, max_models: int = HEATMAP_MAX_MODELS,
                      models: Iterable[str] | None = None) -> go.Figure:
    """Models x pods; a cell is the loaded size (MiB) of the model's copy on that pod."""
    rows, cols, z, text = heatmap_data(snap, max_models=max_models, models=models)
    if not rows:
        return empty_figure("no model has a copy on any pod yet")
    fig = go.Figure(
        go.Heatmap(
            z=z,
            x=cols,
            y=rows,
            text=text,
            texttemplate="%{text}",
            colorscale="Blues",
            colorbar={"title": {"text": "MiB"}},
            hoverongaps=False,
            hovertemplate="model %{y}<br>pod %{x}<br>%{z} MiB (%{text})<extra></extra>",
            zmin=0,
            xgap=2,
            ygap=2,
            name="placement",
        )
    )
    fig.update_layout(
        title={"text": f"Placement: {len(rows)} model(s) on {len(cols)} pod(s)"},
        height=max(260, 60 + 26 * len(rows)),
        margin=MARGIN,
        yaxis={"autorange": "reversed", "type": "category"},
        xaxis={"type": "category", "title": {"text": "pod"}},
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
            totals[m.model_id] = totals.get(m.model_id, 0) + _copy_size(m, p)
    named = sorted(totals, key=lambda k: (-totals[k], k))[:top]
    fig = go.Figure()
    by_id = {m.model_id: m for m in snap.models}
    for mid in named:
        m = by_id[mid]
        fig.add_bar(x=pods, y=[_mib(_copy_size(m, p)) if p in m.copies else 0 for p in pods], name=mid,
                    hovertemplate=f"{mid}<br>%{{x}}: %{{y}} MiB<extra></extra>")
    rest = [m for m in snap.models if m.model_id not in set(named) and m.copies]
    if rest:
        fig.add_bar(x=pods, y=[_mib(sum(_copy_size(m, p) for m in rest if p in m.copies)) for p in pods],
                    name="other", marker_color="#c7c7c7")
    fig.update_layout(barmode="stack", title={"text": "What fills each pod (MiB)"}, height=360,
                      margin=MARGIN, xaxis={"type": "category"})
    return fig


def pod_memory_treemap(snap: PlacementSnapshot) -> go.Figure:
    """Treemap: pods, and inside each the models whose copies fill it (area = MiB)."""
    ids, labels, parents, values, colors = [], [], [], [], []
    for pod in snap.pods:
        held = snap.pod_models(pod.pod_id)
        total = sum(size for _, size in held)
        ids.append(pod.pod_id)
        labels.append(pod.pod_id)
        parents.append("")
        values.append(0.0)
        colors.append("#eeeeee")
        root = len(values) - 1
        for m, size in held:
            ids.append(f"{pod.pod_id}/{m.model_id}")
            labels.append(m.model_id)
            parents.append(pod.pod_id)
            values.append(_mib(size))
            colors.append("#2ca02c" if m.copies[pod.pod_id].state == "loaded" else "#9ecae1")
        free = pod.capacity - total
        if free > 0:
            ids.append(f"{pod.pod_id}/(free)")
            labels.append("(free)")
            parents.append(pod.pod_id)
            values.append(_mib(free))
            colors.append("#ffffff")
        # branchvalues="total": a pod is exactly the sum of its (rounded) parts
        values[root] = round(sum(values[root + 1 :]), 2)
    if not ids:
        return empty_figure("no pod is running")
    fig = go.Figure(go.Treemap(ids=ids, labels=labels, parents=parents, values=values, branchvalues="total",
                               marker={"colors": colors},
                               hovertemplate="%{label}: %{value} MiB<extra></extra>"))
    fig.update_layout(title={"text": "Pod memory (MiB)"}, height=420, margin=MARGIN)
    return fig


def filter_events(events: Sequence[Event], *, since_ms: int = 0, kinds: Iterable[str] | None = None,
                  pods: Iterable[str] | None = None, model_contains: str = "") -> list[Event]:
    """The events that pass every given filter (None/empty means 'any')."""
    kinds_set = set(kinds) if kinds else None
    pods_set = set(pods) if pods else None
    needle = model_contains.strip().lower()
    return [
        e
        for e in events
        if e.time_ms >= since_ms
        and (kinds_set is None or e.kind in kinds_set)
        and (pods_set is None or (e.pod or "api") in pods_set)
        and (not needle or needle in e.model.lower())
    ]


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


def events_timeline(events: Sequence[Event], *, since_ms: int | None = None,
                    until_ms: int | None = None) -> go.Figure:
    """Scatter timeline: x = time, y = pod, one trace per event kind (loads, evictions,
    failures ...), hover shows model, size and reason."""
    if not events:
        return empty_figure("no events in this window")
    fig = go.Figure()
    pods = sorted({e.pod or "api" for e in events})
    order = list(TIMELINE_KINDS) + sorted({e.kind for e in events} - set(TIMELINE_KINDS))
    for kind in order:
        evs = [e for e in events if e.kind == kind]
        if not evs:
            continue
        fig.add_scatter(
            x=[_ts(e.time_ms) for e in evs],
            y=[e.pod or "api" for e in evs],
            mode="markers",
            name=kind,
            marker={"color": EVENT_COLORS.get(kind, "#444"), "size": 11,
                    "symbol": EVENT_SYMBOLS.get(kind, "circle"), "line": {"width": 1, "color": "#333"}},
            customdata=[[e.model, _mib(e.size), e.reason] for e in evs],
            hovertemplate=("%{x|%H:%M:%S}  " + kind + "<br>model %{customdata[0]}<br>%{customdata[1]} MiB"
                           "<br>%{customdata[2]}<extra>%{y}</extra>"),
        )
    xr = None
    if since_ms is not None and until_ms is not None:
        xr = [_ts(since_ms), _ts(until_ms)]
    fig.update_layout(
        title={"text": f"Events: {len(events)} on {len(pods)} pod(s)"},
        height=max(260, 120 + 40 * len(pods)),
        margin=MARGIN,
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": pods, "title": {"text": "pod"}},
        xaxis={"range": xr, "title": {"text": "time (UTC)"}},
    )
    return fig

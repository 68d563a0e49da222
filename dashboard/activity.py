"""Plotly figures of activity: the pods' per-minute stats and the event log.

Counts come from :mod:`plane.stats` (what each pod counted per minute, exact however many
events there were); the event log is bounded, so the timeline draws single events only when
there are few, and otherwise counts them per time bin, saying how many it drew. Pure
functions: no Streamlit, no etcd.
"""

from __future__ import annotations

import datetime as dt
from collections import Counter
from collections.abc import Iterable, Sequence

import plotly.graph_objects as go
from plotly.subplots import make_subplots

from dashboard.figures import MARGIN, PALETTE, empty_figure
from plane import stats
from plane.registry import Event
from plane.stats import StatsRecord

__all__ = [
    "EVENT_COLORS",
    "TIMELINE_KINDS",
    "SCATTER_MAX",
    "STAT_LABELS",
    "filter_events",
    "bin_ms_for",
    "bin_events",
    "events_timeline",
    "activity_per_minute",
    "per_pod_per_minute",
    "pods_of_events",
]

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
SCATTER_MAX = 400  # more events than this are counted per time bin instead of drawn one by one
STAT_LABELS = {"loads": "loads", "evictions": "evictions", "failures": "load failures", "unloads": "unloads",
               "requests": "requests"}
STAT_COLORS = {"loads": "#2ca02c", "evictions": "#ff7f0e", "failures": "#d62728", "unloads": "#7f7f7f",
               "requests": "#1f77b4"}
LEGEND = {"orientation": "h", "y": 1.0, "yanchor": "bottom", "x": 1.0, "xanchor": "right"}  # above the plot
_BINS_S = (5, 10, 15, 30, 60, 120, 300, 600, 900, 1800, 3600)
API = "api"  # the writer of events that no pod wrote (registrations, vmodels)


def _ts(ms: int) -> dt.datetime:
    return dt.datetime.fromtimestamp(ms / 1000, tz=dt.UTC)


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
        and (pods_set is None or (e.pod or API) in pods_set)
        and (not needle or needle in e.model.lower())
    ]


def pods_of_events(events: Iterable[Event]) -> tuple[int, bool]:
    """How many pods wrote these events, and whether the API (no pod) wrote some too."""
    writers = {e.pod for e in events}
    return len(writers - {"", None}), "" in writers or None in writers


def bin_ms_for(span_ms: int, *, bins: int = 90) -> int:
    """A round bin width that cuts ``span_ms`` into at most about ``bins`` bins."""
    for s in _BINS_S:
        if span_ms / (s * 1000) <= bins:
            return s * 1000
    return _BINS_S[-1] * 1000


def bin_events(events: Iterable[Event], *, bin_ms: int) -> dict[str, list[tuple[int, int]]]:
    """``{kind: [(bin start ms, count), ...]}``, bins oldest first (only non-empty ones)."""
    counts: dict[str, Counter[int]] = {}
    for e in events:
        counts.setdefault(e.kind, Counter())[e.time_ms - e.time_ms % bin_ms] += 1
    return {k: sorted(c.items()) for k, c in counts.items()}


def _kind_order(events: Sequence[Event]) -> list[str]:
    return list(TIMELINE_KINDS) + sorted({e.kind for e in events} - set(TIMELINE_KINDS))


def _writers(events: Sequence[Event]) -> str:
    n, api = pods_of_events(events)
    return f"{n} pod(s)" + (" and the API" if api else "")


def events_timeline(events: Sequence[Event], *, since_ms: int | None = None, until_ms: int | None = None,
                    held: int | None = None, scatter_max: int = SCATTER_MAX) -> go.Figure:
    """The events on a time axis. Up to ``scatter_max`` events: one mark each (y = pod, one
    trace per kind, hover shows model, size and reason). More: stacked bars of counts per
    kind per time bin. The title says how many events are drawn and, with ``held``, how many
    the log holds for the window."""
    if not events:
        return empty_figure("no events in this window")
    of = f" of {held:,} in the log" if held is not None and held != len(events) else ""
    xr = [_ts(since_ms), _ts(until_ms)] if since_ms is not None and until_ms is not None else None
    fig = go.Figure()
    if len(events) > scatter_max:
        span = (until_ms or events[-1].time_ms) - (since_ms or events[0].time_ms)
        width = bin_ms_for(max(span, 1000))
        binned = bin_events(events, bin_ms=width)
        for kind in _kind_order(events):
            if kind not in binned:
                continue
            fig.add_bar(x=[t + width // 2 for t, _ in binned[kind]], y=[n for _, n in binned[kind]],
                        name=kind, marker_color=EVENT_COLORS.get(kind, "#444"), width=width * 0.9,
                        hovertemplate="%{x|%H:%M:%S}  %{y} " + kind + "<extra></extra>")
        fig.update_layout(
            barmode="stack",
            title={"text": f"Events: {len(events):,}{of} from {_writers(events)}, counted per {width // 1000} s"},
            height=320, margin=MARGIN, yaxis={"title": {"text": f"events per {width // 1000} s"}},
            xaxis={"range": xr, "title": {"text": "time (UTC)"}, "type": "date"}, legend=LEGEND,
        )
        return fig
    pods = sorted({e.pod or API for e in events})
    for kind in _kind_order(events):
        evs = [e for e in events if e.kind == kind]
        if not evs:
            continue
        fig.add_scatter(
            x=[_ts(e.time_ms) for e in evs],
            y=[e.pod or API for e in evs],
            mode="markers",
            name=kind,
            marker={"color": EVENT_COLORS.get(kind, "#444"), "size": 11,
                    "symbol": EVENT_SYMBOLS.get(kind, "circle"), "line": {"width": 1, "color": "#333"}},
            customdata=[[e.model, round(e.size / (1024 * 1024), 2), e.reason] for e in evs],
            hovertemplate=("%{x|%H:%M:%S}  " + kind + "<br>model %{customdata[0]}<br>%{customdata[1]} MiB"
                           "<br>%{customdata[2]}<extra>%{y}</extra>"),
        )
    fig.update_layout(
        title={"text": f"Events: {len(events):,}{of} from {_writers(events)}"},
        height=max(260, 120 + 40 * len(pods)),
        margin=MARGIN,
        yaxis={"type": "category", "categoryorder": "array", "categoryarray": pods, "title": {"text": "pod"}},
        xaxis={"range": xr, "title": {"text": "time (UTC)"}},
        legend=LEGEND,
    )
    return fig


def activity_per_minute(records: Sequence[StatsRecord], *, since_ms: int, until_ms: int,
                        kinds: Sequence[str] = ("loads", "evictions", "failures")) -> go.Figure:
    """All pods together: how many of each kind per minute (exact, from the pods' stats)."""
    if not records:
        return empty_figure("no activity counted in this window")
    fig = go.Figure()
    for kind in kinds:
        series = stats.per_minute(records, kind, since_ms=since_ms, until_ms=until_ms, by_pod=False)["all"]
        fig.add_bar(x=[t + stats.MINUTE_MS // 2 for t, _ in series], y=[n for _, n in series],
                    name=STAT_LABELS.get(kind, kind), marker_color=STAT_COLORS.get(kind, "#444"),
                    hovertemplate="%{x|%H:%M} UTC: %{y} " + STAT_LABELS.get(kind, kind) + "<extra></extra>")
    total = stats.totals(records, since_ms=since_ms)
    said = ", ".join(f"{total.get(k, 0):,} {STAT_LABELS.get(k, k)}" for k in kinds)
    fig.update_layout(barmode="group", title={"text": f"Per minute, all pods: {said}"}, height=320,
                      margin=MARGIN, legend=LEGEND,
                      xaxis={"title": {"text": "minute (UTC)"}, "type": "date"})
    return fig


def per_pod_per_minute(records: Sequence[StatsRecord], *, since_ms: int, until_ms: int,
                       kinds: Sequence[str] = ("loads", "evictions"), pods: Sequence[str] = ()) -> go.Figure:
    """One panel per kind (loads, evictions), stacked bars per minute, one colour per pod."""
    if not records:
        return empty_figure("no loads or evictions counted in this window")
    names = sorted(set(pods) | {r.pod for r in records})
    colors = {p: PALETTE[i % len(PALETTE)] for i, p in enumerate(names)}
    fig = make_subplots(rows=len(kinds), cols=1, shared_xaxes=True, vertical_spacing=0.12,
                        subplot_titles=[f"{STAT_LABELS.get(k, k)} per minute per pod" for k in kinds])
    for row, kind in enumerate(kinds, start=1):
        grid = stats.per_minute(records, kind, since_ms=since_ms, until_ms=until_ms, by_pod=True)
        for pod in names:
            series = grid.get(pod)
            if series is None:
                continue
            fig.add_bar(x=[t + stats.MINUTE_MS // 2 for t, _ in series], y=[n for _, n in series],
                        name=pod, legendgroup=pod, showlegend=row == 1, marker_color=colors[pod],
                        hovertemplate="%{x|%H:%M} UTC: %{y} " + STAT_LABELS.get(kind, kind) + "<extra>"
                                      + pod + "</extra>", row=row, col=1)
    fig.update_xaxes(type="date")  # x holds epoch ms: much cheaper to serialise than datetimes
    fig.update_layout(barmode="stack", height=200 + 170 * len(kinds), margin={**MARGIN, "t": 60},
                      legend={**LEGEND, "y": 1.04}, title={"text": "Loads and evictions per pod"})
    return fig

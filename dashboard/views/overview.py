"""Overview: the plane's pulse (the same figures as the console's header)."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, state
from dashboard.ui import errors_shown, fmt_time
from plane.api import overview_from
from plane.registry import now_ms
from plane.settings import format_size

st.title("Overview")
state.require_client()

c1, c2 = st.columns([3, 1])
window_min = c1.select_slider("Window for recent activity", options=[1, 5, 15, 60], value=5,
                              format_func=lambda m: f"last {m} min", key="overview_window")
live = c2.toggle("Live", value=True, key="overview_live", help=f"refresh every {state.REFRESH_S:g} s")


@st.fragment(run_every=state.REFRESH_S if live else None)
def pulse(window_s: int) -> None:
    snap = evs = None
    with errors_shown("cannot read the plane"):
        snap = state.snapshot()
        evs = state.events(window_s=window_s)
    if snap is None or evs is None:
        return
    since = now_ms() - window_s * 1000
    ov = overview_from(snap, [e for e in evs if e.time_ms >= since], window_s=window_s)
    a, b, c, d = st.columns(4)
    a.metric("Pods ready", f"{ov.pods_ready} / {ov.pods_total}", border=True)
    b.metric("Models registered", ov.models_registered, border=True)
    c.metric("Models loaded", ov.models_loaded, border=True)
    d.metric("Models failed", ov.models_failed, border=True)
    a, b, c, d = st.columns(4)
    pct = (100.0 * ov.used / ov.capacity) if ov.capacity else 0.0
    a.metric("Capacity used", f"{pct:.0f}%", help=f"{format_size(ov.used)} of {format_size(ov.capacity)}",
             border=True)
    b.metric(f"Loads (last {window_s // 60} min)", ov.loads_recent, border=True)
    c.metric(f"Evictions (last {window_s // 60} min)", ov.evictions_recent, border=True)
    d.metric(f"Load failures (last {window_s // 60} min)", ov.failures_recent, border=True)
    st.progress(min(1.0, pct / 100.0), text=f"{format_size(ov.used)} of {format_size(ov.capacity)} used")
    left, right = st.columns(2)
    left.plotly_chart(figures.capacity_bars(snap), key="overview_capacity")
    timeline = figures.events_timeline(evs, since_ms=since, until_ms=now_ms())
    right.plotly_chart(timeline, key="overview_timeline")
    st.caption(f"snapshot {fmt_time(snap.taken_ms)} UTC · {len(snap.vmodels)} vmodel(s)")


pulse(window_min * 60)

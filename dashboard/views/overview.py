"""Overview: the plane's pulse (the same figures as the console's header).

Model and pod figures come from the whole registry (``client.snapshot()``); loads, evictions,
failures and requests from the pods' own per-minute counts (``client.stats()``), exact however
busy the plane; never from the bounded event log, which this page does not read.
"""

from __future__ import annotations

import streamlit as st

from dashboard import activity, figures, state
from dashboard.ui import errors_shown, fmt_time
from plane import stats
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
    snap = recs = None
    with errors_shown("cannot read the plane"):
        snap = state.snapshot()
        recs = state.stats(window_s=window_s)
    if snap is None or recs is None:
        return
    now = now_ms()
    since = now - window_s * 1000
    counted_from = stats.minute_of(since)
    totals = stats.totals(recs, since_ms=since)
    ov = overview_from(snap, [], window_s=window_s, totals=totals)
    a, b, c, d = st.columns(4)
    a.metric("Pods ready", f"{ov.pods_ready} / {ov.pods_total}", border=True)
    b.metric("Models registered", f"{ov.models_registered:,}", border=True)
    c.metric("Models loaded", f"{ov.models_loaded:,}", border=True)
    d.metric("Models failed", f"{ov.models_failed:,}", border=True)
    a, b, c, d = st.columns(4)
    pct = (100.0 * ov.used / ov.capacity) if ov.capacity else 0.0
    a.metric("Capacity used", f"{pct:.0f}%", help=f"{format_size(ov.used)} of {format_size(ov.capacity)}",
             border=True)
    counted = (f"counted by the pods per minute since {fmt_time(counted_from)[11:16]} UTC "
               "(whole minutes, the current one included)")
    b.metric(f"Loads (last {window_s // 60} min)", f"{ov.loads_recent:,}", help=counted, border=True)
    c.metric(f"Evictions (last {window_s // 60} min)", f"{ov.evictions_recent:,}", help=counted, border=True)
    d.metric(f"Load failures (last {window_s // 60} min)", f"{ov.failures_recent:,}", help=counted, border=True)
    st.progress(min(1.0, pct / 100.0), text=f"{format_size(ov.used)} of {format_size(ov.capacity)} used")
    left, right = st.columns(2)
    left.plotly_chart(figures.capacity_bars(snap), key="overview_capacity")
    right.plotly_chart(activity.activity_per_minute(recs, since_ms=since, until_ms=now), key="overview_activity")
    st.caption(
        f"snapshot {fmt_time(snap.taken_ms)} UTC · {len(snap.vmodels):,} vmodel(s) · "
        f"{totals.get('requests', 0):,} request(s) served since {fmt_time(counted_from)[11:16]} UTC · "
        "every count here is what the pods counted, not a sample of the event log (the Events page "
        "lists the events it holds)"
    )


pulse(window_min * 60)

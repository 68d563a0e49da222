"""Events: loads, evictions and failures per pod over the last minutes, then the table."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import figures, state
from dashboard.ui import errors_shown, fmt_size, fmt_time
from plane.registry import EVENT_KINDS, now_ms

st.title("Events")
state.require_client()

c1, c2, c3, c4 = st.columns([2, 3, 2, 1])
minutes = c1.select_slider("Last", options=[1, 5, 15, 30, 60, 180, 720], value=15,
                           format_func=lambda m: f"{m} min", key="events_minutes")
kinds = c2.multiselect("Kinds", EVENT_KINDS, default=list(figures.TIMELINE_KINDS), key="events_kinds")
model_filter = c3.text_input("Model contains", key="events_model")
paused = c4.toggle("Pause", key="events_paused")


@st.fragment(run_every=None if paused else state.REFRESH_S)
def live_events() -> None:
    evs = None
    with errors_shown("cannot read the event log"):
        evs = state.events(window_s=minutes * 60)
    if evs is None:
        return
    now = now_ms()
    since = now - minutes * 60 * 1000
    pods_seen = sorted({e.pod or "api" for e in evs})
    pods = st.multiselect("Pods", pods_seen, key="events_pods", placeholder="all pods")
    shown = figures.filter_events(evs, since_ms=since, kinds=kinds, pods=pods, model_contains=model_filter)
    st.plotly_chart(figures.events_timeline(shown, since_ms=since, until_ms=now), key="events_timeline")
    st.caption(f"{len(shown)} of {len(evs)} event(s) in the last {minutes} min")
    rows = [
        {"time (UTC)": fmt_time(e.time_ms), "kind": e.kind, "pod": e.pod or "api", "model": e.model,
         "size": fmt_size(e.size), "reason": e.reason}
        for e in reversed(shown)
    ]
    df = pd.DataFrame(rows, columns=["time (UTC)", "kind", "pod", "model", "size", "reason"])
    st.dataframe(df, hide_index=True, key="events_table")


live_events()

"""Events: loads, evictions and failures per pod over the last minutes, then the table.

The event log is bounded (it keeps the newest ``MESH_EVENTS_MAX``): the page lists every event
it holds for the window and says so, draws them one by one when they are few and counted per
time bin when they are many, and gives the exact counts from the pods' per-minute stats.
"""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import activity, state
from dashboard.ui import errors_shown, fmt_size, fmt_time, paged_table
from plane import stats
from plane.registry import EVENT_KINDS, now_ms

st.title("Events")
state.require_client()

c1, c2, c3, c4 = st.columns([2, 3, 2, 1])
minutes = c1.select_slider("Last", options=[1, 5, 15, 30, 60, 180, 720], value=15,
                           format_func=lambda m: f"{m} min", key="events_minutes")
kinds = c2.multiselect("Kinds", EVENT_KINDS, default=list(activity.TIMELINE_KINDS), key="events_kinds")
model_filter = c3.text_input("Model contains", key="events_model")
paused = c4.toggle("Pause", key="events_paused")
COLUMNS = ["time (UTC)", "kind", "pod", "model", "size", "reason"]
COLUMN_CONFIG = {
    "time (UTC)": st.column_config.TextColumn(width="medium"),
    "kind": st.column_config.TextColumn(width="small"),
    "pod": st.column_config.TextColumn(width="small"),
    "model": st.column_config.TextColumn(width="medium"),
    "size": st.column_config.TextColumn(width="small"),
    "reason": st.column_config.TextColumn(width="large"),
}


@st.fragment(run_every=None if paused else state.REFRESH_S)
def live_events() -> None:
    evs = recs = live = None
    with errors_shown("cannot read the event log"):
        evs = state.events(window_s=minutes * 60)
        recs = state.stats(window_s=minutes * 60)
        live = [p.pod_id for p in state.pods()]
    if evs is None or recs is None or live is None:
        return
    now = now_ms()
    since = now - minutes * 60 * 1000
    held = [e for e in evs if e.time_ms >= since]
    pods_seen = sorted(set(live) | {e.pod or activity.API for e in held})
    pods = st.multiselect("Pods", pods_seen, key="events_pods", placeholder="all pods (api: registrations)")
    shown = activity.filter_events(held, kinds=kinds, pods=pods, model_contains=model_filter)
    st.plotly_chart(activity.events_timeline(shown, since_ms=since, until_ms=now, held=len(held)),
                    key="events_timeline")
    totals = stats.totals(recs, since_ms=since)
    full = len(held) >= state.events_max()
    st.caption(
        f"{len(shown):,} of the {len(held):,} event(s) the log holds for the last {minutes} min"
        + (f" (it keeps only the newest {state.events_max():,}: older ones are gone)" if full else "")
        + f" · the pods counted {totals['loads']:,} loads, {totals['evictions']:,} evictions, "
        f"{totals['failures']:,} load failures and {totals['unloads']:,} unloads since "
        f"{fmt_time(stats.minute_of(since))[11:16]} UTC"
    )
    st.plotly_chart(activity.per_pod_per_minute(recs, since_ms=since, until_ms=now, pods=live),
                    key="events_per_pod")
    rows = [
        {"time (UTC)": fmt_time(e.time_ms), "kind": e.kind, "pod": e.pod or activity.API, "model": e.model,
         "size": fmt_size(e.size), "reason": e.reason}
        for e in reversed(shown)
    ]
    paged_table(pd.DataFrame(rows, columns=COLUMNS), key="events_table", column_config=COLUMN_CONFIG,
                page_size=50, noun="event")


live_events()

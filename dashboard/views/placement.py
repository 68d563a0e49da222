"""Placement: which model is on which pod, how full each pod is; refreshed live."""

from __future__ import annotations

import streamlit as st

from dashboard import figures, state
from dashboard.ui import errors_shown, fmt_time

st.title("Placement")
state.require_client()

c1, c2, c3, c4 = st.columns([1.2, 2, 2, 2])
paused = c1.toggle("Pause", key="placement_paused", help="stop the live refresh")
interval = c2.select_slider("Refresh every", options=[1, 2, 5, 10, 30], value=2,
                            format_func=lambda s: f"{s} s", key="placement_interval")
needle = c3.text_input("Models containing", key="placement_filter", placeholder="all models")
memory_view = c4.radio("Pod memory as", ["treemap", "stacked bars"], horizontal=True, key="placement_memory")


@st.fragment(run_every=None if paused else interval)
def live_placement() -> None:
    snap = None
    with errors_shown("cannot read the placement"):
        snap = state.snapshot()
    if snap is None:
        return
    models = None
    if needle.strip():
        models = [m.model_id for m in snap.models if needle.strip().lower() in m.model_id.lower()]
    status = "paused" if paused else f"refreshing every {interval} s"
    placed = sum(1 for m in snap.models if m.copies)
    st.caption(f"snapshot {fmt_time(snap.taken_ms)} UTC · {status} · {len(snap.pods)} pod(s) · "
               f"{placed} of {len(snap.models)} model(s) placed")
    st.plotly_chart(figures.placement_heatmap(snap, models=models), key="placement_heatmap")
    left, right = st.columns(2)
    left.plotly_chart(figures.capacity_bars(snap), key="placement_capacity")
    if memory_view == "treemap":
        right.plotly_chart(figures.pod_memory_treemap(snap), key="placement_memory_fig")
    else:
        right.plotly_chart(figures.pod_memory_stacked(snap), key="placement_memory_fig")


live_placement()

"""Placement: which model is on which pod, how full each pod is, what moved; refreshed live.

The page draws once and a watcher checks every few seconds whether what it shows changed
(:func:`dashboard.live.redraw_when_changed`): an idle plane is not redrawn; the figures are
built once per snapshot for every session.

Readable at any scale: the heatmap shows the top N placed models (by activity, size or name,
among those matching the search) in a stable order and sums up the others in one row; the
treemap groups small copies; drill-downs show one model's copies and one pod's copies.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import activity, figures, live, placement_data, state
from dashboard.ui import choices, errors_shown, fmt_rate, fmt_size, fmt_time, paged_table
from plane import stats, usage
from plane.api import PlacementSnapshot
from plane.registry import now_ms

st.title("Placement")
state.require_client()

c1, c2, c3, c4, c5 = st.columns([1, 1.6, 2.4, 1.2, 2.2], vertical_alignment="bottom")
paused = c1.toggle("Pause", key="placement_paused", help="stop the live refresh")
interval = c2.select_slider("Refresh every", options=[1, 2, 5, 10, 30], value=2,
                            format_func=lambda s: f"{s} s", key="placement_interval")
needle = c3.text_input("Search models", key="placement_filter", placeholder="model id contains")
top = c4.selectbox("Rows", [20, 40, 80, 150], index=1, format_func=lambda n: f"top {n}", key="placement_top")
by = c5.radio("Top by", list(placement_data.RANK_BY), horizontal=True, key="placement_by",
              help="; ".join(f"{k}: {v}" for k, v in placement_data.RANK_BY.items())
              + ". Rows stay in model-id order, so a refresh never reshuffles them.")
c1, c2 = st.columns([3, 2])
memory_view = c1.radio("Pod memory as", ["treemap", "stacked bars"], horizontal=True, key="placement_memory")
activity_min = c2.select_slider("Loads and evictions over", options=[15, 30, 60, 180], value=15,
                                format_func=lambda m: f"last {m} min", key="placement_activity")

SHOWN: dict[str, Callable[[Any], str]] = {
    "size": fmt_size, "share of pod": lambda v: "-" if v is None or pd.isna(v) else f"{v:.1f}%",
    "req/min": fmt_rate, "req/min on pod": fmt_rate}
# Widths that fit a half-width column of a wide page (about 630 px).
COLUMNS = {name: st.column_config.Column(width=w) for name, w in {
    "model": 170, "type": 75, "pod": 110, "state": 65, "size": 80, "share of pod": 85, "age": 75, "req/min": 65,
    "req/min on pod": 105}.items()}


def model_drilldown(snap: PlacementSnapshot, now: int) -> None:
    ids, note = choices([m.model_id for m in snap.models], needle, keep=st.session_state.get("placement_model"))
    chosen = st.selectbox("Model", ids, index=None, key="placement_model",
                          placeholder="choose a model (type to search)", help=note or None)
    m = next((x for x in snap.models if x.model_id == chosen), None) if chosen else None
    if m is None:
        st.caption(note or f"{len(ids):,} model(s) to choose from")
        return
    st.markdown(f"**{m.model_id}** · type `{m.type}` · {m.status()} · {fmt_size(m.size)} per copy · "
                f"{fmt_rate(usage.fresh_rpm(m, now))} req/min · last used {usage.last_used_text(m, now)} · "
                f"storage `{m.key}:{m.path}`")
    rows = placement_data.model_copies(snap, m.model_id, now)
    if rows:
        df = pd.DataFrame(rows, columns=["pod", "state", "size", "age", "share of pod", "req/min on pod"])
        paged_table(df, key="placement_model_copies", shown=SHOWN, column_config=COLUMNS, noun="copy")
    else:
        st.caption("no copy on any pod")
    for pod, f in sorted(m.failed.items()):
        st.warning(f"load failed on {pod} at {fmt_time(f.time_ms)} UTC: {f.message}")


def pod_drilldown(snap: PlacementSnapshot, now: int) -> None:
    pods, _ = placement_data.pod_columns(snap, [m for m in snap.models if m.copies])
    if not pods:
        st.caption("no pod is running")
        return
    chosen = st.selectbox("Pod", pods, index=None, key="placement_pod", placeholder="choose a pod")
    if chosen is None:
        busiest = max(snap.pods, key=lambda p: p.count, default=None)
        st.caption(f"{len(pods)} pod(s)" + (f"; {busiest.pod_id} holds the most copies ({busiest.count:,})"
                                            if busiest else ""))
        return
    pod = next((p for p in snap.pods if p.pod_id == chosen), None)
    rows = placement_data.pod_copies(snap, chosen, now)
    held = sum(r["size"] for r in rows)
    cap = f" of {fmt_size(pod.capacity)}" if pod and pod.capacity else " (no instance record: gone)"
    st.caption(f"{chosen}: {len(rows):,} copies, {fmt_size(held)}{cap}")
    st.plotly_chart(figures.pod_copies_bar(snap, chosen), key="placement_pod_bar")
    df = pd.DataFrame(rows, columns=["model", "type", "state", "size", "share of pod", "age", "req/min"])
    paged_table(df, key="placement_pod_copies", shown=SHOWN, column_config=COLUMNS, noun="copy")


def drawn(snap: PlacementSnapshot, recs: list, now: int) -> tuple[placement_data.Selection, dict[str, Any]]:
    """The selection and the figures of the page: built once per snapshot (and stats read) and
    settings, for every session that shows them (:func:`dashboard.live.memo`)."""

    def build() -> tuple[placement_data.Selection, dict[str, Any]]:
        sel = placement_data.select(snap, top=top, by=by, needle=needle)  # ranked as of the snapshot
        memory = figures.pod_memory_treemap(snap) if memory_view == "treemap" else figures.pod_memory_stacked(snap)
        return sel, {"placement_heatmap": figures.placement_heatmap(snap, sel),
                     "placement_capacity": figures.capacity_bars(snap), "placement_memory_fig": memory}

    sel, figs = live.memo(snap, ("placement", top, by, needle, memory_view), build)
    minute = stats.minute_of(now)
    per_pod = live.memo(recs, ("placement-activity", activity_min, minute, tuple(p.pod_id for p in snap.pods)),
                        lambda: activity.per_pod_per_minute(recs, since_ms=now - activity_min * 60_000, until_ms=now,
                                                            pods=[p.pod_id for p in snap.pods]))
    return sel, {**figs, "placement_activity_fig": per_pod}


def read() -> tuple[PlacementSnapshot, list] | None:
    with errors_shown("cannot read the placement"):
        return state.snapshot(), state.stats(window_s=activity_min * 60)
    return None


def what_is_drawn(snap: PlacementSnapshot, recs: list, now: int) -> str:
    """The digest of what the page draws: its figures, and an open drill-down's snapshot."""
    _, figs = drawn(snap, recs, now)
    opened = [st.session_state.get("placement_model"), st.session_state.get("placement_pod")]
    return live.digest([*figs.values(), *opened, snap.taken_ms if any(opened) else 0])


def caption() -> None:
    got = read()
    if got is None:
        return
    snap, recs = got
    sel, _ = drawn(snap, recs, now_ms())
    status = "paused" if paused else f"refreshing every {interval} s"
    st.caption(f"snapshot {fmt_time(snap.taken_ms)} UTC · {status} · {len(snap.pods)} pod(s) · "
               f"{sel.placed:,} of {sel.total:,} model(s) placed · rows: the top {top} by "
               f"{placement_data.RANK_BY[by]}, in model-id order")


def probe() -> str:
    got = read()
    return what_is_drawn(*got, now_ms()) if got is not None else ""


got = read()
if got is None:
    st.stop()
snap, recs = got
now = now_ms()
sel, figs = drawn(snap, recs, now)
# Redrawn when what it shows changed (checked every `interval` s), not on every tick.
live.redraw_when_changed(what_is_drawn(snap, recs, now), probe, every=None if paused else interval, note=caption)
st.plotly_chart(figs["placement_heatmap"], key="placement_heatmap")
left, right = st.columns(2)
left.plotly_chart(figs["placement_capacity"], key="placement_capacity")
right.plotly_chart(figs["placement_memory_fig"], key="placement_memory_fig")
st.plotly_chart(figs["placement_activity_fig"], key="placement_activity_fig")
st.subheader("Drill down")
left, right = st.columns(2)
with left:
    model_drilldown(snap, now)
with right:
    pod_drilldown(snap, now)

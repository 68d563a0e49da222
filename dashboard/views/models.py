"""Models: the registered models, registration, unregistration and vmodels."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.ui import (
    TYPE_CHOICES,
    TYPE_LABELS,
    TYPE_OTHER,
    choices,
    chosen_type,
    errors_shown,
    fmt_rate,
    fmt_size,
    paged_table,
    suggested_type,
)
from plane import usage
from plane.api import PlacementSnapshot
from plane.registry import ModelRecord, now_ms
from plane.runtimes.files import check_path_for_type
from plane.runtimes.types import RUNTIMES, runtime_label

STATUSES = ["LOADED", "LOADING", "LOADING_FAILED", "NOT_LOADED"]
LOAD_WAIT_S = 20.0  # after a "load now" registration, how long the page waits to say how it went
SORTS = ["model", "status", "size", "last used", "req/min", "storage"]
# Widths that fit all twelve columns in a wide page (1,280 px at a 1,440 px window): text longer
# than its cell ends in "…" and reads whole on hover.
MODEL_COLUMNS = {name: st.column_config.Column(width=w) for name, w in {
    "model": 200, "status": 125, "type": 90, "storage": 70, "path": 160, "size": 75, "loaded on": 105,
    "loading on": 80, "failed": 140, "vmodels": 70, "last used": 80, "req/min": 60}.items()}

st.title("Models")
client = state.require_client()

flash = st.session_state.pop("models_flash", None)
if flash:
    kind, text = flash
    {"ok": st.success, "fail": st.error}.get(kind, st.warning)(text)


def wait_for_load(rec: ModelRecord, timeout: float = LOAD_WAIT_S) -> ModelRecord:
    """The model's record once a pod loaded it or its load failed (or at the deadline)."""
    deadline = time.monotonic() + timeout
    while rec.status() in ("LOADING", "NOT_LOADED") and time.monotonic() < deadline:
        time.sleep(0.2)
        rec = client.get_model(rec.model_id) or rec
    return rec


def registered_message(rec: ModelRecord, load_now: bool) -> tuple[str, str]:
    """What the operator reads after a registration: a failed load is an error with the pods'
    messages, never a green box."""
    where = f"{rec.model_id} ({rec.key}:{rec.path})"
    status = rec.status()
    if status == "LOADING_FAILED":
        why = "; ".join(f"{p}: {f.message}" for p, f in sorted(rec.failed.items())) or "no reason recorded"
        return "fail", f"registered {where}, but loading it failed: {why}"
    if status == "LOADED":
        return "ok", f"registered {where}, loaded on {', '.join(rec.loaded_on())}"
    if status == "LOADING":
        return "ok", f"registered {where}, loading on {', '.join(rec.loading_on())}"
    if load_now:
        return "warn", f"registered {where}, status {status}: no pod has started loading it yet"
    return "ok", f"registered {where}, status {status} (loaded on the first request)"


def model_rows(snap: PlacementSnapshot, now: int) -> list[dict]:
    """One row per model. "last used" holds the time of the last request (0 = never) and
    "req/min" the decayed rate, so that both sort as numbers; ``shown_as`` words them."""
    vmodels_of: dict[str, list[str]] = {}
    for v in snap.vmodels:
        vmodels_of.setdefault(v.active or v.target, []).append(v.vmodel_id)
    rows = []
    for m in snap.models:
        rows.append({
            "model": m.model_id,
            "status": m.status(),
            "type": m.type,
            "runtime": runtime_label(m.type),
            "storage": m.key,
            "path": m.path,
            "size": fmt_size(m.size),
            "loaded on": ", ".join(m.loaded_on()),
            "loading on": ", ".join(m.loading_on()),
            "failed": "; ".join(f"{p}: {f.message}" for p, f in sorted(m.failed.items())),
            "vmodels": ", ".join(sorted(set(vmodels_of.get(m.model_id, [])) | set(m.refs))),
            "last used": m.used_ms,
            "req/min": usage.fresh_rpm(m, now),
        })
    return rows


def shown_as(snap: PlacementSnapshot, now: int) -> dict[str, Callable[[Any], str]]:
    """How the numeric columns read: the same words as the CLI and the console."""
    words = {m.used_ms: usage.last_used_text(m, now) for m in snap.models}
    return {"last used": lambda ms: words.get(ms, "never"), "req/min": fmt_rate}


def _filtered(snap: PlacementSnapshot, needle: str, statuses: list[str]) -> list[ModelRecord]:
    n = needle.strip().lower()
    return [m for m in snap.models
            if (not n or n in m.model_id.lower() or n in m.path.lower() or n in m.type.lower())
            and (not statuses or m.status() in statuses)]


# -- table ---------------------------------------------------------------------------------------------
snap = None
with errors_shown("cannot list the models"):
    snap = state.snapshot()
if snap is None:
    st.stop()

c1, c2, c3, c4 = st.columns([2, 3, 1.4, 1], vertical_alignment="bottom")
needle = c1.text_input("Filter", key="models_filter", placeholder="model id, path or type contains")
statuses = c2.multiselect("Status", STATUSES, key="models_status", placeholder="any status")
sort_by = c3.selectbox("Sort by", SORTS, key="models_sort")
descending = c4.toggle("Descending", key="models_desc")
shown = _filtered(snap, needle, statuses)
cols = ["model", "status", "type", "storage", "path", "size", "loaded on", "loading on", "failed", "vmodels",
        "last used", "req/min"]
table = PlacementSnapshot(pods=snap.pods, models=shown, vmodels=snap.vmodels, taken_ms=snap.taken_ms)
now = now_ms()
frame = pd.DataFrame(model_rows(table, now), columns=cols)
if len(frame):  # across pages (a click on the table's own header sorts one page)
    sizes = {m.model_id: m.size for m in shown}
    values = frame["model"].map(sizes) if sort_by == "size" else frame[sort_by]
    frame = (frame.assign(_key=values)  # stable: ties keep the model-id order
             .sort_values("_key", ascending=not descending, kind="stable").drop(columns="_key"))
st.caption(f"{len(shown):,} of {len(snap.models):,} model(s)")
paged_table(frame, key="models_table", shown=shown_as(table, now), column_config=MODEL_COLUMNS, page_size=50,
            noun="model")

model_ids = [m.model_id for m in snap.models]
storage_keys: list[str] = []
with errors_shown("cannot list the storage configs"):
    storage_keys = [c["key"] for c in client.list_storage()]

# -- register ------------------------------------------------------------------------------------------
def _follow_path() -> None:
    """The path changed: switch the type to the one runtime that reads its suffix, unless the
    type chosen reads it already (a directory, or .bst, keeps the choice)."""
    ss = st.session_state
    current = chosen_type(ss.get("reg_type"), ss.get("reg_type_other", "")) or RUNTIMES[0]
    suggestion = suggested_type(current, ss.get("reg_path", ""))
    if suggestion is not None:
        ss["reg_type"] = suggestion


@st.fragment
def register_section(storage_keys: list[str]) -> None:
    """The form, in a fragment: the type follows the path as it is typed, and only this part reruns."""
    st.subheader("Register a model")
    model_id = st.text_input("Model id", key="reg_model_id", placeholder="mnist-v1")
    key_options = sorted(set(storage_keys) | {"default"})
    storage_key = st.selectbox("Storage", key_options, index=key_options.index("default"), key="reg_storage")
    path = st.text_input("Path inside the storage", key="reg_path", placeholder="models/mnist.onnx",
                         on_change=_follow_path, help="a model file, or a directory holding one")
    choice = st.selectbox("Type", TYPE_CHOICES, key="reg_type", format_func=lambda t: TYPE_LABELS.get(t, t),
                          help="set from the path's suffix when only one runtime reads it; "
                               "other: a ModelMesh type such as mt:sklearn:1 or rt:mlserver-1.x")
    other = ""
    if choice == TYPE_OTHER:
        other = st.text_input("ModelMesh type", key="reg_type_other", placeholder="mt:sklearn:1, rt:mlserver-1.x")
    load_now = st.checkbox("Load now", key="reg_load_now",
                           help="ask a pod to load it right away instead of on the first request")
    if not st.button("Register", type="primary", key="reg_submit"):
        return
    mtype = chosen_type(choice, other)
    problem = check_path_for_type(mtype, path.strip())
    if problem:
        st.error(f"not registered: {problem}", icon=":material/error:")
        return
    with errors_shown("registration failed"):
        try:
            rec = client.register_model(model_id.strip(), path=path.strip(), storage_key=storage_key,
                                        type=mtype, load_now=load_now)
            if load_now:
                with st.spinner(f"waiting up to {LOAD_WAIT_S:.0f} s for a pod to load it…"):
                    rec = wait_for_load(rec)
        finally:
            state.refresh()  # a load_now failure still leaves the model registered
        st.session_state["models_flash"] = registered_message(rec, load_now)
        st.rerun()


left, right = st.columns(2)
with left:
    register_section(storage_keys)

# -- unregister ----------------------------------------------------------------------------------------
with right:
    st.subheader("Unregister a model")
    if not model_ids:
        st.caption("no model is registered")
    else:
        options, note = choices(model_ids, needle, keep=st.session_state.get("unreg_model"))
        victim = st.selectbox("Model", options, key="unreg_model", help=note or None)
        if note:
            st.caption(note)
        pending = st.session_state.get("unreg_pending")
        if pending is None:
            if st.button("Unregister…", key="unreg_ask"):
                st.session_state["unreg_pending"] = victim
                st.rerun()
        else:
            st.warning(f"Unregister **{pending}**? Pods holding copies unload them.")
            a, b = st.columns(2)
            if a.button("Yes, unregister", type="primary", key="unreg_confirm"):
                st.session_state.pop("unreg_pending", None)
                with errors_shown("unregister failed"):
                    if client.unregister_model(pending):
                        st.session_state["models_flash"] = ("ok", f"unregistered {pending}")
                    else:
                        st.session_state["models_flash"] = ("warn", f"{pending} was not registered")
                    state.refresh()
                    st.rerun()
            if b.button("Cancel", key="unreg_cancel"):
                st.session_state.pop("unreg_pending", None)
                st.rerun()

# -- vmodels -------------------------------------------------------------------------------------------
st.divider()
st.subheader("vmodels")
vleft, vright = st.columns(2)
with vleft, st.form("vmodel_form"):
    vmodel_id = st.text_input("vmodel id", key="vm_id", placeholder="mnist")
    targets, target_note = choices(model_ids, needle, keep=st.session_state.get("vm_target"))
    target = st.selectbox("Target model", targets, key="vm_target", index=None, help=target_note or None,
                          placeholder="choose a registered model")
    auto_delete = st.checkbox("Delete the old target when the vmodel moves", key="vm_auto_delete")
    vsubmitted = st.form_submit_button("Set vmodel", key="vm_submit")
if vsubmitted:
    with vleft, errors_shown("setting the vmodel failed"):
        if not target:
            st.error("choose the target model")
        else:
            v = client.set_vmodel(vmodel_id.strip(), target, auto_delete=auto_delete)
            state.refresh()
            st.session_state["models_flash"] = ("ok", f"vmodel {v.vmodel_id} → {v.target} ({v.status()})")
            st.rerun()
with vright:
    vrows = [{"vmodel": v.vmodel_id, "active": v.active, "target": v.target, "status": v.status(),
              "auto delete": v.auto_delete} for v in snap.vmodels]
    paged_table(pd.DataFrame(vrows, columns=["vmodel", "active", "target", "status", "auto delete"]),
                key="vmodels_table", noun="vmodel")
    if snap.vmodels:
        dv = st.selectbox("vmodel", [v.vmodel_id for v in snap.vmodels], key="vm_delete_id")
        if st.button("Delete vmodel", key="vm_delete"):
            with errors_shown("deleting the vmodel failed"):
                client.delete_vmodel(dv)
                state.refresh()
                st.session_state["models_flash"] = ("ok", f"deleted vmodel {dv}")
                st.rerun()

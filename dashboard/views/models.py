"""Models: the registered models, registration, unregistration and vmodels."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.ui import errors_shown, fmt_rate, fmt_size, sortable_table
from plane import usage
from plane.api import PlacementSnapshot
from plane.registry import ModelRecord, now_ms

STATUSES = ["LOADED", "LOADING", "LOADING_FAILED", "NOT_LOADED"]

st.title("Models")
client = state.require_client()

flash = st.session_state.pop("models_flash", None)
if flash:
    kind, text = flash
    (st.success if kind == "ok" else st.warning)(text)


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
            if (not n or n in m.model_id.lower() or n in m.path.lower())
            and (not statuses or m.status() in statuses)]


# -- table ---------------------------------------------------------------------------------------------
snap = None
with errors_shown("cannot list the models"):
    snap = state.snapshot()
if snap is None:
    st.stop()

c1, c2 = st.columns([2, 3])
needle = c1.text_input("Filter", key="models_filter", placeholder="model id or path contains")
statuses = c2.multiselect("Status", STATUSES, key="models_status", placeholder="any status")
shown = _filtered(snap, needle, statuses)
cols = ["model", "status", "type", "storage", "path", "size", "loaded on", "loading on", "failed", "vmodels",
        "last used", "req/min"]
table = PlacementSnapshot(pods=snap.pods, models=shown, vmodels=snap.vmodels, taken_ms=snap.taken_ms)
now = now_ms()
frame = pd.DataFrame(model_rows(table, now), columns=cols)
st.dataframe(sortable_table(frame, shown_as(table, now)), hide_index=True, key="models_table")
st.caption(f"{len(shown)} of {len(snap.models)} model(s)")

model_ids = [m.model_id for m in snap.models]
storage_keys: list[str] = []
with errors_shown("cannot list the storage configs"):
    storage_keys = [c["key"] for c in client.list_storage()]

# -- register ------------------------------------------------------------------------------------------
left, right = st.columns(2)
with left, st.form("register_form", clear_on_submit=False):
    st.subheader("Register a model")
    model_id = st.text_input("Model id", key="reg_model_id", placeholder="mnist-v1")
    key_options = sorted(set(storage_keys) | {"default"})
    storage_key = st.selectbox("Storage", key_options, index=key_options.index("default"), key="reg_storage")
    path = st.text_input("Path inside the storage", key="reg_path", placeholder="models/mnist.onnx")
    mtype = st.selectbox("Type", ["onnx"], key="reg_type")
    load_now = st.checkbox("Load now", key="reg_load_now",
                           help="ask a pod to load it right away instead of on the first request")
    submitted = st.form_submit_button("Register", type="primary", key="reg_submit")
if submitted:
    with left, errors_shown("registration failed"):
        try:
            rec = client.register_model(model_id.strip(), path=path.strip(), storage_key=storage_key,
                                        type=mtype, load_now=load_now)
        finally:
            state.refresh()  # a load_now failure still leaves the model registered
        st.session_state["models_flash"] = ("ok", f"registered {rec.model_id} ({rec.key}:{rec.path}), "
                                                  f"status {rec.status()}")
        st.rerun()

# -- unregister ----------------------------------------------------------------------------------------
with right:
    st.subheader("Unregister a model")
    if not model_ids:
        st.caption("no model is registered")
    else:
        victim = st.selectbox("Model", model_ids, key="unreg_model")
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
    target = st.selectbox("Target model", model_ids, key="vm_target", index=None,
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
    st.dataframe(pd.DataFrame(vrows, columns=["vmodel", "active", "target", "status", "auto delete"]),
                 hide_index=True, key="vmodels_table")
    if snap.vmodels:
        dv = st.selectbox("vmodel", [v.vmodel_id for v in snap.vmodels], key="vm_delete_id")
        if st.button("Delete vmodel", key="vm_delete"):
            with errors_shown("deleting the vmodel failed"):
                client.delete_vmodel(dv)
                state.refresh()
                st.session_state["models_flash"] = ("ok", f"deleted vmodel {dv}")
                st.rerun()

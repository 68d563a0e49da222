"""Storage: the storage configs (secrets masked), adding S3/MinIO or local ones, testing them.

The table shows ``PlaneClient.list_storage()`` (``StorageConfig.masked()``: secrets reduced to a
hint, URLs without userinfo); test results are redacted by plane.storage. Secrets typed into
the form go to ``set_storage`` only and are never shown back.

The form starts empty (no key, no type): saving under a key that exists, or removing one,
asks first and says how many models use it, since every model of that key then reads from
the new place."""

from __future__ import annotations

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.ui import errors_shown
from plane import secrets

st.title("Storage")
client = state.require_client()

flash = st.session_state.pop("storage_flash", None)
if flash:
    st.success(flash)

configs: list[dict] = []
with errors_shown("cannot list the storage configs"):
    configs = client.list_storage()
keys = [c["key"] for c in configs]
TYPES = {"s3": "S3 / MinIO", "local": "Local directory"}


def models_using(key: str) -> int:
    with errors_shown("cannot count the models"):
        return sum(1 for m in state.snapshot().models if m.key == key)
    return 0


def _uses(n: int) -> str:
    return f"{n:,} model{'s' if n != 1 else ''} use{'s' if n == 1 else ''} it"


if configs:
    columns = ["key", "type"] + sorted({k for c in configs for k in c} - {"key", "type"})
    st.dataframe(pd.DataFrame(configs, columns=columns).fillna(""), hide_index=True, key="storage_table",
                 height="content")
else:
    st.info("No storage config yet: models name a storage key (`default` when they name none).")

left, right = st.columns(2)

# -- add / replace -------------------------------------------------------------------------------------
with left:
    st.subheader("Add or replace a config")
    pending = st.session_state.get("st_pending")  # (key, type, params) waiting for "overwrite?"
    stype = st.radio("Type", list(TYPES), index=None, horizontal=True, key="st_type", format_func=TYPES.get)
    if stype is None:
        st.caption("choose the type of storage to add")
    else:
        with st.form("storage_form"):
            key = st.text_input("Key", key="st_key", placeholder="default",
                                help="the name models use to point at this storage")
            params: dict[str, object] = {}
            if stype == "s3":
                params["endpoint_url"] = st.text_input("Endpoint URL", key="st_endpoint",
                                                       placeholder="http://minio:9000 (empty: AWS)")
                params["default_bucket"] = st.text_input("Bucket", key="st_bucket")
                params["region"] = st.text_input("Region", key="st_region", placeholder="us-east-1")
                params["access_key_id"] = st.text_input("Access key id", key="st_access", type="password")
                params["secret_access_key"] = st.text_input("Secret access key", key="st_secret", type="password")
            else:
                params["path"] = st.text_input("Directory", key="st_path", placeholder="/srv/models")
            saved = st.form_submit_button("Save", type="primary", key="st_save", disabled=pending is not None)
        if saved:
            name = key.strip()
            cleaned = {k: (v.strip() if isinstance(v, str) else v) for k, v in params.items()}
            if not name:
                st.error("enter a key (models name it; `default` is the one models use when they name none)")
            elif name in keys:
                st.session_state["st_pending"] = (name, stype, cleaned)
                st.rerun()
            else:
                with errors_shown("the storage config was not saved"):
                    cfg = client.set_storage(name, stype, cleaned)
                    st.session_state["storage_flash"] = f"saved storage config {cfg.key} ({cfg.type})"
                    st.rerun()
    if pending is not None:
        name, ptype, pparams = pending
        st.warning(f"key '{name}' exists and {_uses(models_using(name))} — overwrite it with this "
                   f"{TYPES.get(ptype, ptype)} config?", icon=":material/warning:")
        a, b = st.columns(2)
        if a.button("Yes, overwrite", type="primary", key="st_overwrite"):
            st.session_state.pop("st_pending", None)
            with errors_shown("the storage config was not saved"):
                cfg = client.set_storage(name, ptype, pparams)
                st.session_state["storage_flash"] = f"replaced storage config {cfg.key} ({cfg.type})"
                st.rerun()
        if b.button("Cancel", key="st_overwrite_cancel"):
            st.session_state.pop("st_pending", None)
            st.rerun()

# -- test / remove -------------------------------------------------------------------------------------
with right:
    st.subheader("Test a config")
    if not keys:
        st.caption("add a config first")
    else:
        tkey = st.selectbox("Config", keys, key="st_test_key")
        tpath = st.text_input("Path prefix (optional)", key="st_test_path")
        a, b = st.columns(2)
        if a.button("Test", type="primary", key="st_test"):
            with st.spinner("listing objects…"):
                res = client.test_storage(tkey, path=tpath.strip())
            message = secrets.redact_text(res.message)  # redacted by plane.storage already
            if res.ok:
                st.success(message)
                if res.objects:
                    st.code("\n".join(res.objects), language=None)
            else:
                st.error(message)
        removing = st.session_state.get("st_remove_pending")
        if removing is None:
            if b.button("Remove…", key="st_remove"):
                st.session_state["st_remove_pending"] = tkey
                st.rerun()
        else:
            st.warning(f"Remove storage config '{removing}'? {_uses(models_using(removing))}; they cannot "
                       "load until a config with that key exists again.", icon=":material/warning:")
            a, b = st.columns(2)
            if a.button("Yes, remove", type="primary", key="st_remove_confirm"):
                st.session_state.pop("st_remove_pending", None)
                with errors_shown("removing failed"):
                    client.remove_storage(removing)
                    st.session_state["storage_flash"] = f"removed storage config {removing}"
                    st.rerun()
            if b.button("Cancel", key="st_remove_cancel"):
                st.session_state.pop("st_remove_pending", None)
                st.rerun()

"""Storage: the storage configs (secrets masked), adding S3/MinIO or local ones, testing them.

The table shows ``PlaneClient.list_storage()`` (``StorageConfig.masked()``: secrets reduced to a
hint, URLs without userinfo); test results are redacted by plane.storage. Secrets typed into
the form go to ``set_storage`` only and are never shown back."""

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

if configs:
    columns = ["key", "type"] + sorted({k for c in configs for k in c} - {"key", "type"})
    st.dataframe(pd.DataFrame(configs, columns=columns).fillna(""), hide_index=True, key="storage_table")
else:
    st.info("No storage config yet: models name a storage key (`default` when they name none).")

left, right = st.columns(2)

# -- add / replace -------------------------------------------------------------------------------------
with left:
    st.subheader("Add or replace a config")
    stype = st.radio("Type", ["s3", "local"], horizontal=True, key="st_type",
                     format_func=lambda t: {"s3": "S3 / MinIO", "local": "Local directory"}[t])
    with st.form("storage_form"):
        key = st.text_input("Key", value="default", key="st_key")
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
        saved = st.form_submit_button("Save", type="primary", key="st_save")
    if saved:
        with errors_shown("the storage config was not saved"):
            cfg = client.set_storage(key.strip(), stype, {k: (v.strip() if isinstance(v, str) else v)
                                                          for k, v in params.items()})
            st.session_state["storage_flash"] = f"saved storage config {cfg.key} ({cfg.type})"
            st.rerun()

# -- test / remove -------------------------------------------------------------------------------------
with right:
    st.subheader("Test a config")
    keys = [c["key"] for c in configs]
    if not keys:
        st.caption("add a config first")
    else:
        tkey = st.selectbox("Key", keys, key="st_test_key")
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
        if b.button("Remove", key="st_remove"):
            with errors_shown("removing failed"):
                client.remove_storage(tkey)
                st.session_state["storage_flash"] = f"removed storage config {tkey}"
                st.rerun()

"""Install: start and stop the embedded plane (etcd + runtime pods on this machine), and
install on Kubernetes when that support is present."""

from __future__ import annotations

import importlib.util

import pandas as pd
import streamlit as st

from dashboard import state
from dashboard.ui import errors_shown, fmt_size, fmt_time
from plane import local
from plane.settings import format_size, parse_size

st.title("Install")

flash = st.session_state.pop("install_flash", None)
if flash:
    kind, text = flash
    (st.success if kind == "ok" else st.error)(text)

cfg = state.settings()
plane = local.status(cfg.state_dir)

st.subheader("Embedded plane")
st.caption(f"state dir `{cfg.state_dir}`" + (f" · etcd from MESH_ETCD `{cfg.etcd}`" if cfg.etcd else ""))


def _progress_reporter(bar):
    def report(msg: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 1.0, text=msg)

    return report


if plane is None:
    st.info("The embedded plane is not running.")
    with st.form("up_form"):
        c1, c2 = st.columns(2)
        pods = c1.number_input("Runtime pods", min_value=1, max_value=16, value=3, step=1, key="up_pods")
        capacity = c2.text_input("Capacity per pod", value=format_size(cfg.capacity).replace(" ", ""),
                                 key="up_capacity", help="bytes or a unit: 256MiB, 1GiB")
        start = st.form_submit_button("Start the plane", type="primary", key="up_start")
    if start:
        try:
            cap = parse_size(capacity)
        except ValueError as exc:
            st.error(str(exc))
        else:
            bar = st.progress(0.0, text="starting…")
            try:
                up = local.up(cfg, pods=int(pods), capacity=cap, progress=_progress_reporter(bar))
            except local.AlreadyUp as exc:
                st.warning(str(exc))
            except Exception as exc:  # noqa: BLE001 - shown to the operator in words
                st.error(f"the plane did not start: {exc}")
            else:
                state.forget_clients()
                st.session_state["install_flash"] = (
                    "ok", f"plane up: etcd {up.etcd_endpoint}, {len(up.pods)} pod(s)")
                st.rerun()
else:
    st.success(f"Running since {fmt_time(plane.started_ms)} UTC: etcd `{plane.etcd_endpoint}` "
               f"(prefix `{plane.etcd_prefix}`), {len(plane.pods)} pod(s), "
               f"capacity {fmt_size(plane.capacity)} each.")
    rows = [{"pod": p.pod_id, "pid": p.pid, "alive": local.pid_alive(p.pid), "endpoint": p.endpoint,
             "metrics port": p.metrics_port, "log": p.log} for p in plane.pods]
    st.dataframe(pd.DataFrame(rows, columns=["pod", "pid", "alive", "endpoint", "metrics port", "log"]),
                 hide_index=True, key="install_pods", height="content")
    if st.button("Stop the plane", type="primary", key="down"):
        bar = st.progress(0.0, text="stopping…")
        stopped = local.down(cfg.state_dir, progress=_progress_reporter(bar))
        state.forget_clients()
        st.session_state["install_flash"] = ("ok", "plane stopped" if stopped else "nothing was running")
        st.rerun()

# Pods registered in etcd (also those started elsewhere, e.g. on Kubernetes).
tgt = state.target(cfg)
if tgt is not None:
    with errors_shown("cannot read the registry"):
        snap = state.snapshot()
        if snap.pods:
            st.caption("Pods registered in etcd")
            st.dataframe(pd.DataFrame([
                {"pod": p.pod_id, "endpoint": p.endpoint, "capacity": fmt_size(p.capacity),
                 "used": fmt_size(p.used), "models": p.count, "stopping": p.shutting_down}
                for p in snap.pods]), hide_index=True, key="install_registered", height="content")

st.divider()
st.subheader("Kubernetes")
if importlib.util.find_spec("plane.kube") is None:
    st.info("Kubernetes install is not available in this version of the plane yet; use `mesh up` "
            "on this machine, or the manifests when they ship.")
else:
    from dashboard import kube_section

    kube_section.render(cfg)

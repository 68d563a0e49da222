"""The Kubernetes part of the Install page: preview, install and uninstall through
:mod:`plane.kube` (the same functions as ``mesh install --kubernetes``). Imported only when
``plane.kube`` is present."""

from __future__ import annotations

import streamlit as st

from plane.settings import MeshSettings, parse_size


def _reporter(bar):
    def report(msg: str, done: int, total: int) -> None:
        bar.progress(min(1.0, done / total) if total else 1.0, text=msg)

    return report


def render(cfg: MeshSettings) -> None:
    from plane import kube

    with st.form("kube_form"):
        c1, c2, c3 = st.columns(3)
        context = c1.text_input("kubectl context", key="k_context", placeholder="the current context")
        namespace = c2.text_input("Namespace", value=kube.DEFAULT_NAMESPACE, key="k_namespace")
        image = c3.text_input("Image", value=kube.DEFAULT_IMAGE, key="k_image")
        c1, c2, c3 = st.columns(3)
        pods = c1.number_input("Pods", min_value=1, max_value=64, value=kube.DEFAULT_PODS, step=1,
                               key="k_pods")
        capacity = c2.text_input("Capacity per pod", value="256MiB", key="k_capacity")
        etcd = c3.text_input("Your etcd (optional)", key="k_etcd", placeholder="the bundled etcd")
        c1, c2 = st.columns(2)
        quickstart = c1.checkbox("Quickstart: MinIO and demo models", key="k_quickstart")
        wait = c2.checkbox("Wait for the rollout", value=True, key="k_wait")
        a, b = st.columns(2)
        preview = a.form_submit_button("Preview manifests", key="k_preview")
        install = b.form_submit_button("Install on Kubernetes", type="primary", key="k_install")

    if preview or install:
        try:
            objects = kube.render_install(
                namespace=namespace.strip(), pods=int(pods), capacity_bytes=parse_size(capacity),
                image=image.strip(), etcd_endpoint=etcd.strip() or None, quickstart=quickstart,
            )
        except ValueError as exc:
            st.error(f"cannot render the manifests: {exc}")
            return
        if preview:
            st.caption(f"{len(objects)} object(s); secret values are masked")
            st.code(kube.to_yaml(objects, mask=True), language="yaml")
        else:
            bar = st.progress(0.0, text="connecting to the cluster…")
            try:
                res = kube.install(objects, namespace=namespace.strip(), context=context.strip() or None,
                                   progress=_reporter(bar), wait=wait)
            except kube.KubeError as exc:
                st.error(str(exc))
                return
            if res.applied.errors:
                listed = "\n".join(f"- {e}" for e in res.applied.errors)
                st.error("some objects were not applied:\n\n" + listed)
            elif res.rollout is not None and not res.rollout.ready:
                st.warning(f"applied {len(res.applied.applied)} object(s), but the rollout is not ready: "
                           f"{res.rollout.message}")
            else:
                extra = f"; {res.rollout.message}" if res.rollout is not None else ""
                st.success(f"installed: {len(res.applied.applied)} object(s) applied in {namespace}{extra}")

    st.caption("Uninstall")
    c1, c2 = st.columns(2)
    delete_data = c1.checkbox("Also delete the registry volume (models, vmodels, storage configs)",
                              key="k_delete_data")
    if st.session_state.get("k_uninstall_pending"):
        st.warning(f"Remove the plane from namespace **{namespace}**?")
        a, b = st.columns(2)
        if a.button("Yes, uninstall", type="primary", key="k_uninstall_confirm"):
            st.session_state.pop("k_uninstall_pending", None)
            bar = st.progress(0.0, text="connecting to the cluster…")
            try:
                gone = kube.uninstall(namespace=namespace.strip(), context=context.strip() or None,
                                      progress=_reporter(bar), delete_data=delete_data)
            except kube.KubeError as exc:
                st.error(str(exc))
                return
            if gone.errors:
                st.error("\n".join(f"- {e}" for e in gone.errors))
            else:
                st.success(f"uninstalled: {len(gone.deleted)} object(s) deleted, "
                           f"{len(gone.missing)} already gone")
        if b.button("Cancel", key="k_uninstall_cancel"):
            st.session_state.pop("k_uninstall_pending", None)
            st.rerun()
    elif c2.button("Uninstall…", key="k_uninstall"):
        st.session_state["k_uninstall_pending"] = True
        st.rerun()

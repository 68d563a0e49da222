"""Entry point of the dashboard: ``streamlit run dashboard/app.py`` (or ``mesh dashboard``).

It declares the pages with ``st.navigation`` and shows which plane the dashboard is
looking at; each page lives in ``dashboard/views`` (not ``pages/``: Streamlit would serve a
``pages/`` directory next to the entry point as pages of its own, without this router).
"""

from __future__ import annotations

import pathlib
import sys

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402

from dashboard import state  # noqa: E402

st.set_page_config(page_title="mesh-plane", page_icon=":material/hub:", layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/placement.py", title="Placement", icon=":material/grid_on:"),
    st.Page("views/events.py", title="Events", icon=":material/timeline:"),
    st.Page("views/models.py", title="Models", icon=":material/deployed_code:"),
    st.Page("views/storage.py", title="Storage", icon=":material/database:"),
    st.Page("views/install.py", title="Install", icon=":material/power_settings_new:"),
]

page = st.navigation(PAGES)

with st.sidebar:
    tgt = state.target()
    if tgt is None:
        st.caption("no plane running")
    else:
        kind = "embedded plane" if tgt.embedded else "etcd"
        st.caption(f"{kind} `{tgt.etcd}` · prefix `{tgt.prefix}`")

page.run()

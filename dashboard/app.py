"""Entry point of the dashboard: ``streamlit run dashboard/app.py`` (or ``mesh dashboard``).

It declares the pages with ``st.navigation`` (along the top) and shows which plane the
dashboard is looking at; each page lives in ``dashboard/views`` (not ``pages/``: Streamlit would serve a
``pages/`` directory next to the entry point as pages of its own, without this router).

The page icon is drawn here, not a ``:material/…:`` name: Streamlit would have the browser
fetch such a favicon from fonts.gstatic.com, and the dashboard makes no request outside the
machine it is served from.
"""

from __future__ import annotations

import pathlib
import sys

# `streamlit run dashboard/app.py` puts dashboard/ on sys.path, not the project root.
_ROOT = pathlib.Path(__file__).resolve().parent.parent
if str(_ROOT) not in sys.path:
    sys.path.insert(0, str(_ROOT))

import streamlit as st  # noqa: E402
from PIL import Image, ImageDraw  # noqa: E402

from dashboard import state  # noqa: E402


@st.cache_resource(show_spinner=False)
def _icon() -> Image.Image:
    """A hub: one node linked to four, white on the dashboard's blue."""
    img = Image.new("RGBA", (64, 64), (0, 0, 0, 0))
    d = ImageDraw.Draw(img)
    d.rounded_rectangle((0, 0, 63, 63), radius=14, fill="#1f77b4")
    for x, y in ((16, 16), (48, 16), (16, 48), (48, 48)):
        d.line((32, 32, x, y), fill="white", width=4)
        d.ellipse((x - 6, y - 6, x + 6, y + 6), fill="white")
    d.ellipse((23, 23, 41, 41), fill="white")
    return img


st.set_page_config(page_title="mesh-plane", page_icon=_icon(), layout="wide")

PAGES = [
    st.Page("views/overview.py", title="Overview", icon=":material/monitoring:", default=True),
    st.Page("views/placement.py", title="Placement", icon=":material/grid_on:"),
    st.Page("views/events.py", title="Events", icon=":material/timeline:"),
    st.Page("views/models.py", title="Models", icon=":material/deployed_code:"),
    st.Page("views/storage.py", title="Storage", icon=":material/database:"),
    st.Page("views/install.py", title="Install", icon=":material/power_settings_new:"),
]

# Navigation along the top: the pages get the window's whole width, so wide tables show every column.
page = st.navigation(PAGES, position="top")

tgt = state.target()
if tgt is None:
    st.caption("no plane running")
else:
    kind = "embedded plane" if tgt.embedded else "etcd"
    st.caption(f"{kind} `{tgt.etcd}` · prefix `{tgt.prefix}`")

page.run()

"""mesh-plane's browser dashboard (Streamlit).

``mesh dashboard`` starts it through :mod:`dashboard.launch`. The pages call the same
:class:`plane.api.PlaneClient` functions as the CLI and the console; figures are built by
the pure functions in :mod:`dashboard.figures`.
"""

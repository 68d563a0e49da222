"""``python -m plane.pod``: run one pod in the foreground (settings from ``MESH_*``)."""

from plane.pod.server import main

main()

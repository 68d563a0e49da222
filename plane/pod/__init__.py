"""The runtime pod: one process serving KServe V2 inference and the ModelMesh management API,
built from parts that each own one concern (``server`` lists them)."""

from plane.pod.errors import HOP_HEADER, MeshError
from plane.pod.server import Pod, main, serve

__all__ = ["Pod", "MeshError", "main", "serve", "HOP_HEADER"]

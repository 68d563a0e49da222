"""The end of an embedded pod's log file, for the pod view.

The embedded plane records each pod's log path in ``<state dir>/plane.json``
(:meth:`plane.local.LocalPlane.load`). Pods of a Kubernetes install log to their container;
for them the view says where to look instead. Called from a thread worker: it reads files.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass, field

from plane import local

__all__ = ["LogTail", "find_log", "tail_lines", "read_tail", "TAIL_LINES"]

TAIL_LINES = 50
TAIL_BYTES = 64 * 1024  # read at most this much from the end of the file


@dataclass
class LogTail:
    """What the pod view shows: the path (empty when there is none) and the lines, or why not."""

    path: str = ""
    lines: list[str] = field(default_factory=list)
    note: str = ""


def find_log(state_dir: pathlib.Path, pod_id: str) -> tuple[str, str]:
    """(log path, "") of an embedded pod, or ("", why there is none)."""
    plane = local.LocalPlane.load(state_dir)
    if plane is None:
        return "", (f"no embedded plane in {state_dir}: a pod of a Kubernetes install logs to its container "
                    f"(kubectl logs {pod_id})")
    for pod in plane.pods:
        if pod.pod_id == pod_id:
            return pod.log or str(pathlib.Path(state_dir) / "logs" / f"{pod_id}.log"), ""
    return "", f"{pod_id} is not one of the embedded plane's pods ({' '.join(p.pod_id for p in plane.pods)})"


def tail_lines(path: pathlib.Path, lines: int = TAIL_LINES, max_bytes: int = TAIL_BYTES) -> list[str]:
    """The last ``lines`` lines of a text file (reading only its end)."""
    with open(path, "rb") as f:
        f.seek(0, 2)
        size = f.tell()
        f.seek(max(0, size - max_bytes))
        data = f.read()
    text = data.decode("utf-8", errors="replace").splitlines()
    if size > max_bytes and text:
        text = text[1:]  # the first line read is cut
    return text[-lines:]


def read_tail(state_dir: pathlib.Path, pod_id: str, lines: int = TAIL_LINES) -> LogTail:
    path, note = find_log(state_dir, pod_id)
    if not path:
        return LogTail(note=note)
    try:
        return LogTail(path, tail_lines(pathlib.Path(path), lines))
    except OSError as exc:
        return LogTail(path, note=f"cannot read {path}: {exc.strerror or exc}")

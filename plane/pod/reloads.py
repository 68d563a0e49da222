"""Loading a model again from the file its last load used, on the event loop.

Most misses of a busy pod are models it held a while ago and evicted. When the last load of a
model read its file from local storage, the file is unchanged (same identity:
:func:`plane.size_memo.file_identity`) and its size is known and small (measured at an earlier
load, at most ``INLINE_MAX_BYTES``: a session that holds little takes little building), the next
load skips the storage lookup and builds the session right on the event loop, as a small request
runs inline. With the loop busy serving, a hop to a worker thread and back waits for the GIL and
for a core twice: 4-50 ms measured on a shared 2-core machine, against 0.5-1 ms for the build of
a demo model on the loop. A model whose build on the loop took longer than ``INLINE_BUILD_MS`` is
built on a load slot's thread from then on. Anything else (another storage type, a changed file
or config, a size not yet measured, another build in progress) loads through the storage lookup
and a load slot.
"""

from __future__ import annotations

import pathlib
from dataclasses import dataclass
from typing import Any

from plane import size_memo

__all__ = ["Reloads", "INLINE_BUILD_MS", "INLINE_MAX_BYTES", "origin"]

INLINE_MAX_BYTES = 1 << 20  # sessions measured at most this large may be built on the event loop
INLINE_BUILD_MS = 2.0  # a build on the loop that took longer than this sends the model back to the threads


def origin(rec: Any, cfg: Any) -> tuple:
    """What a file was fetched for: the model's storage key, that key's config, path and type."""
    return rec.key, cfg.type, cfg.to_json(), rec.path, rec.type


@dataclass
class _Last:
    origin: tuple
    path: pathlib.Path
    context: tuple  # what file_identity() was given besides the path
    identity: tuple
    inline_ms: float | None  # how long its last build on the event loop took (None: never built there)


class Reloads:
    """Per model: where its last load found its file, and how long the session took to build."""

    def __init__(self, limit_ms: float = INLINE_BUILD_MS):
        self.limit_ms = limit_ms
        self._last: dict[str, _Last] = {}

    def note(self, model_id: str, where: tuple, path: pathlib.Path, source: str, context: tuple,
             identity: tuple | None, build_ms: float | None) -> None:
        """What a successful load of ``model_id`` read (``source`` as storage named it) and, for a
        build on the event loop, how long the build took (``build_ms``; None for a thread's)."""
        if source != "local" or identity is None:
            self._last.pop(model_id, None)
            return
        before = self._last.get(model_id)
        if build_ms is None and before is not None and before.identity == identity:
            build_ms = before.inline_ms
        self._last[model_id] = _Last(where, pathlib.Path(path), context, identity, build_ms)

    def quick(self, model_id: str, where: tuple) -> pathlib.Path | None:
        """The local file to build from on the event loop, or None (load the usual way)."""
        last = self._last.get(model_id)
        if last is None or last.origin != where or (last.inline_ms or 0.0) > self.limit_ms:
            return None
        known = size_memo.size_of(last.identity)
        if known is None or known[0] > INLINE_MAX_BYTES:
            return None
        if size_memo.file_identity(last.path, *last.context) != last.identity:
            return None  # replaced, changed or gone: ask storage again
        return last.path

    def forget(self, model_id: str) -> None:
        self._last.pop(model_id, None)

"""Live pages that redraw only when what they show changed, and figures built once per snapshot.

A page with a live refresh used to be one ``st.fragment(run_every=N)`` that rebuilt and re-sent
every figure every N seconds. In the browser each new figure is drawn again by plotly.js, which
at 5,000 models costs more than the refresh interval on a busy 2-core machine: a page that took
3 s to draw was redrawn while it drew. Now a page draws once, in its ordinary run, and leaves a
small watcher (:func:`redraw_when_changed`): every N seconds it works out what the page would
draw now, as a digest, and reruns the page only when that differs from what was drawn. An idle
plane costs one cheap check per tick; a plane that changes redraws as before.

What a page draws is computed once per (snapshot, settings) and shared by the page run, the
watcher and every browser session (:func:`memo`): the cached snapshot is one object for its
TTL (:mod:`dashboard.state`), so its identity keys the figures built from it.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Iterable
from typing import Any, TypeVar

import plotly.io as pio
import streamlit as st

__all__ = ["MEMO_SIZE", "digest", "memo", "redraw_when_changed"]

T = TypeVar("T")
MEMO_SIZE = 32  # (snapshot, settings) pairs kept: a few sessions with their own settings each

_memo: OrderedDict[tuple, tuple[Any, Any]] = OrderedDict()
_memo_lock = threading.Lock()


def memo(source: Any, key: Hashable, build: Callable[[], T]) -> T:
    """``build()``, computed once for the object ``source`` (a snapshot, a list of records) and
    ``key`` (the settings it depends on). Entries hold ``source`` itself, so its ``id`` is never
    reused while they live; the least recently used go first."""
    k = (id(source), key)
    with _memo_lock:
        hit = _memo.get(k)
        if hit is not None and hit[0] is source:
            _memo.move_to_end(k)
            return hit[1]
    value = build()
    with _memo_lock:
        _memo[k] = (source, value)
        _memo.move_to_end(k)
        while len(_memo) > MEMO_SIZE:
            _memo.popitem(last=False)
    return value


def digest(parts: Iterable[Any]) -> str:
    """A short digest of what a page draws: plotly figures by their JSON, anything else by repr."""
    h = hashlib.blake2b(digest_size=12)
    for part in parts:
        text = pio.to_json(part, validate=False) if hasattr(part, "to_plotly_json") else repr(part)
        h.update(text.encode())
        h.update(b"\0")
    return h.hexdigest()


def redraw_when_changed(drawn: str, probe: Callable[[], str], *, every: float | None,
                        note: Callable[[], None] | None = None) -> None:
    """Leave a watcher in the page: every ``every`` seconds (never when None) ``probe()`` gives
    the digest of what the page would draw now, and the page reruns when it is not ``drawn``.
    ``note()`` draws what may change on every tick without a redraw (the snapshot's time)."""

    first = [True]  # the call below runs it once within the page's run: nothing to compare yet

    @st.fragment(run_every=every)
    def watch() -> None:
        if first[0]:
            first[0] = False
        elif probe() != drawn:
            st.rerun(scope="app")
        if note is not None:
            note()

    watch()

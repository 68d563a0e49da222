"""A model's size measured once per file, and which builds may overlap.

Measuring a session (:func:`plane.runtime.measure`) costs a multiple of loading it: allocator
readings around the build and, for sessions under 4 MiB, three builds to take the median. A
pod that evicts and loads the same file again learns nothing new from measuring it again, so
the measured figure is kept per *file identity* (:func:`file_identity`: the model's type and
load options, the file's device, inode, size and modification time). A load
inside :func:`measured_once` for a known identity builds its session once, unmeasured, and
reports the size measured at the first load of that file (``SizeMemo.reused`` says so, and the
pod's ``loaded`` event names it); a load of an unknown identity measures, and the figure is kept
when the load succeeds. A file that is replaced gets a new identity (inode or mtime change) and
is measured again. Directories are never remembered (their files may change under an unchanged
directory entry).

The allocator's count is process-wide, so a measured build must run alone; builds whose size is
known may run side by side (:class:`BuildLock`: shared for unmeasured builds, exclusive for
measured ones, measured ones first when both wait). A load that must not wait (a pod building on
its event loop: ``measured_once(key, inline=True)``) gets :class:`BuildBusy` instead of waiting for a
measured build, or instead of measuring.
"""

from __future__ import annotations

import contextvars
import os
import stat
import threading
from collections import OrderedDict
from collections.abc import Hashable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

__all__ = ["BuildBusy", "BuildLock", "SizeMemo", "current", "file_identity", "forget_all", "measured_once", "size_of",
           "MEMO_MAX"]

MEMO_MAX = 4096  # identities remembered (least recently used forgotten first); a few dozen bytes each

_sizes: OrderedDict[Hashable, tuple[int, str]] = OrderedDict()
_guard = threading.Lock()
_current: contextvars.ContextVar[SizeMemo | None] = contextvars.ContextVar("mesh_size_memo", default=None)


class BuildBusy(Exception):
    """A build that may not wait would have had to (a measured build runs, or it must measure)."""


class BuildLock:
    """Readers-writer lock: measured builds exclusive, builds of known size shared."""

    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._shared = 0
        self._exclusive = False
        self._waiting = 0  # exclusive waiters; new shared holders queue behind them

    @contextmanager
    def exclusive(self) -> Iterator[None]:
        with self._cond:
            self._waiting += 1
            while self._exclusive or self._shared:
                self._cond.wait()
            self._waiting -= 1
            self._exclusive = True
        try:
            yield
        finally:
            with self._cond:
                self._exclusive = False
                self._cond.notify_all()

    @contextmanager
    def shared(self, *, blocking: bool = True) -> Iterator[None]:
        with self._cond:
            while self._exclusive or self._waiting:
                if not blocking:
                    raise BuildBusy("a measured build is in progress")
                self._cond.wait()
            self._shared += 1
        try:
            yield
        finally:
            with self._cond:
                self._shared -= 1
                if not self._shared:
                    self._cond.notify_all()


@dataclass
class SizeMemo:
    """One load's view of the memo: the figure known at its start, what it measured."""

    key: Hashable
    known: tuple[int, str] | None  # (delta, method) measured at an earlier load of this file
    inline: bool = False  # the load may not wait for another build, nor measure
    measured: tuple[int, str] | None = None
    reused: bool = False  # the load took ``known`` instead of measuring


def file_identity(path: os.PathLike | str, *context: Hashable) -> tuple | None:
    """What makes two loads the same: ``context`` (model type, load options) and the file's
    device, inode, size and mtime (symbolic links followed: any path to the same unchanged file
    names the same file). None for a directory or an unreadable path."""
    try:
        st = os.stat(path)
    except OSError:
        return None
    if not stat.S_ISREG(st.st_mode):
        return None
    return (*context, st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)


@contextmanager
def measured_once(key: Hashable | None, *, inline: bool = False) -> Iterator[SizeMemo | None]:
    """Within this block (on the loading thread), :func:`plane.runtime.measure` reuses the size
    measured at an earlier successful load of ``key``, or measures and, if the block ends without
    an exception, remembers it. ``key`` None: measure, remember nothing. ``inline``: raise
    :class:`BuildBusy` rather than wait for a measured build or measure."""
    if key is None:
        if inline:
            raise BuildBusy("nothing is known about this file")
        yield None
        return
    with _guard:
        known = _sizes.get(key)
        if known is not None:
            _sizes.move_to_end(key)
    memo = SizeMemo(key, known, inline)
    token = _current.set(memo)
    try:
        yield memo
        if memo.known is None and memo.measured is not None:
            with _guard:
                _sizes[key] = memo.measured
                while len(_sizes) > MEMO_MAX:
                    _sizes.popitem(last=False)
    finally:
        _current.reset(token)


def size_of(key: Hashable | None) -> tuple[int, str] | None:
    """``(delta, method)`` remembered for ``key``, if any."""
    return None if key is None else _sizes.get(key)


def current() -> SizeMemo | None:
    """The memo of the load running in this context, if any."""
    return _current.get()


def forget_all() -> None:
    """Drop every remembered size (tests; a pod never needs to)."""
    with _guard:
        _sizes.clear()

"""Local copies of pulled model files: the bounded per-pod disk cache, and scratch files for
when that cache cannot be written (a full or read-only disk must not stop loads from storage).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import pathlib
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["DiskCache", "scratch_file", "scratch_root", "release_model_file", "fs_reason", "is_fs_error",
           "SCRATCH_MAX_AGE_S"]

SCRATCH_MAX_AGE_S = 900  # scratch downloads (no usable disk cache) older than this are swept


# -- the disk cache -------------------------------------------------------------------------------------------


def fs_reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def is_fs_error(exc: BaseException) -> bool:
    """A local file system fault (full, read-only, no permission), not a network one."""
    return isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError) and bool(exc.errno)


class DiskCache:
    """A bounded directory of pulled model files, least recently used removed first.

    Entries are keyed by (storage key, path, etag/size) so a changed object is fetched anew.
    Safe for several threads of one process; pods on one machine each get their own folder.
    A folder that cannot be created or written raises nothing here: ``fault`` says why (None
    once a write works again: every write retries the folder), ``put`` raises ``OSError``.
    """

    def __init__(self, root: pathlib.Path, max_bytes: int):
        self.root = pathlib.Path(root)
        self.max_bytes = max_bytes
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0
        self.fault: str | None = None
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            self.fault = fs_reason(exc)

    def _entry(self, ident: str) -> pathlib.Path:
        return self.root / hashlib.sha256(ident.encode()).hexdigest()[:32]

    def get(self, ident: str) -> pathlib.Path | None:
        entry = self._entry(ident)
        if entry.is_file():
            with contextlib.suppress(OSError):  # a read-only disk still serves what it holds
                os.utime(entry)  # touch: mark as recently used
            self.hits += 1
            return entry
        return None

    def put(self, ident: str, writer: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """Create the entry with ``writer(tmp_path)`` then move it in place atomically."""
        self.misses += 1
        entry = self._entry(ident)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".part-")
            os.close(fd)
        except OSError as exc:
            self.fault = fs_reason(exc)
            raise
        try:
            writer(pathlib.Path(tmp))
            os.replace(tmp, entry)
        except OSError as exc:
            if is_fs_error(exc):
                self.fault = fs_reason(exc)
            raise
        finally:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
        self.fault = None
        self.trim()
        return entry

    def _files(self) -> list[pathlib.Path]:
        try:
            return [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
        except OSError:
            return []

    def size(self) -> int:
        total = 0
        for p in self._files():
            with contextlib.suppress(OSError):
                total += p.stat().st_size
        return total

    def trim(self) -> None:
        with self._lock, contextlib.suppress(OSError):
            files = sorted(((p.stat().st_mtime, p.stat().st_size, p) for p in self._files()), key=lambda t: t[0])
            total = sum(size for _, size, _ in files)
            # Keep at least the newest file even if it alone exceeds the bound.
            while total > self.max_bytes and len(files) > 1:
                _, size, victim = files.pop(0)
                total -= size
                victim.unlink(missing_ok=True)


# -- scratch files: downloads that could not go to the disk cache -----------------------------------------


def scratch_root() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir()) / f"mesh-fetch-{os.getpid()}"


def scratch_file(path: str) -> pathlib.Path:
    """A new empty file outside the disk cache (old ones left behind are swept)."""
    root = scratch_root()
    root.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - SCRATCH_MAX_AGE_S
    for old in root.iterdir():
        with contextlib.suppress(OSError):
            if old.stat().st_mtime < cutoff:
                old.unlink()
    fd, name = tempfile.mkstemp(dir=root, prefix="model-", suffix=pathlib.PurePosixPath(path).suffix)
    os.close(fd)
    return pathlib.Path(name)


def release_model_file(path: pathlib.Path | str) -> bool:
    """Delete a scratch file of :func:`fetch_model_file` once loaded (whether it deleted one).
    Disk-cache entries and local storage files are never touched."""
    p = pathlib.Path(path)
    with contextlib.suppress(FileNotFoundError):
        if p.parent == scratch_root():
            p.unlink()
            return True
    return False

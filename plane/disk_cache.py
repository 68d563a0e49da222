"""Local copies of pulled models: the bounded per-pod disk cache, and scratch space for when that
cache cannot be written (a full or read-only disk must not stop loads from storage).

An entry is a file (a model pulled as one object) or a directory (a model pulled as a directory:
an S3 prefix, keeping its layout, e.g. an ONNX file and its external data, or a model file and its
``model-settings.json``). A directory entry is filled under a temporary name and renamed into
place, so a reader never sees half of one; it is accounted and evicted as one entry.
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import os
import pathlib
import shutil
import stat
import tempfile
import threading
import time
from collections.abc import Callable

__all__ = ["DiskCache", "scratch_file", "scratch_dir", "scratch_root", "release_model_file", "fs_reason",
           "is_fs_error", "tree_size", "SCRATCH_MAX_AGE_S"]

SCRATCH_MAX_AGE_S = 900  # scratch downloads (no usable disk cache) older than this are swept
PART_MAX_AGE_S = 3600  # half-written entries left by a killed process are swept after this


def fs_reason(exc: OSError) -> str:
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or type(exc).__name__}{where}"


def is_fs_error(exc: BaseException) -> bool:
    """A local file system fault (full, read-only, no permission), not a network one."""
    return isinstance(exc, OSError) and not isinstance(exc, ConnectionError | TimeoutError) and bool(exc.errno)


def tree_size(path: pathlib.Path) -> int:
    """Bytes of a file, or of every file under a directory (symlinks not followed, not counted)."""
    p = pathlib.Path(path)
    if p.is_symlink():
        return 0
    if p.is_file():
        return p.stat().st_size
    total = 0
    for dirpath, _dirs, files in os.walk(p):
        for name in files:
            with contextlib.suppress(OSError):
                st = os.lstat(os.path.join(dirpath, name))
                if stat.S_ISREG(st.st_mode):
                    total += st.st_size
    return total


def _remove(path: pathlib.Path) -> None:
    if path.is_symlink() or path.is_file():
        path.unlink(missing_ok=True)
    elif path.is_dir():
        shutil.rmtree(path, ignore_errors=True)


# -- the disk cache -------------------------------------------------------------------------------------------


class DiskCache:
    """A bounded directory of pulled models (files or directories), least recently used removed first.

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
        """The entry (file or directory), touched as recently used; None if there is none. A
        remembered version-less name (:meth:`remember`) gives the entry it points at."""
        entry = self._entry(ident)
        if entry.is_symlink():
            entry = entry.resolve()
        if entry.is_file() or entry.is_dir():
            with contextlib.suppress(OSError):  # a read-only disk still serves what it holds
                os.utime(entry)  # touch: mark as recently used
            self.hits += 1
            return entry
        return None

    def put(self, ident: str, writer: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """Create a file entry with ``writer(tmp_path)`` then move it in place atomically."""
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

    def put_dir(self, ident: str, writer: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """Create a directory entry: ``writer(tmp_dir)`` fills an empty temporary directory, which
        is then renamed into place (when the same entry appeared meanwhile, that one is kept)."""
        self.misses += 1
        entry = self._entry(ident)
        try:
            self.root.mkdir(parents=True, exist_ok=True)
            tmp = pathlib.Path(tempfile.mkdtemp(dir=self.root, prefix=".part-"))
        except OSError as exc:
            self.fault = fs_reason(exc)
            raise
        try:
            writer(tmp)
            try:
                os.rename(tmp, entry)
            except OSError as exc:
                if not (entry.is_dir() and exc.errno in (errno.EEXIST, errno.ENOTEMPTY)):
                    raise
            os.utime(entry)  # the rename keeps the temporary directory's time: mark it newest
        except OSError as exc:
            if is_fs_error(exc):
                self.fault = fs_reason(exc)
            raise
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        self.fault = None
        self.trim()
        return entry

    def remember(self, ident: str, entry: pathlib.Path) -> None:
        """Make ``entry`` reachable under ``ident`` too (the newest version of a path, served when
        its storage is unreachable): a hard link to a file entry, a symlink to a directory entry.
        Best effort: the entry itself is in place whatever happens here."""
        last = self._entry(ident)
        with contextlib.suppress(OSError):
            _remove(last)
            if entry.is_dir():
                os.symlink(entry.name, last)  # relative: the cache folder may move
                return
            try:
                os.link(entry, last)
            except OSError:
                shutil.copyfile(entry, last)

    def _entries(self) -> list[pathlib.Path]:
        try:
            return [p for p in self.root.iterdir()
                    if not p.name.startswith(".") and not p.is_symlink() and (p.is_file() or p.is_dir())]
        except OSError:
            return []

    def size(self) -> int:
        total = 0
        for p in self._entries():
            with contextlib.suppress(OSError):
                total += tree_size(p)
        return total

    def trim(self) -> None:
        """Remove the least recently used entries, whole, until the cache fits its bound."""
        with self._lock, contextlib.suppress(OSError):
            entries = []
            for p in self._entries():
                with contextlib.suppress(OSError):
                    entries.append((p.stat().st_mtime, tree_size(p), p))
            entries.sort(key=lambda t: t[0])
            total = sum(size for _, size, _ in entries)
            # Keep at least the newest entry even if it alone exceeds the bound.
            while total > self.max_bytes and len(entries) > 1:
                _, size, victim = entries.pop(0)
                total -= size
                _remove(victim)
            self._sweep()

    def _sweep(self) -> None:
        """Drop links whose entry was evicted and temporary entries a killed process left."""
        cutoff = time.time() - PART_MAX_AGE_S
        for p in self.root.iterdir():
            with contextlib.suppress(OSError):
                if p.is_symlink() and not p.exists():
                    p.unlink()
                elif p.name.startswith(".part-") and p.lstat().st_mtime < cutoff:
                    _remove(p)


# -- scratch space: downloads that could not go to the disk cache -----------------------------------------


def scratch_root() -> pathlib.Path:
    return pathlib.Path(tempfile.gettempdir()) / f"mesh-fetch-{os.getpid()}"


def _scratch() -> pathlib.Path:
    root = scratch_root()
    root.mkdir(mode=0o700, exist_ok=True)
    cutoff = time.time() - SCRATCH_MAX_AGE_S
    for old in root.iterdir():
        with contextlib.suppress(OSError):
            if old.lstat().st_mtime < cutoff:
                _remove(old)
    return root


def scratch_file(path: str) -> pathlib.Path:
    """A new empty file outside the disk cache (old ones left behind are swept)."""
    fd, name = tempfile.mkstemp(dir=_scratch(), prefix="model-", suffix=pathlib.PurePosixPath(path).suffix)
    os.close(fd)
    return pathlib.Path(name)


def scratch_dir() -> pathlib.Path:
    """A new empty directory outside the disk cache, for a model pulled as a directory."""
    return pathlib.Path(tempfile.mkdtemp(dir=_scratch(), prefix="model-"))


def release_model_file(path: pathlib.Path | str) -> bool:
    """Delete a scratch file or directory of :func:`fetch_model_file` once loaded (whether it
    deleted one). Disk-cache entries and local storage files are never touched."""
    p = pathlib.Path(path)
    if p.parent != scratch_root():
        return False
    if p.is_dir() and not p.is_symlink():
        shutil.rmtree(p, ignore_errors=True)
        return True
    with contextlib.suppress(FileNotFoundError):
        p.unlink()
        return True
    return False

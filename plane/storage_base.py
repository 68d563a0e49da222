"""What every storage type shares: the error type, path safety, and putting a download in the
disk cache (or, when the cache cannot be written, in scratch space) — :mod:`plane.storage` is the
public face; :mod:`plane.storage_s3` and :mod:`plane.storage_http` build on this module.
"""

from __future__ import annotations

import pathlib
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field

from plane.disk_cache import (
    DiskCache,
    fs_reason,
    release_model_file,
    scratch_dir,
    scratch_file,
    scratch_root,
)

__all__ = ["StorageError", "StorageTestResult", "check_relative_path", "object_path", "check_layout", "safe_join",
           "store"]


class StorageError(Exception):
    """A model file could not be found or fetched; the message says why and what to do."""


@dataclass
class StorageTestResult:
    """What ``mesh storage test`` reports."""

    ok: bool
    message: str
    objects: list[str] = field(default_factory=list)


def check_relative_path(path: str) -> str:
    """Refuse paths that could leave the storage root."""
    if not path or path.strip() != path:
        raise StorageError(f"model path {path!r} must be a non-empty path without surrounding spaces")
    if path.startswith(("/", "\\")) or (len(path) > 1 and path[1] == ":"):
        raise StorageError(f"model path {path!r} is absolute: give a path relative to the storage root")
    parts = pathlib.PurePosixPath(path.replace("\\", "/")).parts
    if any(p == ".." for p in parts):
        raise StorageError(f"model path {path!r} leaves the storage root ('..' is not allowed)")
    if "\0" in path:
        raise StorageError("model path contains a NUL byte")
    return path


def object_path(key: str, prefix: str) -> str | None:
    """Where the object ``key`` goes inside the local copy of the directory ``prefix`` (a relative
    path), or None for a directory marker (a key ending in ``/``). A key whose rest could leave
    the directory (``..``, absolute, backslashes, NUL) is refused, naming the key."""
    if not key.startswith(prefix):
        raise StorageError(f"object {key!r} is not under the model directory {prefix!r}")
    rest = key[len(prefix):]
    if not rest or rest.endswith("/"):
        return None
    if "\\" in rest or "\0" in rest or rest.startswith("/"):
        raise StorageError(f"object {key!r} has a name that cannot be stored safely: refused")
    parts = [p for p in rest.split("/") if p not in ("", ".")]
    if any(p == ".." for p in parts) or not parts:
        raise StorageError(f"object {key!r} would leave the model directory ('..' in its name): refused")
    return "/".join(parts)


def check_layout(paths: Iterable[str]) -> None:
    """Refuse a listing where two objects land on one local path, or where one object's path is
    another's directory (``m/x`` and ``m/x/y``): no file system can hold both."""
    files: set[str] = set()
    dirs: set[str] = set()
    for rel in paths:
        if rel in files or rel in dirs:
            raise StorageError(f"two objects of the model directory map to {rel!r}: refused")
        files.add(rel)
        parent = pathlib.PurePosixPath(rel).parent
        while str(parent) not in (".", ""):
            dirs.add(str(parent))
            parent = parent.parent
    clash = files & dirs
    if clash:
        raise StorageError(f"{sorted(clash)[0]!r} is both an object and a directory of the model: refused")


def safe_join(root: pathlib.Path, rel: str) -> pathlib.Path:
    """``root / rel``, refusing anything that resolves outside ``root``."""
    base = pathlib.Path(root).resolve()
    target = (base / rel).resolve()
    if base not in target.parents:
        raise StorageError(f"path {rel!r} resolves outside the model directory: refused")
    return target


def store(cache: DiskCache | None, ident: str, last_ident: str, write: Callable[[pathlib.Path], None], *,
          directory: bool, what: str, key: str, origin: str,
          warn: Callable[[str], None] | None = None) -> tuple[pathlib.Path, str]:
    """Run ``write(dest)`` into a new disk-cache entry (a directory entry when ``directory``) and
    return ``(entry, origin)``. When the cache folder cannot be written, the download goes to
    scratch space instead: ``(scratch path, "<origin> (disk cache unavailable: <reason>)")`` and
    ``warn`` gets a sentence for the operator; release it with :func:`release_model_file`.
    ``write`` raises ``OSError`` only for local file-system faults (network failures are
    ``StorageError``s)."""
    fault = ""
    if cache is not None:
        try:
            entry = (cache.put_dir if directory else cache.put)(ident, write)
        except OSError as exc:
            fault = fs_reason(exc)
        else:
            cache.remember(last_ident, entry)
            return entry, origin
    kind = "directory" if directory else "file"
    scratch: pathlib.Path | None = None
    try:
        scratch = scratch_dir() if directory else scratch_file(what)
        write(scratch)
    except BaseException as exc:
        if scratch is not None:
            release_model_file(scratch)
        if not isinstance(exc, OSError):
            raise
        where = f"the disk cache is unavailable ({fault}) and " if fault else ""
        raise StorageError(f"cannot store model {kind} {what!r} locally: {where}the scratch folder "
                           f"{scratch_root()} cannot be written ({fs_reason(exc)})") from None
    if not fault:
        return scratch, origin
    if warn is not None:
        warn(f"disk cache {cache.root if cache else ''} unavailable ({fault}): model {kind} {what!r} of storage "
             f"{key!r} was downloaded past the cache; it will be downloaded again at every load until the "
             "cache folder can be written")
    return scratch, f"{origin} (disk cache unavailable: {fault})"

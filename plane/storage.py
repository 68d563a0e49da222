"""Where models come from: a local directory, a PVC, an S3 endpoint or an HTTP(S) server,
through a disk cache.

A model names a storage key (``default`` when it names none) and a path inside it. The key's
config (SPEC section 4 format) lives in the registry. The path names a file, or a directory
(an S3 prefix) pulled whole: an ONNX model with its external data, a model file with its
``model-settings.json``; :mod:`plane.runtimes.files` then picks the file to load.

* ``local`` (``path``: a directory) and ``pvc`` (``name``: a volume the pods mount at
  ``<MESH_PVC_ROOT>/<name>``, ModelMesh's ``/pvc_mounts/<name>`` by default): files and
  directories are used where they are, never copied.
* ``s3`` (:mod:`plane.storage_s3`): an object, or every object under a prefix, downloaded into the
  disk cache (a directory entry is filled under a temporary name, then renamed into place).
* ``http``/``https`` (:mod:`plane.storage_http`): the file at ``url`` + ``/`` + path.

Pulled models are kept in a bounded local disk cache (:mod:`plane.disk_cache`), so an evicted
model reloads from local disk instead of being downloaded again; when the cache folder cannot be
written (permissions, full or read-only disk) the download goes to scratch space outside it and
the caller is told. Paths are relative to the storage root: ``..``, absolute paths, symlinks that
leave the root and object keys that would leave the model directory are refused. Every message
built here (``StorageError``, ``test_config``) is redacted (plane.secrets): no secret, no header
value and no URL userinfo, whatever boto3/botocore or the HTTP server put in their texts.
"""

from __future__ import annotations

import contextlib
import functools
import os
import pathlib
import re
from collections.abc import Callable, Iterator
from typing import Any, ParamSpec, TypeVar

from plane import secrets, storage_http, storage_s3
from plane.disk_cache import DiskCache, release_model_file
from plane.records import StorageConfig
from plane.settings import MeshSettings
from plane.storage_base import StorageError, StorageTestResult, check_relative_path

__all__ = [
    "StorageError",
    "StorageTestResult",
    "redact",
    "validate_config",
    "test_config",
    "check_relative_path",
    "DiskCache",
    "fetch_model_file",
    "release_model_file",
    "object_size",
    "s3_head",
    "pvc_root",
    "DEFAULT_PVC_ROOT",
    "UNSUPPORTED_TYPES",
]

UNSUPPORTED_TYPES = ("gcs", "azure")  # ModelMesh types this plane cannot read: refused, not stored
# where modelmesh-serving mounts each PVC (/pvc_mounts/<name>): plane.settings' pvc_root default
DEFAULT_PVC_ROOT = str(MeshSettings.model_fields["pvc_root"].default)
MAX_DIR_FILES = 10_000  # a local model directory with more files is refused: most likely a wrong path
_PVC_NAME = re.compile(r"^[A-Za-z0-9](?:[A-Za-z0-9._-]{0,251}[A-Za-z0-9])?$")
_s3_client = storage_s3.s3_client  # used by plane.kube to upload demo models


def pvc_root() -> pathlib.Path:
    """Where this process finds mounted PVCs: ``MESH_PVC_ROOT`` (plane.settings), default /pvc_mounts."""
    return pathlib.Path(os.environ.get("MESH_PVC_ROOT") or DEFAULT_PVC_ROOT)


def redact(text: str, cfg: StorageConfig) -> str:
    """``text`` without this config's secrets (those read from ``*_env`` too) or URL userinfo."""
    refs = [cfg.params.get(f"{n}_env") for n in ("access_key_id", "secret_access_key")]
    return secrets.redact(text, cfg.params, cfg.type, extra=[os.environ.get(str(r), "") for r in refs if r])


@contextlib.contextmanager
def _redacted_errors(cfg: StorageConfig) -> Iterator[None]:
    """Failures leave as a ``StorageError`` with a redacted text and no chained exception
    (botocore's texts embed the endpoint URL, userinfo included)."""
    try:
        yield
    except StorageError as exc:
        raise StorageError(redact(str(exc), cfg)) from None
    except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence for the operator
        text = storage_s3.describe_error(exc, cfg) if cfg.type == "s3" else f"{type(exc).__name__}: {exc}"
        raise StorageError(redact(text, cfg)) from None


_P = ParamSpec("_P")
_R = TypeVar("_R")


def _redacting(fn: Callable[_P, _R]) -> Callable[_P, _R]:
    @functools.wraps(fn)
    def wrapper(*args: _P.args, **kwargs: _P.kwargs) -> _R:
        cfg = args[0]
        assert isinstance(cfg, StorageConfig)
        with _redacted_errors(cfg):
            return fn(*args, **kwargs)

    return wrapper


def validate_config(key: str, type: str, params: dict[str, Any]) -> StorageConfig:
    """Check a storage config and normalise it (``bucket`` becomes ``default_bucket``, ``https``
    becomes ``http``, a local path becomes absolute)."""
    from plane.operations import ValidationError, validate_model_id

    validate_model_id(key, what="storage key")
    type = (type or "").lower()
    type = "http" if type == "https" else type
    params = {k: v for k, v in params.items() if v is not None and v != ""}
    if type == "local":
        root = params.get("path") or params.get("root")
        if not root:
            raise ValidationError("a local storage config needs 'path': the directory that holds the models")
        params = {"path": str(pathlib.Path(root).expanduser().resolve())}
    elif type == "s3":
        params = storage_s3.validate(params)
    elif type == "http":
        params = storage_http.validate(params)
    elif type == "pvc":
        name = params.get("name")
        if not name:
            raise ValidationError(f"a pvc storage config needs 'name': the PersistentVolumeClaim the pods mount at "
                                  f"<MESH_PVC_ROOT>/<name> (default {DEFAULT_PVC_ROOT}/<name>)")
        if not isinstance(name, str) or not _PVC_NAME.match(name):
            raise ValidationError(f"pvc name {str(name)[:64]!r} must be a volume name: letters, digits, '.', '-' "
                                  "and '_', no '/'")
        params = {"name": name}
    elif type in UNSUPPORTED_TYPES:
        raise ValidationError(f"storage type {type!r} is not supported by this plane yet: use s3 (any "
                              "S3-compatible endpoint, e.g. GCS's XML API with HMAC keys), local, http or pvc")
    else:
        raise ValidationError(f"unknown storage type {type!r}: use local, s3, http (or https) or pvc")
    from plane.registry import StorageConfig as _SC

    return _SC(key=key, type=type, params=params)


# -- local directories and PVCs ---------------------------------------------------------------------------


def _fs_root(cfg: StorageConfig) -> pathlib.Path:
    if cfg.type == "pvc":
        name = str(cfg.params.get("name", ""))
        if not _PVC_NAME.match(name):
            raise StorageError(f"pvc storage {cfg.key!r} names no valid volume ('name': {name[:64]!r})")
        return pvc_root() / name
    return pathlib.Path(cfg.params.get("path", "")).expanduser()


def _where(cfg: StorageConfig) -> str:
    if cfg.type == "pvc":
        return f"PVC {cfg.params.get('name')!r} of storage {cfg.key!r} (mounted at {_fs_root(cfg)})"
    return f"local storage {cfg.key!r} ({_fs_root(cfg)})"


def _resolve_local(cfg: StorageConfig, path: str) -> pathlib.Path:
    check_relative_path(path)
    root = _fs_root(cfg).resolve()
    if cfg.type == "pvc" and not root.is_dir():
        raise StorageError(f"PVC {cfg.params.get('name')!r} (storage {cfg.key!r}) is not mounted at {root}: mount "
                           f"the volume there, or set MESH_PVC_ROOT to the folder that holds the PVC mounts")
    target = (root / path).resolve()  # follows symlinks: a link out of the root is caught here
    if target != root and root not in target.parents:
        raise StorageError(f"model path {path!r} resolves outside the storage root")
    return target


def _tree(cfg: StorageConfig, directory: pathlib.Path) -> int:
    """Bytes of the files under a model directory; a symlink in it that leaves the storage root is refused."""
    root = _fs_root(cfg).resolve()
    total = count = 0
    for dirpath, dirs, files in os.walk(directory):
        for name in (*dirs, *files):
            p = pathlib.Path(dirpath) / name
            if p.is_symlink():
                real = p.resolve()
                if real != root and root not in real.parents:
                    raise StorageError(f"{p.relative_to(root)} in the model directory links outside the storage "
                                       "root: refused")
        for name in files:
            count += 1
            if count > MAX_DIR_FILES:
                raise StorageError(f"model directory {directory.name!r} holds more than {MAX_DIR_FILES} files: "
                                   "not a model directory (check the model path)")
            with contextlib.suppress(OSError):
                total += (pathlib.Path(dirpath) / name).stat().st_size
    return total


def _local_model(cfg: StorageConfig, path: str) -> tuple[pathlib.Path, int]:
    target = _resolve_local(cfg, path)
    if target.is_file():
        return target, target.stat().st_size
    if target.is_dir():
        return target, _tree(cfg, target)
    raise StorageError(f"model path {path!r} not found in {_where(cfg)}")


def _test_local(cfg: StorageConfig, path: str, limit: int) -> StorageTestResult:
    root_dir = _fs_root(cfg).resolve()
    if cfg.type == "pvc" and not root_dir.is_dir():
        return StorageTestResult(False, f"PVC {cfg.params.get('name')!r} is not mounted at {root_dir} on this "
                                 f"machine (the pods find PVCs under MESH_PVC_ROOT, default {DEFAULT_PVC_ROOT})")
    root = _resolve_local(cfg, path) if path else root_dir
    if not root.exists():
        return StorageTestResult(False, f"directory {root} does not exist")
    if root.is_file():
        return StorageTestResult(True, f"found file {path} ({root.stat().st_size} bytes)", [path])
    found: list[str] = []
    for dirpath, _dirs, files in os.walk(root):
        for f in sorted(files):
            found.append(str((pathlib.Path(dirpath) / f).relative_to(root_dir)))
            if len(found) >= limit:
                break
        if len(found) >= limit:
            break
    return StorageTestResult(True, f"directory {root} readable, {len(found)} file(s) listed", sorted(found))


# -- the public calls ---------------------------------------------------------------------------------------


def test_config(cfg: StorageConfig, *, path: str = "", limit: int = 20) -> StorageTestResult:
    """List up to ``limit`` objects under ``path`` (http: check the URL answers); never raises;
    the message is redacted."""
    try:
        with _redacted_errors(cfg):
            result = _test_config(cfg, path, limit)
    except StorageError as exc:
        return StorageTestResult(False, str(exc))
    result.message = redact(result.message, cfg)
    return result


def _test_config(cfg: StorageConfig, path: str, limit: int) -> StorageTestResult:
    if cfg.type in ("local", "pvc"):
        return _test_local(cfg, path, limit)
    if cfg.type == "s3":
        return storage_s3.test(cfg, path, limit)
    if cfg.type == "http":
        return storage_http.test(cfg, path)
    if cfg.type in UNSUPPORTED_TYPES:
        return StorageTestResult(False, f"storage type {cfg.type!r} is not supported by this plane yet: "
                                 "replace this config with an s3, local, http or pvc one")
    return StorageTestResult(False, f"storage type {cfg.type!r} cannot be tested here (local, pvc, s3, http)")


def _unreadable(cfg: StorageConfig) -> StorageError:
    return StorageError(f"storage type {cfg.type!r} of key {cfg.key!r} cannot be read by this plane "
                        "(local, pvc, s3, http)")


@_redacting
def object_size(cfg: StorageConfig, path: str) -> int:
    """Size of the model in bytes, every file of a directory counted (for predicting memory
    before a load; 0 when an HTTP server does not say)."""
    if cfg.type in ("local", "pvc"):
        return _local_model(cfg, path)[1]
    if cfg.type == "s3":
        return int(storage_s3.head(cfg, path)["ContentLength"])
    if cfg.type == "http":
        return storage_http.size(cfg, path)
    raise _unreadable(cfg)


@_redacting
def s3_head(cfg: StorageConfig, path: str) -> dict[str, Any]:
    """The S3 model's metadata (size, ETag; for a prefix, its listing): one request for an
    object, reused by :func:`fetch_model_file`."""
    return storage_s3.head(cfg, path)


@_redacting
def fetch_model_file(cfg: StorageConfig, path: str, cache: DiskCache | None,
                     head: dict[str, Any] | None = None,
                     warn: Callable[[str], None] | None = None) -> tuple[pathlib.Path, str]:
    """The model on local disk — a file, or a directory for a model directory / S3 prefix — and
    where it came from: 'local', 'pvc', 'disk-cache', 's3', 'http', or '<origin> (disk cache
    unavailable: <reason>)' when the cache folder could not be written and the download went to
    scratch space (``warn``, if given, then gets a sentence for the operator). Release scratch
    downloads with :func:`release_model_file` once loaded. ``head`` (from :func:`s3_head`) saves
    a request. Failures raise ``StorageError`` (redacted)."""
    if cfg.type in ("local", "pvc"):
        return _local_model(cfg, path)[0], cfg.type
    if cfg.type == "s3":
        return storage_s3.fetch(cfg, path, cache, head, warn)
    if cfg.type == "http":
        return storage_http.fetch(cfg, path, cache, warn)
    raise _unreadable(cfg)

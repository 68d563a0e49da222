"""Where model files come from: a local directory or an S3 endpoint, through a disk cache.

A model names a storage key (``default`` when it names none) and a path inside it. The
key's config (SPEC section 4 format) lives in the registry. Pulled files are kept in a
bounded local disk cache, so an evicted model reloads from local disk instead of being
downloaded again; when the cache folder cannot be written (permissions, full or read-only
disk) the file goes to a scratch file outside it and the caller is told. Paths are relative
to the storage root: ``..``, absolute paths and symlinks that leave the root are refused.
Every message built here (``StorageError``, ``test_config``) is redacted (plane.secrets):
no secret and no URL userinfo, whatever boto3/botocore put in their exception texts.
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import pathlib
import shutil
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, ParamSpec, TypeVar

from plane import secrets
from plane.disk_cache import (
    DiskCache,
    fs_reason,
    is_fs_error,
    release_model_file,
    scratch_file,
    scratch_root,
)
from plane.records import StorageConfig

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
    "UNSUPPORTED_TYPES",
]

S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_MAX_ATTEMPTS = 2
UNSUPPORTED_TYPES = ("gcs", "azure")  # ModelMesh types this plane cannot read: refused, not stored


class StorageError(Exception):
    """A model file could not be found or fetched; the message says why and what to do."""


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
        text = _describe_s3_error(exc, cfg) if cfg.type == "s3" else f"{type(exc).__name__}: {exc}"
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


def validate_config(key: str, type: str, params: dict[str, Any]) -> StorageConfig:
    """Check a storage config and normalise it (``bucket`` becomes ``default_bucket``)."""
    from plane.operations import ValidationError, validate_model_id

    validate_model_id(key, what="storage key")
    type = (type or "").lower()
    params = {k: v for k, v in params.items() if v not in (None, "")}
    if type == "local":
        root = params.get("path") or params.get("root")
        if not root:
            raise ValidationError("a local storage config needs 'path': the directory that holds the models")
        params = {"path": str(pathlib.Path(root).expanduser().resolve())}
    elif type == "s3":
        if "bucket" in params and "default_bucket" not in params:
            params["default_bucket"] = params.pop("bucket")
        params.pop("bucket", None)
        for name in ("access_key_id", "secret_access_key"):
            refs = [r for r in (f"{name}_env", f"{name}_file") if params.get(r)]
            if params.get(name) and refs:
                raise ValidationError(f"give '{name}' or '{refs[0]}', not both")
            if not params.get(name) and not refs:
                raise ValidationError(
                    f"an s3 storage config needs '{name}' (or '{name}_env' / '{name}_file': the name of "
                    "an environment variable or file the pods read it from, so etcd never holds it)")
        if not params.get("default_bucket"):
            raise ValidationError("an s3 storage config needs 'default_bucket' (or 'bucket')")
        url = params.get("endpoint_url", "")
        if url and not url.startswith(("http://", "https://")):
            raise ValidationError(f"endpoint_url {secrets.mask_url(url)!r} must start with http:// or https://")
    elif type in UNSUPPORTED_TYPES:
        raise ValidationError(f"storage type {type!r} is not supported by this plane yet: use s3 (any "
                              "S3-compatible endpoint, e.g. GCS's XML API with HMAC keys), local, http or pvc")
    elif type in ("http", "pvc"):
        pass  # accepted and stored (SPEC section 4) though this plane reads only local and s3
    else:
        raise ValidationError(f"unknown storage type {type!r}: use local or s3 (http and pvc are stored)")
    from plane.registry import StorageConfig as _SC

    return _SC(key=key, type=type, params=params)


# -- S3 --------------------------------------------------------------------------------------------------


def _s3_client(cfg: StorageConfig):
    """A boto3 client for this config, reused across loads (thread-safe, milliseconds to build)."""
    key = json.dumps(cfg.params, sort_keys=True, default=str)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= 32:
                _clients.clear()
            client = _clients[key] = _new_s3_client(cfg)
        return client


_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def _new_s3_client(cfg: StorageConfig):
    import boto3
    from botocore.config import Config

    p = cfg.params
    key_id, secret = _credential(p, "access_key_id"), _credential(p, "secret_access_key")
    # botocore logs request URLs and signed headers at DEBUG: keep this config's secrets out of them
    secrets.install_log_filter(secrets.secret_values(p, cfg.type, extra=[key_id or "", secret or ""]))
    return boto3.client(
        "s3",
        endpoint_url=p.get("endpoint_url") or None,
        aws_access_key_id=key_id,
        aws_secret_access_key=secret,
        region_name=p.get("region") or "us-east-1",
        verify=p.get("certificate_file") or (False if p.get("insecure") else None),
        config=Config(
            connect_timeout=S3_CONNECT_TIMEOUT_S,
            read_timeout=S3_READ_TIMEOUT_S,
            retries={"max_attempts": S3_MAX_ATTEMPTS},
            s3={"addressing_style": "path"},
        ),
    )


def _credential(params: dict[str, Any], name: str) -> str | None:
    """A credential given in the config, or read (where it is used: in the pod) from the
    environment variable ``<name>_env`` or the file ``<name>_file`` names."""
    if params.get(name):
        return str(params[name])
    env = params.get(f"{name}_env")
    if env:
        value = os.environ.get(str(env))
        if not value:
            raise StorageError(f"environment variable {env} (the config's {name}_env) is not set in this process")
        return value
    path = params.get(f"{name}_file")
    if path:
        try:
            return pathlib.Path(str(path)).expanduser().read_text().strip()
        except OSError as exc:
            raise StorageError(f"cannot read {name} from {path}: {exc.strerror}") from None
    return None


def _describe_s3_error(exc: Exception, cfg: StorageConfig) -> str:
    """Turn botocore's errors into sentences an operator can act on (redacted by the callers)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    if isinstance(exc, StorageError):
        return str(exc)
    where = secrets.mask_url(str(cfg.params.get("endpoint_url") or "")) or "AWS S3"
    bucket = cfg.params.get("default_bucket", "")
    if isinstance(exc, EndpointConnectionError):
        return f"cannot reach the S3 endpoint {where}: check endpoint_url and that the server runs"
    if isinstance(exc, NoCredentialsError):
        return "no S3 credentials: set access_key_id and secret_access_key"
    if isinstance(exc, ClientError):
        code = exc.response.get("Error", {}).get("Code", "")
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken"):
            return f"S3 at {where} refused the credentials ({code}): check access_key_id and secret_access_key"
        if code in ("NoSuchBucket",):
            return f"bucket {bucket!r} does not exist at {where}"
        if code in ("NoSuchKey", "404"):
            return "no such object in the bucket: check the model path"
        return f"S3 error {code or type(exc).__name__} at {where}"
    detail = str(exc)[:300]
    return f"S3 request to {where} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")


def _local_root(cfg: StorageConfig) -> pathlib.Path:
    return pathlib.Path(cfg.params.get("path", "")).expanduser()


def _resolve_local(cfg: StorageConfig, path: str) -> pathlib.Path:
    check_relative_path(path)
    root = _local_root(cfg).resolve()
    target = (root / path).resolve()  # follows symlinks: a link out of the root is caught here
    if target != root and root not in target.parents:
        raise StorageError(f"model path {path!r} resolves outside the storage root")
    return target


@dataclass
class StorageTestResult:
    """What ``mesh storage test`` reports."""

    ok: bool
    message: str
    objects: list[str] = field(default_factory=list)


def test_config(cfg: StorageConfig, *, path: str = "", limit: int = 20) -> StorageTestResult:
    """List up to ``limit`` objects under ``path``; never raises; the message is redacted."""
    try:
        with _redacted_errors(cfg):
            result = _test_config(cfg, path, limit)
    except StorageError as exc:
        return StorageTestResult(False, str(exc))
    result.message = redact(result.message, cfg)
    return result


def _test_config(cfg: StorageConfig, path: str, limit: int) -> StorageTestResult:
    if cfg.type == "local":
        root = _resolve_local(cfg, path) if path else _local_root(cfg).resolve()
        if not root.exists():
            return StorageTestResult(False, f"directory {root} does not exist")
        if root.is_file():
            return StorageTestResult(True, f"found file {path} ({root.stat().st_size} bytes)", [path])
        found: list[str] = []
        for dirpath, _dirs, files in os.walk(root):
            for f in sorted(files):
                found.append(str((pathlib.Path(dirpath) / f).relative_to(_local_root(cfg).resolve())))
                if len(found) >= limit:
                    break
            if len(found) >= limit:
                break
        return StorageTestResult(True, f"directory {root} readable, {len(found)} file(s) listed", sorted(found))
    if cfg.type == "s3":
        client = _s3_client(cfg)
        bucket = cfg.params["default_bucket"]
        resp = client.list_objects_v2(Bucket=bucket, Prefix=path, MaxKeys=limit)
        keys = [o["Key"] for o in resp.get("Contents", [])]
        more = " (more not shown)" if resp.get("IsTruncated") else ""
        return StorageTestResult(True, f"bucket {bucket!r} readable, {len(keys)} object(s) listed{more}", keys)
    if cfg.type in UNSUPPORTED_TYPES:
        return StorageTestResult(False, f"storage type {cfg.type!r} is not supported by this plane yet: "
                                 "replace this config with an s3, local, http or pvc one")
    return StorageTestResult(False, f"storage type {cfg.type!r} cannot be tested here (only local and s3)")


@_redacting
def object_size(cfg: StorageConfig, path: str) -> int:
    """Size of the model file in bytes (for predicting memory before a load)."""
    if cfg.type == "local":
        target = _resolve_local(cfg, path)
        if not target.is_file():
            raise StorageError(f"model file {path!r} not found in local storage {cfg.key!r}")
        return target.stat().st_size
    if cfg.type == "s3":
        return int(s3_head(cfg, path)["ContentLength"])
    raise StorageError(f"storage type {cfg.type!r} of key {cfg.key!r} cannot be read by this plane")


@_redacting
def s3_head(cfg: StorageConfig, path: str) -> dict[str, Any]:
    """The object's metadata (size, ETag): one request, reused by :func:`fetch_model_file`."""
    check_relative_path(path)
    return dict(_s3_client(cfg).head_object(Bucket=cfg.params["default_bucket"], Key=path))


# -- fetching ---------------------------------------------------------------------------------------------


@_redacting
def fetch_model_file(cfg: StorageConfig, path: str, cache: DiskCache | None,
                     head: dict[str, Any] | None = None,
                     warn: Callable[[str], None] | None = None) -> tuple[pathlib.Path, str]:
    """A local file holding the model and where it came from: 'local', 'disk-cache', 's3', or
    's3 (disk cache unavailable: <reason>)' when the cache folder could not be written and the
    file went to a scratch file (``warn``, if given, then gets a sentence for the operator).
    Release scratch files with :func:`release_model_file` once loaded. ``head`` (from
    :func:`s3_head`) saves a request. Failures raise ``StorageError`` (redacted)."""
    if cfg.type == "local":
        target = _resolve_local(cfg, path)
        if not target.is_file():
            raise StorageError(f"model file {path!r} not found in local storage {cfg.key!r} ({_local_root(cfg)})")
        return target, "local"
    if cfg.type != "s3":
        raise StorageError(f"storage type {cfg.type!r} of key {cfg.key!r} cannot be read by this plane (local, s3)")
    check_relative_path(path)
    bucket = cfg.params["default_bucket"]
    client = _s3_client(cfg)
    last = f"{cfg.key}\0{path}\0last"
    try:
        head = head or client.head_object(Bucket=bucket, Key=path)
    except Exception as exc:  # noqa: BLE001
        stale = cache.get(last) if cache is not None else None
        if stale is not None:  # S3 unreachable: a cached copy of this path (any version) still serves
            return stale, "disk-cache"
        raise StorageError(_describe_s3_error(exc, cfg)) from None
    ident = f"{cfg.key}\0{path}\0{head.get('ETag', '')}\0{head.get('ContentLength', 0)}"
    hit = cache.get(ident) if cache is not None else None
    if hit is not None:
        return hit, "disk-cache"

    def download(dest: pathlib.Path) -> None:
        try:
            client.download_file(bucket, path, str(dest))
        except Exception as exc:  # noqa: BLE001
            if is_fs_error(exc):
                raise  # the local disk, not S3: the caller decides
            raise StorageError(_describe_s3_error(exc, cfg)) from None

    fault = ""
    if cache is not None:
        try:
            entry = cache.put(ident, download)
        except OSError as exc:
            fault = fs_reason(exc)
        else:
            _remember_last(cache, last, entry)
            return entry, "s3"
    scratch: pathlib.Path | None = None
    try:
        scratch = scratch_file(path)
        download(scratch)
    except BaseException as exc:
        if scratch is not None:
            release_model_file(scratch)
        if not isinstance(exc, OSError):
            raise
        where = f"the disk cache is unavailable ({fault}) and " if fault else ""
        raise StorageError(f"cannot store model file {path!r} locally: {where}the scratch folder "
                           f"{scratch_root()} cannot be written ({fs_reason(exc)})") from None
    if not fault:
        return scratch, "s3"
    if warn is not None:
        warn(f"disk cache {cache.root if cache else ''} unavailable ({fault}): model file {path!r} of storage "
             f"{cfg.key!r} was downloaded past the cache; it will be downloaded again at every load until the "
             "cache folder can be written")
    return scratch, f"s3 (disk cache unavailable: {fault})"


def _remember_last(cache: DiskCache, last_ident: str, entry: pathlib.Path) -> None:
    """Link the newest version of a path under a version-less name (served when S3 is away)."""
    last = cache._entry(last_ident)
    with contextlib.suppress(OSError):  # best effort: the entry itself is in place
        if last.exists() or last.is_symlink():
            last.unlink()
        try:
            os.link(entry, last)
        except OSError:
            shutil.copyfile(entry, last)

"""Where model files come from: a local directory or an S3 endpoint, through a disk cache.

A model names a storage key (``default`` when it names none) and a path inside it. The
key's config (SPEC section 4 format) lives in the registry. Pulled files are kept in a
bounded local disk cache, so an evicted model reloads from local disk instead of being
downloaded again. Paths are always relative to the storage root: ``..``, absolute paths
and symlinks that leave the root are refused.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import shutil
import tempfile
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from plane.records import StorageConfig

__all__ = [
    "StorageError",
    "StorageTestResult",
    "validate_config",
    "test_config",
    "check_relative_path",
    "DiskCache",
    "fetch_model_file",
    "object_size",
]

S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_MAX_ATTEMPTS = 2


class StorageError(Exception):
    """A model file could not be found or fetched; the message says why and what to do."""


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
            raise ValidationError(f"endpoint_url {url!r} must start with http:// or https://")
    elif type in ("gcs", "azure", "http", "pvc"):
        pass  # accepted and stored (SPEC section 4) though this plane reads only local and s3
    else:
        raise ValidationError(f"unknown storage type {type!r}: use local or s3 (gcs, azure, http, pvc are stored)")
    from plane.registry import StorageConfig as _SC

    return _SC(key=key, type=type, params=params)


# -- S3 --------------------------------------------------------------------------------------------------


def _s3_client(cfg: StorageConfig):
    """A boto3 client for this config, reused across loads (clients are thread-safe and cost
    milliseconds to build)."""
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
    return boto3.client(
        "s3",
        endpoint_url=p.get("endpoint_url") or None,
        aws_access_key_id=_credential(p, "access_key_id"),
        aws_secret_access_key=_credential(p, "secret_access_key"),
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
    """Turn botocore's errors into sentences an operator can act on (no secrets)."""
    from botocore.exceptions import ClientError, EndpointConnectionError, NoCredentialsError

    where = cfg.params.get("endpoint_url") or "AWS S3"
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
    return f"S3 request to {where} failed: {type(exc).__name__}"


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
    """List up to ``limit`` objects under ``path``; never raises for storage problems."""
    try:
        if cfg.type == "local":
            root = _resolve_local(cfg, path) if path else _local_root(cfg).resolve()
            if not root.exists():
                return StorageTestResult(False, f"directory {root} does not exist")
            if root.is_file():
                return StorageTestResult(True, f"found file {path} ({root.stat().st_size} bytes)", [path])
            found = []
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
        return StorageTestResult(False, f"storage type {cfg.type!r} cannot be tested here (only local and s3)")
    except StorageError as exc:
        return StorageTestResult(False, str(exc))
    except Exception as exc:  # noqa: BLE001 - every failure becomes a sentence for the operator
        if cfg.type == "s3":
            return StorageTestResult(False, _describe_s3_error(exc, cfg))
        return StorageTestResult(False, f"{type(exc).__name__}: {exc}")


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


# -- disk cache -------------------------------------------------------------------------------------------


class DiskCache:
    """A bounded directory of pulled model files, least recently used removed first.

    Entries are keyed by (storage key, path, etag/size) so a changed object is fetched anew.
    Safe for several threads of one process; pods on one machine each get their own folder.
    """

    def __init__(self, root: pathlib.Path, max_bytes: int):
        self.root = pathlib.Path(root)
        self.max_bytes = max_bytes
        self.root.mkdir(parents=True, exist_ok=True)
        self._lock = threading.Lock()
        self.hits = 0
        self.misses = 0

    def _entry(self, ident: str) -> pathlib.Path:
        return self.root / hashlib.sha256(ident.encode()).hexdigest()[:32]

    def get(self, ident: str) -> pathlib.Path | None:
        entry = self._entry(ident)
        if entry.exists():
            os.utime(entry)  # touch: mark as recently used
            self.hits += 1
            return entry
        return None

    def put(self, ident: str, writer: Callable[[pathlib.Path], None]) -> pathlib.Path:
        """Create the entry with ``writer(tmp_path)`` then move it in place atomically."""
        self.misses += 1
        entry = self._entry(ident)
        fd, tmp = tempfile.mkstemp(dir=self.root, prefix=".part-")
        os.close(fd)
        try:
            writer(pathlib.Path(tmp))
            os.replace(tmp, entry)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
        self.trim()
        return entry

    def size(self) -> int:
        return sum(p.stat().st_size for p in self.root.iterdir() if p.is_file() and not p.name.startswith("."))

    def trim(self) -> None:
        with self._lock:
            files = [p for p in self.root.iterdir() if p.is_file() and not p.name.startswith(".")]
            files.sort(key=lambda p: p.stat().st_mtime)
            total = sum(p.stat().st_size for p in files)
            # Keep at least the newest file even if it alone exceeds the bound.
            while total > self.max_bytes and len(files) > 1:
                victim = files.pop(0)
                total -= victim.stat().st_size
                victim.unlink(missing_ok=True)


def s3_head(cfg: StorageConfig, path: str) -> dict[str, Any]:
    """The object's metadata (size, ETag): one request, reused by :func:`fetch_model_file`."""
    check_relative_path(path)
    try:
        return dict(_s3_client(cfg).head_object(Bucket=cfg.params["default_bucket"], Key=path))
    except Exception as exc:  # noqa: BLE001
        raise StorageError(_describe_s3_error(exc, cfg)) from exc


def fetch_model_file(cfg: StorageConfig, path: str, cache: DiskCache | None,
                     head: dict[str, Any] | None = None) -> tuple[pathlib.Path, str]:
    """Return a local file holding the model and where it came from ('local', 'disk-cache', 's3').
    ``head`` (from :func:`s3_head`) saves a second metadata request."""
    if cfg.type == "local":
        target = _resolve_local(cfg, path)
        if not target.is_file():
            raise StorageError(f"model file {path!r} not found in local storage {cfg.key!r} ({_local_root(cfg)})")
        return target, "local"
    if cfg.type == "s3":
        check_relative_path(path)
        bucket = cfg.params["default_bucket"]
        client = _s3_client(cfg)
        try:
            head = head or client.head_object(Bucket=bucket, Key=path)
        except Exception as exc:  # noqa: BLE001
            if cache is not None:
                # S3 unreachable: a cached copy of this path (any version) still serves.
                stale = cache.get(f"{cfg.key}\0{path}\0last")
                if stale is not None:
                    return stale, "disk-cache"
            raise StorageError(_describe_s3_error(exc, cfg)) from exc
        ident = f"{cfg.key}\0{path}\0{head.get('ETag', '')}\0{head.get('ContentLength', 0)}"
        if cache is not None:
            hit = cache.get(ident)
            if hit is not None:
                return hit, "disk-cache"

        def download(dest: pathlib.Path) -> None:
            try:
                client.download_file(bucket, path, str(dest))
            except Exception as exc:  # noqa: BLE001
                raise StorageError(_describe_s3_error(exc, cfg)) from exc

        if cache is None:
            tmp = pathlib.Path(tempfile.mkdtemp()) / "model.onnx"
            download(tmp)
            return tmp, "s3"
        entry = cache.put(ident, download)
        last = cache._entry(f"{cfg.key}\0{path}\0last")
        try:
            if last.exists() or last.is_symlink():
                last.unlink()
            os.link(entry, last)
        except OSError:
            shutil.copyfile(entry, last)
        return entry, "s3"
    raise StorageError(f"storage type {cfg.type!r} of key {cfg.key!r} cannot be read by this plane (local, s3)")

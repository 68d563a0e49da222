"""S3 and S3-compatible storage (MinIO, GCS's XML API ...): clients, credentials, error texts, and
fetching a model that is one object or a prefix (a directory, downloaded whole).

Used through :mod:`plane.storage`, which redacts every message leaving it.
"""

from __future__ import annotations

import hashlib
import json
import os
import pathlib
import threading
from collections.abc import Callable
from typing import Any

from plane import secrets
from plane.disk_cache import DiskCache, is_fs_error
from plane.records import StorageConfig
from plane.storage_base import (
    StorageError,
    StorageTestResult,
    check_layout,
    check_relative_path,
    object_path,
    safe_join,
    store,
)

__all__ = ["s3_client", "validate", "describe_error", "head", "fetch", "test", "S3_LIST_PAGE", "S3_MAX_OBJECTS"]

S3_CONNECT_TIMEOUT_S = 5
S3_READ_TIMEOUT_S = 60
S3_MAX_ATTEMPTS = 2
S3_LIST_PAGE = 1000  # keys per ListObjectsV2 page (S3's own maximum)
S3_MAX_OBJECTS = 10_000  # a model directory with more objects is refused: most likely a wrong prefix

_clients: dict[str, Any] = {}
_clients_lock = threading.Lock()


def s3_client(cfg: StorageConfig) -> Any:
    """A boto3 client for this config, reused across loads (thread-safe, milliseconds to build)."""
    key = json.dumps(cfg.params, sort_keys=True, default=str)
    with _clients_lock:
        client = _clients.get(key)
        if client is None:
            if len(_clients) >= 32:
                _clients.clear()
            client = _clients[key] = _new_client(cfg)
        return client


def _new_client(cfg: StorageConfig) -> Any:
    import boto3
    from botocore.config import Config

    p = cfg.params
    key_id, secret = credential(p, "access_key_id"), credential(p, "secret_access_key")
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


def credential(params: dict[str, Any], name: str) -> str | None:
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


def validate(params: dict[str, Any]) -> dict[str, Any]:
    """An s3 config's parameters, checked (``bucket`` becomes ``default_bucket``)."""
    from plane.operations import ValidationError

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
    return params


def describe_error(exc: Exception, cfg: StorageConfig) -> str:
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
        code = _code(exc)
        if code in ("InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "403", "InvalidToken"):
            return f"S3 at {where} refused the credentials ({code}): check access_key_id and secret_access_key"
        if code in ("NoSuchBucket",):
            return f"bucket {bucket!r} does not exist at {where}"
        if code in ("NoSuchKey", "404"):
            return "no such object in the bucket: check the model path"
        return f"S3 error {code or type(exc).__name__} at {where}"
    detail = str(exc)[:300]
    return f"S3 request to {where} failed: {type(exc).__name__}" + (f": {detail}" if detail else "")


def _code(exc: Any) -> str:
    return str(getattr(exc, "response", {}).get("Error", {}).get("Code", ""))


def _list(client: Any, bucket: str, prefix: str) -> list[tuple[str, str, int, str]]:
    """``(key, local path, size, etag)`` of every object under ``prefix``, page by page."""
    found: list[tuple[str, str, int, str]] = []
    token = ""
    while True:
        kwargs: dict[str, Any] = {"Bucket": bucket, "Prefix": prefix, "MaxKeys": S3_LIST_PAGE}
        if token:
            kwargs["ContinuationToken"] = token
        resp = client.list_objects_v2(**kwargs)
        for obj in resp.get("Contents", []):
            rel = object_path(str(obj["Key"]), prefix)
            if rel is not None:
                found.append((str(obj["Key"]), rel, int(obj.get("Size", 0)), str(obj.get("ETag", ""))))
        if len(found) > S3_MAX_OBJECTS:
            raise StorageError(f"prefix {prefix!r} holds more than {S3_MAX_OBJECTS} objects: not a model "
                               "directory (check the model path)")
        token = str(resp.get("NextContinuationToken") or "")
        if not resp.get("IsTruncated") or not token:
            return found


def head(cfg: StorageConfig, path: str) -> dict[str, Any]:
    """The model's metadata: ``head_object``'s answer for an object, or, for a prefix (the path
    names no object, or ends in ``/``), ``ContentLength`` = the objects' total, ``ETag`` = a
    digest of the listing and ``Objects`` = the listing itself. Raises StorageError when neither
    an object nor a prefix is there; botocore's errors otherwise (the caller describes them)."""
    from botocore.exceptions import ClientError

    check_relative_path(path)
    client = s3_client(cfg)
    bucket = cfg.params["default_bucket"]
    if not path.endswith("/"):
        try:
            return dict(client.head_object(Bucket=bucket, Key=path))
        except ClientError as exc:
            if _code(exc) not in ("404", "NoSuchKey", "NotFound"):
                raise
    prefix = path.rstrip("/") + "/"
    objects = sorted(_list(client, bucket, prefix))
    if not objects:
        raise StorageError(f"no such object or prefix {path!r} in bucket {bucket!r}: check the model path")
    check_layout(rel for _, rel, _, _ in objects)
    digest = hashlib.sha256(json.dumps(objects).encode()).hexdigest()[:32]
    return {"ContentLength": sum(size for _, _, size, _ in objects), "ETag": digest, "Prefix": prefix,
            "Objects": objects}


def fetch(cfg: StorageConfig, path: str, cache: DiskCache | None, head_info: dict[str, Any] | None,
          warn: Callable[[str], None] | None) -> tuple[pathlib.Path, str]:
    """The model (a file, or a directory for a prefix) on local disk, and where it came from."""
    check_relative_path(path)
    bucket = cfg.params["default_bucket"]
    client = s3_client(cfg)
    name = path.rstrip("/")  # "m/" and "m" name one model directory
    last = f"{cfg.key}\0{name}\0last"
    try:
        info = head_info or head(cfg, path)
    except Exception as exc:  # noqa: BLE001
        stale = cache.get(last) if cache is not None else None
        if stale is not None:  # S3 unreachable: a cached copy of this path (any version) still serves
            return stale, "disk-cache"
        raise StorageError(describe_error(exc, cfg)) from None
    objects = info.get("Objects")
    ident = f"{cfg.key}\0{name}\0{info.get('ETag', '')}\0{info.get('ContentLength', 0)}"
    if objects is not None:
        ident += "\0dir"
    hit = cache.get(ident) if cache is not None else None
    if hit is not None:
        return hit, "disk-cache"

    def download(key: str, dest: pathlib.Path) -> None:
        try:
            client.download_file(bucket, key, str(dest))
        except Exception as exc:  # noqa: BLE001
            if is_fs_error(exc):
                raise  # the local disk, not S3: the caller decides
            raise StorageError(describe_error(exc, cfg)) from None

    def download_all(dest: pathlib.Path) -> None:
        for key, rel, _size, _etag in objects or ():
            target = safe_join(dest, rel)
            target.parent.mkdir(parents=True, exist_ok=True)
            download(key, target)

    if objects is None:
        return store(cache, ident, last, lambda dest: download(path, dest), directory=False, what=path,
                     key=cfg.key, origin="s3", warn=warn)
    return store(cache, ident, last, download_all, directory=True, what=path, key=cfg.key, origin="s3", warn=warn)


def test(cfg: StorageConfig, path: str, limit: int) -> StorageTestResult:
    client = s3_client(cfg)
    bucket = cfg.params["default_bucket"]
    resp = client.list_objects_v2(Bucket=bucket, Prefix=path, MaxKeys=limit)
    keys = [o["Key"] for o in resp.get("Contents", [])]
    more = " (more not shown)" if resp.get("IsTruncated") else ""
    return StorageTestResult(True, f"bucket {bucket!r} readable, {len(keys)} object(s) listed{more}", keys)

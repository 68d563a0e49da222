"""Storage: path safety, config validation, secrets masking, the disk cache, S3 errors."""

from __future__ import annotations

import os

import pytest

from plane import storage
from plane.api import ValidationError
from plane.registry import StorageConfig


@pytest.mark.parametrize("bad", ["../x.onnx", "a/../../x", "/etc/passwd", "", " a", "a\0b", "C:/x"])
def test_paths_that_escape_the_root_are_refused(bad):
    with pytest.raises(storage.StorageError):
        storage.check_relative_path(bad)


def test_symlink_out_of_the_root_is_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    outside = tmp_path / "secret.onnx"
    outside.write_bytes(b"x")
    os.symlink(outside, root / "link.onnx")
    cfg = StorageConfig("k", "local", {"path": str(root)})
    with pytest.raises(storage.StorageError, match="outside the storage root"):
        storage.fetch_model_file(cfg, "link.onnx", None)


def test_local_fetch_and_missing_file(tmp_path):
    (tmp_path / "m").mkdir()
    (tmp_path / "m" / "model.onnx").write_bytes(b"abc")
    cfg = StorageConfig("k", "local", {"path": str(tmp_path)})
    path, source = storage.fetch_model_file(cfg, "m/model.onnx", None)
    assert path.read_bytes() == b"abc" and source == "local"
    assert storage.object_size(cfg, "m/model.onnx") == 3
    with pytest.raises(storage.StorageError, match="not found"):
        storage.fetch_model_file(cfg, "m/other.onnx", None)
    result = storage.test_config(cfg)
    assert result.ok and result.objects == ["m/model.onnx"]


def test_validate_config():
    cfg = storage.validate_config("s", "s3", {"access_key_id": "a", "secret_access_key": "b" * 30,
                                              "bucket": "bk", "endpoint_url": "http://x:9000"})
    assert cfg.params["default_bucket"] == "bk" and "bucket" not in cfg.params
    with pytest.raises(ValidationError, match="secret_access_key"):
        storage.validate_config("s", "s3", {"access_key_id": "a", "bucket": "b"})
    with pytest.raises(ValidationError, match="unknown storage type"):
        storage.validate_config("s", "ftp", {})
    with pytest.raises(ValidationError, match="path"):
        storage.validate_config("s", "local", {})
    with pytest.raises(ValidationError, match="endpoint_url"):
        storage.validate_config("s", "s3", {"access_key_id": "a", "secret_access_key": "b", "bucket": "b",
                                            "endpoint_url": "minio:9000"})


def test_secrets_are_masked():
    secret = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
    cfg = StorageConfig("s", "s3", {"access_key_id": "AKIAIOSFODNN7EXAMPLE", "secret_access_key": secret,
                                    "default_bucket": "b"})
    masked = cfg.masked()
    assert secret not in str(masked) and "AKIAIOSFODNN7EXAMPLE" not in str(masked)
    assert masked["secret_access_key"].startswith("****")
    assert masked["default_bucket"] == "b"


def test_disk_cache_is_bounded_and_keeps_recent_files(tmp_path):
    cache = storage.DiskCache(tmp_path / "c", max_bytes=250)
    for i in range(5):
        cache.put(f"k{i}", lambda p: p.write_bytes(b"x" * 100))
    assert cache.size() <= 250
    assert cache.get("k4") is not None and cache.get("k0") is None


def test_s3_fetch_uses_the_disk_cache(s3_server, tmp_path):
    s3_server["client"].put_object(Bucket="models", Key="d/model.onnx", Body=b"onnx-bytes")
    cfg = StorageConfig("s3", "s3", {"endpoint_url": s3_server["endpoint_url"],
                                     "access_key_id": s3_server["access_key_id"],
                                     "secret_access_key": s3_server["secret_access_key"],
                                     "default_bucket": "models"})
    cache = storage.DiskCache(tmp_path / "dc", 10_000)
    path, source = storage.fetch_model_file(cfg, "d/model.onnx", cache)
    assert source == "s3" and path.read_bytes() == b"onnx-bytes"
    path2, source2 = storage.fetch_model_file(cfg, "d/model.onnx", cache)
    assert source2 == "disk-cache" and path2 == path
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.fetch_model_file(cfg, "d/missing.onnx", cache)


def test_unreachable_s3_is_a_clear_error(tmp_path):
    from plane.local import free_port

    cfg = StorageConfig("s3", "s3", {"endpoint_url": f"http://127.0.0.1:{free_port()}", "access_key_id": "a",
                                     "secret_access_key": "b" * 20, "default_bucket": "m"})
    result = storage.test_config(cfg)
    assert not result.ok and "cannot reach the S3 endpoint" in result.message


def test_secret_read_where_it_is_used_never_stored(s3_server, tmp_path, monkeypatch):
    s3_server["client"].put_object(Bucket="models", Key="ref/model.onnx", Body=b"x")
    base = {"endpoint_url": s3_server["endpoint_url"], "access_key_id": s3_server["access_key_id"],
            "default_bucket": "models"}
    cfg = storage.validate_config("ref", "s3", {**base, "secret_access_key_env": "MESH_TEST_S3_SECRET"})
    assert "secret_access_key" not in cfg.params  # etcd gets the variable's name only
    result = storage.test_config(cfg, path="ref/")
    assert not result.ok and "MESH_TEST_S3_SECRET" in result.message  # not set in this process
    monkeypatch.setenv("MESH_TEST_S3_SECRET", s3_server["secret_access_key"])
    assert storage.test_config(cfg, path="ref/").ok
    secret_file = tmp_path / "secret"
    secret_file.write_text(s3_server["secret_access_key"] + "\n")
    cfg = storage.validate_config("ref2", "s3", {**base, "secret_access_key_file": str(secret_file)})
    assert storage.test_config(cfg, path="ref/").objects == ["ref/model.onnx"]
    with pytest.raises(ValidationError, match="not both"):
        storage.validate_config("x", "s3", {**base, "secret_access_key": "a" * 20, "secret_access_key_env": "V"})

"""Storage: path safety, config validation, secrets masking, the disk cache, S3 errors."""

from __future__ import annotations

import json
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


# -- secrets: every storage type's secret fields, URL userinfo, error texts -------------------------------

USERINFO = "uinfo-user-7Q2:UinfoPa55word-abc"
S3_SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
S3_KEY_ID = "AKIAIOSFODNN7EXAMPLE"


def _s3(endpoint: str, **extra) -> StorageConfig:
    return StorageConfig("s3u", "s3", {"endpoint_url": endpoint, "access_key_id": S3_KEY_ID,
                                       "secret_access_key": S3_SECRET, "default_bucket": "models", **extra})


def _clean(text: str, *secrets: str) -> bool:
    return not any(s in text for s in secrets)


def test_every_secret_field_and_url_userinfo_is_masked():
    cfgs = [
        _s3(f"http://{USERINFO}@minio:9000", secret_access_key_env="S3_SECRET_VAR"),
        StorageConfig("h", "http", {"url": f"https://{USERINFO}@files.example/models?sig=SigValue12345&v=1",
                                    "headers": {"Authorization": "Bearer http-header-token-123456",
                                                "X-Api-Key": "header-api-key-654321"}}),
        StorageConfig("g", "gcs", {"base64_service_account": "eyJ0eXBlIjoic2VydmljZV9hY2NvdW50In0=",
                                   "private_key": "-----BEGIN PRIVATE KEY-----gcsPrivKey", "bucket": "b",
                                   "client_secret": "gcs-client-secret-value"}),
        StorageConfig("a", "azure", {"account_name": "acct", "account_key": "azureAccountKey0123456789==",
                                     "connection_string": "DefaultEndpointsProtocol=https;AccountKey=connStrKey999;",
                                     "client_secret": "azure-client-secret-xyz", "sas_token": "sv=2020&sig=azSig777"}),
        StorageConfig("p", "pvc", {"name": "models-pvc", "password": "pvc-password-1234", "token": "generic-tok-999"}),
    ]
    secret_values = [USERINFO, "UinfoPa55word", S3_SECRET, S3_KEY_ID, "SigValue12345", "http-header-token",
                     "header-api-key", "eyJ0eXBlIjoic2VydmljZV9hY2NvdW50In0", "gcsPrivKey", "gcs-client-secret",
                     "azureAccountKey", "connStrKey999", "azure-client-secret", "azSig777", "pvc-password",
                     "generic-tok"]
    for cfg in cfgs:
        masked = cfg.masked()
        for text in (str(masked), repr(cfg), json.dumps(masked)):
            assert _clean(text, *secret_values), (cfg.key, text)
    s3m, httpm = cfgs[0].masked(), cfgs[1].masked()
    assert s3m["endpoint_url"] == "http://****@minio:9000"  # host and port kept
    assert s3m["secret_access_key"] == "****EY" and s3m["secret_access_key_env"] == "S3_SECRET_VAR"  # a name
    assert s3m["default_bucket"] == "models"
    assert httpm["headers"] == {"Authorization": "****56", "X-Api-Key": "****21"}  # names kept, values masked
    assert httpm["url"].startswith("https://****@files.example/models?sig=****")
    assert cfgs[3].masked()["account_name"] == "acct" and cfgs[4].masked()["name"] == "models-pvc"


def test_redact_removes_known_secrets_and_any_userinfo():
    from plane import secrets

    cfg = _s3(f"http://{USERINFO}@127.0.0.1:9")
    text = (f'Could not connect to the endpoint URL: "http://{USERINFO}@127.0.0.1:9/models/x" '
            f"key {S3_KEY_ID} secret {S3_SECRET}")
    out = secrets.redact(text, cfg)
    assert _clean(out, "UinfoPa55word", "uinfo-user", S3_KEY_ID, S3_SECRET) and "127.0.0.1:9/models/x" in out
    assert secrets.redact_text("see https://bob:pw@h:1/p and AccountKey=abc123==; Authorization: Bearer t0k3n") == \
        "see https://****@h:1/p and AccountKey=****; Authorization: ****"
    assert secrets.redact_text("S3 at http://h refused the credentials (InvalidToken): check it") == \
        "S3 at http://h refused the credentials (InvalidToken): check it"  # ordinary messages untouched


def test_gcs_and_azure_are_refused_without_echoing_secrets():
    gcs = {"base64_service_account": "eyJ0eXBlIjoic2VydmljZV9hY2NvdW50In0=", "bucket": "b"}
    azure = {"account_name": "acct", "account_key": "azureAccountKey0123456789==",
             "connection_string": "DefaultEndpointsProtocol=https;AccountKey=connStrKey999;"}
    for typ, params in (("gcs", gcs), ("azure", azure)):
        with pytest.raises(ValidationError) as err:
            storage.validate_config("k", typ, params)
        msg = str(err.value)
        assert msg == (f"storage type '{typ}' is not supported by this plane yet: use s3 (any S3-compatible "
                       "endpoint, e.g. GCS's XML API with HMAC keys), local, http or pvc")
    assert storage.validate_config("k", "http", {"url": "https://x/m"}).type == "http"  # read by this plane
    assert storage.validate_config("k", "pvc", {"name": "claim"}).type == "pvc"
    with pytest.raises(ValidationError) as err:
        storage.validate_config("k", "s3", {"access_key_id": "a", "secret_access_key": "b", "bucket": "b",
                                            "endpoint_url": f"{USERINFO}@minio:9000"})
    assert "UinfoPa55word" not in str(err.value) and "****@minio:9000" in str(err.value)
    # a gcs config stored before this rule: reported, not read
    old = StorageConfig("g", "gcs", gcs)
    assert "not supported by this plane yet" in storage.test_config(old).message
    with pytest.raises(storage.StorageError):
        storage.fetch_model_file(old, "m.onnx", None)


def test_s3_errors_never_carry_userinfo_or_keys(tmp_path, caplog):
    import logging

    from plane.local import free_port

    cfg = _s3(f"http://{USERINFO}@127.0.0.1:{free_port()}", region="eu-west-3")  # unique: a new client, logged
    caplog.set_level(logging.DEBUG)
    result = storage.test_config(cfg)
    assert not result.ok and result.message.startswith("cannot reach the S3 endpoint http://****@127.0.0.1:")
    for call in (lambda: storage.fetch_model_file(cfg, "m/model.onnx", storage.DiskCache(tmp_path / "c", 1000)),
                 lambda: storage.s3_head(cfg, "m/model.onnx"), lambda: storage.object_size(cfg, "m/model.onnx")):
        with pytest.raises(storage.StorageError) as err:
            call()
        assert "****@127.0.0.1" in str(err.value) and _clean(str(err.value), "UinfoPa55word", "uinfo-user")
        assert err.value.__cause__ is None and err.value.__suppress_context__  # no botocore text chained
    # botocore's own DEBUG records (request URLs, signed headers) went through the redacting filter
    logged = "\n".join(r.getMessage() for r in caplog.records)
    assert "Sending http request" in logged and "****@127.0.0.1" in logged
    assert _clean(logged, "UinfoPa55word", "uinfo-user", S3_KEY_ID, S3_SECRET)
    # an endpoint botocore refuses to build a client for: still a sentence, still redacted
    bad = _s3(f"http://{USERINFO}@bad host:9")
    msg = storage.test_config(bad).message
    assert msg and _clean(msg, "UinfoPa55word", "uinfo-user")


# -- disk-cache faults: load straight from storage ---------------------------------------------------------


def _moto_cfg(s3_server) -> StorageConfig:
    return StorageConfig("s3", "s3", {"endpoint_url": s3_server["endpoint_url"],
                                      "access_key_id": s3_server["access_key_id"],
                                      "secret_access_key": s3_server["secret_access_key"],
                                      "default_bucket": "models"})


def test_unusable_cache_folder_falls_back_to_a_scratch_download(s3_server, tmp_path):
    s3_server["client"].put_object(Bucket="models", Key="fb/model.onnx", Body=b"fallback-bytes")
    cfg = _moto_cfg(s3_server)
    afile = tmp_path / "afile"
    afile.write_text("a regular file: nothing can be created under it, not even by root")
    cache = storage.DiskCache(afile / "cache", 10_000)  # must not raise: pods build it at start
    assert cache.fault and "Not a directory" in cache.fault
    warnings: list[str] = []
    path, source = storage.fetch_model_file(cfg, "fb/model.onnx", cache, warn=warnings.append)
    assert path.read_bytes() == b"fallback-bytes"
    assert source.startswith("s3 (disk cache unavailable: Not a directory") and str(afile) in source
    assert len(warnings) == 1 and "downloaded past the cache" in warnings[0]
    assert afile not in path.parents and cache.size() == 0
    assert storage.release_model_file(path) and not path.exists()
    assert not storage.release_model_file(path)  # already gone
    # head given by the caller (as the pod does), no warn callback: same result
    head = storage.s3_head(cfg, "fb/model.onnx")
    path2, source2 = storage.fetch_model_file(cfg, "fb/model.onnx", cache, head)
    assert path2.read_bytes() == b"fallback-bytes" and source2.startswith("s3 (disk cache unavailable")
    storage.release_model_file(path2)
    # an S3 failure is still an S3 failure, not a cache one
    with pytest.raises(storage.StorageError, match="no such object"):
        storage.fetch_model_file(cfg, "fb/missing.onnx", cache)


def test_cache_folder_lost_after_start_then_back(s3_server, tmp_path):
    s3_server["client"].put_object(Bucket="models", Key="fb2/model.onnx", Body=b"v1")
    cfg = _moto_cfg(s3_server)
    root = tmp_path / "dc"
    cache = storage.DiskCache(root, 10_000)
    assert cache.fault is None
    root.rmdir()
    root.write_text("the folder was replaced by a file (a full or read-only disk fails the same way)")
    path, source = storage.fetch_model_file(cfg, "fb2/model.onnx", cache)
    assert path.read_bytes() == b"v1" and "disk cache unavailable" in source and cache.fault
    assert storage.release_model_file(path)
    root.unlink()  # fixed: the next load goes through the cache again
    path, source = storage.fetch_model_file(cfg, "fb2/model.onnx", cache)
    assert source == "s3" and cache.fault is None and root in path.parents
    assert not storage.release_model_file(path) and path.exists()  # cache entries are never released
    assert storage.fetch_model_file(cfg, "fb2/model.onnx", cache)[1] == "disk-cache"


def test_release_never_touches_local_or_cached_files(tmp_path):
    f = tmp_path / "model.onnx"
    f.write_bytes(b"x")
    assert not storage.release_model_file(f) and f.exists()


def test_names_other_modules_use_are_kept():
    from plane import storage_s3

    assert storage._s3_client is storage_s3.s3_client  # plane.kube uploads demo models with it
    assert {"fetch_model_file", "s3_head", "object_size", "release_model_file", "DiskCache"} <= set(storage.__all__)

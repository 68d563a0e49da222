"""The Storage page against real storage: moto's standalone S3 server and a local directory."""

from __future__ import annotations

import boto3
import pytest
from dashsupport import button, errors, open_page, table
from moto.server import ThreadedMotoServer

SECRET = "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
ACCESS = "AKIAIOSFODNN7EXAMPLE"


@pytest.fixture(scope="module")
def s3_endpoint():
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    s3 = boto3.client("s3", endpoint_url=url, aws_access_key_id=ACCESS, aws_secret_access_key=SECRET,
                      region_name="us-east-1")
    s3.create_bucket(Bucket="models")
    s3.put_object(Bucket="models", Key="mnist/model.onnx", Body=b"onnx bytes")
    s3.put_object(Bucket="models", Key="iris/model.onnx", Body=b"more bytes")
    try:
        yield url
    finally:
        server.stop()


def fill_s3(at, *, key: str, endpoint: str, bucket: str, access: str = ACCESS, secret: str = SECRET):
    if at.radio(key="st_type").value != "s3":
        at.radio(key="st_type").set_value("s3").run()
    at.text_input(key="st_key").input(key)
    at.text_input(key="st_endpoint").input(endpoint)
    at.text_input(key="st_bucket").input(bucket)
    at.text_input(key="st_access").input(access)
    at.text_input(key="st_secret").input(secret)
    button(at, "st_save").click()
    return at.run()


def test_s3_config_saved_masked_and_tested(app_env, client, s3_endpoint):
    at = open_page("storage")
    assert any("No storage config yet" in i.value for i in at.info)
    fill_s3(at, key="minio", endpoint=s3_endpoint, bucket="models")
    assert not errors(at)
    assert any("saved storage config minio (s3)" in s.value for s in at.success)
    cfg = client.get_storage("minio")
    assert cfg.params["secret_access_key"] == SECRET and cfg.params["default_bucket"] == "models"
    row = table(at, "storage_table").set_index("key").loc["minio"]
    assert row["secret_access_key"] == "****EY" and row["access_key_id"] == "****LE"
    assert row["endpoint_url"] == s3_endpoint
    # the secret never reaches the page, in any element
    assert SECRET not in repr(at.main) and ACCESS not in repr(at.main)

    at.selectbox(key="st_test_key").set_value("minio")
    button(at, "st_test").click().run()
    assert any("bucket 'models' readable, 2 object(s) listed" in s.value for s in at.success)
    assert "mnist/model.onnx" in at.code[0].value
    at.text_input(key="st_test_path").input("iris/")
    button(at, "st_test").click().run()
    assert at.code[0].value == "iris/model.onnx"


def test_s3_failures_are_reported_in_words(app_env, client, s3_endpoint):
    at = open_page("storage")
    fill_s3(at, key="nobucket", endpoint=s3_endpoint, bucket="missing")
    at.selectbox(key="st_test_key").set_value("nobucket")
    button(at, "st_test").click().run()
    assert any("bucket 'missing' does not exist" in e for e in errors(at))
    # a config without a secret is refused with the reason, and not saved
    fill_s3(at, key="halfdone", endpoint=s3_endpoint, bucket="models", secret="")
    assert any("needs 'secret_access_key'" in e for e in errors(at))
    assert client.get_storage("halfdone") is None
    fill_s3(at, key="badurl", endpoint="minio:9000", bucket="models")
    assert any("must start with http:// or https://" in e for e in errors(at))


def test_local_config_test_and_remove(app_env, client, tmp_path):
    (tmp_path / "models").mkdir()
    (tmp_path / "models" / "tiny.onnx").write_bytes(b"x")
    at = open_page("storage")
    at.radio(key="st_type").set_value("local").run()
    assert at.text_input(key="st_key").value == ""
    at.text_input(key="st_key").input("disk")
    at.text_input(key="st_path").input(str(tmp_path / "models"))
    button(at, "st_save").click().run()
    assert client.get_storage("disk").params["path"] == str(tmp_path / "models")
    at.selectbox(key="st_test_key").set_value("disk")
    button(at, "st_test").click().run()
    assert any("1 file(s) listed" in s.value for s in at.success)
    assert at.code[0].value == "tiny.onnx"
    at.text_input(key="st_test_path").input("../")
    button(at, "st_test").click().run()
    assert any("leaves the storage root" in e for e in errors(at))
    button(at, "st_remove").click().run()
    assert any("Remove storage config 'disk'? 0 models use it" in w.value for w in at.warning)
    assert client.get_storage("disk") is not None  # not before the confirmation
    button(at, "st_remove_confirm").click().run()
    assert client.get_storage("disk") is None
    assert any("removed storage config disk" in s.value for s in at.success)


def test_the_form_starts_empty(app_env, client):
    client.set_storage("default", "local", {"path": "/srv/models"})
    at = open_page("storage")
    assert at.radio(key="st_type").value is None  # no type chosen for the operator
    assert not [b for b in at.button if b.key == "st_save"]  # nothing to save before a type is chosen
    at.radio(key="st_type").set_value("s3").run()
    assert at.text_input(key="st_key").value == ""  # no key prefilled (least of all "default")
    button(at, "st_save").click().run()
    assert any("enter a key" in e for e in errors(at))
    assert client.get_storage("default").type == "local"


def test_an_existing_key_is_overwritten_only_after_a_confirmation(app_env, client, tmp_path):
    from plane.api import ModelSpec

    client.set_storage("default", "local", {"path": "/srv/models"})
    client.register_models([ModelSpec(f"m-{i}", f"m{i}.onnx") for i in range(500)])
    at = open_page("storage")
    at.radio(key="st_type").set_value("local").run()
    at.text_input(key="st_key").input("default")
    at.text_input(key="st_path").input(str(tmp_path))
    button(at, "st_save").click().run()
    assert any("key 'default' exists and 500 models use it — overwrite" in w.value for w in at.warning)
    assert client.get_storage("default").params["path"] == "/srv/models"  # unchanged so far
    button(at, "st_overwrite_cancel").click().run()
    assert not at.warning and client.get_storage("default").params["path"] == "/srv/models"
    button(at, "st_save").click().run()  # the form kept what was typed
    button(at, "st_overwrite").click().run()
    assert client.get_storage("default").params["path"] == str(tmp_path)
    assert any("replaced storage config default (local)" in s.value for s in at.success)
    # a new key is saved at once, without asking
    at.text_input(key="st_key").input("other")
    button(at, "st_save").click().run()
    assert client.get_storage("other").params["path"] == str(tmp_path) and not at.warning

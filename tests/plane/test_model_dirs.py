"""Models as directories: an ONNX model with its external data, a model with its model-settings.json,
pulled whole (local storage in place, an S3 prefix into a disk-cache directory entry) and served by
real pods; the disk cache accounts and evicts directory entries whole; object keys that would
leave the model directory are refused."""

from __future__ import annotations

import json
import os
import pathlib

import grpc
import numpy as np
import pytest
import tritonclient.grpc as tc

from plane import demo, storage, storage_base, storage_s3
from plane.proto import mmesh_pb2 as mpb
from plane.proto import mmesh_pb2_grpc as mgrpc
from plane.registry import StorageConfig
from tests.support import uid, wait_for

N_IN, N_OUT = 64, 256  # 64 KiB of weights in the external data file; the .onnx file itself is tiny


def make_external_data_model(directory: pathlib.Path, *, name: str = "model.onnx", weights: str = "weights.bin",
                             seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``output = input @ W + B`` with W and B stored in the external data file ``weights``."""
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    rng = np.random.default_rng(seed)
    w = rng.standard_normal((N_IN, N_OUT)).astype(np.float32)
    b = rng.standard_normal(N_OUT).astype(np.float32)
    graph = helper.make_graph(
        [helper.make_node("MatMul", ["input", "W"], ["mm"]), helper.make_node("Add", ["mm", "B"], ["output"])],
        "external-data",
        [helper.make_tensor_value_info("input", TensorProto.FLOAT, [None, N_IN])],
        [helper.make_tensor_value_info("output", TensorProto.FLOAT, [None, N_OUT])],
        initializer=[numpy_helper.from_array(w, "W"), numpy_helper.from_array(b, "B")],
    )
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)])
    model.ir_version = 8
    directory.mkdir(parents=True, exist_ok=True)
    onnx.save_model(model, str(directory / name), save_as_external_data=True, all_tensors_to_one_file=True,
                    location=weights, size_threshold=0)
    assert (directory / name).stat().st_size < 1024 and (directory / weights).stat().st_size >= N_IN * N_OUT * 4
    return w, b


def _infer(endpoint: str, model_id: str, x: np.ndarray) -> np.ndarray:
    client = tc.InferenceServerClient(endpoint)
    inp = tc.InferInput("input", list(x.shape), "FP32")
    inp.set_data_from_numpy(x)
    return client.infer(model_id, [inp]).as_numpy("output")


def _dir_bytes(directory: pathlib.Path) -> int:
    return sum(p.stat().st_size for p in directory.rglob("*") if p.is_file())


def _s3_cfg(s3_server, key: str = "s3") -> StorageConfig:
    return StorageConfig(key, "s3", {"endpoint_url": s3_server["endpoint_url"],
                                     "access_key_id": s3_server["access_key_id"],
                                     "secret_access_key": s3_server["secret_access_key"],
                                     "default_bucket": "models"})


def _upload(s3_server, directory: pathlib.Path, prefix: str) -> None:
    for f in sorted(directory.rglob("*")):
        if f.is_file():
            s3_server["client"].put_object(Bucket="models", Key=f"{prefix}/{f.relative_to(directory)}",
                                           Body=f.read_bytes())


# -- storage level: no pods ---------------------------------------------------------------------------------


def test_local_directory_is_used_in_place(tmp_path):
    root = tmp_path / "root"
    make_external_data_model(root / "ext")
    cfg = StorageConfig("k", "local", {"path": str(root)})
    path, source = storage.fetch_model_file(cfg, "ext", None)
    assert path == (root / "ext").resolve() and source == "local"
    assert storage.object_size(cfg, "ext") == _dir_bytes(root / "ext")
    assert not storage.release_model_file(path) and path.is_dir()  # never touched
    outside = tmp_path / "outside.bin"
    outside.write_bytes(b"x" * 10)
    os.symlink(outside, root / "ext" / "leak.bin")
    with pytest.raises(storage.StorageError, match="links outside the storage root"):
        storage.fetch_model_file(cfg, "ext", None)
    with pytest.raises(storage.StorageError, match="not found in local storage"):
        storage.fetch_model_file(cfg, "nothing-here", None)


def test_s3_prefix_is_pulled_whole_into_one_cache_entry(s3_server, tmp_path, monkeypatch):
    src = tmp_path / "src"
    make_external_data_model(src)
    (src / "sub").mkdir()
    (src / "sub" / "notes.txt").write_text("nested files keep their place")
    prefix = uid("pfx")
    _upload(s3_server, src, prefix)
    s3_server["client"].put_object(Bucket="models", Key=f"{prefix}/", Body=b"")  # a "folder" marker: skipped
    monkeypatch.setattr(storage_s3, "S3_LIST_PAGE", 2)  # 3 objects + marker: the listing takes several pages
    cfg = _s3_cfg(s3_server)
    head = storage.s3_head(cfg, prefix)
    assert head["ContentLength"] == _dir_bytes(src) and len(head["Objects"]) == 3
    cache = storage.DiskCache(tmp_path / "dc", 10 * 1024**2)
    path, source = storage.fetch_model_file(cfg, prefix, cache, head)
    assert source == "s3" and path.is_dir() and path.parent == cache.root
    assert sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file()) == \
        ["model.onnx", "sub/notes.txt", "weights.bin"]
    assert (path / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert cache.size() == _dir_bytes(src)
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".part-")]  # the temp dir became the entry
    again, source2 = storage.fetch_model_file(cfg, prefix + "/", cache)  # no head given; trailing slash alike
    assert source2 == "disk-cache" and again == path
    # S3 unreachable (same key and path, dead endpoint): the last pulled version still serves
    from plane.local import free_port

    dead = StorageConfig("s3", "s3", {**cfg.params, "endpoint_url": f"http://127.0.0.1:{free_port()}"})
    stale, source3 = storage.fetch_model_file(dead, prefix, cache)
    assert source3 == "disk-cache" and stale == path
    # a changed object makes a new entry
    s3_server["client"].put_object(Bucket="models", Key=f"{prefix}/sub/notes.txt", Body=b"changed")
    newer, source4 = storage.fetch_model_file(cfg, prefix, cache)
    assert source4 == "s3" and newer != path and (newer / "sub" / "notes.txt").read_bytes() == b"changed"
    with pytest.raises(storage.StorageError, match="no such object or prefix"):
        storage.fetch_model_file(cfg, uid("absent"), cache)


@pytest.mark.parametrize("key", ["../../evil.onnx", "a/../../../evil", "a\\..\\..\\evil", "./x/../../y"])
def test_object_keys_that_leave_the_model_directory_are_refused(s3_server, tmp_path, key):
    prefix = uid("trav")
    s3_server["client"].put_object(Bucket="models", Key=f"{prefix}/model.onnx", Body=b"fine")
    s3_server["client"].put_object(Bucket="models", Key=f"{prefix}/{key}", Body=b"evil")
    cache = storage.DiskCache(tmp_path / "dc", 10_000)
    with pytest.raises(storage.StorageError, match="refused") as err:
        storage.fetch_model_file(_s3_cfg(s3_server), prefix, cache)
    assert prefix in str(err.value)  # names the key
    assert cache.size() == 0 and not any(tmp_path.rglob("evil*"))


def test_object_path_and_layout_rules():
    assert storage_base.object_path("p/a/b.onnx", "p/") == "a/b.onnx"
    assert storage_base.object_path("p/a//./b", "p/") == "a/b"
    assert storage_base.object_path("p/dir/", "p/") is None and storage_base.object_path("p/", "p/") is None
    for bad in ("p/../x", "p/a/../../x", "p//etc/passwd", "p/a\\b", "p/a\0b", "p/.."):
        with pytest.raises(storage.StorageError):
            storage_base.object_path(bad, "p/")
    with pytest.raises(storage.StorageError, match="both an object and a directory"):
        storage_base.check_layout(["x", "x/y"])
    storage_base.check_layout(["x/y", "x/z", "w"])


def test_unwritable_cache_pulls_the_directory_into_scratch_space(s3_server, tmp_path):
    src = tmp_path / "src"
    make_external_data_model(src)
    prefix = uid("fbdir")
    _upload(s3_server, src, prefix)
    afile = tmp_path / "afile"
    afile.write_text("nothing can be created under a regular file")
    cache = storage.DiskCache(afile / "cache", 10 * 1024**2)
    assert cache.fault
    warnings: list[str] = []
    path, source = storage.fetch_model_file(_s3_cfg(s3_server), prefix, cache, warn=warnings.append)
    assert path.is_dir() and (path / "weights.bin").read_bytes() == (src / "weights.bin").read_bytes()
    assert source.startswith("s3 (disk cache unavailable: Not a directory")
    assert len(warnings) == 1 and "model directory" in warnings[0] and "downloaded past the cache" in warnings[0]
    assert storage.release_model_file(path) and not path.exists()


def test_disk_cache_evicts_directory_entries_whole(tmp_path):
    cache = storage.DiskCache(tmp_path / "c", max_bytes=300)

    def two_files(d: pathlib.Path) -> None:
        (d / "a").write_bytes(b"x" * 100)
        (d / "sub").mkdir()
        (d / "sub" / "b").write_bytes(b"y" * 100)

    first = cache.put_dir("first", two_files)
    assert cache.size() == 200 and cache.get("first") == first
    os.utime(first, (1, 1))  # used long ago
    cache.put("file", lambda p: p.write_bytes(b"z" * 150))
    assert cache.get("first") is None and not first.exists()  # the whole directory went, not one file of it
    assert cache.size() == 150
    # the same directory entry put twice (two loads racing): the first one stays, no temp dir is left
    one = cache.put_dir("same", two_files)
    two = cache.put_dir("same", lambda d: (d / "other").write_bytes(b"o"))
    assert one == two and (one / "a").exists() and not (one / "other").exists()
    assert not [p for p in cache.root.iterdir() if p.name.startswith(".")]
    cache.remember("alias", one)
    assert cache.get("alias").resolve() == one.resolve()  # a version-less name for a directory entry


# -- served end to end by real pods -------------------------------------------------------------------------


def _status(endpoint: str, model_id: str):
    with grpc.insecure_channel(endpoint) as ch:
        return mgrpc.ModelMeshStub(ch).getModelStatus(mpb.GetStatusRequest(modelId=model_id), timeout=30)


@pytest.mark.slow
def test_local_onnx_with_external_data_is_served(plane_client, endpoints, tmp_path_factory):
    root = tmp_path_factory.mktemp("dir-models")
    w, b = make_external_data_model(root / "ext")
    key = uid("dirs")
    plane_client.set_storage(key, "local", {"path": str(root)})
    model_id = uid("ext-local")
    plane_client.register_model(model_id, path="ext", storage_key=key)
    x = np.random.default_rng(1).standard_normal((3, N_IN)).astype(np.float32)
    np.testing.assert_allclose(_infer(endpoints[0], model_id, x), x @ w + b, rtol=1e-4, atol=1e-4)
    rec = wait_for(lambda: (r := plane_client.get_model(model_id)) and r.size and r, what="size recorded")
    assert rec.file_size == _dir_bytes(root / "ext") and rec.size >= rec.file_size  # weights counted

    # the same model without its external data file: a load failure that says so
    make_external_data_model(root / "broken")
    (root / "broken" / "weights.bin").unlink()
    broken = uid("ext-broken")
    plane_client.register_model(broken, path="broken", storage_key=key)
    with pytest.raises(Exception, match="ONNX"):
        _infer(endpoints[1], broken, x)
    status = _status(endpoints[2], broken)
    assert status.status == mpb.ModelStatusInfo.LOADING_FAILED and "not a valid ONNX model" in status.errors[0]


@pytest.mark.slow
def test_s3_prefix_with_model_settings_is_served_then_reloaded_from_the_disk_cache(
        plane_client, endpoints, s3_server, tmp_path):
    src = tmp_path / "src"
    w, b = make_external_data_model(src, name="net.onnx", weights="net.weights")
    demo.make_tiny_model(src / "other.onnx")  # two .onnx files: only model-settings.json says which one
    (src / "model-settings.json").write_text(json.dumps({"name": "net", "parameters": {"uri": "net.onnx"}}))
    prefix = uid("s3dir")
    _upload(s3_server, src, prefix)
    key = uid("s3dirs")
    plane_client.set_storage(key, "s3", {"endpoint_url": s3_server["endpoint_url"], "bucket": "models",
                                         "access_key_id": s3_server["access_key_id"],
                                         "secret_access_key": s3_server["secret_access_key"]})
    model_id = uid("ext-s3")
    plane_client.register_model(model_id, path=prefix, storage_key=key)
    x = np.random.default_rng(2).standard_normal((2, N_IN)).astype(np.float32)
    np.testing.assert_allclose(_infer(endpoints[0], model_id, x), x @ w + b, rtol=1e-4, atol=1e-4)
    rec = wait_for(lambda: (r := plane_client.get_model(model_id)) and r.loaded_on() and r, what="copy loaded")
    pod = rec.loaded_on()[0]
    assert rec.file_size == _dir_bytes(src)

    def loaded_reasons() -> list[str]:
        return [e.reason for e in plane_client.events(limit=0) if e.model == model_id and e.kind == "loaded"]

    assert wait_for(loaded_reasons, what="loaded event")[-1].startswith("from s3")
    assert plane_client.unload_copy(model_id, pod)
    wait_for(lambda: not plane_client.get_model(model_id).loaded_on(), what="copy unloaded")
    plane_client.load_on(model_id, pod)  # the same pod again: its disk cache holds the directory
    assert wait_for(lambda: len(loaded_reasons()) >= 2 and loaded_reasons(), what="second load")[-1] \
        .startswith("from disk-cache")
    np.testing.assert_allclose(_infer(endpoints[1], model_id, x), x @ w + b, rtol=1e-4, atol=1e-4)

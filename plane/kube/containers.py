"""What the plane's own containers run: ``python -m plane.kube sync-storage|publish-demo|write-manifests``.

``sync-storage`` is the init container of every pod (it copies the mounted storage Secrets
into the registry); ``publish-demo`` is the quickstart Job's container (it uploads demo
models to MinIO and registers them, and uploads the scikit-learn model of the install guide's
``example-sklearn-isvc``). These run inside the cluster and talk to etcd and object storage,
not to the Kubernetes API. ``write-manifests`` regenerates ``manifests/``.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from plane.kube.defaults import MODELMESH_STORAGE_MOUNT, STORAGE_MOUNT, KubeError
from plane.kube.storage_config import plane_storage_key

CONNECT_RETRY_S = 180.0


def _read_storage_dir(directory: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Storage configs from a mounted Secret: one file per key (hidden ``..data`` links skipped).

    A value that is not a JSON object is reported (by key, never by value) and skipped: one bad
    key of a ModelMesh Secret must not keep the pods from starting."""
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        try:
            doc = json.loads(path.read_text())
        except ValueError:
            print(f"storage key {path.name!r} in {directory} is not a JSON document: skipped", flush=True)
            continue
        if isinstance(doc, dict):
            out[path.name] = doc
        else:
            print(f"storage key {path.name!r} in {directory} is not a JSON object: skipped", flush=True)
    return out


def _connect_with_retry(timeout_s: float = CONNECT_RETRY_S) -> Any:
    from plane.api import PlaneClient
    from plane.registry import RegistryError

    deadline = time.monotonic() + timeout_s
    while True:
        try:
            return PlaneClient.connect()
        except (RegistryError, OSError, TimeoutError) as exc:
            if time.monotonic() >= deadline:
                raise
            print(f"etcd not reachable yet ({exc}); retrying", flush=True)
            time.sleep(3)


def sync_storage_dir(*directories: str | pathlib.Path, plane: Any | None = None) -> list[str]:
    """Copy every storage config of the mounted Secrets into the registry; returns the registry keys
    written.

    On a key in several directories the last one wins. Secret keys the registry cannot hold as
    they are (a leading ``_``) go under :func:`~plane.kube.storage_config.plane_storage_key`. A
    config the registry refuses is reported and skipped. Keys that are in the registry but not in
    the Secrets are left alone (they may have been added with the console)."""
    from plane.operations import ValidationError

    docs: dict[str, dict[str, Any]] = {}
    for directory in directories:
        docs.update(_read_storage_dir(pathlib.Path(directory)))
    if not docs:
        return []
    own = plane is None
    plane = plane or _connect_with_retry()
    written = []
    try:
        for key, doc in docs.items():
            params = {k: v for k, v in doc.items() if k != "type"}
            try:
                plane.set_storage(plane_storage_key(key), str(doc.get("type", "")), params)
            except (ValidationError, ValueError) as exc:
                print(f"storage key {key!r} not copied: {exc}", flush=True)
                continue
            written.append(plane_storage_key(key))
    finally:
        if own:
            plane.close()
    return sorted(written)


def _demo_model_ids(root: pathlib.Path) -> dict[str, str]:
    """relative path -> model id, from the manifest ``mesh demo`` writes (empty without one)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return {m["path"]: m["model_id"] for m in manifest.get("models", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def sklearn_example_model() -> bytes:
    """The install guide's ``sklearn/mnist-svm.joblib``: the model MLServer's scikit-learn example
    trains (an ``SVC(gamma=0.001)`` on the first half of scikit-learn's bundled 8x8 digits, the
    "MNIST" of that example), serialised with joblib. Built here, not downloaded: the Job needs
    nothing from the internet."""
    import io

    import joblib
    from sklearn import datasets, svm

    digits = datasets.load_digits()
    data = digits.images.reshape((len(digits.images), -1))
    half = len(data) // 2
    model = svm.SVC(gamma=0.001)
    model.fit(data[:half], digits.target[:half])
    buf = io.BytesIO()
    joblib.dump(model, buf)
    return buf.getvalue()


def _upload_sklearn_example(s3: Any, bucket: str, path: str) -> None:
    s3.put_object(Bucket=bucket, Key=path, Body=sklearn_example_model())
    print(f"uploaded the scikit-learn example model to s3://{bucket}/{path}", flush=True)


def publish_demo(directory: str | pathlib.Path, *, storage_dir: str | pathlib.Path, key: str = "default",
                 prefix: str = "demo", plane: Any | None = None, sklearn_example: str = "") -> int:
    """Upload the ``*.onnx`` files under ``directory`` to storage ``key`` (S3) and register them.

    Model ids come from the ``manifest.json`` that ``mesh demo`` writes; without one, from the
    relative path (``a/b.onnx`` -> ``a.b``). Paths are ``prefix/<relative path>``. With
    ``sklearn_example`` (a path in the bucket), :func:`sklearn_example_model` is uploaded there
    too, unregistered: the quickstart's InferenceService registers it through the controller.
    Returns how many models are registered."""
    from plane.api import ModelSpec
    from plane.registry import StorageConfig
    from plane.storage import _s3_client

    root = pathlib.Path(directory)
    files = sorted(p for p in root.rglob("*.onnx") if p.is_file())
    docs = _read_storage_dir(pathlib.Path(storage_dir))
    if key not in docs:
        raise KubeError(f"storage key {key!r} is not in {storage_dir}")
    doc = docs[key]
    specs = []
    if doc.get("type") == "s3":
        cfg = StorageConfig(key=key, type="s3", params={k: v for k, v in doc.items() if k != "type"})
        s3 = _s3_client(cfg)
        bucket = cfg.params.get("default_bucket") or cfg.params.get("bucket")
        deadline = time.monotonic() + CONNECT_RETRY_S
        while True:
            try:
                existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
                break
            except Exception as exc:  # noqa: BLE001 - MinIO may still be starting
                if time.monotonic() >= deadline:
                    raise KubeError(f"storage {key!r} did not answer: {type(exc).__name__}") from exc
                time.sleep(3)
        if bucket not in existing:
            s3.create_bucket(Bucket=bucket)
        for f in files:
            rel = f.relative_to(root).as_posix()
            s3.upload_file(str(f), bucket, f"{prefix}/{rel}" if prefix else rel)
    if sklearn_example and doc.get("type") == "s3":
        _upload_sklearn_example(s3, str(bucket), sklearn_example)
    ids = _demo_model_ids(root)
    for f in files:
        rel = f.relative_to(root).as_posix()
        model_id = ids.get(rel) or rel.removesuffix(".onnx").replace("/", ".")
        specs.append(ModelSpec(model_id=model_id, path=f"{prefix}/{rel}" if prefix else rel, storage_key=key))
    own = plane is None
    plane = plane or _connect_with_retry()
    try:
        plane.set_storage(key, doc.get("type", ""), {k: v for k, v in doc.items() if k != "type"})
        plane.register_models(specs)
    finally:
        if own:
            plane.close()
    return len(specs)


def main(argv: list[str] | None = None) -> int:
    import argparse

    import plane.kube
    from plane.kube.manifest_files import write_manifests

    description = (plane.kube.__doc__ or "").splitlines()[0]
    parser = argparse.ArgumentParser(prog="python -m plane.kube", description=description)
    sub = parser.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("sync-storage", help="copy mounted storage Secrets into the registry")
    p.add_argument("--dir", action="append",
                   help=f"a mounted Secret (repeat; later ones win; default {MODELMESH_STORAGE_MOUNT} "
                        f"then {STORAGE_MOUNT})")
    p = sub.add_parser("publish-demo", help="upload demo models to storage and register them")
    p.add_argument("--dir", required=True)
    p.add_argument("--storage-dir", default=STORAGE_MOUNT)
    p.add_argument("--key", default="default")
    p.add_argument("--prefix", default="demo")
    p.add_argument("--sklearn-example", default="", metavar="PATH",
                   help="also upload the install guide's scikit-learn model to PATH in the bucket")
    p = sub.add_parser("write-manifests", help="regenerate manifests/ (base, components, overlays)")
    p.add_argument("root", nargs="?", default="manifests")
    args = parser.parse_args(argv)
    if args.cmd == "sync-storage":
        keys = sync_storage_dir(*(args.dir or [MODELMESH_STORAGE_MOUNT, STORAGE_MOUNT]))
        print(f"storage keys in the registry: {', '.join(keys) if keys else '(none in the Secret)'}")
    elif args.cmd == "publish-demo":
        n = publish_demo(args.dir, storage_dir=args.storage_dir, key=args.key, prefix=args.prefix,
                         sklearn_example=args.sklearn_example)
        print(f"published and registered {n} demo models")
    else:
        for path in write_manifests(args.root):
            print(path)
    return 0

"""What the plane's own containers run: ``python -m plane.kube sync-storage|publish-demo|write-manifests``.

``sync-storage`` is the init container of every pod (it copies the mounted storage Secret
into the registry); ``publish-demo`` is the quickstart Job's container (it uploads demo
models to MinIO and registers them). These run inside the cluster and talk to etcd and
object storage, not to the Kubernetes API. ``write-manifests`` regenerates ``manifests/``.
"""

from __future__ import annotations

import json
import pathlib
import time
from typing import Any

from plane.kube.defaults import STORAGE_MOUNT, KubeError

CONNECT_RETRY_S = 180.0


def _read_storage_dir(directory: pathlib.Path) -> dict[str, dict[str, Any]]:
    """Storage configs from a mounted Secret: one file per key (hidden ``..data`` links skipped)."""
    out: dict[str, dict[str, Any]] = {}
    if not directory.is_dir():
        return out
    for path in sorted(directory.iterdir()):
        if path.name.startswith(".") or not path.is_file():
            continue
        out[path.name] = json.loads(path.read_text())
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


def sync_storage_dir(directory: str | pathlib.Path, *, plane: Any | None = None) -> list[str]:
    """Copy every storage config of a mounted Secret into the registry; returns the keys copied.

    Keys that are in the registry but not in the Secret are left alone (they may have been
    added with the console)."""
    docs = _read_storage_dir(pathlib.Path(directory))
    if not docs:
        return []
    own = plane is None
    plane = plane or _connect_with_retry()
    try:
        for key, doc in docs.items():
            params = {k: v for k, v in doc.items() if k != "type"}
            plane.set_storage(key, doc.get("type", ""), params)
    finally:
        if own:
            plane.close()
    return sorted(docs)


def _demo_model_ids(root: pathlib.Path) -> dict[str, str]:
    """relative path -> model id, from the manifest ``mesh demo`` writes (empty without one)."""
    try:
        manifest = json.loads((root / "manifest.json").read_text())
        return {m["path"]: m["model_id"] for m in manifest.get("models", [])}
    except (OSError, ValueError, KeyError, TypeError):
        return {}


def publish_demo(directory: str | pathlib.Path, *, storage_dir: str | pathlib.Path, key: str = "default",
                 prefix: str = "demo", plane: Any | None = None) -> int:
    """Upload the ``*.onnx`` files under ``directory`` to storage ``key`` (S3) and register them.

    Model ids come from the ``manifest.json`` that ``mesh demo`` writes; without one, from the
    relative path (``a/b.onnx`` -> ``a.b``). Paths are ``prefix/<relative path>``. Returns how
    many models are registered."""
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
    p = sub.add_parser("sync-storage", help="copy a mounted storage Secret into the registry")
    p.add_argument("--dir", default=STORAGE_MOUNT)
    p = sub.add_parser("publish-demo", help="upload demo models to storage and register them")
    p.add_argument("--dir", required=True)
    p.add_argument("--storage-dir", default=STORAGE_MOUNT)
    p.add_argument("--key", default="default")
    p.add_argument("--prefix", default="demo")
    p = sub.add_parser("write-manifests", help="regenerate manifests/base and manifests/overlays/quickstart")
    p.add_argument("root", nargs="?", default="manifests")
    args = parser.parse_args(argv)
    if args.cmd == "sync-storage":
        keys = sync_storage_dir(args.dir)
        print(f"storage keys in the registry: {', '.join(keys) if keys else '(none in the Secret)'}")
    elif args.cmd == "publish-demo":
        n = publish_demo(args.dir, storage_dir=args.storage_dir, key=args.key, prefix=args.prefix)
        print(f"published and registered {n} demo models")
    else:
        for path in write_manifests(args.root):
            print(path)
    return 0

"""Install and uninstall: the entry points of the CLI and of the console's and dashboard's Install views.

:func:`install` is apply-then-wait; :func:`uninstall` deletes what an install may have
created, in reverse order, keeping the registry's volume and the namespace unless asked.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from plane.kube.cluster import _api, _api_exception_types, _client, _describe_api_error, _read_json
from plane.kube.defaults import (
    _LABEL_MANAGED_BY,
    _LABEL_PART_OF,
    DEFAULT_NAMESPACE,
    FIELD_MANAGER,
    MODELMESH_STORAGE_SECRET,
    PROJECT,
    PROTECTED_NAMESPACES,
    REQUEST_TIMEOUT_S,
    ROLLOUT_POLL_S,
    ROLLOUT_TIMEOUT_S,
    Progress,
)
from plane.kube.output import object_ref
from plane.kube.quickstart import render_quickstart
from plane.kube.render import render_manifests
from plane.kube.rollout import RolloutResult, wait_for_rollout
from plane.kube.server_apply import ApplyResult, apply


@dataclass
class InstallResult:
    applied: ApplyResult
    rollout: RolloutResult | None = None

    @property
    def ok(self) -> bool:
        return self.applied.ok and (self.rollout is None or self.rollout.ready)


def install(
    objects: list[dict[str, Any]],
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    wait: bool = True,
    timeout_s: float = ROLLOUT_TIMEOUT_S,
    poll_s: float = ROLLOUT_POLL_S,
    api_client: Any | None = None,
) -> InstallResult:
    """Apply ``objects`` (from :func:`render_install`) and, when ``wait``, wait for the rollout.

    The one entry point of the CLI, the console's and the dashboard's Install views."""
    api_client = _client(context, api_client)
    applied = apply(objects, progress=progress, api_client=api_client)
    if not wait or not applied.ok:
        return InstallResult(applied)
    rollout = wait_for_rollout(namespace=namespace, progress=progress, timeout_s=timeout_s, poll_s=poll_s,
                               api_client=api_client)
    return InstallResult(applied, rollout)


@dataclass
class UninstallResult:
    deleted: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _installed_objects(namespace: str) -> list[dict[str, Any]]:
    """Everything an install may have created in ``namespace`` (bundled etcd and quickstart included).

    Not ModelMesh's ``storage-config`` Secret: the quickstart renders one, but a ModelMesh user's
    own Secret has the same name, and deleting it would lose their storage credentials."""
    objs = render_manifests(namespace=namespace, pods=1, storage_config={})
    refs = {object_ref(o) for o in objs} | {f"Secret/{namespace}/{MODELMESH_STORAGE_SECRET}"}
    return objs + [o for o in render_quickstart(namespace=namespace) if object_ref(o) not in refs]


def uninstall(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    delete_data: bool = False,
    api_client: Any | None = None,
) -> UninstallResult:
    """Delete what an install applied, in reverse order.

    The etcd volume (the registry: models, vmodels, storage configs) and the namespace are
    kept unless ``delete_data``; then the PersistentVolumeClaims labelled as the plane's go
    too, and the namespace when the plane created it (never ``default`` or ``kube-*``).
    """
    from kubernetes import client

    api_client = _client(context, api_client)
    errors_t = _api_exception_types()
    result = UninstallResult()
    # Reverse order: the pods go before etcd, so their drain on SIGTERM can still reach it.
    objects = [
        obj for obj in reversed(_installed_objects(namespace))
        if obj["kind"] != "Namespace" and (delete_data or obj["kind"] != "PersistentVolumeClaim")
    ]
    total = len(objects) + (1 if delete_data else 0)
    for i, obj in enumerate(objects):
        ref = object_ref(obj)
        if progress:
            progress(f"deleting {ref}", i, total)
        try:
            api, info = _api(api_client, obj["kind"])
            # cluster-scoped objects (the controller's ClusterRole and binding) take no namespace
            call, where = ((getattr(api, f"delete_namespaced_{info.snake}"), (namespace,)) if info.namespaced
                           else (getattr(api, f"delete_{info.snake}"), ()))
            call(obj["metadata"]["name"], *where, propagation_policy="Background",
                 _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
            result.deleted.append(ref)
        except errors_t as exc:
            if getattr(exc, "status", None) == 404:
                result.missing.append(ref)
            else:
                result.errors.append(f"{ref}: {_describe_api_error(exc)}")
    if delete_data:
        core = client.CoreV1Api(api_client)
        if progress:
            progress("deleting volumes", len(objects), total)
        try:
            resp = core.list_namespaced_persistent_volume_claim(
                namespace, label_selector=f"{_LABEL_PART_OF}={PROJECT}", _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT_S,
            )
            for pvc in _read_json(resp).get("items", []):
                name = pvc["metadata"]["name"]
                core.delete_namespaced_persistent_volume_claim(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                )
                result.deleted.append(f"PersistentVolumeClaim/{namespace}/{name}")
            if namespace not in PROTECTED_NAMESPACES:
                ns = _read_json(core.read_namespace(namespace, _preload_content=False,
                                                    _request_timeout=REQUEST_TIMEOUT_S))
                if (ns.get("metadata", {}).get("labels") or {}).get(_LABEL_MANAGED_BY) == FIELD_MANAGER:
                    core.delete_namespace(namespace, _preload_content=False,
                                          _request_timeout=REQUEST_TIMEOUT_S)
                    result.deleted.append(f"Namespace/{namespace}")
        except errors_t as exc:
            if getattr(exc, "status", None) != 404:
                result.errors.append(f"volumes/namespace: {_describe_api_error(exc)}")
    if progress:
        progress(f"deleted {len(result.deleted)} objects", total, total)
    return result

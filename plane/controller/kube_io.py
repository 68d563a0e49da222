"""The controller's calls to the Kubernetes API: list and watch KServe resources, read the storage
Secrets, patch ``status``.

Through the ``kubernetes`` client's ``CustomObjectsApi`` and ``CoreV1Api`` with
``_preload_content=False`` (the bodies are read as JSON here, so custom objects stay plain dicts),
on an ``api_client`` the caller passes: the seam the tests use to point the controller at a
recorded exchange. Watches follow the API's list-then-watch protocol (a list's
``resourceVersion``, ``allowWatchBookmarks``, ``410 Gone`` meaning list again); status is a JSON
merge patch on the ``/status`` subresource, so it needs no ``resourceVersion`` and cannot conflict.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from plane.kube.cluster import _read_json

REQUEST_TIMEOUT_S = 30.0
GROUP = "serving.kserve.io"


@dataclass(frozen=True)
class Resource:
    version: str
    plural: str
    kind: str
    namespaced: bool = True

    @property
    def api_version(self) -> str:
        return f"{GROUP}/{self.version}"


INFERENCE_SERVICES = Resource("v1beta1", "inferenceservices", "InferenceService")
PREDICTORS = Resource("v1alpha1", "predictors", "Predictor")
SERVING_RUNTIMES = Resource("v1alpha1", "servingruntimes", "ServingRuntime")
CLUSTER_SERVING_RUNTIMES = Resource("v1alpha1", "clusterservingruntimes", "ClusterServingRuntime", namespaced=False)


class NotServed(Exception):
    """The API server has no such resource (its definition is not installed)."""


class Expired(Exception):
    """The watch's resourceVersion is too old (410 Gone): list again."""


def _custom(api_client: Any) -> Any:
    from kubernetes import client

    return client.CustomObjectsApi(api_client)


def list_objects(api_client: Any, res: Resource, namespace: str) -> tuple[list[dict[str, Any]], str]:
    """(items, resourceVersion of the list). Raises :class:`NotServed` on 404."""
    from kubernetes.client.exceptions import ApiException

    api = _custom(api_client)
    try:
        if res.namespaced:
            resp = api.list_namespaced_custom_object(GROUP, res.version, namespace, res.plural,
                                                     _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
        else:
            resp = api.list_cluster_custom_object(GROUP, res.version, res.plural,
                                                  _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status == 404:
            raise NotServed(f"{res.plural}.{GROUP}/{res.version} is not served by this cluster") from exc
        raise
    body = _read_json(resp)
    return list(body.get("items") or []), str((body.get("metadata") or {}).get("resourceVersion") or "")


def watch_objects(api_client: Any, res: Resource, namespace: str, resource_version: str, *,
                  timeout_s: int) -> Iterator[tuple[str, dict[str, Any]]]:
    """(event type, object) from ``resource_version`` on, until the server ends the watch after
    ``timeout_s``. BOOKMARK events are yielded (their object carries only a resourceVersion);
    ``410 Gone`` raises :class:`Expired`."""
    from kubernetes.client.exceptions import ApiException
    from kubernetes.watch.watch import iter_resp_lines

    kwargs: dict[str, Any] = {"watch": True, "allow_watch_bookmarks": True, "timeout_seconds": timeout_s,
                              "_preload_content": False, "_request_timeout": timeout_s + REQUEST_TIMEOUT_S}
    if resource_version:
        kwargs["resource_version"] = resource_version
    api = _custom(api_client)
    try:
        if res.namespaced:
            resp = api.list_namespaced_custom_object(GROUP, res.version, namespace, res.plural, **kwargs)
        else:
            resp = api.list_cluster_custom_object(GROUP, res.version, res.plural, **kwargs)
    except ApiException as exc:
        if exc.status == 410:
            raise Expired(str(exc.reason)) from exc
        if exc.status == 404:
            raise NotServed(f"{res.plural}.{GROUP}/{res.version} is not served by this cluster") from exc
        raise
    try:
        for line in iter_resp_lines(resp):
            if not line.strip():
                continue
            event = json.loads(line)
            obj = event.get("object") or {}
            if event.get("type") == "ERROR":
                if obj.get("code") == 410:
                    raise Expired(str(obj.get("message", "resource version too old")))
                raise ApiException(status=obj.get("code"), reason=str(obj.get("message", "")))
            yield str(event.get("type")), obj
    finally:
        resp.release_conn()


def read_secret(api_client: Any, namespace: str, name: str) -> dict[str, Any] | None:
    """The Secret object, or None when there is none (or the controller may not read it)."""
    from kubernetes import client
    from kubernetes.client.exceptions import ApiException

    try:
        resp = client.CoreV1Api(api_client).read_namespaced_secret(
            name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
    except ApiException as exc:
        if exc.status in (403, 404):
            return None
        raise
    return _read_json(resp)


def patch_status(api_client: Any, res: Resource, namespace: str, name: str, patch: dict[str, Any]) -> dict[str, Any]:
    """Merge-patch ``status`` (only that subresource: the spec is the user's); returns the object."""
    resp = _custom(api_client).patch_namespaced_custom_object_status(
        GROUP, res.version, namespace, res.plural, name, {"status": patch},
        _content_type="application/merge-patch+json", _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S)
    return _read_json(resp)

"""Server-side apply of rendered objects (field manager ``mesh-plane``): :func:`apply`.

Errors are collected per object rather than raised, so one refused object does not hide the
others; a Secret's ``stringData`` is sent as ``data`` so that removing a key removes it.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from plane.kube.cluster import _api, _api_exception_types, _client, _describe_api_error
from plane.kube.defaults import FIELD_MANAGER, REQUEST_TIMEOUT_S, KubeError, Progress
from plane.kube.output import object_ref


@dataclass
class AppliedObject:
    ref: str
    created: bool


@dataclass
class ApplyResult:
    applied: list[AppliedObject] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.errors


def _apply_body(obj: dict[str, Any]) -> dict[str, Any]:
    """The object as sent: a Secret's ``stringData`` becomes base64 ``data``.

    ``stringData`` is write-only (the server folds it into ``data``), so with server-side apply a
    key dropped from it would never be removed; owning ``data`` itself makes removals work."""
    if obj.get("kind") != "Secret" or not obj.get("stringData"):
        return obj
    import base64

    body = {k: v for k, v in obj.items() if k != "stringData"}
    data = dict(obj.get("data") or {})
    for key, value in obj["stringData"].items():
        data[key] = base64.b64encode(str(value).encode()).decode()
    body["data"] = data
    return body


def apply(
    objects: list[dict[str, Any]],
    *,
    context: str | None = None,
    progress: Progress | None = None,
    api_client: Any | None = None,
    force: bool = True,
) -> ApplyResult:
    """Server-side apply each object (field manager ``mesh-plane``), in order.

    Errors are collected, not raised, so one refused object does not hide the others; a
    configuration that cannot be loaded raises :class:`KubeError`.
    """
    api_client = _client(context, api_client)
    errors_t = _api_exception_types()
    result = ApplyResult()
    total = len(objects)
    for i, obj in enumerate(objects):
        ref = object_ref(obj)
        if progress:
            progress(f"applying {ref}", i, total)
        try:
            api, info = _api(api_client, obj["kind"])
            name = obj["metadata"]["name"]
            kwargs: dict[str, Any] = {
                # The client serialises a dict body as JSON, which is valid YAML for apply-patch+yaml.
                "body": _apply_body(obj),
                "field_manager": FIELD_MANAGER,
                "force": force,
                "_content_type": "application/apply-patch+yaml",
                "_preload_content": False,
                "_request_timeout": REQUEST_TIMEOUT_S,
            }
            if info.namespaced:
                call = getattr(api, f"patch_namespaced_{info.snake}")
                args: tuple[str, ...] = (name, obj["metadata"]["namespace"])
            else:
                call, args = getattr(api, f"patch_{info.snake}"), (name,)
            try:
                resp = call(*args, **kwargs)
            except errors_t as exc:
                # Clients before the pydantic generation refuse dict bodies for YAML content types
                # ("Cannot prepare a request message") but send strings as they are.
                if getattr(exc, "status", None) != 0:
                    raise
                resp = call(*args, **{**kwargs, "body": json.dumps(kwargs["body"])})
            result.applied.append(AppliedObject(ref, created=getattr(resp, "status", 200) == 201))
        except KubeError as exc:
            result.errors.append(f"{ref}: {exc}")
        except errors_t as exc:
            result.errors.append(f"{ref}: {_describe_api_error(exc)}")
            if getattr(exc, "status", None) is None:
                # No answer at all: the next objects would only wait for the same timeout.
                if i + 1 < total:
                    result.errors.append(f"{total - i - 1} more objects not applied")
                break
    if progress:
        progress(f"applied {len(result.applied)} of {total} objects", total, total)
    return result

"""Waiting for an install to roll out: StatefulSet progress and the pods' states.

:func:`wait_for_rollout` polls the plane's StatefulSets until every replica is updated and
ready, and reports the first problem a pod shows (``ImagePullBackOff``, ``CrashLoopBackOff``...)
through the progress callback, which is what the CLI and the UIs display while they wait.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from plane.kube.cluster import _api_exception_types, _client, _describe_api_error, _read_json
from plane.kube.defaults import (
    _LABEL_PART_OF,
    DEFAULT_NAMESPACE,
    ETCD_NAME,
    POD_STATEFULSET,
    PROJECT,
    REQUEST_TIMEOUT_S,
    ROLLOUT_POLL_S,
    ROLLOUT_TIMEOUT_S,
    Progress,
)


@dataclass
class PodState:
    name: str
    ready: bool
    phase: str
    reason: str = ""
    restarts: int = 0


@dataclass
class RolloutResult:
    ready: bool
    message: str
    pods: list[PodState] = field(default_factory=list)


def _container_reason(pod: dict[str, Any]) -> tuple[str, int]:
    reason, restarts = "", 0
    status = pod.get("status", {})
    for cs in (status.get("initContainerStatuses") or []) + (status.get("containerStatuses") or []):
        restarts += int(cs.get("restartCount") or 0)
        waiting = (cs.get("state") or {}).get("waiting") or {}
        if waiting.get("reason") and waiting["reason"] not in ("PodInitializing", "ContainerCreating"):
            reason = reason or f"{cs.get('name')}: {waiting['reason']}"
    return reason, restarts


def _pod_states(core: Any, namespace: str) -> list[PodState]:
    resp = core.list_namespaced_pod(
        namespace, label_selector=f"{_LABEL_PART_OF}={PROJECT}", _preload_content=False,
        _request_timeout=REQUEST_TIMEOUT_S,
    )
    out = []
    for pod in _read_json(resp).get("items", []):
        status = pod.get("status", {})
        conditions = status.get("conditions") or []
        ready = any(c.get("type") == "Ready" and c.get("status") == "True" for c in conditions)
        reason, restarts = _container_reason(pod)
        out.append(PodState(pod["metadata"]["name"], ready, status.get("phase", "Unknown"), reason, restarts))
    return sorted(out, key=lambda p: p.name)


def _set_progress(sts: dict[str, Any]) -> tuple[int, int, bool]:
    """(ready, wanted, rolled out) of a StatefulSet."""
    spec, status = sts.get("spec", {}), sts.get("status", {})
    wanted = int(spec.get("replicas", 1))
    ready = int(status.get("readyReplicas") or 0)
    updated = int(status.get("updatedReplicas") or 0)
    generation = int(sts.get("metadata", {}).get("generation") or 0)
    observed = int(status.get("observedGeneration") or 0) >= generation
    revision = status.get("updateRevision")
    same_revision = not revision or status.get("currentRevision") == revision
    done = observed and ready >= wanted and updated >= wanted and same_revision
    return min(ready, wanted), wanted, done


def wait_for_rollout(
    *,
    namespace: str = DEFAULT_NAMESPACE,
    context: str | None = None,
    progress: Progress | None = None,
    timeout_s: float = ROLLOUT_TIMEOUT_S,
    poll_s: float = ROLLOUT_POLL_S,
    api_client: Any | None = None,
    statefulsets: Iterable[str] = (ETCD_NAME, POD_STATEFULSET),
) -> RolloutResult:
    """Poll the StatefulSets until every replica is updated and ready, or ``timeout_s`` passes.

    A StatefulSet that does not exist (etcd when the plane uses yours) is skipped. The
    progress callback gets ready/wanted replicas and the first problem a pod reports
    (``ImagePullBackOff``, ``CrashLoopBackOff``...).
    """
    from kubernetes import client

    api_client = _client(context, api_client)
    apps, core = client.AppsV1Api(api_client), client.CoreV1Api(api_client)
    errors_t = _api_exception_types()
    names = list(statefulsets)
    deadline = time.monotonic() + timeout_s
    last_error = ""
    while True:
        ready_total = wanted_total = 0
        all_done = True
        seen = 0
        try:
            for name in names:
                try:
                    resp = apps.read_namespaced_stateful_set(
                        name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT_S
                    )
                except errors_t as exc:
                    if getattr(exc, "status", None) == 404:
                        continue
                    raise
                seen += 1
                ready, wanted, done = _set_progress(_read_json(resp))
                ready_total += ready
                wanted_total += wanted
                all_done = all_done and done
            pods = _pod_states(core, namespace)
            last_error = ""
        except errors_t as exc:
            last_error = _describe_api_error(exc)
            all_done, pods = False, []
        if seen == 0 and not last_error:
            all_done = False
            last_error = f"no mesh-plane StatefulSet in namespace {namespace!r}"
        problems = [f"{p.name} {p.reason}" for p in pods if p.reason]
        message = f"{ready_total}/{wanted_total} replicas ready"
        if problems:
            message += " - " + ", ".join(problems[:3])
        elif last_error:
            message += f" - {last_error}"
        if progress:
            progress(message, ready_total, max(wanted_total, 1))
        if all_done:
            return RolloutResult(True, f"rolled out: {ready_total}/{wanted_total} replicas ready", pods)
        if time.monotonic() >= deadline:
            return RolloutResult(False, f"timed out after {timeout_s:.0f}s: {message}", pods)
        time.sleep(poll_s)

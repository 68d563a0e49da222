"""Choosing pods: where to load a model, which loaded copy serves a request.

Pure functions over plain records (a registry snapshot), so they are unit-tested and can be
replayed against a trace without servers. The order of preference follows ModelMesh:
not shutting down, not full, (when all are full) the oldest least-recently-used copy,
fewer models, more free space, idle loading slots — then random among near-equals, or, for a
request's load (``tie=model_id``), by a hash of the model and pod ids (rendezvous hashing): pods
whose views agree pick the same loader for a model without asking each other, which matters
because a copy is answered from before the registry hears of it.
"""

from __future__ import annotations

import hashlib
import random
from collections.abc import Iterable, Mapping

from plane.records import InstanceRecord

__all__ = ["choose_pod_for_load", "choose_copy", "rank_pods_for_load", "predict_size", "NEAR_EQUAL_FREE_FRACTION",
           "SESSION_OVERHEAD_BYTES", "rendezvous"]

# Measured (bench/model_sizes.py, mallinfo2): the 50 demo models hold 67-200 KiB each, most of it
# per-session overhead; the 100-tree forest holds 1.7x its file. A load reserves this prediction
# until the session is measured, so it should rather be a little high.
SESSION_OVERHEAD_BYTES = 160 * 1024


def predict_size(file_size: int, multiplier: float) -> int:
    """Memory a model is expected to take before its first load (then replaced by the measured
    figure): file size x multiplier + a fixed per-session overhead."""
    return int(file_size * multiplier) + SESSION_OVERHEAD_BYTES

# Pods whose free space differs by less than this fraction of capacity count as equal,
# so that load spreads randomly instead of always landing on one pod.
NEAR_EQUAL_FREE_FRACTION = 0.05
_RNG = random.Random()


def _sort_key(pod: InstanceRecord, size: int) -> tuple:
    fits = pod.free >= size
    loading_full = pod.loading >= max(1, pod.max_loads)
    bucket = int(pod.free / max(1, pod.capacity) / NEAR_EQUAL_FREE_FRACTION)
    return (
        pod.shutting_down,
        loading_full,  # never wait on a pod that is loading at its limit when another can load
        not fits,
        # among full pods: the one whose least recently used copy is oldest evicts least value
        (pod.lru_ms or 0) if not fits else 0,
        -bucket if fits else 0,
        pod.count,
    )


def rank_pods_for_load(
    pods: Iterable[InstanceRecord],
    *,
    size: int,
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
    tie: str | None = None,
) -> list[InstanceRecord]:
    """Candidate pods, best first. Ties (same key) are shuffled, or ordered by
    :func:`rendezvous` of ``tie`` and the pod id when ``tie`` is given."""
    excluded = set(exclude)
    candidates = [p for p in pods if p.pod_id not in excluded]
    if tie is not None:
        candidates.sort(key=lambda p: (_sort_key(p, size), rendezvous(tie, p.pod_id)))
        return candidates
    (rng or _RNG).shuffle(candidates)
    candidates.sort(key=lambda p: _sort_key(p, size))  # stable: shuffled order breaks ties
    return candidates


def rendezvous(key: str, pod_id: str) -> int:
    """A stable pseudo-random rank of ``pod_id`` for ``key`` (the same on every pod and run)."""
    return int.from_bytes(hashlib.blake2b(f"{key}\0{pod_id}".encode(), digest_size=8).digest(), "big")


def choose_pod_for_load(
    pods: Iterable[InstanceRecord],
    *,
    size: int,
    exclude: Iterable[str] = (),
    rng: random.Random | None = None,
    tie: str | None = None,
) -> InstanceRecord | None:
    """The pod that should load a model of ``size`` predicted bytes, or None if none can."""
    ranked = rank_pods_for_load(pods, size=size, exclude=exclude, rng=rng, tie=tie)
    ranked = [p for p in ranked if not p.shutting_down and p.capacity >= size]
    return ranked[0] if ranked else None


def choose_copy(
    holders: Iterable[str],
    in_flight: Mapping[str, int],
    *,
    prefer: str | None = None,
    rng: random.Random | None = None,
) -> str | None:
    """The pod (among those holding a loaded copy) that serves a request: ``prefer`` (this pod)
    when it holds one, else the fewest requests in flight, random among equals."""
    holders = list(holders)
    if not holders:
        return None
    if prefer is not None and prefer in holders:
        return prefer
    rng = rng or _RNG
    rng.shuffle(holders)
    return min(holders, key=lambda p: in_flight.get(p, 0))

"""Usage patterns: how likely a model is to be requested soon. Pure functions, no I/O.

ModelMesh's only predictive loading is "most recently used first". This predictor reads each
model's pattern from three signals kept in its registry record:

* **rate** — the current request rate (sum over pods). A model in use now will be used again.
* **trend** — the rate against its slow moving average (``rpm_avg``): a rising rate means more
  copies will soon be needed, a model whose rate climbs is worth keeping.
* **periodicity** — the start times of its recent *use sessions* (first request after an idle
  gap of ``SESSION_GAP_MS``). When the gaps between sessions are regular (an hourly or daily
  job), the next session is expected at ``last start + mean gap``; as that time approaches the
  model becomes likely even though it has been idle for a while.
* **recency** — otherwise, likelihood decays with time since last use (half-life ``RECENCY_HALF_LIFE_MS``).

The score is the largest of these, in [0, 1]. The leader preloads unloaded models with the
highest scores into free capacity only, so a preload never evicts a model that is more likely to
be used than the one it brings in.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Sequence

from plane.records import ModelRecord

__all__ = [
    "use_probability",
    "periodic_probability",
    "note_session_start",
    "SESSION_GAP_MS",
    "MAX_STARTS",
    "RECENCY_HALF_LIFE_MS",
    "next_expected_start",
    "fresh_rpm",
    "last_used_text",
    "note_use",
    "second_copy_due",
    "SECOND_COPY_MIN_AGE_MS",
    "SECOND_COPY_MAX_AGE_MS",
]

SESSION_GAP_MS = 10 * 60 * 1000  # idle this long, and the next request starts a new session
MAX_STARTS = 12  # session starts kept per model
RECENCY_HALF_LIFE_MS = 20 * 60 * 1000
PERIODIC_MAX_CV = 0.25  # gaps within 25% of each other count as a period
PERIODIC_MIN_SESSIONS = 4  # three regular gaps before a period is trusted
PERIODIC_LEAD_FRACTION = 0.1  # start expecting a session this fraction of the period early
PERIODIC_LEAD_MAX_MS = 10 * 60 * 1000
RPM_AVG_ALPHA = 0.05
RATE_FRESH_MS = 120_000  # a pod's reported rate counts for this long
FREQ_HALF_LIFE_MS = 5 * 60 * 1000  # request counts halve every 5 idle minutes (eviction order)


def note_requests(rec: ModelRecord, n: int, now_ms: int) -> None:
    """Add ``n`` requests to the model's decayed request count. Each pod adds its own count at
    its usage flush; the decay depends only on the clock, so the additions commute."""
    rec.freq = round(request_weight(rec, now_ms) + n, 4)
    rec.freq_ms = now_ms


def request_weight(rec: ModelRecord | None, now_ms: float) -> float:
    """The decayed request count now: how much a copy of this model is worth keeping.
    Pods evict the copies with the lowest weight first (least recently used among equals):
    recency alone lets the long tail of a Zipf workload push out the popular models."""
    if rec is None or rec.freq <= 0:
        return 0.0
    return rec.freq * 0.5 ** (max(0.0, now_ms - rec.freq_ms) / FREQ_HALF_LIFE_MS)


RATE_WINDOW_MS = 60_000  # pods report the request count of their last minute, as a rate


def fresh_rpm(rec: ModelRecord, now_ms: int) -> float:
    """The model's rate now, from its pods' reports. A pod reports the requests of its last
    minute whenever it flushes usage, and it flushes only after requests; so a report of age
    ``a`` still covers the last ``60 s - a`` of the window and nothing after it. The rate is
    scaled down by that share, which brings an idle model to 0 one minute after its last
    request (an estimate between reports that assumes requests were spread evenly)."""
    total = 0.0
    for rpm, at in rec.pod_rpm.values():
        age = max(0, now_ms - at)
        if age < RATE_WINDOW_MS:
            total += rpm * (1.0 - age / RATE_WINDOW_MS)
    return round(total, 1)


def last_used_text(rec: ModelRecord, now_ms: int) -> str:
    """When the model last served a request, in the one wording every front door shows:
    ``never`` for a model never used (its internal ``last_used_ms`` is set in the past at
    registration so it cannot evict used models; that time is no use to an operator)."""
    from plane.settings import format_age

    return format_age(rec.used_ms, now_ms) if rec.used_ms else "never"


# ModelMesh's window for the second copy (ModelMesh.java SECOND_COPY_MIN_AGE_SECS = 420 and
# SECOND_COPY_MAX_AGE_SECS = 2400, "-Dmm.min/max_second_copy_age_secs"): a single-copy model used
# again between 7 and 40 minutes after an earlier use gets a second copy ("regular" usage, as
# opposed to a one-off or a short burst). Fixed here: the flush and the planner must agree on it.
SECOND_COPY_MIN_AGE_MS = 7 * 60 * 1000
SECOND_COPY_MAX_AGE_MS = 40 * 60 * 1000


def note_use(rec: ModelRecord, stamp: int) -> None:
    """Called when usage is flushed, before ``used_ms`` moves to ``stamp``: keeps the earlier
    use the second-copy rule compares with (``prev_used_ms``), exactly as ModelMesh keeps
    ``earlierUseIteration`` (ModelMesh.java ``rateTrackingTask``): the previous use replaces it
    unless the earlier one is inside the window and the previous one is not. Afterwards the
    model is due for a second copy exactly when ``used_ms - prev_used_ms`` lies in the window
    (:func:`second_copy_due`). Steady use never qualifies (each use is seconds after the last),
    a use after 7-40 idle minutes does, and so does a short burst 7-40 minutes after one."""
    if stamp <= rec.used_ms:  # the same or an older use (another pod's flush landed first)
        return
    lower, upper = stamp - SECOND_COPY_MAX_AGE_MS, stamp - SECOND_COPY_MIN_AGE_MS
    earlier, last = rec.prev_used_ms, rec.used_ms
    earlier_in = bool(earlier) and lower <= earlier <= upper
    last_in = bool(last) and lower <= last <= upper
    if last_in or not earlier_in:
        rec.prev_used_ms = last


def second_copy_due(rec: ModelRecord, now_ms: int, recent_ms: int) -> bool:
    """Whether the model's last use (within ``recent_ms``) came 7-40 minutes after the earlier
    use :func:`note_use` kept: ModelMesh's trigger for loading a second copy."""
    if not rec.used_ms or not rec.prev_used_ms or now_ms - rec.used_ms > recent_ms:
        return False
    return SECOND_COPY_MIN_AGE_MS <= rec.used_ms - rec.prev_used_ms <= SECOND_COPY_MAX_AGE_MS


def note_session_start(rec: ModelRecord, now_ms: int) -> None:
    """Called when usage is flushed: a use after an idle gap starts a new session."""
    if not rec.starts or now_ms - max(rec.last_used_ms, rec.starts[-1]) > SESSION_GAP_MS:
        rec.starts = [*rec.starts, now_ms][-MAX_STARTS:]


def update_rate(rec: ModelRecord, pod_id: str, rpm: float, now_ms: int, *, fresh_ms: int = RATE_FRESH_MS) -> None:
    """Record this pod's rate and recompute the model's total and slow average."""
    rec.pod_rpm[pod_id] = [round(rpm, 2), now_ms]
    rec.pod_rpm = {p: v for p, v in rec.pod_rpm.items() if now_ms - v[1] <= fresh_ms}
    rec.rpm = round(sum(v[0] for v in rec.pod_rpm.values()), 2)
    rec.rpm_avg = round(rec.rpm if rec.rpm_avg == 0 else (1 - RPM_AVG_ALPHA) * rec.rpm_avg + RPM_AVG_ALPHA * rec.rpm, 3)


def next_expected_start(starts: Sequence[int], now_ms: int) -> tuple[int, float] | None:
    """(next expected session start, coefficient of variation of the gaps) for regular use."""
    if len(starts) < PERIODIC_MIN_SESSIONS:
        return None
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > a]
    if len(gaps) < PERIODIC_MIN_SESSIONS - 1:
        return None
    mean = statistics.fmean(gaps)
    if mean <= 0:
        return None
    cv = statistics.pstdev(gaps) / mean
    if cv > PERIODIC_MAX_CV:
        return None
    nxt = starts[-1] + mean
    while nxt + mean * PERIODIC_LEAD_FRACTION < now_ms:  # missed sessions: expect the next one
        nxt += mean
    return int(nxt), cv


def periodic_probability(rec: ModelRecord, now_ms: int, horizon_ms: int) -> float:
    guess = next_expected_start(rec.starts, now_ms)
    if guess is None:
        return 0.0
    nxt, cv = guess
    period = (rec.starts[-1] - rec.starts[0]) / max(1, len(rec.starts) - 1)
    lead = min(PERIODIC_LEAD_MAX_MS, period * PERIODIC_LEAD_FRACTION)
    if now_ms + horizon_ms + lead < nxt:
        return 0.0  # not due yet
    confidence = 1.0 - cv / PERIODIC_MAX_CV * 0.5  # 1.0 for perfectly regular, 0.5 at the limit
    confidence *= min(1.0, len(rec.starts) / 6 + 0.5)
    return max(0.0, min(0.95, confidence))


def use_probability(rec: ModelRecord, now_ms: int, *, horizon_ms: int = 5 * 60 * 1000) -> float:
    """How likely a request for this model is within ``horizon_ms`` (a score in [0, 1])."""
    horizon_min = horizon_ms / 60000
    rpm = fresh_rpm(rec, now_ms)
    p_rate = 1.0 - math.exp(-rpm * horizon_min) if rpm > 0 else 0.0
    if rpm > 0 and rec.rpm_avg > 0 and rpm > 1.5 * rec.rpm_avg:
        p_rate = min(1.0, p_rate + 0.1)  # rising
    p_periodic = periodic_probability(rec, now_ms, horizon_ms)
    idle = max(0, now_ms - rec.last_used_ms)
    p_recent = 0.8 * 0.5 ** (idle / RECENCY_HALF_LIFE_MS) if rec.last_used_ms else 0.0
    return max(p_rate, p_periodic, p_recent)

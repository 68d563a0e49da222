"""Usage patterns: how likely a model is to be requested soon. Pure functions, no I/O.

ModelMesh's only predictive loading is "most recently used first". This predictor reads each
model's pattern from the signals kept in its registry record:

* **rate** — the current request rate (sum over pods). A model in use now will be used again.
* **trend** — the rate against its slow moving average (``rpm_avg``): a rising rate means more
  copies will soon be needed, a model whose rate climbs is worth keeping.
* **count** — the request count decayed with a 5-minute half-life (``freq``): an estimate of the
  rate that, unlike the 60 s window, remembers a model used a few times a few minutes ago.
* **periodicity** — the start times of its recent *use sessions* (first request after an idle
  gap of ``SESSION_GAP_MS``). When the gaps between sessions are regular (an hourly or daily
  job), the next session is expected at ``last start + mean gap``; as that time approaches the
  model becomes likely even though it has been idle for a while. Between two sessions of such a
  model, once its session is over (idle for five of its usual in-session gaps), it is worth
  nothing until the next one is due, whatever its count says.
* **recency** — otherwise, likelihood decays with time since last use (half-life ``RECENCY_HALF_LIFE_MS``).

Two readings of these signals, on one scale:

* :func:`use_probability` (rate, trend, periodicity, recency): ranks unloaded models for
  preloads into *free* space, which displace nothing;
* :func:`request_weight` — the value of keeping a copy, in decayed requests: the pods evict the
  lowest first, and :func:`near_term_value` reads the same weight (or the current rate) as the
  probability of a request within ``PREDICT_HORIZON_MS``. The planner compares those values to
  decide a preload that *replaces* a resident copy, so the pods' eviction order and the
  planner's replacements never disagree about which copy is worth less.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Sequence

from plane.records import ModelRecord

__all__ = [
    "use_probability",
    "near_term_value",
    "keep_weight",
    "rate_weight",
    "request_weight",
    "decayed_count",
    "weight_to_probability",
    "probability_to_weight",
    "session_over",
    "regular",
    "PREDICT_HORIZON_MS",
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
PREDICT_MAX_CV = 0.1  # stricter, for a period that may displace or protect copies (Zipf's tail models
# show a 0.25 regularity by chance over a few sessions; jobs and daily use show 0.01-0.07)
PERIODIC_LEAD_FRACTION = 0.1  # expect a session at most this fraction of the period early ...
PERIODIC_LEAD_MAX_MS = 10 * 60 * 1000  # ... and at most this early,
PERIODIC_LEAD_SPREAD = 4.0  # but no earlier than this many standard deviations of the gaps
PERIODIC_LEAD_MIN_MS = 60_000  # (and at least a minute: sessions are noticed at usage flushes)
SESSION_END_GAPS = 5.0  # a periodic model idle for this many of its in-session gaps has ended its session
SESSION_END_MIN_MS = 60_000  # ... and for at least this long
PREDICT_HORIZON_MS = 2 * 60 * 1000  # near_term_value: probability of a request within this
RPM_AVG_ALPHA = 0.05
RATE_FRESH_MS = 120_000  # a pod's reported rate counts for this long
FREQ_HALF_LIFE_MS = 5 * 60 * 1000  # request counts halve every 5 idle minutes (eviction order)


def note_requests(rec: ModelRecord, n: int, now_ms: int) -> None:
    """Add ``n`` requests to the model's decayed request count. Each pod adds its own count at
    its usage flush; the decay depends only on the clock, so the additions commute."""
    rec.freq = round(decayed_count(rec, now_ms) + n, 4)
    rec.freq_ms = now_ms


def decayed_count(rec: ModelRecord | None, now_ms: float) -> float:
    """The model's request count now, each request halving every ``FREQ_HALF_LIFE_MS``."""
    if rec is None or rec.freq <= 0:
        return 0.0
    return rec.freq * 0.5 ** (max(0.0, now_ms - rec.freq_ms) / FREQ_HALF_LIFE_MS)


def request_weight(rec: ModelRecord | None, now_ms: float, *, predicted: bool = True) -> float:
    """How much a copy of this model is worth keeping, in decayed requests: the pods evict the
    copies with the lowest weight first (least recently used among equals); recency alone lets
    the long tail of a Zipf workload push out the popular models.

    The weight is the decayed request count, except for a model with a :func:`regular` session
    pattern (``predicted``, the default): while its next session is due it weighs at least what its
    :func:`periodic_probability` is worth (:func:`probability_to_weight`), so a copy preloaded for
    it is not evicted before its use; once its session is over (:func:`session_over`) and until
    the next is due it weighs 0, so a finished job's copies go first. ``predicted=False`` is the
    count alone (the order before the predictor took part in eviction)."""
    w = decayed_count(rec, now_ms)
    if rec is None or not predicted or not regular(rec):
        return w
    p = periodic_probability(rec, int(now_ms), PREDICT_HORIZON_MS)
    if p > 0:
        return max(w, probability_to_weight(p, PREDICT_HORIZON_MS))
    if w > 0 and session_over(rec, now_ms):
        return 0.0
    return w


def regular(rec: ModelRecord) -> bool:
    """Whether the model's sessions are regular enough (coefficient of variation of the gaps at
    most ``PREDICT_MAX_CV``) for its period to protect its copies and displace others."""
    if len(rec.starts) < PERIODIC_MIN_SESSIONS:
        return False
    pattern = _pattern(tuple(rec.starts))
    return pattern is not None and pattern[1] <= PREDICT_MAX_CV * pattern[0]


def weight_to_probability(weight: float, horizon_ms: float = PREDICT_HORIZON_MS) -> float:
    """The probability of a request within ``horizon_ms`` for a model whose decayed count is
    ``weight``: a count with half-life h estimates the rate as ``weight * ln 2 / h``."""
    if weight <= 0:
        return 0.0
    return 1.0 - 0.5 ** (weight * horizon_ms / FREQ_HALF_LIFE_MS)


def probability_to_weight(p: float, horizon_ms: float = PREDICT_HORIZON_MS) -> float:
    """The inverse of :func:`weight_to_probability` (p capped below 1)."""
    if p <= 0:
        return 0.0
    return -math.log2(1.0 - min(p, 0.999)) * FREQ_HALF_LIFE_MS / horizon_ms


def session_over(rec: ModelRecord, now_ms: float) -> bool:
    """Whether the model's current use session has ended: idle for ``SESSION_END_GAPS`` of its
    usual gaps between requests (``rpm_avg``, the slow average of the rate reported while it is
    used) and for at least ``SESSION_END_MIN_MS``."""
    idle = now_ms - rec.last_used_ms
    if idle < SESSION_END_MIN_MS:
        return False
    return rec.rpm_avg <= 0 or idle * rec.rpm_avg / 60_000 >= SESSION_END_GAPS


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


@functools.lru_cache(maxsize=1 << 16)
def _pattern(starts: tuple[int, ...]) -> tuple[float, float] | None:
    """(mean gap, standard deviation of the gaps) of regular sessions, else None. Cached: the
    pods ask for every copy at each eviction and the planner for every model at each round."""
    if len(starts) < PERIODIC_MIN_SESSIONS:
        return None
    gaps = [b - a for a, b in zip(starts, starts[1:], strict=False) if b > a]
    if len(gaps) < PERIODIC_MIN_SESSIONS - 1:
        return None
    mean = sum(gaps) / len(gaps)
    sd = math.sqrt(sum((g - mean) ** 2 for g in gaps) / len(gaps))
    if mean <= 0 or sd / mean > PERIODIC_MAX_CV:
        return None
    return mean, sd


def _lead(mean: float, sd: float) -> float:
    """How early a session is expected: a few standard deviations of the gaps (at least a
    minute), never more than ``PERIODIC_LEAD_FRACTION`` of the period or ``PERIODIC_LEAD_MAX_MS``."""
    spread = max(PERIODIC_LEAD_MIN_MS, PERIODIC_LEAD_SPREAD * sd)
    return min(PERIODIC_LEAD_MAX_MS, mean * PERIODIC_LEAD_FRACTION, spread)


def next_expected_start(starts: Sequence[int], now_ms: int) -> tuple[int, float] | None:
    """(next expected session start, coefficient of variation of the gaps) for regular use."""
    pattern = _pattern(tuple(starts))
    if pattern is None:
        return None
    mean, sd = pattern
    nxt = starts[-1] + mean
    lead = _lead(mean, sd)
    if nxt + lead < now_ms:  # missed sessions: expect the next one
        nxt += math.ceil((now_ms - lead - nxt) / mean) * mean
    return int(nxt), sd / mean


def periodic_probability(rec: ModelRecord, now_ms: int, horizon_ms: int) -> float:
    """The probability of the model's next regular session within ``horizon_ms`` (0 when it is
    not due yet, or the model has no regular pattern)."""
    pattern = _pattern(tuple(rec.starts))
    if pattern is None:
        return 0.0
    guess = next_expected_start(rec.starts, now_ms)
    assert guess is not None
    nxt, cv = guess
    if now_ms + horizon_ms + _lead(*pattern) < nxt:
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


def rate_weight(rpm: float) -> float:
    """The decayed count a steady rate of ``rpm`` requests per minute keeps up."""
    return rpm * FREQ_HALF_LIFE_MS / 60_000 / math.log(2) if rpm > 0 else 0.0


def keep_weight(rec: ModelRecord, now_ms: int) -> float:
    """:func:`request_weight`, or the weight of the model's current rate if that is higher (a
    burst the pods have reported but not yet counted): the planner's value of a resident copy."""
    return max(request_weight(rec, now_ms), rate_weight(fresh_rpm(rec, now_ms)))


def near_term_value(rec: ModelRecord, now_ms: int, horizon_ms: int = PREDICT_HORIZON_MS) -> float:
    """The probability of a request within ``horizon_ms``, as the planner compares a preload
    candidate with the copies it would displace: :func:`keep_weight` read as a rate
    (:func:`weight_to_probability`). The weight carries the count and the periodic pattern, so
    a model the pods would evict first is also the one worth least here, at any horizon. No
    recency term: recency is not the pods' eviction order."""
    return weight_to_probability(keep_weight(rec, now_ms), horizon_ms)

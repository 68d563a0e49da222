"""Replayable request traces for the cache-efficiency benchmark (``bench/cache_sim.py``).

Every trace is generated, never downloaded, and is a pure function of its parameters and seed:
the same call returns the same requests on every machine (numpy's PCG64 generator).

A trace is a :class:`Trace`: parallel arrays of request times (ms from the start of the trace,
non-decreasing) and model indices in ``[0, n_models)``. Model index ``i`` is registered in the plane
as :func:`model_name` ``(i)``.

Traces:

* :func:`zipf_trace` — Poisson arrivals, each request for the model of popularity rank ``r`` with
  probability proportional to ``r ** -alpha``. Ranks are mapped to model ids through a random
  permutation, so popularity is not aligned with ids (a policy cannot cheat on id order).
* :func:`periodic_trace` — background Zipf traffic whose ranking is re-permuted every
  ``shift_every_s`` (popularity shifts), plus batch jobs: groups of models that each receive a
  burst of requests at a fixed offset in every period (e.g. 20 models every 20 minutes at minute
  7, 10 models every hour at minute 33). Batch models are not part of the background traffic.
* :func:`jobs_trace` — periodic jobs over a steady (never re-ranked) Zipf background: each job is
  a group of models used together every N minutes, a short burst of requests over the group.
* :func:`daily_trace` — a time-of-day pattern compressed so that a "day" lasts ``day_s``: cohorts
  of models are used only during their "working hours" each day (a window starting at the
  cohort's hour, a little earlier or later each day), over a steady Zipf background.

``jobs_trace`` and ``daily_trace`` tag the first request of each model in each job run or daily
window (``Trace.tags`` = 1) and set ``params["warmup_ms"]``: the predictor needs a few sessions
of each model before it trusts a period, so the simulator measures only what follows.
"""

from __future__ import annotations

import csv
import pathlib
from dataclasses import dataclass, field

import numpy as np

__all__ = [
    "Trace", "BatchJob", "Job", "zipf_trace", "periodic_trace", "jobs_trace", "daily_trace", "model_name",
    "named_trace", "standard_traces", "STANDARD", "PREDICTIVE",
]


def model_name(index: int) -> str:
    return f"model-{index:04d}"


@dataclass
class Trace:
    name: str
    n_models: int
    times_ms: np.ndarray  # int64, non-decreasing
    models: np.ndarray  # int32 model indices
    description: str = ""
    params: dict = field(default_factory=dict)
    tags: np.ndarray | None = None  # int8 per request: 1 = the first request of a job run / daily window

    def __len__(self) -> int:
        return len(self.models)

    @property
    def duration_s(self) -> float:
        return float(self.times_ms[-1] - self.times_ms[0]) / 1000 if len(self) else 0.0

    def requests(self) -> list[tuple[int, int]]:
        """``(time_ms, model index)`` pairs, in order."""
        return list(zip(self.times_ms.tolist(), self.models.tolist(), strict=True))

    def save(self, path: str | pathlib.Path) -> None:
        """Write as CSV (``time_ms,model``), replayable with :meth:`load`."""
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["time_ms", "model"])
            w.writerows(zip(self.times_ms.tolist(), (model_name(m) for m in self.models.tolist()), strict=True))

    @classmethod
    def load(cls, path: str | pathlib.Path, *, n_models: int | None = None, name: str = "") -> Trace:
        times, models = [], []
        with open(path, newline="") as f:
            r = csv.reader(f)
            next(r)
            for t, m in r:
                times.append(int(t))
                models.append(int(m.rsplit("-", 1)[1]))
        arr = np.asarray(models, dtype=np.int32)
        return cls(name or pathlib.Path(path).stem, n_models or int(arr.max()) + 1,
                   np.asarray(times, dtype=np.int64), arr)


def _zipf_probs(n: int, alpha: float) -> np.ndarray:
    w = np.arange(1, n + 1, dtype=np.float64) ** -alpha
    return w / w.sum()


def _poisson_times(rng: np.random.Generator, n: int, rate_per_s: float) -> np.ndarray:
    gaps = rng.exponential(1000.0 / rate_per_s, size=n)
    return np.floor(np.cumsum(gaps)).astype(np.int64)


def zipf_trace(
    alpha: float, *, n_models: int = 1000, n_requests: int = 200_000, rate_per_s: float = 50.0, seed: int = 1
) -> Trace:
    """Independent requests with Zipf(alpha) popularity over a random permutation of model ids."""
    rng = np.random.default_rng([seed, int(alpha * 1000)])
    perm = rng.permutation(n_models).astype(np.int32)  # perm[rank] = model index
    ranks = rng.choice(n_models, size=n_requests, p=_zipf_probs(n_models, alpha))
    times = _poisson_times(rng, n_requests, rate_per_s)
    return Trace(
        f"zipf-{alpha:g}", n_models, times, perm[ranks],
        description=f"Zipf alpha={alpha:g}, {n_models} models (ids randomly permuted), {n_requests} requests, "
                    f"Poisson arrivals at {rate_per_s:g}/s ({n_requests / rate_per_s / 60:.0f} min)",
        params=dict(alpha=alpha, n_models=n_models, n_requests=n_requests, rate_per_s=rate_per_s, seed=seed),
    )


@dataclass(frozen=True)
class BatchJob:
    n_models: int
    period_s: int
    offset_s: int
    burst_requests: int = 60  # requests per model per burst
    burst_s: int = 60  # the burst of each model lasts this long
    jitter_s: int = 20  # each model's burst starts up to this late


def periodic_trace(
    *,
    n_models: int = 1000,
    duration_s: int = 4 * 3600,
    rate_per_s: float = 15.0,
    alpha: float = 0.9,
    shift_every_s: int = 30 * 60,
    shift_fraction: float = 1.0,
    jobs: tuple[BatchJob, ...] = (BatchJob(20, 20 * 60, 7 * 60), BatchJob(10, 3600, 33 * 60)),
    seed: int = 3,
) -> Trace:
    """Background Zipf(alpha) traffic re-ranked every ``shift_every_s`` plus periodic batch bursts.

    At each shift a ``shift_fraction`` of the ranks (chosen at random) swap their models among
    themselves: 1.0 re-permutes the whole ranking, so yesterday's popular models become average
    and some tail models become popular. Batch models are a fixed random set, disjoint from the
    background models; each job's models get ``burst_requests`` requests spread uniformly over
    ``burst_s`` seconds, starting at ``offset_s`` (+ jitter) into every period.
    """
    rng = np.random.default_rng([seed, 77])
    ids = rng.permutation(n_models).astype(np.int32)
    n_batch = sum(j.n_models for j in jobs)
    batch_ids, bg_ids = ids[:n_batch], ids[n_batch:]
    n_bg = len(bg_ids)
    probs = _zipf_probs(n_bg, alpha)

    # background
    n_req = int(rng.poisson(rate_per_s * duration_s))
    times = np.sort(rng.uniform(0, duration_s * 1000, size=n_req)).astype(np.int64)
    ranks = rng.choice(n_bg, size=n_req, p=probs)
    models = np.empty(n_req, dtype=np.int32)
    perm = rng.permutation(n_bg).astype(np.int32)
    epoch_of = times // (shift_every_s * 1000)
    for epoch in range(int(epoch_of.max()) + 1 if n_req else 0):
        if epoch > 0:
            k = max(2, int(round(shift_fraction * n_bg)))
            pos = rng.choice(n_bg, size=k, replace=False)
            perm[pos] = perm[rng.permutation(pos)]
        sel = epoch_of == epoch
        models[sel] = bg_ids[perm[ranks[sel]]]

    # batch bursts
    bt, bm = [], []
    start = 0
    for job in jobs:
        members = batch_ids[start : start + job.n_models]
        start += job.n_models
        for t0 in range(job.offset_s, duration_s, job.period_s):
            for m in members:
                begin = t0 + rng.uniform(0, job.jitter_s)
                ts = begin + np.sort(rng.uniform(0, job.burst_s, size=job.burst_requests))
                ts = ts[ts < duration_s]
                bt.append((ts * 1000).astype(np.int64))
                bm.append(np.full(len(ts), m, dtype=np.int32))
    all_t = np.concatenate([times, *bt])
    all_m = np.concatenate([models, *bm])
    order = np.argsort(all_t, kind="stable")
    jobs_text = "; ".join(
        f"{j.n_models} models every {j.period_s // 60} min at +{j.offset_s // 60} min "
        f"({j.burst_requests} req each over {j.burst_s} s)" for j in jobs
    )
    return Trace(
        "periodic", n_models, all_t[order], all_m[order],
        description=f"{duration_s / 3600:g} h: background Zipf alpha={alpha:g} over {n_bg} models at "
                    f"{rate_per_s:g}/s, ranking re-permuted ({shift_fraction:.0%}) every {shift_every_s // 60} min; "
                    f"batch jobs: {jobs_text}",
        params=dict(n_models=n_models, duration_s=duration_s, rate_per_s=rate_per_s, alpha=alpha,
                    shift_every_s=shift_every_s, shift_fraction=shift_fraction, seed=seed),
    )


@dataclass(frozen=True)
class Job:
    """A periodic job: ``n_models`` models used together every ``period_s`` from ``offset_s`` on;
    each run sends every model ``burst_requests`` requests spread over ``burst_s`` seconds, each
    model's burst starting up to ``jitter_s`` after the run starts."""

    n_models: int
    period_s: int
    offset_s: int
    burst_requests: int = 10
    burst_s: int = 20
    jitter_s: float = 5.0


def _merge(name: str, n_models: int, parts: list[tuple[np.ndarray, np.ndarray, np.ndarray]], **kw) -> Trace:
    t = np.concatenate([p[0] for p in parts])
    m = np.concatenate([p[1] for p in parts])
    g = np.concatenate([p[2] for p in parts])
    order = np.argsort(t, kind="stable")
    return Trace(name, n_models, t[order], m[order], tags=g[order], **kw)


def _background(rng: np.random.Generator, ids: np.ndarray, alpha: float, rate_per_s: float,
                duration_s: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Steady Zipf(alpha) over ``ids`` (in random rank order), Poisson arrivals, untagged."""
    n = int(rng.poisson(rate_per_s * duration_s))
    times = np.sort(rng.uniform(0, duration_s * 1000, size=n)).astype(np.int64)
    ranks = rng.choice(len(ids), size=n, p=_zipf_probs(len(ids), alpha))
    return times, rng.permutation(ids)[ranks].astype(np.int32), np.zeros(n, dtype=np.int8)


def _window(rng: np.random.Generator, model: int, begin_s: float, length_s: float, n: int, end_s: float):
    """``n`` requests of one model uniformly over a window; the first one tagged."""
    ts = np.sort(begin_s + rng.uniform(0, length_s, size=n))
    ts = ts[ts < end_s]
    tags = np.zeros(len(ts), dtype=np.int8)
    tags[:1] = 1
    return (ts * 1000).astype(np.int64), np.full(len(ts), model, dtype=np.int32), tags


def jobs_trace(
    *,
    n_models: int = 500,
    measured_s: int = 3 * 3600,
    rate_per_s: float = 5.0,
    alpha: float = 1.0,
    jobs: tuple[Job, ...] = (Job(30, 20 * 60, 60), Job(30, 25 * 60, 4 * 60), Job(30, 30 * 60, 7 * 60),
                             Job(30, 40 * 60, 11 * 60)),
    warmup_s: int | None = None,
    seed: int = 5,
) -> Trace:
    """Periodic jobs over a steady Zipf(alpha) background of the other models (see :class:`Job`).
    The measured part starts once every job has run four times (``warmup_s`` by default): the
    predictor trusts a period after four sessions."""
    if warmup_s is None:
        warmup_s = max(j.offset_s + 3 * j.period_s + j.burst_s for j in jobs) + 60
    duration_s = warmup_s + measured_s
    rng = np.random.default_rng([seed, 15])
    ids = rng.permutation(n_models).astype(np.int32)
    n_job = sum(j.n_models for j in jobs)
    parts = [_background(rng, ids[n_job:], alpha, rate_per_s, duration_s)]
    start = 0
    for job in jobs:
        members = ids[start : start + job.n_models]
        start += job.n_models
        for t0 in range(job.offset_s, duration_s, job.period_s):
            for m in members:
                parts.append(_window(rng, int(m), t0 + rng.uniform(0, job.jitter_s), job.burst_s,
                                     job.burst_requests, duration_s))
    text = "; ".join(f"{j.n_models} models every {j.period_s // 60} min ({j.burst_requests} req each over "
                     f"{j.burst_s} s)" for j in jobs)
    return _merge(
        "jobs", n_models, parts,
        description=f"{duration_s / 3600:.1f} h (first {warmup_s / 60:.0f} min not measured): "
                    f"steady Zipf alpha={alpha:g} over {n_models - n_job} models at {rate_per_s:g}/s; jobs: {text}",
        params=dict(n_models=n_models, duration_s=duration_s, rate_per_s=rate_per_s, alpha=alpha, seed=seed,
                    warmup_ms=warmup_s * 1000, capacity_fraction=0.6),
    )


def daily_trace(
    *,
    n_models: int = 500,
    day_s: int = 3600,
    days: int = 8,
    warmup_days: int = 4,
    cohorts: int = 4,
    cohort_models: int = 40,
    hours: float = 8.0,
    rpm: float = 2.0,
    jitter_s: float = 60.0,
    rate_per_s: float = 5.0,
    alpha: float = 1.0,
    seed: int = 6,
) -> Trace:
    """Time-of-day use, a day compressed into ``day_s`` seconds: ``cohorts`` groups of
    ``cohort_models`` models, cohort ``c`` used during ``hours`` of every day from hour
    ``24 (c + 1/2) / cohorts`` on (each model's window starts up to ``jitter_s`` earlier or later each
    day), at ``rpm`` requests per minute per model (Poisson), over a steady Zipf background."""
    rng = np.random.default_rng([seed, 24])
    ids = rng.permutation(n_models).astype(np.int32)
    n_daily = cohorts * cohort_models
    duration_s = day_s * days
    parts = [_background(rng, ids[n_daily:], alpha, rate_per_s, duration_s)]
    length = day_s * hours / 24
    for c in range(cohorts):
        members = ids[c * cohort_models : (c + 1) * cohort_models]
        for d in range(days):
            for m in members:
                begin = d * day_s + (c + 0.5) * day_s / cohorts + rng.uniform(-jitter_s, jitter_s)
                n = int(rng.poisson(rpm * length / 60))
                if begin >= 0 and n:
                    parts.append(_window(rng, int(m), begin, length, n, duration_s))
    return _merge(
        "daily", n_models, parts,
        description=f"{days} compressed days of {day_s // 60} min (first {warmup_days} not measured): "
                    f"{cohorts} cohorts of {cohort_models} models used {hours:g} h a day ({length / 60:.0f} min) "
                    f"at {rpm:g}/min each, "
                    f"starting ±{jitter_s:g} s around their hour; steady Zipf alpha={alpha:g} over "
                    f"{n_models - n_daily} models at {rate_per_s:g}/s",
        params=dict(n_models=n_models, day_s=day_s, days=days, rpm=rpm, rate_per_s=rate_per_s, alpha=alpha, seed=seed,
                    warmup_ms=warmup_days * day_s * 1000, capacity_fraction=0.6),
    )


STANDARD = ("zipf-0.8", "zipf-1.1", "periodic")
PREDICTIVE = ("jobs", "daily", "zipf-60")  # capacity for 60% of the models (params["capacity_fraction"])


def named_trace(name: str, scale: float = 1.0) -> Trace:
    """A trace of the benchmark by name; ``scale`` < 1 shortens it (for quick runs).

    ``periodic-mild`` is not in the standard set: the periodic trace with only 30% of the ranks
    reshuffled at each shift (a slower drift, where the static oracle is stronger). ``jobs`` and
    ``daily`` keep their warm-up whatever the scale (only the measured part shrinks); ``zipf-60``
    is Zipf alpha=1.0 over 500 models for the same capacity (60%)."""
    if name == "zipf-0.8":
        return zipf_trace(0.8, n_requests=int(200_000 * scale))
    if name == "zipf-1.1":
        return zipf_trace(1.1, n_requests=int(200_000 * scale))
    if name == "periodic":
        return periodic_trace(duration_s=int(4 * 3600 * scale))
    if name == "periodic-mild":
        t = periodic_trace(duration_s=int(4 * 3600 * scale), shift_fraction=0.3)
        t.name = "periodic-mild"
        return t
    if name == "jobs":
        return jobs_trace(measured_s=int(3 * 3600 * scale))
    if name == "daily":
        return daily_trace(days=4 + max(1, round(4 * scale)))
    if name == "zipf-60":
        t = zipf_trace(1.0, n_models=500, n_requests=int(100_000 * scale), rate_per_s=10.0, seed=8)
        t.name = "zipf-60"
        t.params["capacity_fraction"] = 0.6
        return t
    raise ValueError(f"unknown trace {name!r}")


def standard_traces(scale: float = 1.0) -> list[Trace]:
    """The three traces of the benchmark; ``scale`` < 1 shortens them (for quick runs)."""
    return [named_trace(n, scale) for n in STANDARD]

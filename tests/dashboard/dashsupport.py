"""Helpers of the dashboard tests: simulated pods writing real registry records."""

from __future__ import annotations

import json
import pathlib

import pandas as pd
import streamlit as st
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from dashboard import state
from plane import stats, usage
from plane.api import PlaneClient
from plane.registry import CopyInfo, Event, FailureInfo, InstanceRecord, ModelRecord, now_ms

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
MIB = 1024 * 1024


class SimPods:
    """Writes what runtime pods write: instance records on a lease, copy states, events, and
    each pod's per-minute counts (plane.stats), exactly as plane.pod.accounting writes them."""

    def __init__(self, client: PlaneClient):
        self.client = client
        self.lease = client.run_async(client.registry.client.lease(60))
        self.minutes: dict[tuple[str, int], dict[str, int]] = {}

    def count(self, pod_id: str, kind: str, n: int = 1, *, at_ms: int = 0) -> None:
        """Add ``n`` to the pod's ``kind`` count of the minute of ``at_ms`` (default now) and
        write that minute's record whole, as a pod's flush does."""
        minute = stats.minute_of(at_ms or now_ms())
        row = self.minutes.setdefault((pod_id, minute), {})
        row[kind] = row.get(kind, 0) + n
        self.client.run_async(self.client.registry.put_stats(stats.StatsRecord(pod_id, minute, dict(row))))

    def fail(self, model_id: str, pod_id: str, message: str) -> None:
        """A failed load: the pod's failure on the model, a load-failed event, a count."""

        def change(m: ModelRecord) -> ModelRecord:
            m.failed[pod_id] = FailureInfo(time_ms=now_ms(), message=message)
            return m

        self.client.run_async(self.client.registry.update_model(model_id, change))
        self.event("load-failed", model_id, pod_id, reason=message)
        self.count(pod_id, "failures")

    def add_pod(
        self, pod_id: str, *, capacity: int = 256 * MIB, used: int = 0, count: int = 0
    ) -> InstanceRecord:
        rec = InstanceRecord(
            pod_id=pod_id,
            endpoint=f"127.0.0.1:{9000 + len(pod_id)}",
            capacity=capacity,
            used=used,
            count=count,
            started_ms=now_ms(),
            updated_ms=now_ms(),
        )
        self.client.run_async(self.client.registry.put_instance(rec, self.lease))
        return rec

    def place(self, model_id: str, pod_id: str, *, size: int = 32 * MIB, state: str = "loaded") -> None:
        def change(m: ModelRecord) -> ModelRecord:
            m.copies[pod_id] = CopyInfo(state=state, since_ms=now_ms(), size=size)
            m.size = size
            return m

        self.client.run_async(self.client.registry.update_model(model_id, change))
        self.event("load", model_id, pod_id, size)
        if state == "loaded":
            self.event("loaded", model_id, pod_id, size)
            self.count(pod_id, "loads")
        self.refresh_pod(pod_id)

    def serve(self, model_id: str, pod_id: str, *, rpm: float, at_ms: int, requests: int = 10) -> None:
        """A usage flush as a pod writes it after serving requests (``plane.pod._flush_usage``)."""

        def change(m: ModelRecord) -> ModelRecord:
            usage.note_requests(m, requests, at_ms)
            m.last_used_ms = max(m.last_used_ms, at_ms)
            m.used_ms = at_ms
            usage.update_rate(m, pod_id, rpm, at_ms)
            return m

        self.client.run_async(self.client.registry.update_model(model_id, change))

    def evict(self, model_id: str, pod_id: str) -> None:
        def change(m: ModelRecord) -> ModelRecord:
            m.copies.pop(pod_id, None)
            return m

        self.client.run_async(self.client.registry.update_model(model_id, change))
        self.event("evict", model_id, pod_id, 0, reason="lru")
        self.count(pod_id, "evictions")
        self.refresh_pod(pod_id)

    def event(
        self, kind: str, model: str, pod: str, size: int = 0, *, reason: str = "", time_ms: int = 0
    ) -> None:
        self.client.run_async(
            self.client.registry.add_event(
                Event(kind, model=model, pod=pod, size=size, reason=reason, time_ms=time_ms)
            )
        )

    def refresh_pod(self, pod_id: str) -> None:
        pods = {p.pod_id: p for p in self.client.pods()}
        if pod_id not in pods:
            return
        rec = pods[pod_id]
        held = [m for m in self.client.list_models() if pod_id in m.copies]
        rec.used = sum(m.copies[pod_id].size for m in held)
        rec.count = len(held)
        rec.updated_ms = now_ms()
        self.client.run_async(self.client.registry.put_instance(rec, self.lease))

    def close(self) -> None:
        self.client.run_async(self.client.registry.client.revoke_lease(self.lease.id))


# -- AppTest helpers -------------------------------------------------------------------------------------

TIMEOUT = 30


def open_page(page: str) -> AppTest:
    # each test sees its own writes at once (the app caches reads for a second or two)
    st.cache_data.clear()
    state.refresh()
    at = AppTest.from_file(str(APP), default_timeout=TIMEOUT).run()
    assert not at.exception, at.exception
    if page != "overview":
        at.switch_page(f"views/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def errors(at: AppTest) -> list[str]:
    return [e.value for e in at.error]


def figures_of(at: AppTest) -> list[dict]:
    return [json.loads(el.proto.spec) for el in at.get("plotly_chart")]


def caption_with(at: AppTest, text: str) -> str:
    """The first caption of the page that contains ``text``."""
    return next(c.value for c in at.caption if text in c.value)


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


TABLE_COLUMNS = {  # st.dataframe keeps no key without selections: find tables by a column (and not another)
    "events_table": ("reason", None),
    "models_table": ("loaded on", None),
    "vmodels_table": ("auto delete", None),
    "install_registered": ("stopping", None),
    "install_pods": ("alive", None),
    "storage_table": ("key", None),
    "placement_model_copies": ("req/min on pod", None),
    "placement_pod_copies": ("share of pod", "pod"),
}


def _table_element(at: AppTest, key: str):
    has, lacks = TABLE_COLUMNS[key]
    return next(d for d in at.dataframe if has in d.value.columns and (lacks is None or lacks not in d.value.columns))


def has_table(at: AppTest, key: str) -> bool:
    try:
        _table_element(at, key)
    except StopIteration:
        return False
    return True


def table(at: AppTest, key: str):
    return _table_element(at, key).value


def shown_table(at: AppTest, key: str) -> pd.DataFrame:
    """A table as the browser shows it: a Styler's display values where the page styled it
    (columns that sort by a value but read as text), the values elsewhere."""
    el = _table_element(at, key)
    raw = el.proto.arrow_data.styler.display_values
    return dataframe_util.convert_arrow_bytes_to_pandas_df(raw) if raw else el.value


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)

"""Helpers of the dashboard tests: simulated pods writing real registry records."""

from __future__ import annotations

import json
import pathlib

import pandas as pd
import streamlit as st
from streamlit import dataframe_util
from streamlit.testing.v1 import AppTest

from plane import usage
from plane.api import PlaneClient
from plane.registry import CopyInfo, Event, InstanceRecord, ModelRecord, now_ms

ROOT = pathlib.Path(__file__).resolve().parents[2]
APP = ROOT / "dashboard" / "app.py"
MIB = 1024 * 1024


class SimPods:
    """Writes what runtime pods write: instance records on a lease, copy states, events."""

    def __init__(self, client: PlaneClient):
        self.client = client
        self.lease = client.run_async(client.registry.client.lease(60))

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
    st.cache_data.clear()  # each test sees its own writes at once (the app caches for ~1 s)
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


def metrics(at: AppTest) -> dict[str, str]:
    return {m.label: m.value for m in at.metric}


TABLE_COLUMNS = {  # st.dataframe keeps no key without selections: find tables by a column
    "events_table": "reason",
    "models_table": "loaded on",
    "vmodels_table": "auto delete",
    "install_registered": "stopping",
    "install_pods": "alive",
    "storage_table": "key",
}


def table(at: AppTest, key: str):
    column = TABLE_COLUMNS[key]
    return next(d.value for d in at.dataframe if column in d.value.columns)


def shown_table(at: AppTest, key: str) -> pd.DataFrame:
    """A table as the browser shows it: a Styler's display values where the page styled it
    (columns that sort by a value but read as text), the values elsewhere."""
    column = TABLE_COLUMNS[key]
    el = next(d for d in at.dataframe if column in d.value.columns)
    raw = el.proto.arrow_data.styler.display_values
    return dataframe_util.convert_arrow_bytes_to_pandas_df(raw) if raw else el.value


def button(at: AppTest, key: str):
    return next(b for b in at.button if b.key == key)

"""dashboard.state: which plane is shown, one client per plane, short-lived cached reads."""

from __future__ import annotations

import os
import time

import pytest
import streamlit as st

from dashboard import state
from plane import local
from plane.registry import RegistryError


@pytest.fixture(autouse=True)
def fresh_caches():
    st.cache_data.clear()
    yield
    st.cache_data.clear()


def test_target_from_mesh_etcd(app_env):
    tgt = state.target()
    assert (tgt.etcd, tgt.prefix, tgt.embedded) == (app_env.etcd, app_env.etcd_prefix, False)


def test_target_of_the_embedded_plane_from_its_state_dir(monkeypatch, tmp_path):
    monkeypatch.delenv("MESH_ETCD", raising=False)
    monkeypatch.setenv("MESH_STATE_DIR", str(tmp_path))
    assert state.target() is None
    with pytest.raises(RegistryError, match="no plane is running"):
        state.client()
    # what `mesh up` records (an etcd pid that is alive: this process stands in for it)
    local.LocalPlane(state_dir=str(tmp_path), etcd_pid=os.getpid(), etcd_endpoint="127.0.0.1:2999",
                     etcd_prefix="meshx").save()
    tgt = state.target()
    assert (tgt.etcd, tgt.prefix, tgt.embedded) == ("127.0.0.1:2999", "meshx", True)


def test_one_client_per_plane(app_env, monkeypatch):
    first = state.client()
    assert state.client() is first
    assert first.registry.prefix == app_env.etcd_prefix
    monkeypatch.setenv("MESH_ETCD_PREFIX", app_env.etcd_prefix + "-other")
    other = state.client()
    assert other is not first and other.registry.prefix == app_env.etcd_prefix + "-other"


def test_snapshot_is_cached_briefly_and_refresh_forgets_it(app_env, client):
    client.register_model("one", path="one.onnx")
    t0 = time.monotonic()
    before = state.snapshot()
    assert [m.model_id for m in before.models] == ["one"]
    client.register_model("two", path="two.onnx")
    again = state.snapshot()
    if time.monotonic() - t0 < 0.8 * state.SNAPSHOT_TTL_S:  # within the TTL: the cached read
        assert again.taken_ms == before.taken_ms
        assert [m.model_id for m in again.models] == ["one"]
    state.refresh()
    assert [m.model_id for m in state.snapshot().models] == ["one", "two"]
    events = state.events(window_s=60)
    assert [e.model for e in events if e.kind == "register"] == ["one", "two"]

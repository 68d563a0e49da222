"""Fixtures for the dashboard tests: a plane client on the session etcd, simulated pods
(real instance records bound to a real etcd lease, copies and events written exactly as
runtime pods write them), and the MESH_* environment the dashboard reads."""

from __future__ import annotations

import pathlib
import sys

import pytest

# pytest puts tests/ on sys.path (rootdir conftest, no __init__.py), where this directory would
# be found as a namespace package named `dashboard`, shadowing the real one: put the project
# root first. (`pythonpath = ["."]` in the pytest config would do the same.)
ROOT = pathlib.Path(__file__).resolve().parents[2]
if sys.path[0] != str(ROOT):
    sys.path.insert(0, str(ROOT))
_mod = sys.modules.get("dashboard")
if _mod is not None and getattr(_mod, "__file__", None) is None:
    del sys.modules["dashboard"]
from dashsupport import MIB, SimPods  # noqa: E402

from plane.api import PlaneClient  # noqa: E402


@pytest.fixture
def client(settings):
    c = PlaneClient.connect(settings)
    try:
        yield c
    finally:
        c.close()


@pytest.fixture
def sim(client):
    s = SimPods(client)
    try:
        yield s
    finally:
        s.close()


@pytest.fixture
def app_env(monkeypatch, settings):
    """The MESH_* environment of a dashboard that shows the test's plane."""
    monkeypatch.setenv("MESH_ETCD", settings.etcd)
    monkeypatch.setenv("MESH_ETCD_PREFIX", settings.etcd_prefix)
    monkeypatch.setenv("MESH_STATE_DIR", str(settings.state_dir))
    return settings


@pytest.fixture
def placed(app_env, client, sim):
    """Two pods, four models: one on both pods, one on one pod, one failed, one idle;
    plus an eviction."""
    sim.add_pod("pod-0")
    sim.add_pod("pod-1")
    for name in ("alpha", "beta", "gamma", "delta"):
        client.register_model(name, path=f"{name}.onnx")
    sim.place("alpha", "pod-0", size=40 * MIB)
    sim.place("alpha", "pod-1", size=40 * MIB)
    sim.place("beta", "pod-1", size=24 * MIB)
    sim.place("delta", "pod-0", size=8 * MIB)
    sim.evict("delta", "pod-0")
    sim.fail("gamma", "pod-0", "bad onnx file")
    return sim

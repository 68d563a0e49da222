"""The etcd registry: typed records, compare-and-swap, event log bounds, watch-based view."""

from __future__ import annotations

import asyncio

import pytest

from plane.registry import CopyInfo, EtcdUnavailable, Event, ModelRecord, Registry, VModelRecord
from plane.view import RegistryView


async def connect(endpoint: str, prefix: str, **kw) -> Registry:
    host, _, port = endpoint.rpartition(":")
    return await Registry.connect([(host, int(port))], prefix, **kw)


async def test_concurrent_updates_from_two_clients_lose_nothing(etcd_endpoint, prefix):
    a = await connect(etcd_endpoint, prefix)
    b = await connect(etcd_endpoint, prefix)
    try:
        assert await a.create_model(ModelRecord("m", path="p"))
        assert not await b.create_model(ModelRecord("m", path="other"))  # create never overwrites

        async def add(reg: Registry, pod: str):
            def change(m: ModelRecord) -> ModelRecord:
                m.copies[pod] = CopyInfo("loaded", 1, 10)
                return m

            await reg.update_model("m", change)

        await asyncio.gather(*[add(a if i % 2 else b, f"pod-{i}") for i in range(20)])
        rec = await a.get_model("m")
        assert sorted(rec.copies) == sorted(f"pod-{i}" for i in range(20))
        assert rec.path == "p"
    finally:
        await a.close()
        await b.close()


async def test_update_of_missing_model_does_not_create_it(etcd_endpoint, prefix):
    reg = await connect(etcd_endpoint, prefix)
    try:
        assert await reg.update_model("ghost", lambda m: m) is None
        assert await reg.get_model("ghost") is None
    finally:
        await reg.close()


async def test_batch_put_skips_existing(etcd_endpoint, prefix):
    reg = await connect(etcd_endpoint, prefix)
    try:
        await reg.create_model(ModelRecord("m-3", path="keep"))
        created = await reg.put_models([ModelRecord(f"m-{i}", path="x") for i in range(100)], batch=16)
        assert created == 99
        models = await reg.list_models()
        assert len(models) == 100
        assert next(m for m in models if m.model_id == "m-3").path == "keep"
    finally:
        await reg.close()


async def test_event_log_is_bounded(etcd_endpoint, prefix):
    reg = await connect(etcd_endpoint, prefix, events_max=30)
    try:
        for i in range(120):
            await reg.add_event(Event("load", model=f"m{i}", pod="p"))
        await reg.trim_events()
        events = await reg.list_events(limit=0)
        assert len(events) == 30
        assert events[-1].model == "m119"  # newest kept, oldest dropped
        assert [e.model for e in events] == [f"m{i}" for i in range(90, 120)]
    finally:
        await reg.close()


async def test_view_follows_changes_through_the_watch(etcd_endpoint, prefix):
    reg = await connect(etcd_endpoint, prefix)
    view = RegistryView(reg)
    seen: list[tuple[str, str]] = []
    view.hooks.append(lambda table, name, old, new: seen.append((table, name)))
    view.start()
    try:
        await asyncio.wait_for(view.synced.wait(), 10)
        await reg.create_model(ModelRecord("w", path="p"))
        await reg.update_vmodel("v", lambda _: VModelRecord("v", active="w", target="w"))

        async def until(cond):
            for _ in range(200):
                if cond():
                    return
                await asyncio.sleep(0.02)
            raise AssertionError("view did not catch up")

        await until(lambda: "w" in view.models and "v" in view.vmodels)
        assert view.vmodels["v"].active == "w"
        await reg.delete_model("w")
        await until(lambda: "w" not in view.models)
        assert ("models", "w") in seen
    finally:
        await view.stop()
        await reg.close()


async def test_unreachable_etcd_says_what_to_do():
    with pytest.raises(EtcdUnavailable) as exc:
        await Registry.connect([("127.0.0.1", 1)], "x", timeout=1)
    assert "mesh up" in str(exc.value) and "MESH_ETCD" in str(exc.value)


def test_records_round_trip_json_and_ignore_unknown_fields():
    rec = ModelRecord("m", path="p", copies={"a": CopyInfo("loading", 5, 7)})
    again = ModelRecord.from_json(rec.to_json())
    assert again == rec
    assert ModelRecord.from_json(b'{"model_id": "m", "future_field": 1}').model_id == "m"
    assert again.status() == "LOADING"


async def test_snapshot_of_a_registry_larger_than_grpc_default_message_limit(etcd_endpoint, prefix):
    """More than 4 MiB of records (gRPC's default receive limit) still read in one snapshot, and
    the event log is not part of it."""
    reg = await connect(etcd_endpoint, prefix)
    try:
        filler = [["input", "FP32", [-1, 64]]] * 300  # ~7 KiB of tensor metadata per record
        recs = [ModelRecord(f"big-{i}", path="p", io={"inputs": filler, "outputs": filler}) for i in range(700)]
        assert await reg.put_models(recs, batch=16) == 700
        await reg.add_event(Event("load", model="big-0", pod="p"))
        tables, revision = await reg.snapshot_with_revision()
        assert len(tables["models"]) == 700 and revision > 0
        assert sum(len(v) for _, v in tables["models"]) > 4 * 1024 * 1024
        assert "events" not in tables
        view = RegistryView(reg)
        await view.resync()
        assert len(view.models) == 700
    finally:
        await reg.close()

"""The console's non-UI core: parsing watch changes, the in-memory state, filters, formats."""

from __future__ import annotations

from console import formatting
from console.demo import DEMO_NOW_MS, demo_plane, demo_state
from console.screens.events import EventFilter
from console.state import Change, PlaneState, parse_change
from plane.registry import CopyInfo, Event, ModelRecord, StorageConfig


def test_storage_changes_are_masked_before_they_reach_the_ui():
    cfg = StorageConfig("s3", "s3", {"default_bucket": "b", "access_key_id": "AKIAEXAMPLEKEY123",
                                     "secret_access_key": "very-secret-value-42"})
    change = parse_change("storage", "s3", cfg.to_json())
    assert change is not None
    assert change.record["secret_access_key"] == "****42"
    assert "very-secret" not in repr(change.record)


def test_unknown_tables_and_bad_values_are_skipped():
    assert parse_change("leader", "x", b"{}") is None
    assert parse_change("models", "x", b"not json") is None
    assert parse_change("models", "x", None) == Change("models", "x", None)


def test_apply_reports_touched_names_and_deletes():
    state = demo_state()
    m = ModelRecord("new-model", copies={"pod-0": CopyInfo("loaded", 1, 5)})
    touched = state.apply([Change("models", "new-model", m), Change("models", "mnist-v1", None)])
    assert touched == {"models": {"new-model", "mnist-v1"}}
    assert "mnist-v1" not in state.models and state.models["new-model"] is m


def test_overview_counts_recent_loads_evictions_and_failures():
    ov = demo_state().overview(DEMO_NOW_MS, window_s=300)
    assert (ov.pods_ready, ov.pods_total) == (3, 3)
    assert ov.models_registered == len(demo_plane().models)
    assert ov.models_failed == 1
    assert ov.loads_recent == 2 and ov.evictions_recent == 1 and ov.failures_recent == 0


def test_from_tables_reads_raw_registry_values():
    d = demo_plane()
    tables = {"models": [(m.model_id, m.to_json()) for m in d.models],
              "instances": [(p.pod_id, p.to_json()) for p in d.pods],
              "events": [(e.key, e.to_json()) for e in d.events]}
    state = PlaneState.from_tables(tables, revision=7)
    assert state.revision == 7
    assert set(state.models) == {m.model_id for m in d.models}
    assert list(state.events) == sorted(state.events)


def test_event_filter_fields_and_words():
    ev = Event("evict", model="yolo-nano", pod="pod-2", reason="evicted for mnist-v2, last used 34m ago")
    assert EventFilter("kind:evict").matches(ev)
    assert EventFilter("kind:evict pod:pod-2 mnist").matches(ev)
    assert not EventFilter("kind:loaded").matches(ev)
    assert not EventFilter("model:resnet").matches(ev)
    assert not EventFilter("")  # an empty filter is falsy and matches everything
    assert EventFilter("").matches(ev)


def test_relative_times_and_sizes():
    now = DEMO_NOW_MS
    assert formatting.ago(0, now) == "-"
    assert formatting.ago(now - 4 * 60_000, now) == "4m ago"
    assert formatting.ago(now - 95 * 60_000, now) == "1h35m ago"
    assert formatting.size(0) == "-" and formatting.size(12 * 1024**2) == "12.0 MiB"
    assert formatting.bar(50, 100, 10) == "█████░░░░░"


def test_command_line_options():
    from console.app import parse_args, settings_from_args

    args = parse_args(["--etcd", "10.0.0.5:2379", "--state-dir", "/tmp/x", "--prefix", "prod", "--readonly",
                       "--view", "events"])
    settings = settings_from_args(args)
    assert args.readonly and args.view == "events"
    assert settings.etcd_endpoints() == [("10.0.0.5", 2379)]
    assert str(settings.state_dir) == "/tmp/x" and settings.etcd_prefix == "prod"

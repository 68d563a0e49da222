"""The `mesh` command refuses what cannot work, says why in one error form, and leaves nothing
behind when it fails: against a real embedded plane (`mesh up`: etcd and two pods as processes).

Exit codes: 1 operation failed, 2 bad input, 3 etcd unreachable (docs/cli-json.md).
"""

from __future__ import annotations

import argparse
import json
import os
import pathlib
import re
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

import pytest

from plane import demo, local
from plane.admission import ShadowsModel, UnknownStorage
from plane.api import PlaneClient, ValidationError
from plane.cli.output import ERROR_PREFIX, WARNING_PREFIX
from plane.cli.parser import build_parser

pytestmark = pytest.mark.slow

ROOT = pathlib.Path(__file__).resolve().parents[2]
PODS = 2


def run(env: dict[str, str], *args: str, timeout: float = 180) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "plane.cli", *args], env=env, capture_output=True, text=True,
                          timeout=timeout, cwd=ROOT)


def ok(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    proc = run(env, *args)
    assert proc.returncode == 0, f"mesh {' '.join(args)} exited {proc.returncode}:\n{proc.stdout}\n{proc.stderr}"
    return proc


def refused(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The one error form: exit ``code`` and a ``mesh: error:`` line on stderr holding ``needles``."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    errors = [line for line in proc.stderr.splitlines() if line.startswith(ERROR_PREFIX)]
    assert errors, proc.stderr
    for needle in needles:
        assert needle in errors[-1], (needle, errors[-1])
    assert "Traceback" not in proc.stderr
    return errors[-1]


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MESH_")}
    env.update(extra)
    return env


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """`mesh up --pods 2` with storage 'default' (a tiny model, a corrupt one) and a second key."""
    state = tmp_path_factory.mktemp("validation-state")
    files = tmp_path_factory.mktemp("validation-models")
    demo.make_tiny_model(files / "tiny.onnx")
    demo.make_corrupt_model(files / "bad.onnx")
    env = clean_env(MESH_STATE_DIR=str(state), MESH_GRPC_PORT=str(local.free_port()),
                    MESH_REST_PORT=str(local.free_port()), MESH_CAPACITY="8MiB", MESH_LOAD_TIMEOUT_S="30")
    up = run(env, "up", "--pods", str(PODS), "--json")
    assert up.returncode == 0, up.stdout + up.stderr
    try:
        ok(env, "storage", "set", "default", "--type", "local", "--path", str(files))
        ok(env, "storage", "set", "spare", "--type", "local", "--path", str(files))
        ok(env, "models", "register", "tiny", "--path", "tiny.onnx")
        ok(env, "models", "register", "bad1", "--path", "bad.onnx")
        yield env, state
    finally:
        run(env, "down")


def model(env: dict[str, str], model_id: str) -> dict | None:
    proc = run(env, "models", "status", model_id, "--json")
    return json.loads(proc.stdout) if proc.returncode == 0 else None


def vmodels(env: dict[str, str]) -> dict[str, dict]:
    return {v["vmodel_id"]: v for v in json.loads(ok(env, "vmodels", "list", "--json").stdout)}


# -- storage keys ---------------------------------------------------------------------------------------------


def test_an_unknown_storage_key_is_refused_with_the_known_keys(embedded):
    env, _ = embedded
    line = refused(run(env, "models", "register", "nokey", "--path", "tiny.onnx", "--storage", "nosuch"), 2,
                   "unknown storage key 'nosuch'", "default", "spare", "mesh storage set")
    assert "known keys: default, spare" in line
    assert model(env, "nokey") is None
    # the path is checked before the key: a bad path is named as such
    refused(run(env, "models", "register", "nokey", "--path", "../x.onnx", "--storage", "nosuch"), 2, "storage root")


# -- copy policies --------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("flags", "needles"), [
    (["--min-copies", "-1"], ["must not be negative"]),
    (["--max-copies", "-2"], ["must not be negative"]),
    (["--min-copies", "3", "--max-copies", "1"], ["min copies (3) must not exceed max copies (1"]),
    (["--min-copies", "5"], ["min copies 5 cannot be met", f"only {PODS} pods exist", "mesh up --pods 5"]),
], ids=["negative-min", "negative-max", "min-over-max", "more-than-pods"])
def test_impossible_copy_policies_are_refused_and_change_nothing(embedded, flags, needles):
    env, _ = embedded
    before = model(env, "tiny")
    refused(run(env, "models", "policy", "tiny", *flags), 2, *needles)
    after = model(env, "tiny")
    assert (after["min_copies"], after["max_copies"]) == (before["min_copies"], before["max_copies"])
    refused(run(env, "models", "register", "policy-reg", "--path", "tiny.onnx", *flags), 2, *needles)
    assert model(env, "policy-reg") is None


def test_a_floor_over_an_existing_cap_is_refused(embedded):
    env, _ = embedded
    ok(env, "models", "policy", "tiny", "--max-copies", "1")
    try:
        refused(run(env, "models", "policy", "tiny", "--min-copies", "2"), 2, "must not exceed max copies (1")
    finally:
        ok(env, "models", "policy", "tiny", "--max-copies", "0")


def test_a_possible_policy_is_set_and_its_json_keeps_its_shape(embedded):
    env, _ = embedded
    data = json.loads(ok(env, "models", "policy", "tiny", "--min-copies", str(PODS), "--max-copies", str(PODS),
                         "--json").stdout)
    try:
        assert (data["min_copies"], data["max_copies"], data["model_id"]) == (PODS, PODS, "tiny")
        assert {"status", "loaded_on", "rpm_now", "copies", "failed", "refs"} <= set(data)
    finally:
        ok(env, "models", "policy", "tiny", "--min-copies", "0", "--max-copies", "0")


def test_a_floor_over_the_pods_of_a_plane_that_can_grow_is_accepted_with_a_warning(settings, tmp_path):
    """No `mesh up` plane behind this etcd (pods may join, as on Kubernetes): accepted, warned."""
    env = clean_env(MESH_STATE_DIR=str(tmp_path))
    common = ["--etcd", settings.etcd, "--prefix", settings.etcd_prefix]
    with PlaneClient.connect(settings) as client:
        client.set_storage("default", "local", {"path": str(tmp_path)})
    proc = ok(env, "models", "register", "grow", "--path", "g.onnx", "--min-copies", "3", *common)
    assert f"{WARNING_PREFIX} min copies 3 is more than the 0 pods running" in proc.stderr, proc.stderr
    proc = ok(env, "models", "policy", "grow", "--min-copies", "4", *common)
    assert WARNING_PREFIX in proc.stderr and "scale the pods" in proc.stderr
    assert model(clean_env(MESH_STATE_DIR=str(tmp_path), MESH_ETCD=settings.etcd,
                           MESH_ETCD_PREFIX=settings.etcd_prefix), "grow")["min_copies"] == 4


def test_the_rules_live_in_the_plane_api_for_every_front_door(settings):
    """The console, the dashboard and the controller call PlaneClient: the same rules hold there."""
    with PlaneClient.connect(settings) as client:
        client.register_model("api-m", path="m.onnx")  # no storage check unless asked (ModelMesh's registerModel)
        with pytest.raises(UnknownStorage, match="no storage config exists yet"):
            client.register_model("api-n", path="n.onnx", require_storage=True)
        with pytest.raises(ValidationError, match="must not exceed"):
            client.set_model_policy("api-m", min_copies=3, max_copies=1)
        with pytest.raises(ValidationError, match="negative"):
            client.set_model_policy("api-m", min_copies=-1)
        with pytest.raises(ShadowsModel, match="registered model id"):
            client.set_vmodel("api-m", "api-m")
        client.register_model("api-t", path="t.onnx")
        assert client.set_vmodel("api-m", "api-t", shadow_model=True).active == "api-t"


# -- vmodels --------------------------------------------------------------------------------------------------


def test_a_vmodel_may_not_take_a_model_id_unless_forced(embedded):
    env, _ = embedded
    refused(run(env, "vmodels", "set", "bad1", "tiny"), 2, "'bad1' is a registered model id", "--force")
    assert "bad1" not in vmodels(env)
    forced = json.loads(ok(env, "vmodels", "set", "bad1", "tiny", "--force", "--json").stdout)
    assert forced["active"] == "tiny" and forced["status"] == "DEFINED"
    ok(env, "vmodels", "delete", "bad1")
    assert model(env, "tiny")["refs"] == [] and model(env, "bad1") is not None


def test_a_failed_sync_vmodel_set_leaves_nothing_behind(embedded):
    env, _ = embedded
    line = refused(run(env, "vmodels", "set", "v-new", "bad1", "--sync"), 1, "not a valid ONNX model", "not created")
    assert "v-new" in line
    assert "v-new" not in vmodels(env)
    assert model(env, "bad1")["refs"] == []

    ok(env, "vmodels", "set", "v-kept", "tiny", "--sync")
    try:
        refused(run(env, "vmodels", "set", "v-kept", "bad1", "--sync"), 1, "not a valid ONNX model", "kept as it was")
        kept = vmodels(env)["v-kept"]
        assert (kept["active"], kept["target"], kept["status"]) == ("tiny", "tiny", "DEFINED")
        assert model(env, "bad1")["refs"] == [] and model(env, "tiny")["refs"] == ["v-kept"]
    finally:
        ok(env, "vmodels", "delete", "v-kept")


# -- loads ----------------------------------------------------------------------------------------------------


def test_a_load_that_fails_prints_why_and_exits_1(embedded):
    env, _ = embedded
    proc = run(env, "models", "load", "bad1")
    refused(proc, 1, "bad1", "not a valid ONNX model")
    assert "LOADING_FAILED on" not in proc.stdout + proc.stderr
    loaded = json.loads(ok(env, "models", "load", "tiny", "--json").stdout)
    assert loaded["status"] == "LOADED" and loaded["loaded_on"]
    assert "LOADED on pod-" in ok(env, "models", "load", "tiny").stdout


def test_errors_have_one_form(embedded):
    env, _ = embedded
    refused(run(env, "models", "status", "nope"), 1, "'nope' is not registered")
    refused(run(env, "models", "regist", "x"), 2, "invalid choice: 'regist'", "mesh models --help")
    refused(run(env, "status", "--bogus"), 2, "unrecognized arguments: --bogus")
    refused(run(env, "models", "register", "../evil", "--path", "x.onnx"), 2, "invalid model id")
    refused(run(env, "vmodels", "delete", "never-was"), 1, "does not exist")


# -- demo formats ---------------------------------------------------------------------------------------------


def test_demo_mixes_formats_and_serves_them(embedded, tmp_path):
    env, _ = embedded
    out = tmp_path / "mixed"
    data = json.loads(ok(env, "demo", "--models", "4", "--formats", "onnx,sklearn,xgboost,lightgbm", "--out",
                         str(out), "--storage-key", "mixed", "--requests", "12", "--json").stdout)
    assert data["registered"] == 4 and data["traffic"]["errors"] == 0, data["traffic"]
    types = {m["model_id"]: m["type"] for m in data["models"]}
    assert sorted(types.values()) == ["lightgbm", "onnx", "sklearn", "xgboost"]
    registered = {m["model_id"]: m for m in json.loads(ok(env, "models", "list", "--json").stdout)}
    for model_id, typ in types.items():
        assert registered[model_id]["type"] == typ and registered[model_id]["key"] == "mixed"


def test_demo_format_shares_and_bad_formats(embedded, tmp_path):
    env, _ = embedded
    text = ok(env, "demo", "--models", "10", "--formats", "onnx=0.5,sklearn=0.2,xgboost=0.15,lightgbm=0.15",
              "--no-register", "--out", str(tmp_path)).stdout
    assert "10 demo models written" in text
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    counts: dict[str, int] = {}
    for m in manifest["models"]:
        counts[m["type"]] = counts.get(m["type"], 0) + 1
    assert counts["onnx"] == 5 and counts["sklearn"] == 2 and counts["xgboost"] + counts["lightgbm"] == 3
    assert min(counts.values()) >= 1, counts
    refused(run(env, "demo", "--formats", "onnx,pytorch", "--no-register"), 2, "unknown model format 'pytorch'",
            "onnx, sklearn, xgboost, lightgbm")
    refused(run(env, "demo", "--formats", "onnx=lots", "--no-register"), 2, "must be a number")
    assert "--formats" in ok(env, "demo", "--help").stdout


# -- etcd unreachable -----------------------------------------------------------------------------------------

UNREACHABLE = "127.0.0.1:1"
COMMANDS = [
    ("status",), ("models", "list"), ("models", "status", "m"), ("models", "register", "m", "--path", "m.onnx"),
    ("models", "load", "m"), ("models", "policy", "m", "--pin"), ("models", "unregister", "m"),
    ("vmodels", "list"), ("vmodels", "set", "v", "m"), ("vmodels", "delete", "v"), ("storage", "list"),
    ("storage", "test", "k"), ("events",), ("demo", "--models", "2"), ("up", "--pods", "1"),
]


def test_every_command_says_etcd_cannot_be_reached(tmp_path):
    env = clean_env(MESH_STATE_DIR=str(tmp_path), MESH_GRPC_PORT=str(local.free_port()))

    def attempt(args: tuple[str, ...]) -> tuple[tuple[str, ...], subprocess.CompletedProcess[str]]:
        return args, run(env, *args, "--etcd", UNREACHABLE, timeout=120)

    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(attempt, COMMANDS))
    for args, proc in results:
        text = proc.stdout + proc.stderr
        assert proc.returncode == 3, (args, proc.returncode, text)
        assert f"cannot reach etcd at {UNREACHABLE}" in text, (args, text)
        assert "no plane is running" not in text and "Traceback" not in text, (args, text)
        if args[0] != "status":  # status reports on stdout (its JSON has the same message)
            assert f"{ERROR_PREFIX} cannot reach etcd at {UNREACHABLE}" in proc.stderr, (args, proc.stderr)
    assert not (tmp_path / "demo-models").exists(), "demo trained models for a plane it cannot reach"
    down = ok(env, "down", "--etcd", UNREACHABLE)
    assert "stops only a plane `mesh up` started" in down.stdout


# -- help -----------------------------------------------------------------------------------------------------


def _subparsers(parser: argparse.ArgumentParser):
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            yield action


def test_every_subcommand_is_listed_with_help():
    parser = build_parser()
    groups = {"": parser}
    for action in _subparsers(parser):
        groups.update(action.choices)
    for name in ("", "models", "vmodels", "storage"):
        for action in _subparsers(groups[name]):
            helped = {a.dest: a.help for a in action._choices_actions}
            assert set(action.choices) <= set(helped), (name, set(action.choices) - set(helped))
            assert all(helped[c] for c in action.choices), (name, helped)
    for group, names in {"models": ["register", "list", "status", "unregister", "load", "policy"],
                         "vmodels": ["set", "list", "delete"], "storage": ["set", "list", "test", "remove"]}.items():
        text = subprocess.run([sys.executable, "-m", "plane.cli", group, "--help"], capture_output=True, text=True,
                              timeout=60, cwd=ROOT, check=True).stdout
        for name in names:
            assert re.search(rf"^\s+{name}\s+\S|^\s+{name}\n\s+\S", text, re.M), (group, name, text)


def test_the_readme_commands_parse():
    """Every `mesh ...` line of the README's "Using it" block is a command the CLI accepts."""
    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Using it", 1)[1].split("```", 2)[1]
    lines = [line.split("#", 1)[0].strip() for line in block.splitlines()]
    commands = [line.split()[1:] for line in lines if line.startswith("mesh ")]
    assert len(commands) >= 5, block
    parser = build_parser()
    for argv in commands:
        parser.parse_args(argv)
    assert any(line.startswith(". .venv/bin/activate") for line in lines), "the block must work as pasted"

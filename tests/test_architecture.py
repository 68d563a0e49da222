"""Layering contracts (import-linter, configured in pyproject.toml) and lint, checked in CI."""

import pathlib
import re
import shutil
import subprocess
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _tool(name: str) -> str:
    found = pathlib.Path(sys.executable).with_name(name)
    return str(found) if found.exists() else (shutil.which(name) or name)


def test_plane_imports_no_ui_code_and_uis_are_independent():
    proc = subprocess.run([_tool("lint-imports")], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "0 broken" in proc.stdout


def test_ruff_is_clean():
    proc = subprocess.run([_tool("ruff"), "check", "plane", "console", "dashboard", "tests", "bench"], cwd=ROOT,
                          capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stdout + proc.stderr


TYPED_PACKAGES = ("plane", "console", "dashboard")


def _mypy_config() -> dict:
    return tomllib.loads((ROOT / "pyproject.toml").read_text())["tool"]["mypy"]


def test_mypy_config_covers_the_plane_and_both_uis():
    files = _mypy_config()["files"]
    assert set(TYPED_PACKAGES) <= set(files), files


def test_mypy_is_clean_on_the_plane_and_both_uis():
    # a bare `mypy` (as CI runs it) checks the files of [tool.mypy]
    proc = subprocess.run([_tool("mypy")], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    excluded = [re.compile(pattern) for pattern in _mypy_config().get("exclude", [])]
    expected = sorted(str(f.relative_to(ROOT)) for pkg in TYPED_PACKAGES for f in (ROOT / pkg).rglob("*.py")
                      if not any(x.search(str(f.relative_to(ROOT))) for x in excluded))
    found = re.search(r"in (\d+) source files?", proc.stdout)
    assert found is not None, proc.stdout
    assert int(found.group(1)) == len(expected), (proc.stdout, expected)  # every module of the three packages

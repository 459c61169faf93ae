"""House rules the design asks for, checked on every run: types, lint, import direction."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.nsutil import REPO

VENV_BIN = Path(sys.executable).parent


def _imports(path: Path) -> set[str]:
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            out.add(node.module)
    return out


def test_imports_run_one_way_and_pyroute2_stays_in_netlink() -> None:
    bad = []
    for path in sorted((REPO / "netns").rglob("*.py")):
        mods = _imports(path)
        rel = path.relative_to(REPO)
        if any(m == "rootless" or m.startswith("rootless.") for m in mods):
            bad.append(f"{rel} imports rootless (imports must run rootless -> netns)")
    for path in sorted([*(REPO / "netns").rglob("*.py"), *(REPO / "rootless").rglob("*.py")]):
        rel = path.relative_to(REPO)
        if str(rel) != "netns/netlink.py" and any(m.split(".")[0] == "pyroute2" for m in _imports(path)):
            bad.append(f"{rel} imports pyroute2 (only netns/netlink.py may)")
    assert bad == []


@pytest.mark.skipif(not (VENV_BIN / "mypy").exists(), reason="environment: mypy not installed")
def test_mypy_strict_on_the_packages() -> None:
    res = subprocess.run([str(VENV_BIN / "mypy"), "netns", "rootless"], cwd=REPO,
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stdout + res.stderr


@pytest.mark.skipif(not (VENV_BIN / "ruff").exists(), reason="environment: ruff not installed")
def test_ruff_is_clean() -> None:
    res = subprocess.run([str(VENV_BIN / "ruff"), "check", "--no-cache", "."], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr

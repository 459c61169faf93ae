"""`scripts/install`, `scripts/demo` and `scripts/test` answer -h/--help with their own usage
and do nothing else: `scripts/test --help` once installed the test packages and then printed
pytest's help, and `scripts/demo --help` ran the whole demo."""

from __future__ import annotations

import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("script", ["install", "demo", "test"])
@pytest.mark.parametrize("flag", ["-h", "--help"])
def test_help_is_the_scripts_own_and_does_nothing(script: str, flag: str) -> None:
    res = subprocess.run([str(ROOT / "scripts" / script), flag], capture_output=True, text=True,
                         timeout=60, cwd="/")
    assert res.returncode == 0, res.stderr
    assert f"scripts/{script}" in res.stdout or "Install what burrow" in res.stdout, res.stdout
    # Nothing ran: no install summary, no pytest help, no demo step.
    for ran in ("burrow install:", "[file_or_dir]", "=== Part", "demo OK"):
        assert ran not in res.stdout + res.stderr, (ran, res.stdout, res.stderr)


def test_demo_refuses_arguments() -> None:
    res = subprocess.run([str(ROOT / "scripts" / "demo"), "--quick"], capture_output=True,
                         text=True, timeout=60, cwd="/")
    assert res.returncode == 2 and "usage: scripts/demo" in res.stderr, (res.stdout, res.stderr)

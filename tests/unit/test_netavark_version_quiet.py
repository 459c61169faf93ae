"""`burrow-netavark version` (and `--version`, `--help`) print what netavark prints and nothing
on stderr, whatever XDG_RUNTIME_DIR holds: Podman >= 4.5 runs `netavark version` for `podman
info` and expects one JSON object; Netavark's own version query never looks at the runtime
directory. An unusable XDG_RUNTIME_DIR is still said for the commands that would start the
warm engine (tests/unit/test_client_protocol.py). Run as `nobody`: root's engine never uses
XDG_RUNTIME_DIR, so only a user sees the difference."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
CLIENT = REPO / ".venv" / "bin" / "burrow-netavark"


def as_nobody(args: list[str], runtime_dir: str) -> subprocess.CompletedProcess[str]:
    if os.geteuid() != 0 or shutil.which("setpriv") is None:
        pytest.skip("environment: needs root and setpriv to run as another user")
    if not CLIENT.exists():
        pytest.skip("environment: .venv is not built (scripts/install)")
    env = {"PATH": "/usr/bin:/bin", "HOME": "/nonexistent", "XDG_RUNTIME_DIR": runtime_dir}
    return subprocess.run(["setpriv", "--reuid=65534", "--regid=65534", "--clear-groups",
                           str(CLIENT), *args], capture_output=True, text=True, env=env,
                          cwd="/", timeout=60)


@pytest.mark.parametrize("runtime_dir", ["relative/run", "/nonexistent/run"])
def test_version_query_is_json_only_with_a_bad_runtime_dir(runtime_dir: str) -> None:
    res = as_nobody(["version"], runtime_dir)
    assert res.returncode == 0 and res.stderr == "", res.stderr
    assert set(json.loads(res.stdout)) == {"version", "commit", "build_time", "target"}
    res = as_nobody(["--version"], runtime_dir)
    assert res.returncode == 0 and res.stderr == "" and res.stdout.startswith("netavark "), res
    res = as_nobody(["--help"], runtime_dir)
    assert res.returncode == 0 and res.stderr == "" and "setup" in res.stdout, res

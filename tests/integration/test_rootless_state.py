"""Where burrow keeps things, run as the unprivileged user: networks survive the loss of the
runtime directory (a reboot empties that tmpfs), `burrow down` removes what the README says and
keeps networks, an older layout's networks are moved once, and a set-but-missing
XDG_RUNTIME_DIR is refused with the fix instead of a silent second world."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.rootless


def _names(rl: Any, *args: str) -> list[str]:
    res = rl.burrow(*args, "--format", "json", check=True)
    return sorted(r["name"] for r in json.loads(res.out))


def test_networks_survive_a_reboot_and_down_keeps_them(rl: Any) -> None:
    if shutil.which("slirp4netns") is None and shutil.which("pasta") is None:
        pytest.skip("environment: neither slirp4netns nor pasta is installed")
    rl.burrow("network", "create", "bcstweb", "--subnet", "10.93.0.0/24", check=True)
    rl.burrow("sandbox", "create", "bcstbox", "--network", "bcstweb", check=True)
    data = Path(rl.runtime) / "data" / "burrow" / "networks"
    state = Path(rl.runtime) / "burrow"
    assert (data / "bcstweb.json").is_file()
    assert not (state / "networks").exists()  # nothing of the network in the runtime dir
    res = rl.burrow("down", check=True)
    assert "stopped" in res.out
    assert rl.leftover_pids() == []
    assert _names(rl, "sandbox", "ls") == []
    assert _names(rl, "network", "ls") == ["bcstweb"]
    # What `down` removed, as the README lists it; the runtime dir itself, logs, locks stay.
    left = sorted(p.name for p in state.iterdir())
    for gone in ("holder.json", "connector.json", "forwarder.json", "forwarder.sock",
                 "slirp4netns.sock", "pasta.pid"):
        assert gone not in left, left
    assert list((state / "sandboxes").iterdir()) == []
    # A reboot: the runtime tmpfs comes back empty. The network is still there and usable.
    shutil.rmtree(state)
    assert _names(rl, "network", "ls") == ["bcstweb"]
    res = rl.burrow("sandbox", "create", "bcstbox", "--network", "bcstweb", check=True)
    assert "10.93.0." in res.out


def test_old_layout_networks_are_moved_once(rl: Any) -> None:
    state = f"{rl.runtime}/burrow"
    # An older burrow kept networks in the runtime dir: BURROW_STATE_DIR alone still does.
    rl.run(["env", f"BURROW_STATE_DIR={state}", "burrow", "network", "create", "bcstold",
            "--subnet", "10.94.0.0/24"], check=True)
    assert Path(state, "networks", "bcstold.json").is_file()
    first = rl.burrow("network", "ls", "--format", "json", check=True)
    assert [n["name"] for n in json.loads(first.out)] == ["bcstold"]
    assert "moved network(s) bcstold from" in first.err, first.err
    assert not Path(state, "networks").exists()
    assert Path(rl.runtime, "data", "burrow", "networks", "bcstold.json").is_file()
    again = rl.burrow("network", "ls", check=True)
    assert "bcstold" in again.out and again.err == ""


def test_runtime_dir_set_but_missing_is_refused(rl: Any) -> None:
    missing = f"{rl.runtime}/not-there"
    for cmd in (["network", "ls"], ["sandbox", "create", "bcstx"], ["status"]):
        res = rl.run(["env", f"XDG_RUNTIME_DIR={missing}", "burrow", *cmd])
        assert res.rc == 1, res
        assert f"XDG_RUNTIME_DIR={missing} does not exist" in res.err, res.err
        assert f"mkdir -m 700 {missing}" in res.err and "Traceback" not in res.err
    assert not Path(missing).exists()
    assert rl.leftover_pids() == []  # nothing was started anywhere else

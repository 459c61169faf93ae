"""The per-user namespace lifecycle, run as an unprivileged user: create, reuse, concurrent
creation, stale-state repair, teardown leaving nothing behind, for each connector."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.rootless

CONNECTORS = ["slirp4netns", "pasta"]


def _need(tool: str) -> None:
    if shutil.which(tool) is None:
        pytest.skip(f"environment: {tool} is not installed")


def status(rl: Any) -> dict[str, Any]:
    res = rl.burrow("status", "--format", "json", check=True)
    return json.loads(res.out)  # type: ignore[no-any-return]


def broken_status(rl: Any) -> dict[str, Any]:
    """`burrow status` of a world with a dead part: exit 1, and the problems named."""
    res = rl.burrow("status", "--format", "json")
    assert res.rc == 1, res
    info: dict[str, Any] = json.loads(res.out)
    assert info["problems"] and all("burrow up" in p for p in info["problems"]), info
    return info


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False


@pytest.mark.parametrize("connector", CONNECTORS)
def test_create_reuse_teardown(rl: Any, connector: str) -> None:
    _need(connector)
    rl.burrow("--connector", connector, "up", check=True)
    st = status(rl)
    holder = st["namespace"]["holder_pid"]
    assert st["connector"]["kind"] == connector and st["connector"]["alive"]
    assert st["connector"]["host_loopback"] is False
    # Reuse: a second command joins the same namespace.
    rl.burrow("up", check=True)
    assert status(rl)["namespace"]["holder_pid"] == holder
    # The namespace is really the user's: uid 0 inside maps to the test user outside.
    uid_map = Path(f"/proc/{holder}/uid_map").read_text().split()
    assert uid_map[:3] == ["0", str(rl.user.uid), "1"]
    conn_pid = st["connector"]["pid"]
    res = rl.burrow("down", check=True)
    assert "stopped" in res.out
    assert not _alive(holder) and not _alive(conn_pid)
    assert rl.leftover_pids() == []
    state = Path(rl.runtime) / "burrow"
    assert not (state / "holder.json").exists() and not (state / "connector.json").exists()
    assert not (state / "slirp4netns.sock").exists()
    assert status(rl)["namespace"] is None


def test_concurrent_creation_makes_one_namespace(rl: Any) -> None:
    procs = [rl.popen(["burrow", "up"], stdout=subprocess.PIPE, stderr=subprocess.PIPE)
             for _ in range(4)]
    outs = [p.communicate(timeout=60) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    pids = {o[0].split()[2].rstrip(",") for o in outs}
    assert len(pids) == 1, outs
    assert sum("(created)" in o[0] for o in outs) == 1, outs
    holders = [pid for pid in rl.leftover_pids()
               if Path(f"/proc/{pid}/comm").read_text().strip() == "catatonit"]
    assert len(holders) == 1


def test_stale_holder_is_repaired(rl: Any) -> None:
    rl.burrow("up", check=True)
    st = status(rl)
    old_holder, old_conn = st["namespace"]["holder_pid"], st["connector"]["pid"]
    os.kill(old_holder, signal.SIGKILL)  # as if the OOM killer took it
    deadline = time.monotonic() + 3
    while _alive(old_conn) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(old_conn), "slirp4netns must not outlive the namespace (exit-fd)"
    st = broken_status(rl)
    assert st["namespace"] is None and "holder" in st["problems"][0]
    # A leftover API socket and forwarder state must not break the next start.
    state = Path(rl.runtime) / "burrow"
    assert (state / "holder.json").exists()
    rl.burrow("up", check=True)
    st2 = status(rl)
    assert st2["namespace"]["holder_pid"] != old_holder and st2["connector"]["alive"]


def test_dead_connector_is_reattached(rl: Any) -> None:
    _need("pasta")
    rl.burrow("--connector", "pasta", "up", check=True)
    st = status(rl)
    os.kill(st["connector"]["pid"], signal.SIGKILL)
    deadline = time.monotonic() + 3
    while _alive(st["connector"]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert "pasta" in broken_status(rl)["problems"][0]
    rl.burrow("up", check=True)
    st2 = status(rl)
    assert st2["namespace"]["holder_pid"] == st["namespace"]["holder_pid"]
    assert st2["connector"]["alive"] and st2["connector"]["pid"] != st["connector"]["pid"]
    # Repaired with the connector the world was made with, not the default (slirp4netns).
    assert st2["connector"]["kind"] == "pasta"


def test_pasta_does_not_outlive_namespace(rl: Any) -> None:
    _need("pasta")
    rl.burrow("--connector", "pasta", "up", check=True)
    st = status(rl)
    os.kill(st["namespace"]["holder_pid"], signal.SIGKILL)
    deadline = time.monotonic() + 3
    while _alive(st["connector"]["pid"]) and time.monotonic() < deadline:
        time.sleep(0.02)
    assert not _alive(st["connector"]["pid"])


def test_unknown_connector_names_the_choices(rl: Any) -> None:
    res = rl.burrow("--connector", "vpnkit", "up")
    assert res.rc != 0 and "slirp4netns or pasta" in res.err

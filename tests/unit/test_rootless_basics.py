"""Pure pieces of the rootless world: state paths, locks, process identity, connector errors."""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest

from netns.errors import BurrowError
from rootless.connectors import select
from rootless.connectors.errors import explain
from rootless.paths import StatePaths, locked, read_json, write_json
from rootless.procs import ProcRef


def test_ensure_makes_private_tree(tmp_path: Path) -> None:
    p = StatePaths(tmp_path / "burrow").ensure()
    assert (p.root.stat().st_mode & 0o777) == 0o700
    assert p.networks_dir.is_dir() and p.sandboxes_dir.is_dir() and p.netns_dir.is_dir()


def test_ensure_refuses_symlinked_root(tmp_path: Path) -> None:
    (tmp_path / "elsewhere").mkdir()
    (tmp_path / "burrow").symlink_to(tmp_path / "elsewhere")
    with pytest.raises(BurrowError, match="not a directory owned"):
        StatePaths(tmp_path / "burrow").ensure()


def test_json_roundtrip_and_torn_file(tmp_path: Path) -> None:
    write_json(tmp_path / "a.json", {"x": 1})
    assert read_json(tmp_path / "a.json") == {"x": 1}
    (tmp_path / "b.json").write_text("{not json")
    assert read_json(tmp_path / "b.json") is None
    assert read_json(tmp_path / "c.json") is None


def test_lock_serialises(tmp_path: Path) -> None:
    order: list[str] = []

    def other() -> None:
        with locked(tmp_path / "l"):
            order.append("other")

    with locked(tmp_path / "l"):
        t = threading.Thread(target=other)
        t.start()
        time.sleep(0.05)
        order.append("first")
    t.join()
    assert order == ["first", "other"]


def test_procref_sees_through_zombies() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    ref = ProcRef.of(child.pid)
    assert ref is not None
    deadline = time.monotonic() + 5
    while ref.alive() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not ref.alive()  # exited but not yet reaped: a zombie is not alive
    child.wait()
    assert ProcRef.of(child.pid) is None
    assert not ProcRef(os.getpid(), 1).alive()  # same pid, other start time: reused pid


def test_tun_permission_error_names_the_fix() -> None:
    err = explain("slirp4netns", 'WARNING: Support for IPv6 is experimental\r\n'
                  'open("/dev/net/tun"): Permission denied\r\nchild failed(1)\r\n')
    assert "chmod 666 /dev/net/tun" in str(err)
    assert "experimental" not in str(err)


def test_unknown_connector() -> None:
    with pytest.raises(BurrowError, match="slirp4netns or pasta"):
        select("vde")

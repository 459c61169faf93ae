"""burrow-dns whose config directory is removed (a world's runtime dir deleted under it, as at
logout or by a test harness) exits: its pid file went with the directory, so no engine could
ever signal or stop it again, and a new server for a new directory could not bind its port."""

from __future__ import annotations

import shutil
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.integration.test_dns_support import alive, pid_of, start_dns, wait_dead
from tests.nsutil import Netns

pytestmark = pytest.mark.root

LISTEN, CTR = "10.89.7.1", "10.89.7.2"


def _serve(ns: Netns, cfg: Path) -> int:
    ns.run(["ip", "link", "set", "lo", "up"])
    ns.run(["ip", "addr", "add", f"{LISTEN}/32", "dev", "lo"])
    cfg.mkdir()
    (cfg / "gone").write_text(f"{LISTEN}\n{'1' * 64} {CTR}  c1\n")
    res = start_dns(ns, cfg)
    assert res.returncode == 0, res.stderr
    pid = pid_of(cfg)
    assert alive(pid)
    return pid


def test_server_exits_when_its_config_dir_is_removed(
        tmp_path: Path, netns_factory: Callable[[], Netns]) -> None:
    pid = _serve(netns_factory(), tmp_path / "cfg")
    shutil.rmtree(tmp_path / "cfg")
    assert wait_dead(pid, timeout=10), "burrow-dns outlived its config directory"


def test_server_exits_when_its_config_dir_is_replaced(
        tmp_path: Path, netns_factory: Callable[[], Netns]) -> None:
    cfg = tmp_path / "cfg"
    pid = _serve(netns_factory(), cfg)
    cfg.rename(tmp_path / "old")
    cfg.mkdir()  # same name, a new directory: not ours
    shutil.copy(tmp_path / "old" / "gone", cfg / "gone")
    assert wait_dead(pid, timeout=10), "burrow-dns kept serving a directory that was replaced"


def test_server_stays_while_its_config_dir_stays(
        tmp_path: Path, netns_factory: Callable[[], Netns]) -> None:
    pid = _serve(netns_factory(), tmp_path / "cfg")
    assert not wait_dead(pid, timeout=2.5)  # a few stats ticks: the check leaves it alone

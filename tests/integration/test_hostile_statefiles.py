"""State files under `--config` replaced by a symlink, a FIFO or garbage, as another process
with write access to the directory (or a crash mid-write) leaves them; tried for real with
`burrow-netavark setup` in a throwaway host netns.

Before: a symlink at firewall/lock had its target truncated (the in-transaction mark is
written into the lock file and truncated after); a symlink planted as a temporary name
(`.firewall-driver.tmp`) had its target overwritten with the state; a FIFO as firewall-driver
or the ledger hung setup for good; bad UTF-8 in firewall-driver made every later setup an
internal error. Now links are never followed, nothing blocks, and garbage is replaced.
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, assert_refused, network, options
from tests.nsutil import Netns, unique

pytestmark = pytest.mark.root


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    return World(host_ns, tmp_path / "cfg", "nftables")


def _request() -> dict[str, Any]:
    net = network("adnet", unique("ad-"), [("10.97.7.0/24", "10.97.7.1")])
    return options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.7.5"]})],
                   ports=[{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1,
                           "protocol": "tcp"}])


def _setup(world: World, ctr: Netns, opts: dict[str, Any]) -> subprocess.CompletedProcess[str]:
    try:
        return world.netavark("setup", ctr, opts, check=False)
    except subprocess.TimeoutExpired:
        pytest.fail("setup blocked on a state file")


def _plant(path: Path, make: Callable[[Path], None]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    make(path)


def test_a_symlinked_lock_is_refused_and_its_target_left_alone(
    world: World, ctr_ns: Netns, tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_text("precious\n")
    _plant(world.config / "firewall" / "lock", lambda p: p.symlink_to(target))
    res = _setup(world, ctr_ns, _request())
    assert target.read_text() == "precious\n"
    assert_refused(res, ctr_ns, "a symlink: never followed, remove it")


def test_a_symlink_planted_as_a_temporary_name_is_not_followed(
    world: World, ctr_ns: Netns, tmp_path: Path
) -> None:
    target = tmp_path / "precious"
    target.write_text("precious\n")
    _plant(world.config / "firewall" / ".firewall-driver.tmp", lambda p: p.symlink_to(target))
    opts = _request()
    res = _setup(world, ctr_ns, opts)
    assert res.returncode == 0, res.stdout
    assert target.read_text() == "precious\n"
    assert (world.config / "firewall" / "firewall-driver").read_text() == "nftables"
    world.teardown(ctr_ns, opts)


@pytest.mark.parametrize("name", ["firewall-driver", ".burrow-ledger.json"])
@pytest.mark.parametrize("kind", ["fifo", "garbage"])
def test_a_fifo_or_garbage_as_a_state_file_neither_blocks_nor_breaks_setup(
    world: World, ctr_ns: Netns, name: str, kind: str
) -> None:
    path = world.config / "firewall" / name
    _plant(path, os.mkfifo if kind == "fifo" else lambda p: p.write_bytes(b"\x00\xff{[\n"))
    opts = _request()
    res = _setup(world, ctr_ns, opts)
    assert res.returncode == 0, res.stdout
    world.teardown(ctr_ns, opts)
    assert json.loads(_setup(world, ctr_ns, opts).stdout)["adnet"]
    world.teardown(ctr_ns, opts)


@pytest.mark.parametrize("kind", ["fifo", "symlink"])
def test_a_dns_config_file_that_is_no_regular_file_fails_setup_naming_it(
    host_ns: Netns, ctr_ns: Netns, tmp_path: Path, kind: str
) -> None:
    """The network's Aardvark-format DNS file (aardvark-dns/<network>): a FIFO hung setup
    (appending opened it for writing), a symlink had the container's record appended to its
    target. Now setup fails naming the file and the fix, and rolls back."""
    world = World(host_ns, tmp_path / "cfg", "none", aardvark="/bin/true")  # DNS on, no server
    target = tmp_path / "precious"
    target.write_text("precious\n")
    net = network("adnet", unique("ad-"), [("10.97.7.0/24", "10.97.7.1")], dns_enabled=True)
    opts = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.7.5"]})])
    path = world.config / "aardvark-dns" / "adnet"
    _plant(path, os.mkfifo if kind == "fifo" else lambda p: p.symlink_to(target))
    res = _setup(world, ctr_ns, opts)
    assert target.read_text() == "precious\n"
    assert_refused(res, ctr_ns, f"{path} is {'not a regular file' if kind == 'fifo' else 'a symlink'}",
                   "remove it")

"""A `--config` directory other users may write, as netavark 1.4's default (`/tmp`) is: root's
setup must not keep its state in a `firewall/` or `aardvark-dns/` another user made there
first. Tried for real with `burrow-netavark setup` in a throwaway host netns.

Before: setup succeeded and wrote its firewall state (the rules teardown later deletes by
handle) into the other user's `firewall/`, and its DNS records into their `aardvark-dns/`,
where that user could rewrite them (records and upstream servers burrow-dns then served to
every container, root's rule handles to delete). A symlinked `firewall/` was followed. Now each
such directory must be root's (or the caller's), not a symlink, and not writable by others;
the error names the fix and nothing is applied.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, assert_refused, network, options
from tests.nsutil import VENV_BIN, Netns, unique

pytestmark = pytest.mark.root

OTHER_UID = 65534  # nobody: "another local user"


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    """A config dir like /tmp: root's, sticky, world-writable."""
    cfg = tmp_path / "shared"
    cfg.mkdir()
    cfg.chmod(0o1777)
    tmp_path.chmod(0o755)
    return cfg


def _world(host: Netns, cfg: Path) -> World:
    return World(host, cfg, "nftables", aardvark=str(VENV_BIN / "burrow-dns"),
                 env={"BURROW_DNS_RESOLV_CONF": "/dev/null"})


def _request(dns: bool = False) -> dict[str, Any]:
    net = network(unique("ad3n"), unique("ad3-"), [("10.97.9.0/24", "10.97.9.1")],
                  dns_enabled=dns)
    return options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.97.9.5"]})],
                   ports=[{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1,
                           "protocol": "tcp"}])


def _planted(path: Path, mode: int = 0o777) -> Path:
    path.mkdir()
    os.chown(path, OTHER_UID, OTHER_UID)
    path.chmod(mode)
    return path


def _refused(w: World, ctr: Netns, opts: dict[str, Any], planted: Path) -> str:
    error = assert_refused(w.netavark("setup", ctr, opts, check=False), ctr,
                           "pass --config a directory only you can write")
    assert not any(planted.iterdir()), list(planted.iterdir())  # nothing of root's written there
    return error


@pytest.mark.parametrize("sub", ["firewall", "aardvark-dns"])
def test_a_state_dir_another_user_made_first_is_refused(
    host_ns: Netns, ctr_ns: Netns, shared: Path, sub: str
) -> None:
    planted = _planted(shared / sub)
    error = _refused(_world(host_ns, shared), ctr_ns, _request(dns=True), planted)
    assert f"{planted} belongs to uid {OTHER_UID}, not to root" in error


def test_a_state_dir_others_may_write_is_refused(
    host_ns: Netns, ctr_ns: Netns, shared: Path
) -> None:
    planted = _planted(shared / "firewall")
    os.chown(planted, 0, 0)  # root's, but world-writable: anyone could swap its entries
    error = _refused(_world(host_ns, shared), ctr_ns, _request(), planted)
    assert "may be written by other users (mode 0777)" in error


def test_a_symlinked_state_dir_is_refused(
    host_ns: Netns, ctr_ns: Netns, shared: Path, tmp_path: Path
) -> None:
    target = _planted(tmp_path / "theirs")
    (shared / "firewall").symlink_to(target)
    error = _refused(_world(host_ns, shared), ctr_ns, _request(), target)
    assert "is a symlink (never followed)" in error


def test_a_config_dir_others_may_write_without_the_sticky_bit_is_refused(
    host_ns: Netns, ctr_ns: Netns, shared: Path
) -> None:
    shared.chmod(0o777)  # others could rename root's own firewall/ away and plant theirs
    assert_refused(_world(host_ns, shared).netavark("setup", ctr_ns, _request(), check=False),
                   ctr_ns, "may be written by other users (mode 0777)")


def test_a_sticky_shared_config_dir_with_nothing_planted_still_works(
    host_ns: Netns, ctr_ns: Netns, shared: Path
) -> None:
    """netavark 1.4's `/tmp` default keeps working when nobody got there first."""
    w = _world(host_ns, shared)
    opts = _request(dns=True)
    status = w.setup(ctr_ns, opts)
    assert "eth0" in status[next(iter(opts["networks"]))]["interfaces"]
    for sub in ("firewall", "aardvark-dns"):
        st = (shared / sub).stat()
        assert st.st_uid == 0 and not st.st_mode & 0o022
    w.teardown(ctr_ns, opts)
    assert "eth0" not in ctr_ns.run(["ip", "-o", "link"]).stdout

"""firewalld-reload against a forged `Reloaded` signal, on a real dbus-daemon and firewalld:
another connection emits a signal with firewalld's path, interface and member (any local user
may on a system bus). The listener re-applied every rule on each; now it ignores it, and a
real `firewall-cmd --reload` is still followed."""

from __future__ import annotations

from pathlib import Path

import pytest
from jeepney import new_signal
from jeepney.wrappers import DBusAddress

from netns.firewalld import api
from netns.firewalld.bus import open_system
from tests.engine_util import World, wait_for
from tests.firewalld_env import FirewalldEnv
from tests.integration.test_firewalld_reload import listener
from tests.nsutil import Netns

pytestmark = pytest.mark.root
REAPPLIED = "re-applied the firewall rules"


def test_a_forged_reloaded_signal_makes_no_reapply(
    firewalld: FirewalldEnv, host_ns: Netns, tmp_path: Path,
) -> None:
    w = World(host_ns, tmp_path / "config", "nftables", env=firewalld.env)
    with listener(w, firewalld, tmp_path) as log:
        assert wait_for(lambda: log.read_text().count(REAPPLIED) == 1, 10), log.read_text()
        bus = open_system(firewalld.env)
        assert bus is not None
        with bus:
            for _ in range(3):
                bus._conn.send(new_signal(DBusAddress(api.PATH, interface=api.IFACE), api.RELOADED))
        assert wait_for(lambda: "which is not firewalld" in log.read_text(), 10), log.read_text()
        assert log.read_text().count(REAPPLIED) == 1, log.read_text()
        firewalld.cmd("--reload")  # the real one still counts
        assert wait_for(lambda: log.read_text().count(REAPPLIED) == 2, 20), log.read_text()

"""A new container's gratuitous ARP at setup (arp_notify) reaches no other container, in every
shape; arp_notify=1 (netavark 1.11) still holds for the container's later link changes.

Before: arp_notify=1 was set before the interface came up, so the kernel sent a gratuitous ARP
at that link-up. On IPv4 networks the host end was made up in the request that made it, and
the bridge took the port as forwarding before its carrier was seen: the ARP went to every other
port (one frame per container per setup, O(N)). On IPv6 networks the host end came up after a
lookup of it and waited for its carrier, so the same ARP stopped at the port: two behaviours by
a kernel race (netavark 1.11's order has the same race). netavark 1.4 sends none, as burrow now:
arp_notify is set in the request that brings the interface up, after the up (README row
"gratuitous ARP at setup").
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import ping, run_in_process, static_net
from tests.frames import collect, drain, sniffer
from tests.nsutil import Netns

pytestmark = pytest.mark.root

GARP = "arp request (gratuitous)"


def _ok(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
    code, text = run_in_process(config, host, command, ctr, opts)
    assert code == 0, text


def _mac(ns: Netns) -> str:
    return str(json.loads(ns.run(["ip", "-j", "link", "show", "eth0"]).stdout)[0]["address"])


def _opts(dual: bool) -> Callable[[int], dict[str, Any]]:
    return static_net("ga", 96, dual)[1]


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_a_setup_floods_no_gratuitous_arp_and_arp_notify_still_holds(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, dual: bool
) -> None:
    opts = _opts(dual)
    first = netns_factory()
    _ok(tmp_path, host_ns, "setup", first, opts(2))
    with sniffer(first) as sock:
        drain(sock)
        new = netns_factory()
        _ok(tmp_path, host_ns, "setup", new, opts(3))
        mac = _mac(new)
        # The kernel sends its ARP while the link comes up, within the setup's own call.
        got = [f for f in collect(sock, 1.0) if f.src == mac]
        assert GARP not in [f.kind for f in got], got
        # netavark 1.11's values, as before.
        assert new.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
        assert new.sysctl("net/ipv4/conf/eth0/rp_filter") == "2"
        assert ping(new, "10.96.0.2") and ping(first, "10.96.0.3")
        # arp_notify=1 is in effect: a later change of the container's MAC is announced, and
        # the other container's entry for its address follows it.
        drain(sock, quiet=0.2)
        new.run(["ip", "link", "set", "eth0", "address", "02:47:61:00:00:03"])
        announced = collect(sock, 1.0)
        assert any(f.kind == GARP and f.src == "02:47:61:00:00:03" for f in announced), announced
        neigh = json.loads(first.run(["ip", "-j", "neigh", "show", "10.96.0.3"]).stdout)
        assert [n.get("lladdr") for n in neigh] == ["02:47:61:00:00:03"], neigh

"""What a setup makes every other container on the bridge receive (issue 15).

The bridge copies each broadcast or multicast frame to all its ports, so with N containers a
frame costs N deliveries, each through a container's stack: CPU taken from whatever runs next
(the next setup). A setup should add no such frame it does not need. Packet sockets on other
containers' ports count what arrives (tests/frames.py).
"""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from netns import netlink
from netns.nsenter import entered
from tests.engine_util import network, options, ping, port, run_in_process, static_net, wait_for
from tests.frames import ICMP6, MLD2_REPORT, collect, drain, sniffer
from tests.nsutil import Netns, have, unique

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not have("nft"), reason="environment: nft is not installed")]

MLD_REPORT = ICMP6[MLD2_REPORT]
# Long enough for a report and its one repetition (mldv2_unsolicited_report_interval, 1 s).
WINDOW = 3.0


def _ok(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
    code, text = run_in_process(config, host, command, ctr, opts)
    assert code == 0, text


def _mac(ns: Netns, dev: str) -> str:
    return str(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["address"])


def test_the_bridge_resends_no_mld_report_when_a_container_joins(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """Every setup with a published port asks for the bridge's route_localnet=1. Setting it
    again by RTM_SETLINK (IFLA_AF_SPEC) made the kernel announce a state change of the bridge,
    and a link with IPv6 that changes state resends its MLD reports (twice): to all N ports.
    A value the bridge already has is now left alone (it stays 1)."""
    br = unique("sf")
    net = network(br, br, [("10.97.0.0/24", "10.97.0.1")])

    def opts(i: int) -> dict[str, Any]:
        per = {"interface_name": "eth0", "static_ips": [f"10.97.0.{i}"]}
        return options(f"c{i}", [(net, per)], [port(21000 + i, 80)])

    first = netns_factory()
    _ok(tmp_path, host_ns, "setup", first, opts(2))
    _ok(tmp_path, host_ns, "setup", netns_factory(), opts(3))
    sock = sniffer(first)
    with sock:
        # The bridge's own reports after it was made (when its link-local address has passed
        # DAD, and once more within a second) are not what this is about: let them pass.
        assert wait_for(lambda: "tentative" not in host_ns.run(
            ["ip", "-6", "addr", "show", "dev", br]).stdout, timeout=10)
        drain(sock, quiet=1.5)
        new = netns_factory()
        _ok(tmp_path, host_ns, "setup", new, opts(4))
        t0 = time.monotonic()
        # The socket sees the new container's frames: its ARP request for the first one. (Its
        # MLD reports stay off the other ports: netns/mldquiet.py.)
        assert ping(new, "10.97.0.2")
        frames = collect(sock, WINDOW, t0)
    bridge, joined = _mac(host_ns, br), _mac(new, "eth0")
    assert any(f.src == joined and f.kind.startswith("arp request") for f in frames), frames
    assert [f for f in frames if f.src == bridge and f.kind == MLD_REPORT] == []
    assert host_ns.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"


@pytest.mark.parametrize("dual", [False, True], ids=["ipv4", "dual-stack"])
def test_a_new_container_sends_no_router_solicitation_and_no_dad_probe(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path, dual: bool
) -> None:
    """A managed bridge port's IPv6 side: router_solicitations=0 (the kernel would repeat
    them 4, 8, 16 ... s apart for the link's life, each to all N ports) and accept_dad=0 on
    IPv4-only networks too (netavark sets it on IPv6 ones): no DAD probe of the link-local."""
    net, opts = static_net("sf", 98, dual)
    br = net["network_interface"]
    first = netns_factory()
    _ok(tmp_path, host_ns, "setup", first, opts(2))
    # On the bridge: it gets all the new container sends (its MLD reports stay off the other
    # ports, netns/mldquiet.py; solicitations would not).
    sock = sniffer(host_ns, br)
    with sock:
        drain(sock)
        new = netns_factory()
        _ok(tmp_path, host_ns, "setup", new, opts(3))
        # The kernel's first solicitation comes within rtr_solicit_delay (1 s) of the
        # link-local address being usable (at once without DAD, about 1 s later with it).
        frames = collect(sock, 2 * WINDOW)
    joined = _mac(new, "eth0")
    mine = [f.kind for f in frames if f.src == joined]
    assert MLD_REPORT in mine, frames  # the socket sees the new container's frames
    assert [k for k in mine if k.startswith(("router solicitation", "neighbour solicitation"))] == []
    assert new.sysctl("net/ipv6/conf/eth0/router_solicitations") == "0"
    assert new.sysctl("net/ipv6/conf/eth0/accept_dad") == "0"
    assert new.sysctl("net/ipv6/conf/eth0/accept_ra") == "1"  # router advertisements still taken
    # The container's link-local address is there, as before (usable at once: no DAD).
    addrs = json.loads(new.run(["ip", "-j", "-6", "addr", "show", "dev", "eth0"]).stdout)
    local = [a for d in addrs for a in d["addr_info"] if a["local"].startswith("fe80:")]
    assert local and not any(a.get("tentative") for a in local), local


def test_only_managed_bridge_ports_are_quieted(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """A bridge burrow did not make may be a real LAN's, where routers answer solicitations:
    its containers keep the kernel's defaults (as macvlan ones do)."""
    br = unique("sf")
    host_ns.run(["ip", "link", "add", br, "type", "bridge"])
    host_ns.run(["ip", "addr", "add", "10.99.0.1/24", "dev", br])
    host_ns.run(["ip", "link", "set", br, "up"])
    net = network(br, br, [("10.99.0.0/24", "10.99.0.1")], options={"mode": "unmanaged"})
    ctr = netns_factory()
    _ok(tmp_path, host_ns, "setup", ctr, options("c2", [(net, {
        "interface_name": "eth0", "static_ips": ["10.99.0.2"]})]))
    assert ctr.sysctl("net/ipv6/conf/eth0/router_solicitations") == "-1"
    assert ctr.sysctl("net/ipv6/conf/eth0/accept_dad") == "1"


def test_quiet_ipv6_sysctls_are_skipped_without_ipv6_but_required_ones_fail(
    netns_factory: Callable[[], Netns]
) -> None:
    """A kernel without IPv6 has no net/ipv6: the quieting is then moot, but the sysctls an
    IPv6 network needs (autoconf, accept_dad) still fail the setup, as before."""
    ns = netns_factory()
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            netlink._write_ipv6_conf("sf-missing0", {}, dict(netlink.QUIET_PORT_V6))
            with pytest.raises(FileNotFoundError):
                netlink._write_ipv6_conf("sf-missing0", {"autoconf": "0"}, {})
            netlink._write_ipv6_conf("lo", {"autoconf": "0"}, {"router_solicitations": "0"})
    finally:
        os.close(fd)
    assert ns.sysctl("net/ipv6/conf/lo/autoconf") == "0"
    assert ns.sysctl("net/ipv6/conf/lo/router_solicitations") == "0"

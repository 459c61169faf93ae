"""What a setup makes every other container on the bridge receive (issue 15).

The bridge copies each broadcast or multicast frame to all its ports, so with N containers a
frame costs N deliveries, each through a container's stack: CPU taken from whatever runs next
(the next setup). A setup should add no such frame it does not need. Packet sockets on other
containers' ports count what arrives (tests/frames.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import network, options, port, run_in_process, wait_for
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
        frames = collect(sock, WINDOW)
    bridge, joined = _mac(host_ns, br), _mac(new, "eth0")
    # The new container's own reports (its link-local's group) did come: the socket saw them.
    assert any(f.src == joined and f.kind == MLD_REPORT for f in frames), frames
    assert [f for f in frames if f.src == bridge and f.kind == MLD_REPORT] == []
    assert host_ns.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"

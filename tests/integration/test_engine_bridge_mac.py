"""A bridge burrow did not make keeps its MAC when containers come and go (netns/bridgemac.py).

netavark 1.4 makes its bridge without a MAC (`ip link add type bridge`): the kernel gives it its
lowest port's and changes it when that port leaves or a lower one joins. Found by the Podman
tool-switch walkthrough: the survivors' neighbour entry for the gateway pointed at a removed
veth's MAC, and the gateway (DNS too) was lost for up to a minute.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import network, options, run_in_process
from tests.nsutil import Netns, have, unique

pytestmark = [pytest.mark.root,
              pytest.mark.skipif(not have("nft"), reason="environment: nft is not installed")]

GW = "10.97.0.1"
HIGH = "fe:ff:ff:ff:ff:f0"  # above any MAC the kernel makes up for a veth (02:.. to fe:..)


def _ok(config: Path, host: Netns, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
    code, text = run_in_process(config, host, command, ctr, opts)
    assert code == 0, text


def _link(ns: Netns, dev: str) -> dict[str, Any]:
    return dict(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0])


def _host_end(host: Netns, ctr: Netns) -> dict[str, Any]:
    """The container's veth end on the host (the bridge port)."""
    index = _link(ctr, "eth0")["link_index"]
    links = json.loads(host.run(["ip", "-j", "link", "show"]).stdout)
    return dict(next(link for link in links if link["ifindex"] == index))


def _neighbours(ns: Netns, dev: str) -> dict[str, str]:
    out = json.loads(ns.run(["ip", "-j", "neigh", "show", "dev", dev]).stdout or "[]")
    return {e["dst"]: e.get("lladdr", "") for e in out}


def _floating_bridge(host: Netns) -> str:
    """A bridge as netavark 1.4 makes it: no MAC of its own."""
    br = unique("bm")
    host.run(["ip", "link", "add", br, "type", "bridge"])
    host.run(["ip", "addr", "add", f"{GW}/24", "dev", br])
    host.run(["ip", "link", "set", br, "up"])
    return br


def _opts(net: dict[str, Any], i: int) -> dict[str, Any]:
    return options(f"c{i}", [(net, {"interface_name": "eth0", "static_ips": [f"10.97.0.{i}"]})])


def test_a_lower_port_joining_or_the_lowest_leaving_moves_no_mac(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """The tool switch: netavark's container on its bridge, burrow's beside it, netavark's
    leaves. Each burrow veth's MAC is below the first port's, so the floating bridge would
    take it on attach, and then the first one's again... until it leaves."""
    br = _floating_bridge(host_ns)
    old, old_end = netns_factory(), unique("mxo")
    host_ns.run(["ip", "link", "add", old_end, "address", HIGH, "master", br, "up", "type", "veth",
                 "peer", "name", "eth0", "netns", str(old.pid)])
    old.run(["ip", "addr", "add", "10.97.0.50/24", "dev", "eth0"])
    old.run(["ip", "link", "set", "eth0", "up"])
    old.run(["ping", "-c1", "-W2", GW])
    assert _link(host_ns, br)["address"] == HIGH == _neighbours(old, "eth0")[GW]
    net = network(br, br, [("10.97.0.0/24", GW)])
    ctrs = {i: netns_factory() for i in (2, 3)}
    _ok(tmp_path, host_ns, "setup", ctrs[2], _opts(net, 2))
    assert _link(host_ns, br)["address"] == HIGH
    assert _host_end(host_ns, ctrs[2])["address"] < HIGH
    old.run(["ping", "-c1", "-W2", GW])  # with the entry it had
    ctrs[2].run(["ping", "-c1", "-W2", GW])
    # netavark's container leaves (its veth goes): the bridge keeps the MAC.
    host_ns.run(["ip", "link", "del", old_end])
    assert _link(host_ns, br)["address"] == HIGH
    assert _neighbours(ctrs[2], "eth0")[GW] == HIGH
    ctrs[2].run(["ping", "-c1", "-W2", GW])
    # Pinned once: a later setup flushes nobody's entry on the host (pinning again would).
    assert "10.97.0.2" in _neighbours(host_ns, br)
    _ok(tmp_path, host_ns, "setup", ctrs[3], _opts(net, 3))
    assert "10.97.0.2" in _neighbours(host_ns, br)
    assert _link(host_ns, br)["address"] == HIGH
    ctrs[3].run(["ping", "-c1", "-W2", GW])


def test_an_empty_bridge_keeps_the_mac_its_first_port_gave_it(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    br = _floating_bridge(host_ns)
    net = network(br, br, [("10.97.0.0/24", GW)])
    ctrs = {i: netns_factory() for i in (2, 3, 4)}
    _ok(tmp_path, host_ns, "setup", ctrs[2], _opts(net, 2))  # the bridge takes this port's MAC
    mac = _link(host_ns, br)["address"]
    assert _host_end(host_ns, ctrs[2])["address"] == mac
    for i in (3, 4):
        _ok(tmp_path, host_ns, "setup", ctrs[i], _opts(net, i))
        assert "10.97.0.2" in _neighbours(host_ns, br), i  # not pinned again (no flush)
    assert _link(host_ns, br)["address"] == mac
    for i in (3, 4):
        ctrs[i].run(["ping", "-c1", "-W2", GW])  # their entries for the gateway: REACHABLE
    _ok(tmp_path, host_ns, "teardown", ctrs[2], _opts(net, 2))  # the port the MAC came from
    assert _link(host_ns, br)["address"] == mac
    for i in (3, 4):  # the others reach their gateway with the entry they have
        assert _neighbours(ctrs[i], "eth0")[GW] == mac
        ctrs[i].run(["ping", "-c1", "-W2", GW])


def test_a_bridge_with_a_mac_of_its_own_is_left_alone(
    host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path
) -> None:
    """A bridge with its own MAC (newer netavark's, burrow's, a user's) is not set again: that
    would flush its neighbour entries on every setup. (A guard for the fix: passes before it.)"""
    br = unique("bm")
    host_ns.run(["ip", "link", "add", br, "address", "02:97:00:00:00:01", "type", "bridge"])
    host_ns.run(["ip", "addr", "add", f"{GW}/24", "dev", br])
    host_ns.run(["ip", "link", "set", br, "up"])
    net = network(br, br, [("10.97.0.0/24", GW)])
    for i in (2, 3, 4):
        _ok(tmp_path, host_ns, "setup", netns_factory(), _opts(net, i))
        if i == 2:  # (with a port: a bridge without carrier drops its entries)
            host_ns.run(["ip", "neigh", "replace", "10.97.0.99", "lladdr", "02:97:00:00:00:99",
                         "dev", br, "nud", "stale"])
    assert _link(host_ns, br)["address"] == "02:97:00:00:00:01"
    assert "10.97.0.99" in _neighbours(host_ns, br)

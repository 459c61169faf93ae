"""Netavark 2.0's `outbound_addr4` / `outbound_addr6` through the Netavark CLI (as Podman
passes them: network options), on both firewall drivers: the rule in the layout each
stands in for, its validation, the state file, and teardown."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options
from tests.nsutil import Netns, unique


def listing(world: World) -> str:
    if world.firewall == "nftables":
        return world.host.run(["nft", "list", "ruleset"]).stdout
    return world.host.run(["iptables-save"]).stdout + world.host.run(["ip6tables-save"]).stdout


@pytest.fixture(params=["nftables", "iptables"])
def world(request: pytest.FixtureRequest, netns_factory: Callable[[], Netns],
          tmp_path: Path) -> World:
    return World(netns_factory(), tmp_path / "cfg", request.param)


def test_outbound_addr_options_become_snat_rules_and_go_with_the_network(
        world: World, netns_factory: Callable[[], Netns]) -> None:
    net = network("obnet", unique("bfwo"), [("10.91.0.0/24", "10.91.0.1"),
                                             ("fd91::/64", "fd91::1")],
                  options={"outbound_addr4": "192.0.2.10", "outbound_addr6": "2001:db8::10"})
    ctr = netns_factory()
    opts = options("c1", [(net, {"interface_name": "eth0",
                                  "static_ips": ["10.91.0.2", "fd91::2"]})])
    world.setup(ctr, opts)
    rules = listing(world)
    if world.firewall == "nftables":  # netavark 2.x: the subnet chain snats instead
        assert "ip daddr != 224.0.0.0/4 snat ip to 192.0.2.10" in rules
        assert "ip6 daddr != ff00::/8 snat ip6 to 2001:db8::10" in rules
        assert "masquerade" not in rules.split("nv_")[1]  # not in the subnet chain
    else:  # the NETAVARK-<hash> chain, as netavark's iptables driver
        assert "! -d 224.0.0.0/4 -j SNAT --to-source 192.0.2.10" in rules
        assert "! -d ff00::/8 -j SNAT --to-source 2001:db8::10" in rules
    state = json.loads((world.config / "firewall" / "networks" / net["id"]).read_text())
    assert state["outbound_addr4"] == "192.0.2.10" and state["outbound_addr6"] == "2001:db8::10"
    world.teardown(ctr, opts)
    assert "192.0.2.10" not in listing(world) and "2001:db8::10" not in listing(world)


@pytest.mark.parametrize(("key", "value"), [
    ("outbound_addr4", "2001:db8::1"),  # the other family
    ("outbound_addr6", "192.0.2.1"),
    ("outbound_addr4", "192.0.2.0/24"),  # a network, not an address
    ("outbound_addr4", "eth0"),
    ("outbound_addr4", ""),
])
def test_outbound_addr_must_be_an_address_of_its_family(
        world: World, netns_factory: Callable[[], Netns], key: str, value: str) -> None:
    net = network("obbad", unique("bfwo"), [("10.92.0.0/24", "10.92.0.1")],
                  options={key: value})
    res = world.netavark("setup", netns_factory(),
                         options("c1", [(net, {"interface_name": "eth0",
                                                "static_ips": ["10.92.0.2"]})]),
                         check=False)
    assert res.returncode != 0
    assert f'unable to parse "{key}"' in json.loads(res.stdout)["error"]
    assert not (world.config / "firewall" / "networks" / net["id"]).exists()

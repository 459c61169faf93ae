"""Bridge `vlan` (netavark 1.14), `vrf` (1.8) and route_localnet (2.x) on the real kernel.

This machine's kernel has neither VRF nor bridge VLAN filtering (no modules to load): the
tests that need them probe the kernel in their own netns and skip naming it; what runs
everywhere is the error netavark gives and that a failed setup leaves nothing behind.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options, ping
from tests.nsutil import Netns, have, unique


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    if not have("nft"):
        pytest.skip("environment: nft is not installed")
    return World(host_ns, tmp_path / "cfg", "nftables")


def v4net(bridge: str, **kw: object) -> dict[str, object]:
    return network(unique("bengn"), bridge, [("10.77.0.0/24", "10.77.0.1")], **kw)


def kernel_has(host: Netns, *link: str) -> bool:
    """Whether `ip link add NAME type ...` works here (the probe link is removed again)."""
    name = unique("bengp")
    if host.run(["ip", "link", "add", name, "type", *link], check=False).returncode != 0:
        return False
    host.run(["ip", "link", "del", name])
    return True


def failed(world: World, ctr: Netns, o: dict[str, object]) -> str:
    res = world.netavark("setup", ctr, o, check=False)
    assert res.returncode == 1, res
    return str(json.loads(res.stdout)["error"])


def assert_nothing_left(world: World, ctr: Netns, bridge: str) -> None:
    assert bridge not in world.host.link_names()
    assert "eth0" not in ctr.link_names()
    assert not [n for n in world.host.link_names() if n.startswith("veth")]


def test_route_localnet_is_set_on_a_new_bridge_without_ports(
    world: World, netns_factory: Callable[[], Netns]
) -> None:
    """netavark 2.x sets route_localnet=1 on every non-internal bridge it creates (not only
    when ports are published, as 1.4 and burrow before did); an internal one gets none."""
    ctr, ctr2 = netns_factory(), netns_factory()
    br, br2 = unique("bengb"), unique("bengb")
    o = options("c1", [(v4net(br), {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    world.setup(ctr, o)
    assert world.host.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"
    internal = network(unique("bengn"), br2, [("10.77.1.0/24", "10.77.1.1")], internal=True)
    o2 = options("c2", [(internal, {"interface_name": "eth0", "static_ips": ["10.77.1.2"]})])
    world.setup(ctr2, o2)
    assert world.host.sysctl(f"net/ipv4/conf/{br2}/route_localnet") == "0"
    world.teardown(ctr, o)
    world.teardown(ctr2, o2)


def test_vrf_that_does_not_exist_fails_setup_as_netavark(
    world: World, netns_factory: Callable[[], Netns]
) -> None:
    ctr, br = netns_factory(), unique("bengb")
    o = options("c1", [(v4net(br, options={"vrf": "bengvrf0"}),
                        {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    err = failed(world, ctr, o)
    assert "get vrf to set up bridge interface: Netlink error: No such device (os error 19)" in err, err
    assert_nothing_left(world, ctr, br)


def test_vrf_that_is_another_kind_of_link_fails_setup(
    world: World, netns_factory: Callable[[], Netns]
) -> None:
    ctr, br, other = netns_factory(), unique("bengb"), unique("bengx")
    world.host.run(["ip", "link", "add", other, "type", "bridge"])
    o = options("c1", [(v4net(br, options={"vrf": other}),
                        {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    err = failed(world, ctr, o)
    assert f"vrf {other} already exists but is a bridge interface" in err, err
    assert_nothing_left(world, ctr, br)


def test_bridge_in_a_vrf(world: World, netns_factory: Callable[[], Netns]) -> None:
    if not kernel_has(world.host, "vrf", "table", "10"):
        pytest.skip("environment: kernel has no vrf")
    ctr, br, vrf = netns_factory(), unique("bengb"), unique("bengv")
    world.host.run(["ip", "link", "add", vrf, "type", "vrf", "table", "77"])
    world.host.run(["ip", "link", "set", vrf, "up"])
    o = options("c1", [(v4net(br, options={"vrf": vrf}),
                        {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    world.setup(ctr, o)
    link = json.loads(world.host.run(["ip", "-j", "link", "show", br]).stdout)[0]
    assert link.get("master") == vrf
    assert ping(ctr, "10.77.0.1")
    # The gateway's connected route lives in the VRF's table, not in main.
    assert "10.77.0.0/24" in world.host.run(["ip", "route", "show", "table", "77"]).stdout
    world.teardown(ctr, o)
    assert vrf in world.host.link_names() and br not in world.host.link_names()


def test_vlan_without_kernel_support_fails_setup_and_leaves_nothing(
    world: World, netns_factory: Callable[[], Netns]
) -> None:
    if kernel_has(world.host, "bridge", "vlan_filtering", "1"):
        pytest.skip("environment: kernel has bridge vlan filtering (test_vlan_* cover it)")
    ctr, br = netns_factory(), unique("bengb")
    o = options("c1", [(v4net(br, options={"vlan": "42"}),
                        {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    err = failed(world, ctr, o)
    assert "Operation not supported (os error 95)" in err, err
    assert_nothing_left(world, ctr, br)


def _bridge_vlans(host: Netns, dev: str) -> list[dict[str, object]]:
    data = json.loads(host.run(["bridge", "-j", "vlan", "show", "dev", dev]).stdout)
    return [v for entry in data for v in entry.get("vlans", [])]


def test_vlan_filters_the_bridge_and_tags_the_port(world: World, netns_factory: Callable[[], Netns]) -> None:
    if not kernel_has(world.host, "bridge", "vlan_filtering", "1"):
        pytest.skip("environment: kernel has no bridge vlan filtering")
    a, b, c = netns_factory(), netns_factory(), netns_factory()
    br = unique("bengb")
    n42 = v4net(br, options={"vlan": "42"})
    n43 = dict(n42, name=unique("bengn"), id=unique("", 64).ljust(64, "0")[:64], options={"vlan": "43"})
    oa = options("a", [(n42, {"interface_name": "eth0", "static_ips": ["10.77.0.2"]})])
    ob = options("b", [(n42, {"interface_name": "eth0", "static_ips": ["10.77.0.3"]})])
    oc = options("c", [(n43, {"interface_name": "eth0", "static_ips": ["10.77.0.4"]})])
    for ns, o in ((a, oa), (b, ob), (c, oc)):
        world.setup(ns, o)
    info = json.loads(world.host.run(["ip", "-j", "-d", "link", "show", br]).stdout)[0]
    assert info["linkinfo"]["info_data"]["vlan_filtering"] == 1
    ports = [p["ifname"] for p in world.host.links() if p.get("master") == br]
    tagged = {p: _bridge_vlans(world.host, p) for p in ports}
    assert sum(any(v.get("vlan") == 42 and "PVID" in v.get("flags", []) for v in vs) for vs in tagged.values()) == 2
    assert ping(a, "10.77.0.3")  # same VLAN
    assert not ping(a, "10.77.0.4")  # another VLAN on the same bridge
    for ns, o in ((a, oa), (b, ob), (c, oc)):
        world.teardown(ns, o)
    assert br not in world.host.link_names()

"""Netavark fidelity (issue 10) in throwaway namespaces: error paths and 1.x/2.x behaviour."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest

from tests.engine_util import World, network, options
from tests.nsutil import Netns, have, unique


@pytest.fixture
def world(host_ns: Netns, tmp_path: Path) -> World:
    if not have("nft"):
        pytest.skip("environment: nft is not installed")
    return World(host_ns, tmp_path / "cfg", "nftables")


def v4net(bridge: str, **kw: object) -> dict[str, object]:
    return network(unique("be2n"), bridge, [("10.79.0.0/24", "10.79.0.1")], **kw)


def test_teardown_after_interfaces_vanished_cleans_host_and_names_them(
    world: World, netns_factory: Callable[[], Netns]
) -> None:
    ctr = netns_factory()
    n1, n2 = v4net(unique("be2b")), network(unique("be2n"), unique("be2b"), [("10.79.1.0/24", "10.79.1.1")])
    o = options("c1", [(n1, {"interface_name": "eth0", "static_ips": ["10.79.0.2"]}),
                       (n2, {"interface_name": "eth1", "static_ips": ["10.79.1.2"]})])
    world.setup(ctr, o)
    ctr.run(["ip", "link", "del", "eth0"])
    ctr.run(["ip", "link", "del", "eth1"])
    res = world.netavark("teardown", ctr, o, check=False)
    assert res.returncode == 1, res
    err = json.loads(res.stdout)["error"]
    assert "eth0" in err and "eth1" in err, err
    # The host side went all the same: both bridges and their firewall chains.
    assert not world.host.link_names() & {n1["network_interface"], n2["network_interface"]}
    rules = world.host.run(["nft", "list", "ruleset"]).stdout
    assert "10.79.0.0" not in rules and "10.79.1.0" not in rules


def test_teardown_with_interfaces_present_exits_0(world: World, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    assert world.netavark("teardown", ctr, o, check=False).returncode == 0


def test_static_ip_equal_to_gateway_is_set_up(world: World, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.1"]})])
    world.setup(ctr, o)
    assert "10.79.0.1/24" in ctr.addrs("eth0")
    world.teardown(ctr, o)


def _readonly_proc_sys(host: Netns) -> None:
    # The host netns has its own mount namespace: this read-only bind stays inside it.
    host.run(["sh", "-c", "mount --bind /proc/sys /proc/sys && mount -o remount,ro,bind /proc/sys"])


def test_readonly_proc_with_forwarding_off_fails_setup(world: World, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    assert world.host.sysctl("net/ipv4/ip_forward") == "0"  # a fresh netns
    _readonly_proc_sys(world.host)
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    res = world.netavark("setup", ctr, o, check=False)
    assert res.returncode == 1, res
    assert "ip_forward" in json.loads(res.stdout)["error"]
    assert "eth0" not in ctr.link_names()


def test_readonly_proc_with_forwarding_on_is_tolerated(world: World, netns_factory: Callable[[], Netns]) -> None:
    ctr = netns_factory()
    world.host.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward"])
    _readonly_proc_sys(world.host)
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    world.teardown(ctr, o)


def test_a_new_bridge_whose_sysctls_fail_is_rolled_back(world: World, netns_factory: Callable[[], Netns]) -> None:
    """A read-only /proc/sys refuses the new bridge's IPv6 accept_dad (a hard sysctl): the
    setup fails, and the bridge it had just made goes with it (it was made before it was
    recorded as this request's, so the rollback left it)."""
    ctr = netns_factory()
    world.host.run(["sh", "-c", "echo 1 > /proc/sys/net/ipv4/ip_forward; "
                                "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding"])
    _readonly_proc_sys(world.host)
    bridge = unique("be2b")
    net = network(unique("be2n"), bridge, [("10.79.0.0/24", "10.79.0.1"), ("fd79::/64", "fd79::1")])
    o = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.79.0.2", "fd79::2"]})])
    res = world.netavark("setup", ctr, o, check=False)
    assert res.returncode == 1, res
    assert "Read-only file system" in json.loads(res.stdout)["error"]
    assert bridge not in world.host.link_names()
    assert "eth0" not in ctr.link_names()


def _routes(ctr: Netns, *args: str) -> str:
    return ctr.run(["ip", "route", "show", *args]).stdout


def test_static_route_via_another_interfaces_gateway(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Netavark 1.7: the gateway of a network's route may sit on another network (eth1)."""
    ctr = netns_factory()
    n1 = v4net(unique("be2b"), routes=[{"destination": "10.50.0.0/24", "gateway": "10.79.1.254"}])
    n2 = network(unique("be2n"), unique("be2b"), [("10.79.1.0/24", "10.79.1.1")])
    o = options("c1", [(n1, {"interface_name": "eth0", "static_ips": ["10.79.0.2"]}),
                       (n2, {"interface_name": "eth1", "static_ips": ["10.79.1.2"]})])
    world.setup(ctr, o)
    assert "10.50.0.0/24 via 10.79.1.254 dev eth1" in _routes(ctr)
    world.teardown(ctr, o)


def test_deviceless_route_types_are_removed_on_teardown(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Netavark 2.0: blackhole/unreachable/prohibit routes belong to no interface, so teardown
    removes them itself."""
    ctr = netns_factory()
    n1 = v4net(unique("be2b"), routes=[
        {"destination": "10.66.0.0/24", "route_type": "blackhole"},
        {"destination": "10.67.0.0/24", "route_type": "unreachable"},
        {"destination": "10.68.0.0/24", "route_type": "prohibit", "metric": 7},
    ])
    o = options("c1", [(n1, {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    table = _routes(ctr)
    assert "blackhole 10.66.0.0/24" in table and "unreachable 10.67.0.0/24" in table
    assert "prohibit 10.68.0.0/24" in table
    world.teardown(ctr, o)
    assert _routes(ctr) == ""


def test_rp_filter_is_loose_on_bridge_and_container(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Netavark 1.11: rp_filter=2 on the bridge it creates and the container's interface."""
    ctr = netns_factory()
    br = unique("be2b")
    o = options("c1", [(v4net(br), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    assert world.host.sysctl(f"net/ipv4/conf/{br}/rp_filter") == "2"
    assert ctr.sysctl("net/ipv4/conf/eth0/rp_filter") == "2"
    assert ctr.sysctl("net/ipv4/conf/eth0/arp_notify") == "1"
    world.teardown(ctr, o)


def _mtu(ns: Netns, dev: str) -> int:
    return int(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["mtu"])


def test_mtu_follows_the_default_route_interface(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Netavark 1.16: without an `mtu` option a new bridge's veths take the MTU of the main
    table's default-route interface (here a veth in the throwaway host netns)."""
    h, ctr = world.host, netns_factory()
    h.run(["ip", "link", "add", "be2up", "mtu", "1400", "type", "veth", "peer", "name", "be2upp"])
    h.run(["ip", "link", "set", "be2up", "up"])
    h.run(["ip", "link", "set", "be2upp", "up"])
    h.run(["ip", "addr", "add", "10.201.0.1/24", "dev", "be2up"])
    h.run(["ip", "route", "add", "default", "via", "10.201.0.2", "dev", "be2up"])
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    assert _mtu(ctr, "eth0") == 1400
    world.teardown(ctr, o)


def test_mtu_ignores_default_routes_of_other_tables(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Only the main table's default route counts: burrow's client-address routing puts
    `local default dev lo table 25202` into the user's (and Podman's rootless) netns, and a
    new bridge made after it took lo's MTU, 65536, which no veth takes: every `podman run` on
    a new network failed with "create veth pair: ... Invalid argument" (found by
    tests/e2e/test_rootlessport_differential.py)."""
    h, ctr = world.host, netns_factory()
    h.run(["ip", "link", "add", "be2up", "mtu", "1400", "type", "veth", "peer", "name", "be2upp"])
    h.run(["ip", "link", "set", "be2up", "up"])
    h.run(["ip", "link", "set", "be2upp", "up"])
    h.run(["ip", "addr", "add", "10.201.0.1/24", "dev", "be2up"])
    h.run(["ip", "route", "add", "local", "default", "dev", "lo", "table", "25202"])
    h.run(["ip", "route", "add", "default", "via", "10.201.0.2", "dev", "be2up"])
    o = options("c1", [(v4net(unique("be2b")), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    assert _mtu(ctr, "eth0") == 1400
    world.teardown(ctr, o)


def test_mtu_follows_an_existing_bridge(world: World, netns_factory: Callable[[], Netns]) -> None:
    """Netavark 1.17.2: an existing bridge's MTU wins over the kernel's default."""
    h, ctr = world.host, netns_factory()
    br = unique("be2b")
    h.run(["ip", "link", "add", br, "mtu", "1300", "type", "bridge"])
    h.run(["ip", "link", "set", br, "up"])
    o = options("c1", [(v4net(br), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    assert _mtu(ctr, "eth0") == 1300
    world.teardown(ctr, o)


def _unmanaged_world(host: Netns, tmp_path: Path, br: str, addr: str | None) -> World:
    # /bin/true stands in for the DNS server: the engine writes its config files for real.
    host.run(["ip", "link", "add", br, "type", "bridge"])
    host.run(["ip", "link", "set", br, "up"])
    if addr:
        host.run(["ip", "addr", "add", addr, "dev", br])
    return World(host, tmp_path / "cfg", "none", aardvark="/bin/true")


def test_unmanaged_bridge_dns_listens_on_its_existing_addresses(
    host_ns: Netns, tmp_path: Path, netns_factory: Callable[[], Netns]
) -> None:
    """Netavark 1.17: mode=unmanaged with DNS serves on the bridge's own addresses."""
    br, ctr = unique("be2b"), netns_factory()
    w = _unmanaged_world(host_ns, tmp_path, br, "10.79.9.1/24")
    net = network(unique("be2n"), br, [("10.79.9.0/24", "10.79.9.254")], dns_enabled=True,
                  options={"mode": "unmanaged"})
    o = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.79.9.2"]})])
    status = w.setup(ctr, o)
    assert status[net["name"]]["dns_server_ips"] == ["10.79.9.1"]
    header = (w.config / "aardvark-dns" / net["name"]).read_text().splitlines()[0]
    assert header == "10.79.9.1"
    w.teardown(ctr, o)


def test_unmanaged_bridge_dns_without_addresses_fails_setup(
    host_ns: Netns, tmp_path: Path, netns_factory: Callable[[], Netns]
) -> None:
    br, ctr = unique("be2b"), netns_factory()
    w = _unmanaged_world(host_ns, tmp_path, br, None)
    net = network(unique("be2n"), br, [("10.79.9.0/24", "10.79.9.254")], dns_enabled=True,
                  options={"mode": "unmanaged"})
    o = options("c1", [(net, {"interface_name": "eth0", "static_ips": ["10.79.9.2"]})])
    res = w.netavark("setup", ctr, o, check=False)
    assert res.returncode == 1 and "has no IP addresses" in json.loads(res.stdout)["error"], res
    assert "eth0" not in ctr.link_names()
    assert not (w.config / "aardvark-dns" / net["name"]).exists()


@pytest.mark.parametrize("systemd", [True, False], ids=["systemd", "no-systemd"])
def test_sysctl_d_file_for_a_new_bridge_with_systemd(
    world: World, netns_factory: Callable[[], Netns], tmp_path: Path, systemd: bool
) -> None:
    """Netavark 1.16: rootful with systemd booted, a bridge it creates gets
    /run/sysctl.d/10-netavark-<bridge>.conf, removed with the bridge (root is a scratch dir)."""
    root = tmp_path / "root"
    (root / "run").mkdir(parents=True)
    if systemd:
        (root / "run" / "systemd" / "system").mkdir(parents=True)
    world.env["BURROW_ROOT"] = str(root)
    ctr, br = netns_factory(), unique("be2b")
    o = options("c1", [(v4net(br), {"interface_name": "eth0", "static_ips": ["10.79.0.2"]})])
    world.setup(ctr, o)
    conf = root / "run" / "sysctl.d" / f"10-netavark-{br}.conf"
    if systemd:
        assert conf.read_text() == (
            "# autogenerated by netavark\nnet/ipv4/ip_forward = 1\n"
            f"net/ipv4/conf/{br}/route_localnet = 1\nnet/ipv4/conf/{br}/rp_filter = 2\n"
        )
    else:
        assert not (root / "run" / "sysctl.d").exists()
    world.teardown(ctr, o)
    assert not conf.exists()

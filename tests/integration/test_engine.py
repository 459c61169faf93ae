"""The engine end to end in throwaway namespaces: kernel state, real traffic, clean teardown.

Each firewall case runs against both backends. Nothing here touches the machine's own netns:
the "host" is a fresh netns, and every address is inside namespaces the test made.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import World, network, options, ping, port, request, start_server, wait_for
from tests.nsutil import VENV_BIN, Netns, have, unique

FIREWALLS = ["nftables", "iptables"]
AARDVARK = "/usr/lib/podman/aardvark-dns"


@pytest.fixture(params=FIREWALLS)
def world(request: pytest.FixtureRequest, host_ns: Netns, tmp_path: Path) -> Iterator[World]:
    fw = request.param
    tool = "nft" if fw == "nftables" else "iptables-restore"
    if not have(tool):
        pytest.skip(f"environment: {tool} is not installed")
    yield World(host_ns, tmp_path / "cfg", fw)


def firewall_dump(w: World) -> str:
    if w.firewall == "nftables":
        return w.host.run(["nft", "list", "ruleset"]).stdout
    return w.host.run(["iptables-save"]).stdout + w.host.run(["ip6tables-save"]).stdout


def dual(bridge: str, isolate: str | None = None, **kw: Any) -> dict[str, Any]:
    n = unique("n")
    o = {"isolate": isolate} if isolate else None
    return network(n, bridge, [("10.77.0.0/24", "10.77.0.1"), ("fd77::/64", "fd77::1")], options=o, **kw)


def test_dual_stack_setup_traffic_and_clean_teardown(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1, c2 = world.host, netns_factory(), netns_factory()
    br = unique("bt")
    net = dual(br)
    o1 = options("web", [(net, {"interface_name": "eth0", "static_ips": ["10.77.0.2", "fd77::2"],
                                "static_mac": "92:d0:c6:0a:29:10", "aliases": ["www"]})],
                 [port(8080, 80), port(8443, 80, host_ip="fd77::1")])
    o2 = options("db", [(net, {"interface_name": "eth0", "static_ips": ["10.77.0.3", "fd77::3"]})])

    status = world.setup(c1, o1)
    assert status == {net["name"]: {
        "dns_search_domains": [], "dns_server_ips": [],
        "interfaces": {"eth0": {"mac_address": "92:d0:c6:0a:29:10", "subnets": [
            {"gateway": "10.77.0.1", "ipnet": "10.77.0.2/24"}, {"gateway": "fd77::1", "ipnet": "fd77::2/64"}]}}}}
    s2 = world.setup(c2, o2)
    mac2 = s2[net["name"]]["interfaces"]["eth0"]["mac_address"]
    assert mac2 == c2.links()[1]["address"]

    # kernel state
    links = {link["ifname"]: link for link in h.links()}
    assert links[br]["linkinfo"]["info_kind"] == "bridge"
    ports_on_bridge = [n for n, link in links.items() if link.get("master") == br]
    assert len(ports_on_bridge) == 2 and all(n.startswith("veth") for n in ports_on_bridge)
    assert set(h.addrs(br)) >= {"10.77.0.1/24", "fd77::1/64"}
    assert set(c1.addrs("eth0")) >= {"10.77.0.2/24", "fd77::2/64"}
    routes = json.loads(c1.run(["ip", "-j", "route"]).stdout)
    assert {"dst": "default", "gateway": "10.77.0.1", "dev": "eth0", "protocol": "static", "metric": 100,
            "flags": []} in routes
    r6 = c1.run(["ip", "-6", "route", "show", "default"]).stdout
    assert "default via fd77::1 dev eth0 proto static metric 100" in r6
    assert h.sysctl("net/ipv4/ip_forward") == "1"
    assert h.sysctl("net/ipv6/conf/all/forwarding") == "1"
    assert h.sysctl(f"net/ipv6/conf/{br}/accept_dad") == "0"
    assert h.sysctl(f"net/ipv6/conf/{br}/accept_ra") == "0"
    assert h.sysctl(f"net/ipv4/conf/{br}/route_localnet") == "1"
    assert c1.sysctl("net/ipv6/conf/eth0/autoconf") == "0"
    assert c1.sysctl("net/ipv6/conf/eth0/accept_dad") == "0"

    # traffic: container <-> container, and port forwards from the host netns
    assert ping(c2, "10.77.0.2") and ping(c2, "fd77::2")
    start_server(c1, 80)
    assert request(h, "127.0.0.1", 8080) == "hello 80"  # localhost DNAT (mark + route_localnet)
    assert request(h, "10.77.0.1", 8080) == "hello 80"
    assert request(h, "fd77::1", 8080) == "hello 80"
    assert request(h, "fd77::1", 8443) == "hello 80"  # host_ip v6
    assert request(c2, "10.77.0.1", 8080) == "hello 80"  # from another container on the network
    assert request(c1, "10.77.0.1", 8080) == "hello 80"  # hairpin: the container to itself
    assert "8080" in firewall_dump(world)

    world.teardown(c1, o1)
    assert "8080" not in firewall_dump(world)  # per-container rules always go
    assert br in h.link_names()  # the bridge stays while c2 uses it
    assert ping(c2, "10.77.0.1")
    world.teardown(c2, o2)
    # Again: nothing left to remove, and (as netavark) exit 1 naming the vanished interface.
    again = world.netavark("teardown", c2, o2, check=False)
    assert again.returncode == 1 and "eth0" in json.loads(again.stdout)["error"]
    assert h.link_names() == {"lo"}
    assert c1.link_names() == {"lo"} and c2.link_names() == {"lo"}
    dump = firewall_dump(world)
    assert "10.77.0.0" not in dump and "fd77::" not in dump


def test_udp_range_and_host_ip(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1 = world.host, netns_factory()
    net = dual(unique("bt"))
    o = options("svc", [(net, {"interface_name": "eth0", "static_ips": ["10.77.0.2", "fd77::2"]})],
                [port(9100, 8100, rng=3), port(5353, 53, protocol="udp"), port(7000, 7000, "tcp,udp", host_ip="10.77.0.1")])
    world.setup(c1, o)
    start_server(c1, 8100, count=3)
    start_server(c1, 53, proto="udp", reply="dns")
    start_server(c1, 7000, reply="t")
    start_server(c1, 7000, proto="udp", reply="u")
    assert [request(h, "10.77.0.1", p) for p in (9100, 9101, 9102)] == ["hello 8100", "hello 8101", "hello 8102"]
    assert request(h, "127.0.0.1", 9102) == "hello 8102"
    assert request(h, "10.77.0.1", 5353, "udp") == "dns 53"
    assert request(h, "fd77::1", 5353, "udp") == "dns 53"
    assert request(h, "10.77.0.1", 7000) == "t 7000"
    assert request(h, "10.77.0.1", 7000, "udp") == "u 7000"
    assert request(h, "127.0.0.1", 7000).startswith("FAILED")  # host_ip limits the forward
    world.teardown(c1, o)
    assert h.link_names() == {"lo"}


def test_isolation_blocks_other_networks(world: World, netns_factory: Callable[[], Netns]) -> None:
    c1, c2, c3 = netns_factory(), netns_factory(), netns_factory()
    n1 = network(unique("n"), unique("bt"), [("10.61.0.0/24", "10.61.0.1")], options={"isolate": "strict"})
    n2 = network(unique("n"), unique("bt"), [("10.62.0.0/24", "10.62.0.1")], options={"isolate": "true"})
    n3 = network(unique("n"), unique("bt"), [("10.63.0.0/24", "10.63.0.1")],
                 options={"isolate": "false"})  # explicit: nftables' default is 2.x's strict
    o1 = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.61.0.2"]})])
    o2 = options("b", [(n2, {"interface_name": "eth0", "static_ips": ["10.62.0.2"]})])
    o3 = options("c", [(n3, {"interface_name": "eth0", "static_ips": ["10.63.0.2"]})])
    for c, o in ((c1, o1), (c2, o2), (c3, o3)):
        world.setup(c, o)
    assert ping(c1, "10.61.0.1")  # own gateway still fine
    assert not ping(c1, "10.62.0.2")
    assert not ping(c2, "10.61.0.2")
    assert not ping(c3, "10.61.0.2")  # strict: not even from networks that don't isolate
    assert ping(c3, "10.62.0.2")  # true: blocks only other isolating networks (Podman docs)
    for c, o in ((c1, o1), (c2, o2), (c3, o3)):
        world.teardown(c, o)
    assert world.host.link_names() == {"lo"}


def test_without_isolation_networks_route(world: World, netns_factory: Callable[[], Netns]) -> None:
    c1, c2 = netns_factory(), netns_factory()
    # explicit: without the option, nftables isolates as 2.x (test_firewall_isolation_default)
    n1 = network(unique("n"), unique("bt"), [("10.64.0.0/24", "10.64.0.1")],
                 options={"isolate": "false"})
    n2 = network(unique("n"), unique("bt"), [("10.65.0.0/24", "10.65.0.1")],
                 options={"isolate": "false"})
    o1 = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.64.0.2"]})])
    o2 = options("b", [(n2, {"interface_name": "eth0", "static_ips": ["10.65.0.2"]})])
    world.setup(c1, o1)
    world.setup(c2, o2)
    assert ping(c1, "10.65.0.2")
    world.teardown(c1, o1)
    world.teardown(c2, o2)


def test_masquerade_to_outside(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1, out = world.host, netns_factory(), netns_factory()
    up, down = unique("vo"), unique("vo")
    h.run(["ip", "link", "add", up, "type", "veth", "peer", "name", down, "netns", str(out.pid)])
    h.run(["ip", "addr", "add", "10.250.0.1/24", "dev", up])
    h.run(["ip", "link", "set", up, "up"])
    out.run(["ip", "addr", "add", "10.250.0.2/24", "dev", down])
    out.run(["ip", "link", "set", down, "up"])
    net = network(unique("n"), unique("bt"), [("10.66.0.0/24", "10.66.0.1")])
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.66.0.2"]})])
    world.setup(c1, o)
    peer_server = r"""
import socket
s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1); s.bind(("10.250.0.2", 9000)); s.listen(1)
print("ready", flush=True)
c, a = s.accept(); c.sendall(a[0].encode()); c.close()
"""
    proc = out.popen([str(VENV_BIN / "python"), "-c", peer_server], stdout=subprocess.PIPE)  # noqa: S603
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"
    # The outside has no route to 10.66.0.0/24: only masquerade lets the reply come back.
    assert request(c1, "10.250.0.2", 9000) == "10.250.0.1"
    world.teardown(c1, o)


def test_internal_network(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1 = world.host, netns_factory()
    br = unique("bt")
    net = network(unique("n"), br, [("10.67.0.0/24", "10.67.0.1")], internal=True)
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.67.0.2"]})], [port(8080, 80)])
    world.setup(c1, o)
    assert c1.run(["ip", "route", "show", "default"]).stdout.strip() == ""
    assert h.sysctl(f"net/ipv4/conf/{br}/forwarding") == "0"
    assert "10.67.0.0" not in firewall_dump(world)
    assert ping(c1, "10.67.0.1")
    world.teardown(c1, o)
    assert h.link_names() == {"lo"}


def test_firewall_reload_after_flush(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1 = world.host, netns_factory()
    net = network(unique("n"), unique("bt"), [("10.68.0.0/24", "10.68.0.1")])
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.68.0.2"]})], [port(8080, 80)])
    world.setup(c1, o)
    start_server(c1, 80)
    assert request(h, "10.68.0.1", 8080) == "hello 80"
    if world.firewall == "nftables":
        h.run(["nft", "flush", "ruleset"])
    else:
        h.run(["iptables", "-t", "nat", "-F"])
        h.run(["iptables", "-F"])
    assert request(h, "10.68.0.1", 8080).startswith("FAILED")
    world.netavark("firewall-reload", None, None)
    assert request(h, "10.68.0.1", 8080) == "hello 80"
    world.teardown(c1, o)


def test_rollback_undoes_first_network(world: World, netns_factory: Callable[[], Netns]) -> None:
    """The second network fails mid-apply (a route whose gateway is unreachable)."""
    h, c1 = world.host, netns_factory()
    b1, b2 = unique("bt"), unique("bt")
    n1 = network(unique("n"), b1, [("10.69.0.0/24", "10.69.0.1")])
    n2 = network(unique("n"), b2, [("10.70.0.0/24", "10.70.0.1")],
                 routes=[{"destination": "10.99.0.0/16", "gateway": "10.200.0.1"}])
    o = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.69.0.2"]}),
                      (n2, {"interface_name": "eth1", "static_ips": ["10.70.0.2"]})], [port(8080, 80)])
    res = world.netavark("setup", c1, o, check=False)
    assert res.returncode == 1
    err = json.loads(res.stdout)["error"]
    assert err.startswith(f"network {n2['name']}: add route 10.99.0.0/16 via 10.200.0.1")
    assert "Netlink error" in err
    assert h.link_names() == {"lo"} and c1.link_names() == {"lo"}
    assert "10.69.0.0" not in firewall_dump(world)


def test_taken_interface_name_changes_nothing(world: World, netns_factory: Callable[[], Netns]) -> None:
    h, c1 = world.host, netns_factory()
    c1.run(["ip", "link", "add", "eth1", "type", "bridge"])
    n1 = network(unique("n"), unique("bt"), [("10.71.0.0/24", "10.71.0.1")])
    n2 = network(unique("n"), unique("bt"), [("10.72.0.0/24", "10.72.0.1")])
    o = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.71.0.2"]}),
                      (n2, {"interface_name": "eth1", "static_ips": ["10.72.0.2"]})])
    res = world.netavark("setup", c1, o, check=False)
    assert res.returncode == 1
    assert "create veth pair: interface eth1 already exists on container namespace" in json.loads(res.stdout)["error"]
    assert h.link_names() == {"lo"} and c1.link_names() == {"lo", "eth1"}


def test_bad_input_is_rejected_before_any_change(host_ns: Netns, ctr_ns: Netns, tmp_path: Path) -> None:
    w = World(host_ns, tmp_path, "nftables")
    net = network(unique("n"), unique("bt"), [("10.73.0.0/24", "10.73.0.1")])
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.74.0.2"]})])
    res = w.netavark("setup", ctr_ns, o, check=False)
    assert (res.returncode, json.loads(res.stdout)) == (1, {"error": f"network {net['name']}: static ip 10.74.0.2 is not in subnet 10.73.0.0/24"})
    res = w.netavark("setup", ctr_ns, None, check=False)
    assert res.returncode == 1 and "JSON Decoding error" in json.loads(res.stdout)["error"]
    assert host_ns.link_names() == {"lo"} and ctr_ns.link_names() == {"lo"}
    assert "netavark" not in host_ns.run(["nft", "list", "ruleset"]).stdout


def test_teardown_when_netns_is_gone(host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path) -> None:
    w = World(host_ns, tmp_path, "nftables")
    c1 = netns_factory()
    net = network(unique("n"), unique("bt"), [("10.75.0.0/24", "10.75.0.1")])
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.75.0.2"]})], [port(8080, 80)])
    w.setup(c1, o)
    c1.close()  # the container died: its veth went with its netns
    assert wait_for(lambda: host_ns.link_names() == {"lo", net["network_interface"]})
    res = w.netavark("teardown", None, o, argv_extra=[], check=False, netns_path="/proc/999999999/ns/net")
    assert res.returncode == 0, res.stdout
    assert host_ns.link_names() == {"lo"}
    assert "8080" not in host_ns.run(["nft", "list", "ruleset"]).stdout


def test_macvlan_on_a_veth_parent(host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path) -> None:
    """The kernel has no dummy links, so the parent is a veth whose peer is an "outside" netns."""
    w = World(host_ns, tmp_path, "nftables")
    c1, out = netns_factory(), netns_factory()
    parent = unique("mp")
    host_ns.run(["ip", "link", "add", parent, "type", "veth", "peer", "name", "lan0", "netns", str(out.pid)])
    host_ns.run(["ip", "link", "set", parent, "up"])
    out.run(["ip", "addr", "add", "10.76.0.1/24", "dev", "lan0"])
    out.run(["ip", "link", "set", "lan0", "up"])
    net = network(unique("n"), parent, [("10.76.0.0/24", "10.76.0.1")], driver="macvlan",
                  options={"mode": "bridge", "mtu": "1400"})
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.76.0.5"], "static_mac": "92:d0:c6:0a:29:55"})])
    status = w.setup(c1, o)
    assert status[net["name"]]["interfaces"]["eth0"]["mac_address"] == "92:d0:c6:0a:29:55"
    link = next(link for link in c1.links() if link["ifname"] == "eth0")
    assert link["linkinfo"]["info_kind"] == "macvlan" and link["mtu"] == 1400
    assert ping(c1, "10.76.0.1")
    w.teardown(c1, o)
    assert c1.link_names() == {"lo"}


@pytest.mark.parametrize("dns_server", ["burrow-dns", "aardvark-dns"])
def test_dns_glue(dns_server: str, host_ns: Netns, netns_factory: Callable[[], Netns], tmp_path: Path) -> None:
    """The engine writes Aardvark config, starts the server (burrow-dns: by forking), reloads it."""
    binary = str(VENV_BIN / "burrow-dns") if dns_server == "burrow-dns" else AARDVARK
    if not Path(binary).exists():
        pytest.skip(f"environment: {binary} is not installed")
    w = World(host_ns, tmp_path / "cfg", "nftables", aardvark=binary)
    c1, c2 = netns_factory(), netns_factory()
    net = network(unique("n"), unique("bt"), [("10.78.0.0/24", "10.78.0.1"), ("fd78::/64", "fd78::1")],
                  dns_enabled=True, network_dns_servers=["10.78.0.250"])
    o1 = options("web1", [(net, {"interface_name": "eth0", "static_ips": ["10.78.0.2", "fd78::2"], "aliases": ["web"]})])
    o2 = options("cli", [(net, {"interface_name": "eth0", "static_ips": ["10.78.0.3", "fd78::3"]})])
    s1 = w.setup(c1, o1)
    assert s1[net["name"]]["dns_search_domains"] == ["dns.podman"]
    assert s1[net["name"]]["dns_server_ips"] == ["10.78.0.1", "fd78::1"]
    w.setup(c2, o2)
    conf = (w.config / "aardvark-dns" / net["name"]).read_text().splitlines()
    assert conf == ["10.78.0.1,fd78::1 10.78.0.250",
                    f"{o1['container_id']} 10.78.0.2 fd78::2 web1,web",
                    f"{o2['container_id']} 10.78.0.3 fd78::3 cli"]
    pid = int((w.config / "aardvark-dns" / "aardvark.pid").read_text())

    def dig(name: str, qtype: str = "A") -> str:
        return c2.run(["dig", "+short", "+time=2", "+tries=2", "@10.78.0.1", name, qtype], check=False).stdout.strip()

    assert wait_for(lambda: dig("web") == "10.78.0.2")
    assert dig("web1", "AAAA") == "fd78::2"
    w.netavark("update", None, None, command_args=[net["name"], "--network-dns-servers", "10.78.0.251"])
    assert (w.config / "aardvark-dns" / net["name"]).read_text().splitlines()[0] == "10.78.0.1,fd78::1 10.78.0.251"
    assert wait_for(lambda: dig("web") == "10.78.0.2")  # still serving after the reload
    w.teardown(c1, o1)
    # (the search domain: never forwarded, so a removed name is an immediate NXDOMAIN)
    assert wait_for(lambda: dig("web1.dns.podman") == "")
    w.teardown(c2, o2)
    assert not (w.config / "aardvark-dns" / net["name"]).exists()
    # With no network left, the DNS server exits by itself on the reload signal.
    assert wait_for(lambda: "Z" in _state(pid) or _state(pid) == "")


def _state(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return ""


def test_two_state_dirs_in_one_netns_keep_their_own_tables(host_ns: Netns, netns_factory: Callable[[], Netns],
                                                          tmp_path: Path) -> None:
    """Rootful Podman and the rootful burrow CLI may share a netns: neither touches the other's rules."""
    a = World(host_ns, tmp_path / "a", "nftables")
    b = World(host_ns, tmp_path / "b", "nftables", env={"BURROW_NFT_TABLE": "burrow"})
    c1, c2 = netns_factory(), netns_factory()
    n1 = network(unique("n"), unique("bt"), [("10.80.0.0/24", "10.80.0.1")])
    n2 = network(unique("n"), unique("bt"), [("10.81.0.0/24", "10.81.0.1")])
    o1 = options("a", [(n1, {"interface_name": "eth0", "static_ips": ["10.80.0.2"]})], [port(8080, 80)])
    o2 = options("b", [(n2, {"interface_name": "eth0", "static_ips": ["10.81.0.2"]})], [port(8081, 80)])
    a.setup(c1, o1)
    b.setup(c2, o2)
    b.netavark("firewall-reload", None, None)  # a rebuild of b's table ...
    b.teardown(c2, o2)
    dump = firewall_dump(a)
    assert "10.80.0.0/24" in dump and "8080" in dump  # ... never touched a's rules
    assert "table inet burrow" in dump and "10.81.0.0" not in dump
    a.teardown(c1, o1)


def test_dns_server_failure_rolls_everything_back(host_ns: Netns, ctr_ns: Netns, tmp_path: Path) -> None:
    broken = tmp_path / "broken-dns"
    broken.write_text("#!/bin/sh\necho 'failed to bind udp listener on 10.82.0.1:53: Address in use' >&2\nexit 1\n")
    broken.chmod(0o755)
    w = World(host_ns, tmp_path / "cfg", "nftables", aardvark=str(broken))
    net = network(unique("n"), unique("bt"), [("10.82.0.0/24", "10.82.0.1")], dns_enabled=True)
    o = options("a", [(net, {"interface_name": "eth0", "static_ips": ["10.82.0.2"]})], [port(8080, 80)])
    res = w.netavark("setup", ctr_ns, o, check=False)
    assert res.returncode == 1
    assert json.loads(res.stdout)["error"] == (
        "aardvark-dns failed to start: failed to bind udp listener on 10.82.0.1:53: Address in use")
    assert host_ns.link_names() == {"lo"} and ctr_ns.link_names() == {"lo"}
    assert "10.82.0.0" not in firewall_dump(w) and "8080" not in firewall_dump(w)
    assert not (w.config / "aardvark-dns" / net["name"]).exists()

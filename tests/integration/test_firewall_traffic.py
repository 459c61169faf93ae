"""Real traffic through real nft/iptables rules, every backend, inside throwaway namespaces.

Topology (all made here, nothing on the machine's own netns):

    out ns  eth0 172.31.0.2/24 fd31::2/64 ── fwoXXXX 172.31.0.1/24 fd31::1/64   host ns
                                                 bridge fwbXXXX 10.89.0.1/24 fd89::1/64
    ctr ns  eth0 10.89.0.2/24 fd89::2/64 ─────── veth (master bridge)

"out" has no route to the container subnet, so replies only work through masquerade / DNAT.
"""

from __future__ import annotations

import dataclasses
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path
from typing import Any

import pytest

from netns.firewall import select
from netns.firewall.types import Firewall, Isolate, NetworkFw, PortFw
from netns.schema import PortMapping
from tests.nsutil import Netns, unique

PY = sys.executable
DRIVERS = ["nftables", "iptables"]

SERVER = r"""
import selectors, socket, sys
sel = selectors.DefaultSelector()
for port in map(int, sys.argv[1].split(",")):
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", port))
        if kind == socket.SOCK_STREAM:
            s.listen(16)
        sel.register(s, selectors.EVENT_READ, port)
print("ready", flush=True)
def peer(a):
    return a[0][7:] if a[0].startswith("::ffff:") else a[0]
while True:
    for key, _ in sel.select():
        s, port = key.fileobj, key.data
        if s.type == socket.SOCK_STREAM:
            c, a = s.accept()
            c.sendall(f"{port} {peer(a)}".encode())
            c.close()
        else:
            data, a = s.recvfrom(100)
            s.sendto(f"{port} {peer(a)}".encode(), a)
"""

CLIENT = r"""
import socket, sys
proto, host, port, timeout = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fam = socket.AF_INET6 if ":" in host else socket.AF_INET
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=timeout)
        print(s.recv(100).decode())
    else:
        s = socket.socket(fam, socket.SOCK_DGRAM)
        s.settimeout(timeout)
        s.sendto(b"x", (host, port))
        print(s.recv(100).decode())
except OSError as e:
    print("ERR", type(e).__name__)
"""


def ask(ns: Netns, proto: str, host: str, port: int, timeout: float = 2.0) -> str:
    """`<server port> <peer address seen by the server>`, or `ERR <exception>`."""
    return ns.run([PY, "-c", CLIENT, proto, host, str(port), str(timeout)]).stdout.strip()


def serve(ns: Netns, ports: list[int]) -> None:
    proc = ns.popen([PY, "-c", SERVER, ",".join(map(str, ports))], stdout=-1)
    assert proc.stdout is not None and proc.stdout.readline().strip() == "ready"


def sh(ns: Netns, *cmds: str) -> None:
    ns.run(["sh", "-ec", "; ".join(cmds)])


def quiet_v6(ns: Netns) -> None:
    # No DAD, as Netavark configures its links: tentative link-local addresses would delay
    # neighbour discovery by seconds and make v6 checks flaky.
    sh(ns, "echo 0 > /proc/sys/net/ipv6/conf/default/accept_dad",
       "echo 0 > /proc/sys/net/ipv6/conf/all/accept_dad")


@dataclass
class World:
    """A host netns with an outside link, and bridge networks with containers in it."""

    factory: Callable[[], Netns]
    config: Path
    driver: str
    host: Netns = field(init=False)
    out: Netns = field(init=False)
    fw: Firewall = field(init=False)
    nets: dict[str, NetworkFw] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.host, self.out = self.factory(), self.factory()
        quiet_v6(self.host)
        quiet_v6(self.out)
        self.fw = select(self.driver, self.config, {}, argv_prefix=self.host.argv([]))
        link = unique("fwo")
        sh(self.host,
           f"ip link add {link} type veth peer name eth0 netns {self.out.pid}",
           f"ip addr add 172.31.0.1/24 dev {link}",
           f"ip addr add 172.31.0.3/24 dev {link}",
           f"ip addr add fd31::1/64 dev {link} nodad",
           f"ip link set {link} up",
           "echo 1 > /proc/sys/net/ipv4/ip_forward",
           "echo 1 > /proc/sys/net/ipv6/conf/all/forwarding")
        sh(self.out, "ip addr add 172.31.0.2/24 dev eth0",
           "ip addr add fd31::2/64 dev eth0 nodad", "ip link set eth0 up")

    def network(self, idx: int, isolate: Isolate = "false", dns_port: int | None = None) -> (
        NetworkFw
    ):
        bridge = unique("fwb")
        v4, v6 = ip_network(f"10.89.{idx}.0/24"), ip_network(f"fd89:{idx}::/64")
        sh(self.host, f"ip link add {bridge} type bridge",
           f"ip addr add 10.89.{idx}.1/24 dev {bridge}",
           f"ip addr add fd89:{idx}::1/64 dev {bridge} nodad",
           f"ip link set {bridge} up",
           # Netavark sets this when a network has port mappings: 127.0.0.1 DNAT needs it.
           f"echo 1 > /proc/sys/net/ipv4/conf/{bridge}/route_localnet")
        net = NetworkFw(name=f"fwnet{idx}", id=f"{idx:08x}" * 8, bridge=bridge,
                        subnets=(v4, v6),
                        gateways=(ip_address(f"10.89.{idx}.1"), ip_address(f"fd89:{idx}::1")),
                        isolate=isolate, dns_port=dns_port)
        self.nets[bridge] = net
        return net

    def container(self, net: NetworkFw, host_num: int) -> tuple[Netns, IPv4Address, IPv6Address]:
        ctr = self.factory()
        quiet_v6(ctr)
        idx = int(str(net.subnets[0]).split(".")[2])
        veth = unique("fwv")
        v4, v6 = IPv4Address(f"10.89.{idx}.{host_num}"), IPv6Address(f"fd89:{idx}::{host_num}")
        sh(self.host, f"ip link add {veth} type veth peer name eth0 netns {ctr.pid}",
           f"ip link set {veth} master {net.bridge}", f"ip link set {veth} up",
           # br_netfilter is built into this kernel (bridge-nf-call-iptables=1), so a hairpin
           # DNAT is bridged back out of the port it came in on: only hairpin mode allows that.
           f"bridge link set dev {veth} hairpin on")
        sh(ctr, f"ip addr add {v4}/24 dev eth0", f"ip addr add {v6}/64 dev eth0 nodad",
           "ip link set eth0 up", f"ip route add default via 10.89.{idx}.1",
           f"ip -6 route add default via fd89:{idx}::1")
        return ctr, v4, v6


@pytest.fixture(params=DRIVERS)
def world(request: Any, netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[World]:
    yield World(netns_factory, tmp_path / "cfg", request.param)


def ports(net: NetworkFw, v4: IPv4Address | None, v6: IPv6Address | None, *maps: PortMapping,
          cid: str = "c" * 64) -> PortFw:
    return PortFw(cid, net, v4, v6, tuple(maps))


def pm(host: int, ctr: int, proto: str = "tcp", host_ip: str = "", rng: int = 1) -> PortMapping:
    return PortMapping(host_ip=host_ip, container_port=ctr, host_port=host, range=rng,
                       protocol=proto)


def test_port_forward_v4_v6_tcp_udp(world: World) -> None:
    net = world.network(1)
    ctr, v4, v6 = world.container(net, 2)
    serve(ctr, [80])
    world.fw.setup([net], [ports(net, v4, v6, pm(8080, 80, "tcp,udp"))])
    # The container sees the real client address: DNAT without masquerade.
    assert ask(world.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(world.out, "udp", "172.31.0.1", 8080) == "80 172.31.0.2"
    assert ask(world.out, "tcp", "fd31::1", 8080) == "80 fd31::2"
    assert ask(world.out, "udp", "fd31::1", 8080) == "80 fd31::2"


def test_port_range_maps_one_to_one(world: World) -> None:
    net = world.network(1)
    ctr, v4, v6 = world.container(net, 2)
    serve(ctr, [9100, 9101, 9102])
    world.fw.setup([net], [ports(net, v4, v6, pm(9000, 9100, "tcp,udp", rng=3))])
    for i in range(3):
        assert ask(world.out, "tcp", "172.31.0.1", 9000 + i) == f"{9100 + i} 172.31.0.2"
    assert ask(world.out, "udp", "172.31.0.1", 9002) == "9102 172.31.0.2"
    assert ask(world.out, "tcp", "fd31::1", 9001) == "9101 fd31::2"


def test_host_ip_limits_the_forward(world: World) -> None:
    net = world.network(1)
    ctr, v4, v6 = world.container(net, 2)
    serve(ctr, [80])
    world.fw.setup([net], [ports(net, v4, v6, pm(8080, 80, host_ip="172.31.0.1"))])
    assert ask(world.out, "tcp", "172.31.0.1", 8080) == "80 172.31.0.2"
    # Another address of the same host, and the v6 family, are not forwarded (RST: refused).
    assert ask(world.out, "tcp", "172.31.0.3", 8080) == "ERR ConnectionRefusedError"
    assert ask(world.out, "tcp", "fd31::1", 8080) == "ERR ConnectionRefusedError"


def test_hairpin_and_localhost_are_masqueraded(world: World) -> None:
    net = world.network(1)
    ctr, v4, v6 = world.container(net, 2)
    serve(ctr, [80])
    world.fw.setup([net], [ports(net, v4, v6, pm(8080, 80))])
    # Container → its own published port: the reply must come back through the host.
    assert ask(ctr, "tcp", "172.31.0.1", 8080) == "80 10.89.1.1"
    # Host → 127.0.0.1:port (needs route_localnet and the SETMARK masquerade).
    assert ask(world.host, "tcp", "127.0.0.1", 8080) == "80 10.89.1.1"


def test_masquerade_to_the_outside(world: World) -> None:
    net = world.network(1)
    ctr, _, _ = world.container(net, 2)
    serve(world.out, [7000])
    assert ask(ctr, "tcp", "172.31.0.2", 7000, timeout=0.5).startswith("ERR")
    world.fw.setup([net], [])
    assert ask(ctr, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.1"
    assert ask(ctr, "udp", "fd31::2", 7000) == "7000 fd31::1"
    world.fw.teardown([net], [])
    assert ask(ctr, "tcp", "172.31.0.2", 7000, timeout=0.5).startswith("ERR")


@pytest.mark.parametrize(("iso_a", "iso_b", "a_to_b", "b_to_a"), [
    ("false", "false", True, True),
    ("true", "true", False, False),
    ("true", "false", True, True),  # isolate=true only blocks between isolated networks
    # strict drops everything from A into any other network, replies to B included.
    ("strict", "false", False, False),
])
def test_isolation(world: World, iso_a: Isolate, iso_b: Isolate, a_to_b: bool,
                   b_to_a: bool) -> None:
    net_a, net_b = world.network(1, iso_a), world.network(2, iso_b)
    ca, _, _ = world.container(net_a, 2)
    cb, _, _ = world.container(net_b, 2)
    serve(ca, [5000])
    serve(cb, [5000])
    world.fw.setup([net_a, net_b], [])
    got_ab = ask(ca, "tcp", "10.89.2.2", 5000, timeout=0.5)
    got_ba = ask(cb, "tcp", "10.89.1.2", 5000, timeout=0.5)
    # Inter-network traffic is masqueraded (Netavark does so too): the peer is the gateway.
    assert (got_ab == "5000 10.89.2.1") is a_to_b, got_ab
    assert (got_ba == "5000 10.89.1.1") is b_to_a, got_ba
    # Still reaching the outside world, whatever the isolation.
    serve(world.out, [7000])
    assert ask(ca, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.1"


def test_dns_dnat_to_the_real_port(world: World) -> None:
    net = world.network(1, dns_port=10053)
    ctr, v4, v6 = world.container(net, 2)
    serve(world.host, [10053])
    world.fw.setup([net], [ports(net, v4, v6)])
    assert ask(ctr, "udp", "10.89.1.1", 53) == "10053 10.89.1.2"
    assert ask(ctr, "udp", "fd89:1::1", 53) == "10053 fd89:1::2"
    # Netavark 1.4's iptables layout redirects udp only; its nftables layout udp and tcp.
    tcp = "10053 10.89.1.2" if world.driver == "nftables" else "ERR ConnectionRefusedError"
    assert ask(ctr, "tcp", "10.89.1.1", 53) == tcp


def test_teardown_ports_removes_only_that_container(world: World) -> None:
    net = world.network(1)
    c1, a1, b1 = world.container(net, 2)
    c2, a2, b2 = world.container(net, 3)
    serve(c1, [80])
    serve(c2, [80])
    p1 = ports(net, a1, b1, pm(8081, 80), cid="1" * 64)
    p2 = ports(net, a2, b2, pm(8082, 80), cid="2" * 64)
    world.fw.setup([net], [p1])
    world.fw.setup([net], [p2])
    assert ask(world.out, "tcp", "172.31.0.1", 8081) == "80 172.31.0.2"
    world.fw.teardown([], [p1])
    assert ask(world.out, "tcp", "172.31.0.1", 8081) == "ERR ConnectionRefusedError"
    assert ask(world.out, "tcp", "172.31.0.1", 8082) == "80 172.31.0.2"


def test_sctp_traffic() -> None:
    pytest.skip("environment: kernel has no sctp")


def test_outbound_addr_snats_to_that_host_address(world: World) -> None:
    """Netavark 2.0's outbound_addr4/6: the subnet's traffic leaves with that source address
    (172.31.0.3 / fd31::3, not the masquerade's 172.31.0.1 / fd31::1), also after a flush and
    `firewall-reload` (the state file carries it)."""
    sh(world.host, "ip addr add fd31::3/64 dev $(ip -o addr show to 172.31.0.1 | cut -d' ' -f2)"
                   " nodad")
    net = dataclasses.replace(world.network(1), outbound4=IPv4Address("172.31.0.3"),
                              outbound6=IPv6Address("fd31::3"))
    ctr, _, _ = world.container(net, 2)
    serve(world.out, [7000])
    world.fw.setup([net], [])
    assert ask(ctr, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.3"
    assert ask(ctr, "udp", "fd31::2", 7000) == "7000 fd31::3"
    flush = "nft flush ruleset" if world.driver == "nftables" else \
        "iptables -t nat -F; iptables -t nat -X; ip6tables -t nat -F; ip6tables -t nat -X"
    sh(world.host, flush)
    assert ask(ctr, "tcp", "172.31.0.2", 7000, timeout=0.5).startswith("ERR")
    world.fw.reload()
    assert ask(ctr, "tcp", "172.31.0.2", 7000) == "7000 172.31.0.3"
    world.fw.teardown([net], [])
    assert ask(ctr, "tcp", "172.31.0.2", 7000, timeout=0.5).startswith("ERR")


def test_outbound_addr_not_on_the_host_is_used_all_the_same(world: World) -> None:
    """Netavark does not check that the host has the address: the rule goes in, and the
    peer sees that source (its replies then go nowhere: nobody answers ARP for it)."""
    net = dataclasses.replace(world.network(1), outbound4=IPv4Address("172.31.0.77"))
    ctr, _, _ = world.container(net, 2)
    world.fw.setup([net], [])
    listing = (world.host.run(["nft", "list", "ruleset"]).stdout if world.driver == "nftables"
               else world.host.run(["iptables-save", "-t", "nat"]).stdout)
    assert ("snat ip to 172.31.0.77" in listing if world.driver == "nftables"
            else "-j SNAT --to-source 172.31.0.77" in listing)
    listener = subprocess.Popen(world.out.argv([PY, "-c", RECV_ONE, "7001"]),
                                stdout=subprocess.PIPE, text=True)
    try:
        assert listener.stdout is not None and listener.stdout.readline().strip() == "ready"
        ask(ctr, "udp", "172.31.0.2", 7001, timeout=0.3)  # no answer can come back
        assert listener.communicate(timeout=5)[0].strip() == "172.31.0.77"
    finally:
        listener.kill()
        listener.wait()


# Prints the source address of the first UDP datagram to a port (it can't answer a source
# that is not on the sender's host).
RECV_ONE = """
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); s.bind(("0.0.0.0", int(sys.argv[1])))
print("ready", flush=True)
print(s.recvfrom(100)[1][0], flush=True)
"""

"""burrow-dns against what aardvark-dns users hit, over real sockets in a throwaway namespace:
names with dots (Podman container names and network aliases may hold them), answers too
large for one TCP message, failing and slow upstreams, reloads with queries in flight.

As tests/integration/test_dns_server.py: every address sits on `lo` of one namespace, and
queries leave from the container addresses, so the server sees what it would from a container.
"""

from __future__ import annotations

import socket
import struct
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import pytest

from tests.integration.test_dns_support import (
    FakeUpstream,
    addrs,
    alive,
    ns_socket,
    pid_of,
    query,
    start_dns,
)
from tests.nsutil import Netns, is_root

pytestmark = pytest.mark.root

LA, LB = "10.89.31.1", "10.89.32.1"
C1, C2, C3 = "10.89.31.2", "10.89.31.3", "10.89.32.2"  # c3 is on network dqb only
UP = "10.89.39.1"
ID = "{:064x}".format
HUGE = 4200  # containers sharing one alias: 4,200 A records are 67 KB, past one TCP message

CONFIG = {
    "dqa": [f"{LA} {UP}",
            f"{ID(1)} {C1}  c1,api.example.test",
            f"{ID(2)} {C2}  web.v1,db.internal.corp"],
    "dqb": [f"{LB} {UP}", f"{ID(3)} {C3}  c3,secret.only.b"],
    "dqh": ["10.89.33.1"] + [f"{ID(100 + i)} 10.89.{34 + i // 250}.{2 + i % 250}  h{i},huge"
                             for i in range(HUGE)],
}


class World:
    def __init__(self, root: Path) -> None:
        self.ns = Netns()
        for ip in (LA, LB, C1, C2, C3, UP, "10.89.33.1"):
            self.ns.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"])
        self.cfg = root / "cfg"
        self.cfg.mkdir()
        for name, lines in CONFIG.items():
            (self.cfg / name).write_text("\n".join(lines) + "\n")
        self.up = FakeUpstream(self.ns, UP, "192.0.2.7")
        res = start_dns(self.ns, self.cfg, {"BURROW_DNS_UPSTREAM_TIMEOUT": "1.0"})
        assert res.returncode == 0, res.stderr
        self.pid = pid_of(self.cfg)

    def close(self) -> None:
        self.up.close()
        self.ns.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    if not is_root():
        pytest.skip("environment: creating test namespaces needs root (run the suite as root)")
    w = World(tmp_path_factory.mktemp("dq"))
    yield w
    w.close()


# -- names with dots ----------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["web.v1", "WEB.V1.", "web.v1.dns.podman", "Web.V1.DNS.Podman."])
def test_a_container_name_with_dots_resolves(world: World, name: str) -> None:
    """Podman container names may hold dots ([a-zA-Z0-9][a-zA-Z0-9_.-]*), and aardvark looks
    the whole name up (backend lookup: lower-cased, trailing dot and search domain off)."""
    r = query(world.ns, LA, name, source=C1)
    assert r.rcode() == dns.rcode.NOERROR and addrs(r) == [C2]


@pytest.mark.parametrize("name", ["api.example.test", "db.internal.corp"])
def test_a_network_alias_with_dots_is_answered_here_not_forwarded(world: World, name: str) -> None:
    """`--network-alias api.example.test` is how a test stack stands in for an outside host:
    the peer must get the container's address, and the upstream must never be asked."""
    before = len(world.up.seen)
    r = query(world.ns, LA, name, source=C2 if name.startswith("api") else C1)
    assert addrs(r) == [C1 if name.startswith("api") else C2]
    assert world.up.seen[before:] == []


def test_a_dotted_alias_of_a_network_not_shared_never_leaks(world: World) -> None:
    """c1 is not on dqb: its alias `secret.only.b` is no local name for c1, so the query goes
    where any outside name goes (the upstream, which says 192.0.2.7), never to c3's address."""
    r = query(world.ns, LA, "secret.only.b", source=C1)
    assert C3 not in addrs(r)
    r = query(world.ns, LA, "secret.only.b.dns.podman", source=C1)
    assert r.rcode() == dns.rcode.NXDOMAIN and not r.answer
    assert addrs(query(world.ns, LB, "secret.only.b", source=C3)) == [C3]


def test_ptr_of_a_dotted_name(world: World) -> None:
    r = query(world.ns, LA, "3.31.89.10.in-addr.arpa", "PTR", source=C1)
    assert sorted(rd.to_text() for rrset in r.answer for rd in rrset) == [
        "db.internal.corp.", "web.v1."]


def test_a_label_holding_a_dot_byte_is_not_a_dotted_name(world: World) -> None:
    """On the wire `web.v1` could also be one label holding a '.' byte: that is another name,
    and must not be answered as the container."""
    label = b"web.v1"
    wire = (struct.pack("!6H", 0x4242, 0x0100, 1, 0, 0, 0) + bytes([len(label)]) + label
            + b"\0" + struct.pack("!HH", 1, 1))
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_DGRAM, (C1, 0))
    with s:
        s.settimeout(3)
        s.sendto(wire, (LA, 53))
        reply = s.recv(4096)
    assert socket.inet_aton(C2) not in reply[len(wire):]


# -- answers too large for one TCP message -------------------------------------------------------
def test_an_answer_past_64k_over_tcp_is_truncated_not_a_dropped_connection(world: World) -> None:
    """4,200 containers with one alias: 67 KB of A records cannot go in one TCP message (the
    length prefix is 16 bits). The client must get a truncated answer (TC, as RFC 1035 asks),
    the connection must stay usable, and the server must not count it as a fault."""
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_STREAM, ("10.89.33.1", 0))
    with s:
        s.settimeout(5)
        s.connect(("10.89.33.1", 53))
        for name in ("huge", "h7"):
            q = dns.message.make_query(name, "A")
            r = dns.query.tcp(q, "10.89.33.1", timeout=5, sock=s)
            if name == "huge":
                assert r.flags & dns.flags.TC and r.rcode() == dns.rcode.NOERROR
            else:
                assert addrs(r) == ["10.89.34.9"]
    assert alive(world.pid)

"""burrow-dns over real sockets in a throwaway namespace: scoping, records, transports,
forwarding and its failures, internal networks.

One namespace holds every address on `lo` (listen IPs, "container" source IPs, fake upstreams);
queries are sent from the container IPs, so the server sees exactly the source it would see
from a container. Nothing leaves the namespace.
"""

from __future__ import annotations

import os
import socket
import time
from collections.abc import Iterator
from pathlib import Path

import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import pytest

from tests.integration.test_dns_support import (
    FakeUpstream,
    addrs,
    alive,
    ns_socket,
    pid_of,
    query,
    start_dns,
    tcp_frames,
)
from tests.nsutil import Netns, need_root

pytestmark = pytest.mark.root

C1, C1B, C1V6 = "10.89.1.2", "10.89.2.2", "fd89:1::2"  # c1: networks dna and dnb
C2 = "10.89.1.3"  # c2: dna only
C3 = "10.89.2.3"  # c3: dnb only, with its own DNS server
C4 = "10.89.3.2"  # c4: internal network dnint only
LA, LA6, LB, LINT, LC, LD, LE = (
    "10.89.1.1", "fd89:1::1", "10.89.2.1", "10.89.3.1", "10.89.4.1", "10.89.5.1", "10.89.6.1"
)
UP_NET, UP_CTR, UP_HOST, UP_SILENT = "10.89.9.1", "10.89.9.2", "10.89.9.3", "10.89.9.4"
ID = "{:064x}".format

CONFIG = {
    # network DNS server for dna; dnb has none, so its requesters use the host's resolv.conf
    "dna": [f"{LA},{LA6} {UP_NET}",
            f"{ID(1)} {C1} {C1V6} c1,web", f"{ID(2)} {C2}  c2,db"],
    "dnb": [LB, f"{ID(1)} {C1B}  c1,web2", f"{ID(3)} {C3}  c3 {UP_CTR}"],
    "dnint%int": [f"{LINT} {UP_NET}", f"{ID(4)} {C4}  c4"],
    # 50 containers sharing the alias "many": an answer too large for 512-byte UDP
    "dnc": [f"{LC} {UP_SILENT},{UP_NET}"]
    + [f"{ID(100 + i)} 10.89.4.{10 + i}  m{i},many" for i in range(50)],
    "dnd": [f"{LD} 127.0.0.9", f"{ID(200)} 10.89.5.2  d1"],  # nothing listens: refused
    "dne": [f"{LE} {UP_SILENT}", f"{ID(201)} 10.89.6.2  e1"],  # never answers: timeout
}
LO_ADDRS = [LA, LB, LINT, LC, LD, LE, C1, C1B, C2, C3, C4, UP_NET, UP_CTR, UP_HOST, UP_SILENT]


def write_config(cfg: Path, networks: dict[str, list[str]]) -> None:
    cfg.mkdir(parents=True, exist_ok=True)
    for name, lines in networks.items():
        (cfg / name).write_text("\n".join(lines) + "\n")


class World:
    def __init__(self, root: Path) -> None:
        self.ns = Netns()
        for ip in LO_ADDRS:
            self.ns.run(["ip", "addr", "add", f"{ip}/32", "dev", "lo"])
        for ip in (LA6, C1V6):
            self.ns.run(["ip", "addr", "add", f"{ip}/128", "dev", "lo", "nodad"])
        self.cfg = root / "cfg"
        write_config(self.cfg, CONFIG)
        self.resolv = root / "resolv.conf"
        self.resolv.write_text(f"# test\nnameserver {UP_HOST}\n")
        self.ups = {
            UP_NET: FakeUpstream(self.ns, UP_NET, "192.0.2.1"),
            UP_CTR: FakeUpstream(self.ns, UP_CTR, "192.0.2.2"),
            UP_HOST: FakeUpstream(self.ns, UP_HOST, "192.0.2.3"),
            UP_SILENT: FakeUpstream(self.ns, UP_SILENT, silent=True),
        }
        self.log = root / "dns.log"
        res = start_dns(self.ns, self.cfg, {
            "BURROW_DNS_RESOLV_CONF": str(self.resolv),
            "BURROW_DNS_UPSTREAM_TIMEOUT": "1.0",
        })
        assert res.returncode == 0, res.stderr
        self.pid = pid_of(self.cfg)

    def seen(self, name: str) -> list[tuple[str, str, str]]:
        return [(ip, t, n) for ip, up in self.ups.items() for t, n in up.seen if n == name]

    def close(self) -> None:
        for up in self.ups.values():
            up.close()
        self.ns.close()


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> Iterator[World]:
    need_root()
    w = World(tmp_path_factory.mktemp("dns"))
    yield w
    w.close()


def a(world: World, name: str, source: str | None, server: str = LA, rdtype: str = "A",
      **kw: object) -> dns.message.Message:
    return query(world.ns, server, name, rdtype, source=source, **kw)  # type: ignore[arg-type]


def nx(msg: dns.message.Message) -> bool:
    return msg.rcode() == dns.rcode.NXDOMAIN and not msg.answer


# -- scoping ----------------------------------------------------------------------------------
def test_container_sees_every_network_it_is_on(world: World) -> None:
    assert addrs(a(world, "c2", C1)) == [C2]
    assert addrs(a(world, "c3", C1)) == [C3]  # via dnb
    assert addrs(a(world, "c1", C1)) == sorted([C1, C1B])  # a name in two shared networks
    assert addrs(a(world, "web", C1)) == [C1]
    assert addrs(a(world, "web2.dns.podman", C1)) == [C1B]


def test_listen_address_does_not_matter_for_a_known_container(world: World) -> None:
    assert addrs(a(world, "c2", C1, server=LB)) == [C2]
    assert addrs(a(world, "c3", C1, server=LA)) == [C3]


def test_never_across_networks_not_shared(world: World) -> None:
    # c2 (dna) shares only dna with c1: it sees c1's dna address, not its dnb one
    assert addrs(a(world, "c1", C2)) == [C1]
    assert nx(a(world, "c3.dns.podman", C2))
    assert nx(a(world, "web2.dns.podman", C2))
    assert nx(a(world, "c2.dns.podman", C3))
    assert nx(a(world, "c4.dns.podman", C1))
    # a bare unknown name is forwarded, and the answer is the upstream's, never c4's address
    assert C4 not in addrs(a(world, "c4", C1))


def test_unknown_source_sees_only_the_network_of_the_listen_address(world: World) -> None:
    assert addrs(a(world, "c2", "127.0.0.1")) == [C2]
    assert nx(a(world, "c3.dns.podman", "127.0.0.1"))
    assert addrs(a(world, "c3", "127.0.0.1", server=LB)) == [C3]
    assert nx(a(world, "c2.dns.podman", "127.0.0.1", server=LB))
    assert addrs(a(world, "c1", LA)) == [C1]  # the host asking its own bridge address


def test_ipv6_listener_and_aaaa(world: World) -> None:
    assert addrs(a(world, "c1", C1V6, server=LA6, rdtype="AAAA")) == [C1V6]
    assert addrs(a(world, "web", C1, rdtype="AAAA")) == [C1V6]
    assert addrs(a(world, "c2", C1V6, server=LA6)) == [C2]


# -- names, records, case ---------------------------------------------------------------------
def test_ptr_v4_v6_with_aliases(world: World) -> None:
    r = a(world, dns.reversename.from_address(C2).to_text(), C1, rdtype="PTR")
    assert addrs(r) == ["c2.", "db."]
    assert r.answer[0].name == dns.reversename.from_address(C2)  # owner is the qname
    assert r.answer[0].ttl == 0
    assert addrs(a(world, dns.reversename.from_address(C1V6).to_text(), C1, rdtype="PTR")) == [
        "c1.", "web."]
    assert addrs(a(world, dns.reversename.from_address(C3).to_text(), C1, rdtype="PTR")) == ["c3."]


def test_ptr_is_scoped_too(world: World) -> None:
    r = a(world, dns.reversename.from_address(C3).to_text(), C2, rdtype="PTR")
    assert "c3." not in addrs(r)  # forwarded: c2 does not share a network with c3


def test_case_insensitive_and_owner_keeps_the_query_case(world: World) -> None:
    r = a(world, "C2.DNS.Podman.", C1)
    assert addrs(r) == [C2]
    assert r.answer[0].name.to_text() == "C2.DNS.Podman."
    assert addrs(a(world, "DB", C1)) == [C2]


def test_search_domain_is_never_forwarded(world: World) -> None:
    assert nx(a(world, "nosuch.dns.podman", C1))
    assert nx(a(world, "NoSuch2.DNS.PODMAN.", C1))
    assert not world.seen("nosuch.dns.podman.") and not world.seen("nosuch2.dns.podman.")


def test_known_name_other_type_is_empty_noerror(world: World) -> None:
    for rdtype in ("MX", "TXT"):
        r = a(world, "c2", C1, rdtype=rdtype)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
    r = a(world, "c2", C1, rdtype="AAAA")  # c2 has no IPv6 address
    assert r.rcode() == dns.rcode.NOERROR and not r.answer


def test_flags_ra_mirrors_rd_ad_echoed_not_authoritative(world: World) -> None:
    r = a(world, "c2", C1)
    assert r.flags & dns.flags.RA and r.flags & dns.flags.RD and not r.flags & dns.flags.AA
    q = dns.message.make_query("c2", "A")
    q.flags = dns.flags.AD  # no RD
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_DGRAM, (C1, 0))
    with s:
        r = dns.query.udp(q, LA, timeout=3, sock=s)
    assert not r.flags & dns.flags.RA and r.flags & dns.flags.AD and addrs(r) == [C2]


def test_edns_echoed(world: World) -> None:
    r = a(world, "c2", C1, use_edns=0, payload=1232, want_dnssec=True)
    assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO
    assert addrs(r) == [C2]
    assert a(world, "c2", C1).edns == -1  # no OPT in, none out


# -- transports -------------------------------------------------------------------------------
def test_udp_truncation_of_large_answers(world: World) -> None:
    r = a(world, "many", "127.0.0.1", server=LC)
    assert r.flags & dns.flags.TC and not r.answer
    assert len(addrs(a(world, "many", "127.0.0.1", server=LC, use_edns=0, payload=4096))) == 50
    r = a(world, "many", "127.0.0.1", server=LC, tcp=True)
    assert not r.flags & dns.flags.TC and len(addrs(r)) == 50


def test_tcp_several_queries_on_one_connection(world: World) -> None:
    qs = [dns.message.make_query(n, t) for n, t in
          [("c2", "A"), ("c1", "AAAA"), ("tcp-many.example.test", "A"), ("c3", "A")]]
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_STREAM, (C1, 0))
    with s:
        s.settimeout(5)
        s.connect((LA, 53))
        replies = [dns.message.from_wire(w) for w in tcp_frames(s, [q.to_wire() for q in qs])]
        # the connection stays usable after the batch
        more = tcp_frames(s, [dns.message.make_query("db", "A").to_wire()])
    by_id = {r.id: r for r in replies}
    assert [addrs(by_id[q.id]) for q in qs] == [[C2], [C1V6], ["192.0.2.1"], [C3]]
    assert addrs(dns.message.from_wire(more[0])) == [C2]
    assert ("tcp", "tcp-many.example.test.") in world.ups[UP_NET].seen


def test_tcp_malformed_frame_closes_only_that_connection(world: World) -> None:
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_STREAM, (C1, 0))
    with s:
        s.settimeout(5)
        s.connect((LA, 53))
        s.sendall(b"\x00\x03abc")
        assert s.recv(10) == b""
    assert addrs(a(world, "c2", C1, tcp=True)) == [C2]


# -- forwarding -------------------------------------------------------------------------------
def test_forward_order_container_then_network_then_host(world: World) -> None:
    assert addrs(a(world, "one.example.test", C3, server=LB)) == ["192.0.2.2"]  # c3's own
    assert addrs(a(world, "two.example.test", C1)) == ["192.0.2.1"]  # dna's network server
    assert addrs(a(world, "three.example.test", "127.0.0.1", server=LB)) == ["192.0.2.3"]  # host


def test_forward_keeps_the_client_transport(world: World) -> None:
    a(world, "viaudp.example.test", C1)
    a(world, "viatcp.example.test", C1, tcp=True)
    assert world.seen("viaudp.example.test.") == [(UP_NET, "udp", "viaudp.example.test.")]
    assert world.seen("viatcp.example.test.") == [(UP_NET, "tcp", "viatcp.example.test.")]


def test_single_label_is_forwarded_and_upstream_reply_relayed(world: World) -> None:
    r = a(world, "printer", C1)
    assert addrs(r) == ["192.0.2.1"] and r.rcode() == dns.rcode.NOERROR


def test_host_resolv_conf_is_reread_when_it_changes(world: World) -> None:
    assert addrs(a(world, "before.example.test", "127.0.0.1", server=LB)) == ["192.0.2.3"]
    try:
        world.resolv.write_text(f"nameserver {UP_NET}\n")
        assert addrs(a(world, "after.example.test", "127.0.0.1", server=LB)) == ["192.0.2.1"]
    finally:
        world.resolv.write_text(f"nameserver {UP_HOST}\n")


def test_dead_first_server_then_good_one(world: World) -> None:
    t0 = time.monotonic()
    assert addrs(a(world, "slow.example.test", "127.0.0.1", server=LC)) == ["192.0.2.1"]
    assert time.monotonic() - t0 < 2.0
    assert (UP_SILENT, "udp", "slow.example.test.") in world.seen("slow.example.test.")


def test_upstream_failure_is_servfail_not_silence(world: World) -> None:
    t0 = time.monotonic()
    r = a(world, "refused.example.test", "127.0.0.1", server=LD)
    assert r.rcode() == dns.rcode.SERVFAIL and time.monotonic() - t0 < 1.0
    r = a(world, "timeout.example.test", "127.0.0.1", server=LE, timeout=4)
    assert r.rcode() == dns.rcode.SERVFAIL
    r = a(world, "timeout.example.test", "127.0.0.1", server=LE, tcp=True, timeout=4)
    assert r.rcode() == dns.rcode.SERVFAIL


def test_internal_network_never_forwards(world: World) -> None:
    assert nx(a(world, "out.example.test", C4, server=LINT))
    assert nx(a(world, "out2.example.test", "127.0.0.1", server=LINT))
    assert addrs(a(world, "c4", C4, server=LINT)) == [C4]
    assert not world.seen("out.example.test.") and not world.seen("out2.example.test.")


def test_server_still_alive(world: World) -> None:
    assert alive(world.pid)
    assert os.path.exists(world.cfg / "aardvark.pid")


def _cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def test_tcp_half_close_waits_for_the_answer_without_spinning(world: World) -> None:
    q = dns.message.make_query("halfclose.example.test", "A")
    s = ns_socket(world.ns, socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0))
    before = _cpu_seconds(world.pid)
    with s:
        s.settimeout(5)
        s.connect((LE, 53))  # dne's only upstream never answers: SERVFAIL after the timeout
        wire = q.to_wire()
        s.sendall(len(wire).to_bytes(2, "big") + wire)
        s.shutdown(socket.SHUT_WR)
        data = b""
        while chunk := s.recv(65535):  # the reply, then the server closes
            data += chunk
    assert dns.message.from_wire(data[2:]).rcode() == dns.rcode.SERVFAIL
    assert _cpu_seconds(world.pid) - before < 0.5  # the ~1 s wait was not a busy loop

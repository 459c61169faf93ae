"""burrow-dns for real against a client whose every message announces hundreds of records
(the CPU flood of tests/unit/test_hostile_dns.py): each gets FORMERR over UDP and over TCP,
several on one connection, and other clients are answered as before."""

from __future__ import annotations

import socket
import struct
from pathlib import Path

import dns.message
import dns.rcode
import pytest

from tests.integration.test_dns_lifecycle import GW, env, ns, one_network  # noqa: F401 - fixtures
from tests.integration.test_dns_support import addrs, ns_socket, query, start_dns, tcp_frames
from tests.nsutil import Netns

pytestmark = pytest.mark.root


def heavy(qid: int) -> bytes:
    """680 questions, each a pointer to the first name (r3): 4 KiB, one datagram."""
    first = b"\x02r3\x00" + struct.pack("!HH", 1, 1)
    again = b"\xc0\x0c" + struct.pack("!HH", 1, 1)
    return struct.pack("!6H", qid, 0x0100, 680, 0, 0, 0) + first + again * 679


def formerr(wire: bytes, qid: int) -> None:
    r = dns.message.from_wire(wire)
    assert (r.id, r.rcode(), [q.name.to_text() for q in r.question]) == (qid, dns.rcode.FORMERR, ["r3."])


def test_a_message_with_hundreds_of_questions_is_formerr(ns: Netns, tmp_path: Path,  # noqa: F811
                                                         env: dict[str, str]) -> None:  # noqa: F811
    cfg = tmp_path / "cfg"
    one_network(cfg)
    start_dns(ns, cfg, env)
    udp = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, ("10.89.7.11", 0))
    with udp:
        udp.settimeout(5)
        for qid in range(1, 6):
            udp.sendto(heavy(qid), (GW, 53))
            formerr(udp.recv(65535), qid)
    tcp = ns_socket(ns, socket.AF_INET, socket.SOCK_STREAM, ("10.89.7.11", 0))
    with tcp:
        tcp.settimeout(5)
        tcp.connect((GW, 53))
        replies = tcp_frames(tcp, [heavy(qid) for qid in range(10, 14)])
        for qid, wire in zip(range(10, 14), replies, strict=True):
            formerr(wire, qid)
    assert addrs(query(ns, GW, "r3", source="10.89.7.12", timeout=5)) == ["10.89.7.13"]
    assert addrs(query(ns, GW, "r3", source="10.89.7.12", tcp=True, timeout=5)) == ["10.89.7.13"]


def test_sources_that_are_no_container_share_one_budget(ns: Netns, tmp_path: Path) -> None:  # noqa: F811
    """A local user on the host reaches burrow-dns on the bridge gateway from any of
    127.0.0.0/8. Keyed per address, 40 of them took the whole upstream budget (every query
    to a silent upstream) and a container's forwarded query on another network was shed; now
    they share one per-client budget and the container is answered."""
    from tests.integration.test_dns_hostile import GOOD, GW_B, SILENT, started, stats
    from tests.integration.test_dns_support import FakeUpstream

    for ip in (GW_B + "/24", SILENT + "/32", GOOD + "/32", "10.89.8.10/32"):
        ns.run(["ip", "addr", "add", ip, "dev", "lo"])
    cfg = tmp_path / "cfg"
    one_network(cfg)
    (cfg / "dnr").write_text((cfg / "dnr").read_text().replace(GW, f"{GW} {SILENT}", 1))
    (cfg / "dnb").write_text(f"{GW_B} {GOOD}\n{'b' * 64} 10.89.8.10  b1\n")
    silent = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (SILENT, 53))  # never answers
    good = FakeUpstream(ns, GOOD, "192.0.2.7")
    sources, each, cap, total = 40, 10, 8, 64
    pid = started(ns, cfg, {"BURROW_DNS_UPSTREAM_TIMEOUT": "30", "BURROW_DNS_RESOLV_CONF": "/dev/null",
                            "BURROW_DNS_PENDING_PER_CLIENT": str(cap),
                            "BURROW_DNS_PENDING_TOTAL": str(total)})
    try:
        for i in range(sources):
            s = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, (f"127.0.0.{10 + i}", 0))
            with s:
                for j in range(each):
                    s.sendto(dns.message.make_query(f"f{i}-{j}.flood.test", "A").to_wire(), (GW, 53))
        # The last flood source asks a local name last: once answered, the flood was handled.
        assert addrs(query(ns, GW, "r1", source=f"127.0.0.{10 + sources - 1}", timeout=10)) == ["10.89.7.11"]
        ctr = ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM, ("10.89.8.10", 0))
        with ctr:
            ctr.settimeout(5)
            ctr.sendto(dns.message.make_query("out.example.test", "A").to_wire(), (GW_B, 53))
            try:
                answer = dns.message.from_wire(ctr.recv(65535))
            except TimeoutError:
                pytest.fail("the container's forwarded query was shed: no answer in 5 s")
        assert addrs(answer) == ["192.0.2.7"]  # the container was not shed
        counts = stats(cfg, pid)
        assert counts["upstream_pending"] == cap  # all 40 addresses: one share
        assert counts["shed"]["pending_per_client"] == sources * each - cap
    finally:
        good.close()
        silent.close()


def test_tcp_connections_from_sources_that_are_no_container_share_one_budget(
    ns: Netns, tmp_path: Path, env: dict[str, str],  # noqa: F811
) -> None:
    """20 loopback addresses, 2 connections each, against a table of 8 with 2 per client:
    keyed per address they took all 8 (the oldest idle evicted to make room), now the 2 of
    their one share; a container still connects and is answered."""
    from tests.integration.test_dns_hostile import _closed_by_peer, _connect_many, started, stats

    cfg = tmp_path / "cfg"
    one_network(cfg)
    pid = started(ns, cfg, {**env, "BURROW_DNS_TCP_TOTAL": "8", "BURROW_DNS_TCP_PER_CLIENT": "2",
                            "BURROW_DNS_TCP_TIMEOUT": "60"})
    socks = [s for i in range(20) for s in _connect_many(ns, f"127.0.0.{10 + i}", 2)]
    try:
        assert addrs(query(ns, GW, "r3", source="10.89.7.12", tcp=True, timeout=5)) == ["10.89.7.13"]
        counts = stats(cfg, pid)
        assert counts["shed"]["tcp_per_client"] == 38, counts["shed"]  # all but one share
        assert counts["shed"]["tcp_evicted"] == 0, counts["shed"]
        assert sum(not _closed_by_peer(s) for s in socks) == 2
    finally:
        for s in socks:
            s.close()

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

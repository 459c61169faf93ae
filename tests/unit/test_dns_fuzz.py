"""Property-based fuzz of the DNS wire handling that faces hostile packets, without sockets:
the resolver (dnslib parse + reply builder), the error-reply builder used when forwarding
fails, and the fast-path question walker. None of them may ever raise, whatever the bytes.

Names are built at and past the wire limits on purpose: 63- and 64-byte labels, names of
253/254/255/256+ bytes, compression pointers (forward, backward, looping), truncated packets.
"""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from netns.dns import fastpath
from netns.dns.config import parse_network
from netns.dns.resolver import Forward, Policy, Reply, error_reply, resolve
from netns.dns.table import build

T = build([parse_network("a", "10.0.1.1\n1 10.0.1.2 fd01::2 c1,web\n")])
KNOWN = T.scope("10.0.1.2", "10.0.1.1")  # a container: forwards to the host's servers
POLICIES = [Policy.make(".dns.podman", no_proxy=False), Policy.make(".dns.podman", no_proxy=True)]
SETTINGS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def header(flags: int = 0x0100, qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0) -> bytes:
    return struct.pack("!HHHHHH", 0xBEEF, flags, qd, an, ns, ar)


def wire_name(labels: list[bytes]) -> bytes:
    """Labels as length-prefixed bytes; lengths above 63 are written as-is (hostile)."""
    return b"".join(bytes([len(x) & 0xFF]) + x for x in labels) + b"\x00"


labels = st.lists(
    st.one_of(
        st.binary(min_size=1, max_size=3),
        st.sampled_from([b"c1", b"WEB", b"dns", b"podman", b"in-addr", b"arpa", b"ip6"]),
        st.integers(60, 64).map(lambda n: b"a" * n),  # around the 63-byte label limit
    ),
    min_size=0, max_size=8,
)


def long_name(total: int) -> list[bytes]:
    """Labels of 63 bytes (the most a label may have) adding up to `total` wire bytes."""
    out: list[bytes] = []
    left = total - 1  # the root byte
    while left > 0:
        n = min(63, left - 1)
        if n < 1:
            out[-1] += b"b"  # no room for another label: lengthen the last
            break
        out.append(b"a" * n)
        left -= n + 1
    return out


names = st.one_of(
    labels.map(wire_name),
    st.integers(250, 262).map(lambda total: wire_name(long_name(total))),
    st.tuples(labels, st.sampled_from([b"\xc0\x0c", b"\xc0\x0e", b"\xc0\xff", b"\xff\xff"])).map(
        lambda t: wire_name(t[0])[:-1] + t[1]),  # ends in a pointer (to itself, past the end)
)
qtypes = st.sampled_from([1, 28, 12, 15, 16, 255, 0, 65535])
opt = st.builds(lambda size, ttl, rdlen: b"\x00" + struct.pack("!HHIH", 41, size, ttl, rdlen),
                st.integers(0, 0xFFFF), st.integers(0, 0xFFFFFFFF), st.integers(0, 8))
packets = st.one_of(
    st.builds(lambda flags, qd, ar, name, qt, o: header(flags, qd, 0, 0, ar) + name
              + struct.pack("!HH", qt, 1) + o,
              st.sampled_from([0x0100, 0x0000, 0x0130, 0x8100, 0x2100, 0x7900]),
              st.integers(0, 3), st.integers(0, 2), names, qtypes, st.one_of(st.just(b""), opt)),
    st.binary(max_size=80),
)


@SETTINGS
@given(packets, st.booleans(), st.sampled_from(POLICIES), st.integers(0, 600))
def test_resolver_never_raises(pkt: bytes, tcp: bool, policy: Policy, cut: int) -> None:
    for wire in (pkt, pkt[:cut]):  # and every truncation
        out = resolve(wire, KNOWN, policy, tcp=tcp)
        assert out is None or isinstance(out, Reply | Forward)
        if isinstance(out, Reply):
            assert out.wire[:2] == wire[:2]  # a reply answers this query id


@SETTINGS
@given(packets, st.integers(0, 600), st.sampled_from([2, 5]))
def test_error_reply_never_raises_and_echoes_the_query(pkt: bytes, cut: int, rcode: int) -> None:
    for wire in (pkt, pkt[:cut]):
        reply = error_reply(wire, rcode)
        if reply is None:
            continue
        assert reply[:2] == wire[:2] and reply[2] & 0x80  # same id, a response
        assert reply[3] & 0x0F == rcode


@SETTINGS
@given(packets)
def test_question_end_stays_inside_the_packet(pkt: bytes) -> None:
    end = fastpath.question_end(pkt)
    assert end == 12 or 12 < end <= len(pkt)


def test_servfail_for_a_name_too_long_to_pack() -> None:
    """Issue 12 item 1: this question, forwarded and failed, raised out of the reply builder."""
    wire = header() + wire_name([b"a" * 63] * 4) + struct.pack("!HH", 1, 1)  # 257 bytes
    assert isinstance(resolve(wire, KNOWN, POLICIES[0], tcp=False), Forward)
    reply = error_reply(wire, 2)
    assert reply is not None
    qid, flags, qd, an, ns, ar = struct.unpack("!6H", reply[:12])  # dnspython refuses the name
    assert qid == 0xBEEF and flags == 0x8180 | dns.rcode.SERVFAIL and (qd, an, ns, ar) == (1, 0, 0, 0)
    assert reply[12:] == wire[12:]  # the question echoed byte for byte, never re-packed


def test_local_answer_for_a_name_too_long_to_pack_is_formerr() -> None:
    """The NXDOMAIN path packs the qname too: past 255 bytes that is a format error, answered."""
    name = wire_name(long_name(250) + [b"dns", b"podman"])  # 261 bytes, in the search domain
    wire = header() + name + struct.pack("!HH", 1, 1)
    out = resolve(wire, KNOWN, POLICIES[0], tcp=False)
    assert isinstance(out, Reply)
    assert out.wire[3] & 0x0F == dns.rcode.FORMERR and out.wire[12:] == wire[12:]

"""The pure resolver and the fast-path cache, without sockets."""

from __future__ import annotations

import dns.flags
import dns.message
import dns.rcode
import dns.reversename
import pytest

from netns.dns import fastpath
from netns.dns.config import parse_network
from netns.dns.resolver import Forward, Policy, Reply, error_reply, resolve, reverse_ip
from netns.dns.table import Scope, build

T = build([
    parse_network("a", "10.0.1.1 9.9.9.1\n1 10.0.1.2 fd01::2 c1,web\n2 10.0.1.3  c2\n"),
    parse_network("i%int", "10.0.3.1\n4 10.0.3.2  c4\n"),
    parse_network("big", "10.0.4.1\n" + "".join(f"b{i} 10.0.4.{i + 10}  m{i},many\n"
                                                 for i in range(40))),
])
C1 = T.scope("10.0.1.2", "10.0.1.1")
C4 = T.scope("10.0.3.2", "10.0.3.1")
BIG = T.scope("1.1.1.1", "10.0.4.1")
P = Policy.make(".dns.podman", no_proxy=False)


def ask(name: str, rdtype: str = "A", scope: Scope = C1, tcp: bool = False,
        policy: Policy = P, **kw: object) -> dns.message.Message:
    q = dns.message.make_query(name, rdtype, **kw)  # type: ignore[arg-type]
    out = resolve(q.to_wire(), scope, policy, tcp=tcp)
    assert isinstance(out, Reply), out
    r = dns.message.from_wire(out.wire)
    assert r.id == q.id and r.question == q.question
    return r


def ips(r: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in r.answer for rd in rrset)


def test_a_aaaa_alias_search_domain_case() -> None:
    assert ips(ask("c2")) == ["10.0.1.3"]
    assert ips(ask("WEB.Dns.Podman.", "AAAA")) == ["fd01::2"]
    r = ask("C1.DNS.PODMAN")
    assert r.answer[0].name.to_text() == "C1.DNS.PODMAN." and r.answer[0].ttl == 0


def test_empty_noerror_for_other_types_and_nxdomain_in_search_domain() -> None:
    for t in ("MX", "TXT", "SRV", "AAAA"):
        r = ask("c2", t)
        assert r.rcode() == dns.rcode.NOERROR and not r.answer
    assert ask("zz.dns.podman").rcode() == dns.rcode.NXDOMAIN


def test_ptr_one_answer_owned_by_qname() -> None:
    r = ask(dns.reversename.from_address("fd01::2").to_text(), "PTR")
    assert ips(r) == ["c1.", "web."] and r.answer[0].name == dns.reversename.from_address("fd01::2")
    assert reverse_ip((b"3", b"1", b"0", b"10", b"in-addr", b"arpa")) == "10.0.1.3"
    assert reverse_ip((b"x", b"in-addr", b"arpa")) is None


def test_forward_decisions() -> None:
    q = dns.message.make_query("example.com", "A").to_wire()
    assert resolve(q, C1, P, tcp=False) == Forward(("9.9.9.1",))
    assert resolve(dns.message.make_query("printer", "A").to_wire(), C1, P, tcp=False) == Forward(
        ("9.9.9.1",))
    assert ask("example.com", scope=C4).rcode() == dns.rcode.NXDOMAIN  # internal only
    assert ask("example.com", policy=Policy.make("dns.podman", True)).rcode() == 3  # NO_PROXY
    ptr = dns.reversename.from_address("10.0.3.2").to_text()  # c4: not in c1's networks
    assert isinstance(resolve(dns.message.make_query(ptr, "PTR").to_wire(), C1, P, tcp=False),
                      Forward)


def test_flags_and_edns() -> None:
    r = ask("c2", use_edns=0, payload=1400, want_dnssec=True)
    assert r.flags & dns.flags.RA and not r.flags & dns.flags.AA
    assert r.edns == 0 and r.payload == 1400 and r.ednsflags & dns.flags.DO
    q = dns.message.make_query("c2", "A")
    q.flags = dns.flags.AD | dns.flags.CD
    out = resolve(q.to_wire(), C1, P, tcp=False)
    assert isinstance(out, Reply)
    r = dns.message.from_wire(out.wire)
    assert not r.flags & dns.flags.RA and r.flags & dns.flags.AD and r.flags & dns.flags.CD


def test_truncation_only_over_udp() -> None:
    r = ask("many", scope=BIG)
    assert r.flags & dns.flags.TC and not r.answer
    assert len(ips(ask("many", scope=BIG, use_edns=0, payload=4096))) == 40
    assert len(ips(ask("many", scope=BIG, tcp=True))) == 40


@pytest.mark.parametrize("wire", [b"", b"\x00" * 5, b"\x12\x34\x81\x80" + b"\x00" * 8,
                                  b"\xff" * 40])
def test_garbage_and_responses_are_dropped(wire: bytes) -> None:
    assert resolve(wire, C1, P, tcp=False) is None


def test_other_opcodes_and_no_question() -> None:
    q = dns.message.make_query("c2", "A")
    q.set_opcode(dns.opcode.NOTIFY)
    out = resolve(q.to_wire(), C1, P, tcp=False)
    assert isinstance(out, Reply) and dns.message.from_wire(out.wire).rcode() == dns.rcode.NOTIMP
    empty = b"\x12\x34\x01\x00" + b"\x00" * 8
    out = resolve(empty, C1, P, tcp=False)
    assert isinstance(out, Reply) and out.wire[3] & 0xF == dns.rcode.FORMERR


def test_servfail_builder() -> None:
    q = dns.message.make_query("x.example", "A", use_edns=0)
    wire = error_reply(q.to_wire(), 2)
    assert wire is not None
    r = dns.message.from_wire(wire)
    assert r.rcode() == dns.rcode.SERVFAIL and r.id == q.id and r.edns == 0
    assert error_reply(b"junk", 2) is None


def test_fastpath_cache_patches_the_id_and_is_bounded() -> None:
    cache = fastpath.ReplyCache()
    q1 = dns.message.make_query("c2", "A")
    out = resolve(q1.to_wire(), C1, P, tcp=False)
    assert isinstance(out, Reply)
    cache.put(C1, q1.to_wire(), out.wire)
    q2 = dns.message.make_query("c2", "A")  # same bytes but the id
    body = cache.get(C1, q2.to_wire())
    assert body and dns.message.from_wire(fastpath.patch(q2.to_wire(), body)).id == q2.id
    assert cache.get(C4, q2.to_wire()) is None  # another scope never shares an entry
    cache.put(C1, dns.message.make_query("ext.example", "A").to_wire(), None)
    assert cache.get(C1, dns.message.make_query("ext.example", "A").to_wire()) == fastpath.FORWARD
    for i in range(fastpath.MAX_ENTRIES + 5):
        cache.put(C1, b"\x00\x00" + i.to_bytes(4, "big"), b"\x00\x00reply")
    assert len(cache.entries) <= fastpath.MAX_ENTRIES


def test_fastpath_cache_never_holds_a_padded_query() -> None:
    """Keys are whole queries: 65,536 of them padded to 4 KiB each would be 256 MiB."""
    q = dns.message.make_query("c2", "A", use_edns=0, payload=4096, pad=3900)
    wire = q.to_wire(max_size=65535)
    assert len(wire) >= 3900
    out = resolve(wire, C1, P, tcp=False)
    assert isinstance(out, Reply)  # still answered, just not kept
    cache = fastpath.ReplyCache()
    cache.put(C1, wire, out.wire)
    cache.put(C1, wire, None)
    assert cache.entries == {}


# -- EDNS versions (RFC 6891 §6.1.3) ------------------------------------------------------------
@pytest.mark.parametrize("name", ["c2", "zz.dns.podman", "example.com"])
@pytest.mark.parametrize("version", [1, 255])
def test_an_edns_version_other_than_0_is_badvers_with_an_opt_of_version_0(
    name: str, version: int
) -> None:
    """Local, search-domain and forwardable names alike (burrow-dns is the responder; the
    query is never relayed): extended RCODE 16 (0 in the header, 1 in the OPT), an OPT of
    version 0 with the client's size and DO bit, no answer. aardvark 1.4 answered these as
    version 0 queries."""
    for tcp in (False, True):
        r = ask(name, tcp=tcp, use_edns=version, payload=1232, want_dnssec=True)
        assert r.rcode() == dns.rcode.BADVERS and r.flags & 0x000F == 0
        assert r.edns == 0 and r.payload == 1232 and r.ednsflags & dns.flags.DO
        assert (r.ednsflags >> 24) == 1 and not r.answer and not r.authority


def test_edns_version_0_and_no_opt_are_answered_as_before() -> None:
    for kw in ({}, {"use_edns": 0}):
        r = ask("c2", **kw)  # type: ignore[arg-type]
        assert r.rcode() == dns.rcode.NOERROR and ips(r) == ["10.0.1.3"]
        assert r.edns == (0 if kw else -1) and r.ednsflags >> 24 == 0
    q = dns.message.make_query("example.com", "A", use_edns=0).to_wire()
    assert resolve(q, C1, P, tcp=False) == Forward(("9.9.9.1",))


def test_badvers_is_cached_by_the_fast_path_and_patched_with_the_id() -> None:
    cache = fastpath.ReplyCache()
    q = dns.message.make_query("c2", "A", use_edns=1)
    out = resolve(q.to_wire(), C1, P, tcp=False)
    assert isinstance(out, Reply) and out.cacheable
    cache.put(C1, q.to_wire(), out.wire)
    q.id ^= 0x5A5A
    body = cache.get(C1, q.to_wire())
    assert body is not None
    r = dns.message.from_wire(fastpath.patch(q.to_wire(), body))
    assert r.id == q.id and r.rcode() == dns.rcode.BADVERS and r.edns == 0

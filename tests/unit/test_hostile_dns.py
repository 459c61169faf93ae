"""Queries whose header announces more records than any query carries. dnslib parses every
record a header announces, so 680 one-pointer questions in a 4 KiB datagram cost the server
~2.4 ms of CPU each (~40 ms in a 64 KiB TCP frame; measured 0.72 s of CPU for 300 datagrams,
0.01 s now): one client starved every other. They are FORMERR from the header alone now, as
Unbound and BIND answer more than one question."""

from __future__ import annotations

import struct

import dns.message
import dns.rcode
import pytest

from netns.dns import resolver
from netns.dns.resolver import Reply, resolve
from tests.unit.test_dns_resolver import C1, P, ips


def header(qd: int = 1, an: int = 0, ns: int = 0, ar: int = 0, flags: int = 0x0100) -> bytes:
    return struct.pack("!6H", 0x1234, flags, qd, an, ns, ar)


QUESTION = b"\x02c2\x00" + struct.pack("!HH", 1, 1)
POINTER_Q = b"\xc0\x0c" + struct.pack("!HH", 1, 1)  # the first question's name again
POINTER_RR = b"\xc0\x0c" + struct.pack("!HHIH", 1, 1, 0, 4) + bytes(4)
HEAVY = {
    "questions": header(qd=680) + QUESTION + POINTER_Q * 679,
    "answers": header(an=290) + QUESTION + POINTER_RR * 290,
    "additional": header(ar=290) + QUESTION + POINTER_RR * 290,
    "notify": header(qd=680, flags=0x2000) + QUESTION + POINTER_Q * 679,  # opcode NOTIFY
}


@pytest.fixture
def no_parse(monkeypatch: pytest.MonkeyPatch) -> None:
    def parse(*_: object) -> None:
        raise AssertionError("dnslib was asked to parse every record of this message")

    monkeypatch.setattr(resolver.DNSRecord, "parse", parse)


@pytest.mark.parametrize("kind", list(HEAVY))
def test_a_message_announcing_too_many_records_is_formerr_without_parsing(
    kind: str, no_parse: None
) -> None:
    for tcp in (False, True):
        out = resolve(HEAVY[kind], C1, P, tcp=tcp)
        assert isinstance(out, Reply)
        r = dns.message.from_wire(out.wire)
        assert r.rcode() == dns.rcode.FORMERR and r.id == 0x1234
        assert [q.name.to_text() for q in r.question] == ["c2."]  # the first question, echoed


def test_two_questions_are_formerr_and_one_with_edns_is_answered() -> None:
    two = resolve(header(qd=2) + QUESTION + POINTER_Q, C1, P, tcp=False)
    assert isinstance(two, Reply) and dns.message.from_wire(two.wire).rcode() == dns.rcode.FORMERR
    q = dns.message.make_query("c2", "A", use_edns=0, payload=1232)  # the control: OPT is fine
    one = resolve(q.to_wire(), C1, P, tcp=False)
    assert isinstance(one, Reply) and ips(dns.message.from_wire(one.wire)) == ["10.0.1.3"]
    # a response (QR set) is never answered, however many records it announces
    assert resolve(header(qd=680, flags=0x8100) + QUESTION + POINTER_Q * 679, C1, P, tcp=False) is None

"""netns/dns/match.py: which upstream messages answer the query we sent (pure, on bytes)."""

from __future__ import annotations

import dns.message
import dns.rrset
from hypothesis import given, settings
from hypothesis import strategies as st

from netns.dns import match


def _reply(name: str, rdtype: str = "A") -> bytes:
    q = dns.message.make_query(name, rdtype, use_edns=0)
    r = dns.message.make_response(q)
    r.answer.append(dns.rrset.from_text(name + ".", 60, "IN", "A", "192.0.2.1"))
    return r.to_wire()


def _asked(name: str, rdtype: str = "A") -> tuple[bytes, bytes]:
    got = match.question(dns.message.make_query(name, rdtype, use_edns=0).to_wire())
    assert got is not None
    return got


def test_question_is_the_lowered_name_and_the_raw_type_and_class() -> None:
    assert _asked("WwW.Example.TEST") == (b"\x03www\x07example\x04test\x00", b"\x00\x01\x00\x01")
    # type 65 is b"\x00A": lower-casing it would make it type 97
    assert _asked("x.test", "HTTPS")[1] == b"\x00\x41\x00\x01"


def test_queries_whose_question_cannot_be_walked_are_never_matched() -> None:
    wire = dns.message.make_query("a.test", "A").to_wire()
    assert match.question(wire[:11]) is None  # shorter than a header
    assert match.question(wire[:4] + b"\x00\x00" + wire[6:]) is None  # no question
    assert match.question(wire[:4] + b"\x00\x02" + wire[6:]) is None  # two
    assert match.question(wire[:12] + b"\xc0\x0c\x00\x01\x00\x01") is None  # a pointer
    assert match.question(wire[:12] + b"\x01a\x00\x00") is None  # cut in the type


def test_a_reply_is_accepted_whatever_the_case_of_its_name() -> None:
    name, tc = _asked("MiXeD.example.test")
    assert match.mismatch(_reply("mixed.EXAMPLE.test"), name, tc) is None


def test_what_is_dropped_and_why() -> None:
    name, tc = _asked("www.example.test")
    good = _reply("www.example.test")
    assert match.mismatch(good, name, tc) is None
    assert match.mismatch(_reply("evil.example.test"), name, tc) == match.WRONG_QUESTION
    assert match.mismatch(_reply("www.example.test", "AAAA"), name, tc) == match.WRONG_QUESTION
    assert match.mismatch(good[:4] + b"\x00\x00" + good[6:], name, tc) == match.WRONG_QUESTION
    assert match.mismatch(good[:4] + b"\x00\x02" + good[6:], name, tc) == match.WRONG_QUESTION
    query = good[:2] + bytes([good[2] & 0x7F]) + good[3:]
    assert match.mismatch(query, name, tc) == match.NOT_A_REPLY
    assert match.mismatch(good[: 12 + len(name) + 3], name, tc) == match.NOT_A_REPLY
    https = _asked("www.example.test", "HTTPS")
    as97 = bytearray(_reply("www.example.test", "HTTPS"))
    as97[12 + len(name) + 1] = 0x61
    assert match.mismatch(bytes(as97), *https) == match.WRONG_QUESTION


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=300), st.binary(max_size=300))
def test_never_raises_and_accepts_only_its_own_question(query: bytes, reply: bytes) -> None:
    asked = match.question(query)
    if asked is None:
        return
    name, tc = asked
    verdict = match.mismatch(reply, name, tc)
    assert verdict in (None, *match.DROP_KINDS)
    if verdict is None:
        assert reply[12 : 12 + len(name)].lower() == name and reply[4:6] == b"\x00\x01"


@settings(max_examples=100, deadline=None)
@given(st.lists(st.text("abcXYZ019-", min_size=1, max_size=20), min_size=1, max_size=4),
       st.sampled_from(["A", "AAAA", "MX", "HTTPS", "TXT"]))
def test_every_true_reply_is_accepted(labels: list[str], rdtype: str) -> None:
    name = ".".join(labels) + "."
    q = dns.message.make_query(name, rdtype)
    asked = match.question(q.to_wire())
    assert asked is not None
    r = dns.message.make_response(q)
    r.question[0].name = dns.name.from_text(name.swapcase())
    assert match.mismatch(r.to_wire(), *asked) is None

"""The pure resolver: (query bytes, scope) -> a reply, a decision to forward, or a drop.

No sockets here. Forwarding is only *decided*: the server hands a `Forward` to the upstream
module, which owns the I/O. Semantics follow the newest aardvark where it fixed 1.4 (spec §1,
§2.1): search domain stripped case-insensitively everywhere, one PTR answer owned by the
qname, TTL 0, RA mirrors RD, AD/CD and EDNS echoed (BADVERS for a version other than 0, RFC 6891:
aardvark 1.4 answers those as version 0 queries), empty NOERROR for a known name asked for
a type it has no record of, NXDOMAIN instead of forwarding for the search domain, for
internal-only requesters and under AARDVARK_NO_PROXY.
"""

from __future__ import annotations

import ipaddress
import struct
from dataclasses import dataclass

from dnslib import AAAA, OPCODE, PTR, QTYPE, RCODE, RR, A, DNSError, DNSHeader, DNSRecord
from dnslib.label import DNSLabelError

from netns.dns.fastpath import bare_reply
from netns.dns.table import Scope

TTL = 0  # aardvark >= 1.13: the config can change at any SIGHUP, so clients must not cache
MIN_UDP = 512
MAX_UDP = 4096  # never build UDP replies larger than this, whatever the client advertises
MAX_TCP = 65535  # a TCP message's length prefix is 16 bits: past it, truncate as UDP does


@dataclass(frozen=True)
class Policy:
    search_domain: tuple[bytes, ...] = (b"dns", b"podman")
    no_proxy: bool = False  # AARDVARK_NO_PROXY: never forward, answer NXDOMAIN

    @staticmethod
    def make(search_domain: str, no_proxy: bool) -> Policy:
        labels = tuple(x.encode().lower() for x in search_domain.strip(".").split(".") if x)
        return Policy(labels, no_proxy)


@dataclass(frozen=True)
class Reply:
    wire: bytes
    cacheable: bool = True  # a pure function of (scope, query bytes after the id)


@dataclass(frozen=True)
class Forward:
    """Not ours: relay the original bytes. Empty servers means the host's resolv.conf."""

    servers: tuple[str, ...]


Outcome = Reply | Forward | None  # None: drop (unparseable, or not a query)


def _reply_header(req: DNSRecord, rcode: int) -> DNSHeader:
    h = req.header
    return DNSHeader(
        id=h.id, qr=1, opcode=h.opcode, aa=0, tc=0, rd=h.rd, ra=h.rd, ad=h.ad, cd=h.cd,
        rcode=rcode,
    )


OPT = QTYPE.OPT  # dnslib's QTYPE.X is a Python __getattr__ call: looked up once here


def _opt(req: DNSRecord) -> RR | None:
    """The query's own OPT record, if any (looked at once per query, never copied)."""
    for rr in req.ar:
        if rr.rtype == OPT:
            return rr
    return None


def _echo(opt: RR) -> RR:
    # Echo size, version and DO, but not the client's options (e.g. a COOKIE we did not mint).
    return RR(".", QTYPE.OPT, rclass=opt.rclass, ttl=opt.ttl & 0xFFFF8000, rdata=[])


# RFC 6891 §6.1.3: a query of an EDNS version we do not implement (any but 0) is answered
# BADVERS (extended RCODE 16: 0 in the header, 1 in the OPT's upper TTL byte) with an OPT of
# the version we do implement, 0, which tells the client to ask again with it (dig does).
BADVERS = 16  # dnslib has no name for it
BADVERS_OPT_TTL = (BADVERS >> 4) << 24
VERSION_BITS = 0x00FF0000  # the OPT TTL's version byte


def _badvers(req: DNSRecord, opt: RR, tcp: bool) -> Reply:
    # The client's size and DO bit, version 0 and extended RCODE 1.
    ours = RR(".", QTYPE.OPT, rclass=opt.rclass, ttl=BADVERS_OPT_TTL | (opt.ttl & 0x8000), rdata=[])
    return _finish(req, BADVERS & 0x0F, [], tcp, ours, echo=False)


def _finish(req: DNSRecord, rcode: int, answers: list[RR], tcp: bool, opt: RR | None,
            echo: bool = True) -> Reply:
    """`opt`: the query's OPT record (`_opt(req)`), echoed; or, `echo` False, the reply's own."""
    reply = DNSRecord(_reply_header(req, rcode), q=req.questions[0] if req.questions else None)
    if opt is not None and echo:
        opt = _echo(opt)
    for rr in answers:
        reply.add_answer(rr)
    if opt is not None:
        reply.add_ar(opt)
    wire = bytes(reply.pack())  # dnslib packs into a bytearray
    if tcp:
        # Thousands of containers sharing one alias: no TCP message can hold the answer, and
        # its 2-byte length could not say its size (the connection died on the overflow).
        limit = MAX_TCP
    else:
        limit = min(max(opt.rclass if opt is not None else 0, MIN_UDP), MAX_UDP)
    if len(wire) > limit:
        # Truncated: flag it and send the question alone; over UDP the client retries over TCP.
        reply.rr = []
        reply.header.tc = 1
        wire = bytes(reply.pack())  # dnslib packs into a bytearray
    return Reply(wire)


# What dnslib raises on a query it parsed but cannot answer (a name it accepted but will not
# pack: a label over 63 bytes, a name over 255): the query is malformed, not our fault.
UNPACKABLE = (DNSLabelError, DNSError, struct.error, ValueError, IndexError, UnicodeError)


def error_reply(wire: bytes, rcode: int) -> bytes | None:
    """A bare reply with `rcode` (e.g. SERVFAIL after every upstream failed), built from the
    raw query: the question that reached an upstream may be one that cannot be re-packed."""
    return bare_reply(wire, rcode)


def reverse_ip(labels: tuple[bytes, ...]) -> str | None:
    """`4.3.2.1.in-addr.arpa` / nibble `ip6.arpa` -> canonical IP text, else None."""
    try:
        if labels[-2:] == (b"in-addr", b"arpa") and len(labels) == 6:
            return str(ipaddress.IPv4Address(".".join(x.decode() for x in reversed(labels[:4]))))
        if labels[-2:] == (b"ip6", b"arpa") and len(labels) == 34:
            nibbles = "".join(x.decode() for x in reversed(labels[:32]))
            if all(len(x) == 1 for x in labels[:32]):
                return str(ipaddress.IPv6Address(int(nibbles, 16)))
    except (ValueError, UnicodeError):
        return None
    return None


# A query carries one question and, in the additional section, an OPT and perhaps a TSIG; it
# has no answer or authority records. dnslib parses every record a header announces: 680
# questions of 6 bytes (a name pointer each) fit in one 4 KiB datagram and cost ~2.4 ms of the
# server's one core, ~40 ms in a 64 KiB TCP frame, so one client at a few hundred packets a
# second starved every other. As Unbound (worker_check_request) and BIND, more than one
# question is FORMERR, decided from the header before any parsing; so are more other records
# than any query needs.
MAX_OTHER_RECORDS = 4


def too_many_records(wire: bytes) -> bool:
    if len(wire) < 12:
        return False
    qd, an, ns, ar = struct.unpack_from("!4H", wire, 4)
    return bool(qd > 1 or an + ns + ar > MAX_OTHER_RECORDS)


def resolve(wire: bytes, scope: Scope, policy: Policy, *, tcp: bool) -> Outcome:
    """Never raises on any input bytes (fuzzed in tests/unit/test_dns_fuzz.py)."""
    if too_many_records(wire):
        bare = bare_reply(wire, RCODE.FORMERR)  # None for a response: dropped, as below
        return Reply(bare) if bare is not None else None
    try:
        req = DNSRecord.parse(wire)
    except Exception:  # noqa: BLE001 - hostile bytes into a parser: anything it raises = junk
        return None  # aardvark drops what it cannot parse (no FORMERR)
    try:
        return _resolve(req, scope, policy, tcp)
    except UNPACKABLE:
        bare = bare_reply(wire, RCODE.FORMERR)  # parsed, but not a name any reply can carry
        return Reply(bare) if bare is not None else None


def local_name(labels: tuple[bytes, ...]) -> str | None:
    """The name a container may be known by, as the config holds it (lower-cased, dots between
    labels): container names and network aliases may hold dots (`web.v1`, `api.example.test`),
    and aardvark looks the whole name up. A label holding a '.' byte is another name than the
    dotted one it would print as, so it matches none."""
    if not labels or any(b"." in x for x in labels):
        return None
    return ".".join(x.decode("latin-1") for x in labels)


def _resolve(req: DNSRecord, scope: Scope, policy: Policy, tcp: bool) -> Outcome:
    if req.header.qr:
        return None  # a response sent to us: answering it could start a reflection loop
    opt = _opt(req) if req.ar else None  # no OPT (musl's queries) costs this one test
    if req.header.opcode != OPCODE.QUERY:
        return _finish(req, RCODE.NOTIMP, [], tcp, opt)
    if not req.questions:
        return _finish(req, RCODE.FORMERR, [], tcp, opt)
    if opt is not None and opt.ttl & VERSION_BITS:
        return _badvers(req, opt, tcp)  # before any forwarding: we are the responder
    q = req.questions[0]  # like aardvark, only the first question counts
    labels = tuple(x.lower() for x in q.qname.label)
    qtype = q.qtype

    if qtype == QTYPE.PTR:
        ip = reverse_ip(labels)
        found = scope.view.reverse.get(ip) if ip is not None else None
        if found:
            rrs = [RR(q.qname, QTYPE.PTR, ttl=TTL, rdata=PTR(n + ".")) for n in found]
            return _finish(req, RCODE.NOERROR, rrs, tcp, opt)

    sd = policy.search_domain
    in_search_domain = bool(sd) and labels[-len(sd):] == sd
    local = labels[: -len(sd)] if in_search_domain else labels
    name = local_name(local)
    records = scope.view.names.get(name) if name is not None else None
    if records is not None:
        if qtype == QTYPE.A:
            rrs = [RR(q.qname, QTYPE.A, ttl=TTL, rdata=A(ip)) for ip in records[0]]
        elif qtype == QTYPE.AAAA:
            rrs = [RR(q.qname, QTYPE.AAAA, ttl=TTL, rdata=AAAA(ip)) for ip in records[1]]
        else:
            rrs = []  # known name, no record of this type: empty NOERROR
        return _finish(req, RCODE.NOERROR, rrs, tcp, opt)

    if in_search_domain or not scope.may_forward or policy.no_proxy:
        return _finish(req, RCODE.NXDOMAIN, [], tcp, opt)
    return Forward(scope.upstreams)

"""The fast path: packed replies cached per (scope, query bytes after the id).

Why this is exact: between two reloads a local reply is a pure function of the requester's
scope and of every query byte except the 2-byte id (flags, question with its case, EDNS).
So the key is `(scope, wire[2:])` and a hit is `wire[:2] + cached` — no parsing at all.
Decisions to forward are cached too (as `FORWARD`), so a forwarded name skips dnslib as well.

The cache belongs to one table: a reload builds a new table with an empty cache and swaps
both through one reference, which is the invalidation.
"""

from __future__ import annotations

from netns.dns.table import Scope

TYPE_CHECKING = False  # typing costs milliseconds at start-up, which is benchmarked
if TYPE_CHECKING:
    from typing import Final

FORWARD: Final = b""  # sentinel: a real cached body is never empty (a header alone is 10 bytes)
MAX_ENTRIES = 65536  # random names (or a fuzzer) must not grow memory without bound
# Queries are a few dozen bytes (a 253-byte name with EDNS and a cookie stays under 300); a
# client padding each one to 4 KiB must not make the cache hold 65,536 x 4 KiB of keys.
MAX_CACHED_QUERY = 512


class ReplyCache:
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple[Scope, bytes], bytes] = {}

    def get(self, scope: Scope, wire: bytes) -> bytes | None:
        return self.entries.get((scope, wire[2:]))

    def put(self, scope: Scope, wire: bytes, reply: bytes | None) -> None:
        """`reply` None caches a forward decision. Oversized queries are not cached."""
        if len(wire) > MAX_CACHED_QUERY:
            return
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()  # cheap and rare; the working set refills in a few queries
        self.entries[(scope, wire[2:])] = FORWARD if reply is None else reply[2:]


def patch(wire: bytes, body: bytes) -> bytes:
    """The cached reply with the request's transaction id."""
    return wire[:2] + body


def question_end(wire: bytes) -> int:
    """Offset just past the first question, or 12 if it cannot be walked cheaply (a pointer in
    the name, or a packet that ends before the question does)."""
    i = 12
    size = len(wire)
    while i < size:
        n = wire[i]
        if n == 0:
            return i + 5 if i + 5 <= size else 12
        if n & 0xC0:
            return 12
        i += n + 1
    return 12


def bare_reply(wire: bytes, rcode: int) -> bytes | None:
    """A reply carrying only `rcode` and the query's own question bytes, or None (too short to
    be a query, or a response). Built from the raw bytes, never re-packed: a name that a
    parser accepted but that no packer would (a label over 63 or a name over 255 bytes) still
    gets its answer, and nothing here can raise on hostile input."""
    if len(wire) < 12 or wire[2] & 0x80:
        return None
    end = question_end(wire) if wire[4:6] != b"\x00\x00" else 12
    rd = wire[2] & 0x01
    flags = bytes((0x80 | (wire[2] & 0x79), (rd << 7) | (wire[3] & 0x30) | (rcode & 0x0F)))
    if end == 12:
        return wire[:2] + flags + bytes(8)
    opt = _opt_echo(wire, end)
    counts = b"\x00\x01" + bytes(4) + (b"\x00\x01" if opt else b"\x00\x00")
    return wire[:2] + flags + counts + wire[12:end] + opt


def _opt_echo(wire: bytes, end: int) -> bytes:
    """The query's OPT record (root owner, type 41, right after the question when the query
    has no other records), echoed with its size, version and DO bit but without options, as
    the resolver does; empty when there is none."""
    opt = wire[end : end + 11]
    if wire[6:10] != bytes(4) or len(opt) < 11 or opt[:3] != b"\x00\x00\x29":
        return b""
    return opt[:5] + bytes((opt[5], opt[6], opt[7] & 0x80, 0)) + b"\x00\x00"

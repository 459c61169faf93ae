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


class ReplyCache:
    __slots__ = ("entries",)

    def __init__(self) -> None:
        self.entries: dict[tuple[Scope, bytes], bytes] = {}

    def get(self, scope: Scope, wire: bytes) -> bytes | None:
        return self.entries.get((scope, wire[2:]))

    def put(self, scope: Scope, wire: bytes, reply: bytes | None) -> None:
        """`reply` None caches a forward decision."""
        if len(self.entries) >= MAX_ENTRIES:
            self.entries.clear()  # cheap and rare; the working set refills in a few queries
        self.entries[(scope, wire[2:])] = FORWARD if reply is None else reply[2:]


def patch(wire: bytes, body: bytes) -> bytes:
    """The cached reply with the request's transaction id."""
    return wire[:2] + body

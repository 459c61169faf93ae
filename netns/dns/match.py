"""Whether an upstream's message answers the query we sent (RFC 5452 §9.1), from raw bytes.

A forwarded reply is relayed verbatim, so what we accept is what the client believes. The
transport already gave two checks (the socket the query left from, connected to the server's
address and port; the id in flight on it, netns/dns/udpool.py); here is the third: the reply
is a response (QR set) with exactly one question, whose name equals ours ignoring ASCII case
(RFC 4343; servers echo the case we sent, but need not) and whose type and class equal ours
byte for byte. Anything else is dropped by the caller, counted, and the query goes on waiting
for its real answer: a forged reply must never end it early.

Nothing here can raise on any bytes (fuzzed in tests/unit/test_dns_match.py).
"""

from __future__ import annotations

from netns.dns.fastpath import question_end

# Why a reply was dropped, as counted in the stats file (limits.Stats.reply_dropped):
UNKNOWN_ID = "unknown_id"  # no query of that id in flight on that socket (or a late answer)
NOT_A_REPLY = "not_a_reply"  # shorter than a header and our question, or QR clear
WRONG_QUESTION = "wrong_question"  # not exactly one question, or not ours
DROP_KINDS = (UNKNOWN_ID, NOT_A_REPLY, WRONG_QUESTION)


def question(wire: bytes) -> tuple[bytes, bytes] | None:
    """The query's only question as (name lower-cased, type + class), or None when it cannot
    be walked cheaply (a pointer in the name, a truncated packet, not exactly one question).
    Such a query is never forwarded: no reply could be matched to it."""
    if len(wire) < 12 or wire[4:6] != b"\x00\x01":
        return None
    end = question_end(wire)
    if end == 12:
        return None
    # Label lengths are below 64 and so below b"A": lower() touches only the labels' letters.
    # Type and class are numbers: lower-casing them would make type 65 (HTTPS) equal type 97.
    return wire[12 : end - 4].lower(), wire[end - 4 : end]


def mismatch(reply: bytes, name: bytes, tc: bytes) -> str | None:
    """None if `reply` is a response whose one question is (`name`, `tc`), else why not."""
    end = 12 + len(name)
    if len(reply) < end + 4 or not reply[2] & 0x80:
        return NOT_A_REPLY
    if reply[4:6] != b"\x00\x01" or reply[end : end + 4] != tc or reply[12:end].lower() != name:
        return WRONG_QUESTION
    return None


def stray(message: bytes) -> str:
    """Why a message with no query of its id in flight is dropped."""
    return NOT_A_REPLY if len(message) < 12 else UNKNOWN_ID

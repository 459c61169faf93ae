"""Two O(1) questions to nf_tables over a raw netlink socket, which libnftables can't answer
without fetching the whole ruleset first (its cache: ~25 ms at 2,000 rules, growing with N):

- `table_handle(table)`: the table's handle (a table made again gets another one);
- `next_handle(table)`: the table's handle counter, read by adding and deleting a probe chain
  in one transaction with NLM_F_ECHO (the table never shows the chain; its counter moves by 1).

The kernel gives every chain, rule and set of a table the next value of one per-table counter,
in the order a batch's messages come. So a batch of R rule adds read between two probes that
are exactly R + 1 apart got the R handles in between, in its own order, and nobody else's
(any other allocation in between would widen the gap): the nftables backend learns its rules'
handles without the `nft --echo` that costs the full ruleset fetch.

Only the netlink framing is here (no expression encoding: libnftables still builds the rules).
Used in-process only (a socket binds to the netns current at its creation, as libnftables'
does; one is kept per netns).
"""

from __future__ import annotations

import os
import socket
import struct
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

NETLINK_NETFILTER = 12
NFNL_SUBSYS_NFTABLES = 10
NFNL_MSG_BATCH_BEGIN, NFNL_MSG_BATCH_END = 0x10, 0x11
NFT_MSG_GETTABLE, NFT_MSG_NEWRULE, NFT_MSG_DELRULE, NFT_MSG_NEWGEN = 1, 6, 8, 15
NFNLGRP_NFTABLES = 7  # the multicast group of nf_tables' change notifications
SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NETLINK_DROP_MEMBERSHIP = 270, 1, 2
NFTA_TABLE_NAME, NFTA_TABLE_HANDLE = 1, 4
NFTA_RULE_TABLE, NFTA_RULE_CHAIN, NFTA_RULE_HANDLE, NFTA_RULE_ID = 1, 2, 3, 9
NLM_F_REQUEST, NLM_F_ACK, NLM_F_ECHO, NLM_F_CREATE, NLM_F_APPEND = 0x1, 0x4, 0x8, 0x400, 0x800
NLMSG_ERROR, NLMSG_DONE = 2, 3
NFPROTO_INET, NFPROTO_IPV4, NFPROTO_IPV6 = 1, 2, 10
TIMEOUT = 5.0


class NfnlError(Exception):
    """The kernel refused a request, or the socket failed (callers fall back to listing)."""


def _attr(kind: int, payload: bytes) -> bytes:
    body = struct.pack("=HH", 4 + len(payload), kind) + payload
    return body + b"\0" * (-len(body) % 4)


def _str(kind: int, value: str) -> bytes:
    return _attr(kind, value.encode() + b"\0")


def _attrs(data: bytes) -> Iterator[tuple[int, bytes]]:
    off = 0
    while off + 4 <= len(data):
        length, kind = struct.unpack_from("=HH", data, off)
        if length < 4:
            return
        yield kind & 0x3FFF, data[off + 4:off + length]
        off += (length + 3) & ~3


def _parse(buf: bytes, out: list[tuple[int, bytes]]) -> int:
    """Append the messages of one datagram to `out`; return how many acks it held."""
    acks, off = 0, 0
    while off + 16 <= len(buf):
        length, kind = struct.unpack_from("=IH", buf, off)
        if length < 16:
            break
        body = buf[off + 16:off + length]
        off += (length + 3) & ~3
        if kind == NLMSG_ERROR:
            (code,) = struct.unpack_from("=i", body)
            if code:
                raise NfnlError(f"nfnetlink: {os.strerror(-code)}")
            acks += 1
        elif kind == NLMSG_DONE:
            acks += 1
        else:
            out.append((kind, body))
    return acks



def _drain(sock: socket.socket) -> list[tuple[int, bytes]]:
    """Every queued message (type, body), without waiting."""
    out: list[tuple[int, bytes]] = []
    while True:
        try:
            buf = sock.recv(65536)
        except BlockingIOError:
            return out
        off = 0
        while off + 16 <= len(buf):
            length, kind = struct.unpack_from("=IH", buf, off)
            if length < 16:
                break
            out.append((kind, buf[off + 16:off + length]))
            off += (length + 3) & ~3


def netns_key() -> tuple[int, int]:
    """The current thread's network namespace (what a netlink socket binds to at creation)."""
    st = os.stat("/proc/thread-self/ns/net")
    return st.st_dev, st.st_ino


@dataclass(frozen=True)
class Note:
    """One nf_tables notification: a rule added (table, chain, handle), or a transaction's
    end (`gen`: one per commit, after the notes of its changes)."""

    gen: bool
    family: int = 0
    table: str = ""
    chain: str = ""
    handle: int = 0


def _note(kind: int, body: bytes) -> Note | None:
    if kind == (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWGEN:
        return Note(True)
    if kind != (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE or len(body) < 4:
        return None  # chains, sets, deletions: none of them allocate a rule to count
    attrs = dict(_attrs(body[4:]))
    handle = attrs.get(NFTA_RULE_HANDLE, b"")
    return Note(False, body[0], attrs.get(NFTA_RULE_TABLE, b"").rstrip(b"\0").decode(),
                attrs.get(NFTA_RULE_CHAIN, b"").rstrip(b"\0").decode(),
                int(struct.unpack(">Q", handle)[0]) if len(handle) == 8 else 0)


class Nfnl:
    """Requests on one socket per network namespace, kept open (a few at most).

    Kept, because closing a netfilter netlink socket after a transaction that deleted
    anything waits for the kernel's deferred release (an RCU grace period, ~13 ms here:
    nf_tables' NETLINK_URELEASE handler flushes it); libnftables' contexts are kept alike."""

    MAX_SOCKETS = 4

    def __init__(self, family: int = NFPROTO_INET) -> None:
        self.family = family
        self.seq = 0
        self.socks: OrderedDict[tuple[int, int], socket.socket] = OrderedDict()
        self.watchers: OrderedDict[tuple[int, int], socket.socket] = OrderedDict()

    def _sock(self, pool: OrderedDict[tuple[int, int], socket.socket] | None = None
              ) -> socket.socket:
        pool = self.socks if pool is None else pool
        key = netns_key()
        sock = pool.pop(key, None)
        if sock is None:
            sock = socket.socket(socket.AF_NETLINK, socket.SOCK_RAW, NETLINK_NETFILTER)
            sock.settimeout(TIMEOUT)
            sock.bind((0, 0))
        pool[key] = sock
        while len(pool) > self.MAX_SOCKETS:
            pool.popitem(last=False)[1].close()
        return sock

    def watch(self) -> socket.socket:
        """Start collecting nf_tables' change notifications in this netns (a socket of its
        own, kept; it joins the group only until `notes`)."""
        try:
            sock = self._sock(self.watchers)
            sock.setblocking(False)  # only ever drained of what is queued
            _drain(sock)  # nothing of an earlier window
            sock.setsockopt(SOL_NETLINK, NETLINK_ADD_MEMBERSHIP, NFNLGRP_NFTABLES)
            return sock
        except OSError as exc:
            self.watchers.pop(netns_key(), None)
            raise NfnlError(f"nfnetlink: watch: {exc.strerror or exc}") from exc

    def notes(self, sock: socket.socket) -> list[Note]:
        """What changed since `watch` (the kernel queues a commit's notifications before the
        committing call returns). NfnlError if any were lost (the socket's buffer overran)."""
        try:
            sock.setsockopt(SOL_NETLINK, NETLINK_DROP_MEMBERSHIP, NFNLGRP_NFTABLES)
            return [n for kind, body in _drain(sock) if (n := _note(kind, body)) is not None]
        except OSError as exc:
            self.watchers.pop(netns_key(), None)
            sock.close()
            raise NfnlError(f"nfnetlink: notifications: {exc.strerror or exc}") from exc

    def _drop(self) -> None:
        """Forget this netns's socket (after a failure: it may hold stale replies)."""
        sock = self.socks.pop(netns_key(), None)
        if sock is not None:
            sock.close()

    def _msg(self, kind: int, flags: int, family: int, body: bytes, res_id: int = 0) -> bytes:
        self.seq += 1
        payload = struct.pack("=BBH", family, 0, socket.htons(res_id)) + body
        return struct.pack("=IHHII", 16 + len(payload), kind, flags, self.seq, 0) + payload

    def _exchange(self, data: bytes, want: int, echo: int = 0) -> list[tuple[int, bytes]]:
        """Send; collect (type, body) of replies until `want` acks came back (and a message
        of type `echo`, when given: a notification may come before or after the acks)."""
        try:
            sock = self._sock()
            sock.send(data)
            out: list[tuple[int, bytes]] = []
            while want > 0 or (echo and not any(k == echo for k, _ in out)):
                want -= _parse(sock.recv(65536), out)
            return out
        except OSError as exc:
            self._drop()
            raise NfnlError(f"nfnetlink: {exc.strerror or exc}") from exc
        except NfnlError:
            self._drop()  # the rest of this exchange's replies may still be queued
            raise


    def table_handle(self, table: str, family: int | None = None) -> int | None:
        """The handle of `<family> <table>` (inet unless given); None if there is none."""
        kind = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_GETTABLE
        req = self._msg(kind, NLM_F_REQUEST | NLM_F_ACK, family or self.family,
                        _str(NFTA_TABLE_NAME, table))
        try:
            replies = self._exchange(req, 1)
        except NfnlError as exc:
            if "No such file" in str(exc):
                return None
            raise
        for k, body in replies:
            if k == kind - NFT_MSG_GETTABLE:  # NEWTABLE is the reply's type
                for a, value in _attrs(body[4:]):
                    if a == NFTA_TABLE_HANDLE and len(value) == 8:
                        return int(struct.unpack(">Q", value)[0])
        raise NfnlError(f"nfnetlink: no handle in the reply for table {table!r}")

    def next_handle(self, table: str, chain: str, family: int | None = None) -> int:
        """The handle the table gave a probe rule (no expressions) that the same transaction
        adds to `chain` and deletes again (by its batch id): nothing ever sees it."""
        fam = family or self.family
        newrule = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_NEWRULE
        delrule = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE
        where = _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, chain)
        rid = _attr(NFTA_RULE_ID, struct.pack(">I", 1))
        data = b"".join([
            self._msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, b"", NFNL_SUBSYS_NFTABLES),
            self._msg(newrule, NLM_F_REQUEST | NLM_F_CREATE | NLM_F_APPEND | NLM_F_ECHO
                      | NLM_F_ACK, fam, where + rid),
            self._msg(delrule, NLM_F_REQUEST | NLM_F_ACK, fam, where + rid),
            self._msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, b"", NFNL_SUBSYS_NFTABLES),
        ])
        for k, body in self._exchange(data, 2, echo=newrule):
            if k == newrule:
                value = dict(_attrs(body[4:])).get(NFTA_RULE_HANDLE, b"")
                if len(value) == 8:
                    return int(struct.unpack(">Q", value)[0])
        raise NfnlError(f"nfnetlink: the probe rule's echo did not come ({table}/{chain})")

    def delete_rules(self, rules: Sequence[tuple[int, str, str, int]]) -> None:
        """Delete rules by (family, table, chain, handle) in one transaction: all or none.

        The kernel finds each by its handle within its chain; no rule is listed. A rule that
        is gone fails the whole transaction (NfnlError), so nothing else changes."""
        delrule = (NFNL_SUBSYS_NFTABLES << 8) | NFT_MSG_DELRULE
        msgs = [self._msg(NFNL_MSG_BATCH_BEGIN, NLM_F_REQUEST, 0, b"", NFNL_SUBSYS_NFTABLES)]
        for family, table, chain, handle in rules:
            if not table or not chain or handle <= 0:
                # Without a chain the kernel would delete every rule of the table.
                raise NfnlError(f"nfnetlink: refusing to delete {table}/{chain} handle {handle}")
            where = _str(NFTA_RULE_TABLE, table) + _str(NFTA_RULE_CHAIN, chain)
            msgs.append(self._msg(delrule, NLM_F_REQUEST | NLM_F_ACK, family,
                                  where + _attr(NFTA_RULE_HANDLE, struct.pack(">Q", handle))))
        msgs.append(self._msg(NFNL_MSG_BATCH_END, NLM_F_REQUEST, 0, b"", NFNL_SUBSYS_NFTABLES))
        if len(msgs) > 2:
            self._exchange(b"".join(msgs), len(msgs) - 2)

"""Neighbour (ARP / NDP) entries over raw rtnetlink, several in one datagram.

Why (issue 15): a new container's first packet to its gateway needs the gateway's MAC, and the
gateway's reply the container's. Resolving them is a broadcast ARP request or a multicast
neighbour solicitation, which the bridge floods to all N ports: N veth deliveries queued on the
CPU ahead of the answer, so "setup returns -> the name resolves" grew with N. Setup instead
writes both entries (netns/plan.py `SeedNeighbours`): the MACs are known there.

Entries are written NUD_STALE, never PERMANENT: the kernel uses a STALE entry at once, then
(DELAY, after delay_first_probe_time) checks it with unicast probes to that MAC, so a wrong
one heals itself and no check floods. `replace` overwrites what an earlier holder of the
address left.

Each batch is one send: the kernel's netlink_rcv_skb takes every message of a datagram in turn
and acks each one (NLM_F_ACK), so k entries cost one system call and one round trip.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
import struct
from collections.abc import Sequence

from netns.linkdump import (
    IFINFOMSG,
    NLMSG_ERROR,
    NLMSGHDR,
    RTATTR,
    RTM_GETLINK,
    RTM_NEWLINK,
    error_code,
    replies,
)

RTM_NEWNEIGH, RTM_DELNEIGH = 28, 29
NLM_F_REQUEST, NLM_F_ACK = 0x1, 0x4
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NUD_STALE = 0x04
NDA_DST, NDA_LLADDR = 1, 2
IFLA_ADDRESS = 1
NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
MAX_BATCH = 64  # a container has a handful of addresses; the cap keeps a datagram small

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


def mac_bytes(mac: str) -> bytes:
    """"aa:bb:cc:dd:ee:ff" -> 6 bytes; ValueError for anything else."""
    raw = bytes.fromhex(mac.replace(":", ""))
    if len(raw) != 6 or mac.count(":") != 5:
        raise ValueError(f"not an Ethernet MAC address: {mac!r}")
    return raw


def _attr(kind: int, payload: bytes) -> bytes:
    size = RTATTR.size + len(payload)
    return RTATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _ndmsg(ip: Address, index: int, state: int) -> bytes:
    family = socket.AF_INET6 if ip.version == 6 else socket.AF_INET
    return NDMSG.pack(family, index, state, 0, 0) + _attr(NDA_DST, ip.packed)


def replace(sock: socket.socket, index: int, entries: Sequence[tuple[Address, bytes]]
            ) -> list[tuple[Address, int]]:
    """`ip neigh replace IP lladdr MAC dev INDEX nud stale` for each entry, in one datagram.
    Returns the entries the kernel refused, with their errno (OSError: the socket failed)."""
    msgs = [(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE,
             _ndmsg(ip, index, NUD_STALE) + _attr(NDA_LLADDR, mac)) for ip, mac in entries]
    codes = batch(sock, msgs)
    return [(ip, code) for (ip, _), code in zip(entries, codes, strict=True) if code]


def delete(sock: socket.socket, index: int, ips: Sequence[Address]) -> list[tuple[Address, int]]:
    """`ip neigh del IP dev INDEX` for each, in one datagram; an entry already gone (ENOENT)
    is not an error. Returns the others the kernel refused, with their errno."""
    codes = batch(sock, [(RTM_DELNEIGH, 0, _ndmsg(ip, index, 0)) for ip in ips])
    return [(ip, code) for ip, code in zip(ips, codes, strict=True) if code not in (0, errno.ENOENT)]


def batch(sock: socket.socket, msgs: Sequence[tuple[int, int, bytes]]) -> list[int]:
    """Send (type, flags, body) requests in one datagram, each acked; their errnos (0: done)."""
    if not msgs:
        return []
    if len(msgs) > MAX_BATCH:
        raise ValueError(f"{len(msgs)} neighbour requests in one batch (at most {MAX_BATCH})")
    base = int.from_bytes(os.urandom(4), "little") & 0x7FFFFFFF
    out = b"".join(
        NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | NLM_F_ACK | flags,
                      base + i, 0) + body
        for i, (kind, flags, body) in enumerate(msgs))
    sock.send(out)
    codes: dict[int, int] = {}
    buf = bytearray(1 << 16)
    while len(codes) < len(msgs):
        n = sock.recv_into(buf)
        off = 0
        while off + NLMSGHDR.size <= n:
            length, kind, _flags, seq, _pid = NLMSGHDR.unpack_from(buf, off)
            if length < NLMSGHDR.size or off + length > n:
                raise OSError(errno.EPROTO, "truncated rtnetlink reply")
            if kind == NLMSG_ERROR and 0 <= seq - base < len(msgs):
                codes[seq - base] = error_code(buf, off)
            off += (length + 3) & ~3
    return [codes[i] for i in range(len(msgs))]



def link_address(sock: socket.socket, index: int) -> bytes:
    """The link's hardware address, read now (RTM_GETLINK by index, only IFLA_ADDRESS decoded).
    A bridge without a MAC of its own (one not made by burrow) takes its lowest port's, so it
    may have changed when the container's port joined."""
    body = IFINFOMSG.pack(0, 0, index, 0, 0)
    for kind, buf, off, length in replies(sock, RTM_GETLINK, 0, body):
        if kind == NLMSG_ERROR:
            code = error_code(buf, off)
            raise OSError(code or errno.EPROTO, f"link {index}: {os.strerror(code)}")
        if kind == RTM_NEWLINK:
            pos, end = off + NLMSGHDR.size + IFINFOMSG.size, off + length
            while pos + RTATTR.size <= end:
                alen, atype = RTATTR.unpack_from(buf, pos)
                if alen < RTATTR.size:
                    break
                if atype == IFLA_ADDRESS:
                    return bytes(buf[pos + RTATTR.size : pos + alen])
                pos += (alen + 3) & ~3
            raise OSError(errno.EPROTO, f"link {index} has no hardware address")
    raise AssertionError("unreachable: replies() never ends")  # pragma: no cover

"""A bridge's ports, from one rtnetlink dump read without decoding it.

Teardown asks "is this the last port of the bridge?". Every container's host-side veth is a port
of its network's bridge, so the answer lists N links; pyroute2 decodes every attribute of every
one of them (~0.6 ms each here), which made each teardown grow with the number of containers
(scripts/bench scale). Only the index and IFLA_MASTER are needed: the headers are read with
struct, nothing else is decoded.

Reading all N answers still costs the kernel a full link message per port (and us the bytes),
while the question needs at most two: with `limit`, reading stops as soon as that many ports
are known. The kernel fills a dump's datagrams only as they are read, so an unfinished dump
costs it a datagram or two whatever N is; the socket is then left mid-dump (a netlink socket
runs one dump at a time) and must be closed.
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from collections.abc import Iterator

NETLINK_ROUTE = 0
RTM_NEWLINK, RTM_GETLINK = 16, 18
NLMSG_ERROR, NLMSG_DONE = 2, 3
NLM_F_REQUEST, NLM_F_DUMP = 0x1, 0x300
IFLA_MASTER, IFLA_LINKINFO, IFLA_GROUP = 10, 18, 27
IFLA_INFO_KIND = 1
NLMSGHDR = struct.Struct("=IHHII")  # len, type, flags, seq, pid
IFINFOMSG = struct.Struct("=BxHiII")  # family, type, index, flags, change
RTATTR = struct.Struct("=HH")
_U32 = struct.Struct("=I")
_S32 = struct.Struct("=i")
_HDR = NLMSGHDR.size + IFINFOMSG.size


def open_socket() -> socket.socket:
    """An rtnetlink socket in the calling thread's netns (make it where the links are)."""
    return socket.socket(socket.AF_NETLINK, socket.SOCK_RAW | socket.SOCK_CLOEXEC, NETLINK_ROUTE)


def bridge_ports(sock: socket.socket, bridge: int, limit: int | None = None) -> list[int]:
    """Indexes of the links whose master is `bridge`. The request carries IFLA_MASTER, so the
    kernel sends the ports alone; each reply's master is checked again here, which also covers
    a kernel that ignores the filter.

    With `limit`, returns as soon as `limit` ports are known: a list that long may be partial,
    and then the dump is unfinished and `sock` must be closed (see `finished`)."""
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + RTATTR.pack(8, IFLA_MASTER) + _U32.pack(bridge)
    ports: list[int] = []
    for buf, off, length in _links(sock, body):
        if _master(buf, off + _HDR, off + length) == bridge:
            ports.append(IFINFOMSG.unpack_from(buf, off + NLMSGHDR.size)[2])
            if limit is not None and len(ports) >= limit:
                break
    return ports


def group_bridges(sock: socket.socket, group: int) -> list[int]:
    """Indexes of the bridges in device group `group`. The request asks for kind "bridge",
    so the kernel sends the bridges alone (a few, whatever the number of ports); a kernel that
    ignores the filter sends every link, and a port of the group then counts too."""
    kind = b"bridge\0"
    info = RTATTR.pack(RTATTR.size + len(kind), IFLA_INFO_KIND) + kind + bytes(-len(kind) % 4)
    body = IFINFOMSG.pack(0, 0, 0, 0, 0) + RTATTR.pack(RTATTR.size + len(info), IFLA_LINKINFO) + info
    return [IFINFOMSG.unpack_from(buf, off + NLMSGHDR.size)[2]
            for buf, off, length in _links(sock, body)
            if _u32_attr(buf, off + _HDR, off + length, IFLA_GROUP) == group]


def _links(sock: socket.socket, body: bytes) -> Iterator[tuple[bytearray, int, int]]:
    """(buffer, offset, length) of each link message of an RTM_GETLINK dump with `body`, to
    its end; an error reply is raised. A caller that stops early leaves the dump unfinished
    on `sock` (see `finished`)."""
    for kind, buf, off, length in replies(sock, RTM_GETLINK, NLM_F_DUMP, body):
        if kind == NLMSG_DONE:
            return
        if kind == NLMSG_ERROR:
            code = error_code(buf, off)
            if code:
                raise OSError(code, f"link dump: {os.strerror(code)}")
        elif kind == RTM_NEWLINK and length >= _HDR:
            yield buf, off, length


def replies(sock: socket.socket, kind: int, flags: int, body: bytes
            ) -> Iterator[tuple[int, bytearray, int, int]]:
    """Send one rtnetlink request; yield (type, buffer, offset, length) of each answer to it,
    in order, for as long as the caller reads (it stops at NLMSG_DONE, an ack or what it
    wanted). The buffer is reused by the next datagram: read a message before moving on."""
    seq = int.from_bytes(os.urandom(4), "little")
    sock.send(NLMSGHDR.pack(NLMSGHDR.size + len(body), kind, NLM_F_REQUEST | flags, seq, 0) + body)
    buf = bytearray(1 << 17)
    while True:
        n = sock.recv_into(buf)
        off = 0
        while off + NLMSGHDR.size <= n:
            length, rkind, _flags, rseq, _pid = NLMSGHDR.unpack_from(buf, off)
            if length < NLMSGHDR.size or off + length > n:
                raise OSError(errno.EPROTO, "truncated rtnetlink reply")
            if rseq == seq:
                yield rkind, buf, off, length
            off += (length + 3) & ~3


def error_code(buf: bytearray, off: int) -> int:
    """The errno of an NLMSG_ERROR message at `off` (0: an ack)."""
    return -int(_S32.unpack_from(buf, off + NLMSGHDR.size)[0])


def finished(ports: list[int], limit: int | None) -> bool:
    """Whether `bridge_ports` read its dump to the end (else its socket is mid-dump)."""
    return limit is None or len(ports) < limit


def _master(buf: bytearray, off: int, end: int) -> int | None:
    return _u32_attr(buf, off, end, IFLA_MASTER)


def _u32_attr(buf: bytearray, off: int, end: int, want: int) -> int | None:
    while off + RTATTR.size <= end:
        alen, atype = RTATTR.unpack_from(buf, off)
        if alen < RTATTR.size:
            return None
        if atype == want and alen >= 8:
            return int(_U32.unpack_from(buf, off + 4)[0])
        off += (alen + 3) & ~3
    return None

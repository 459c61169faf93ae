"""UDP to one upstream server through a small pool of connected sockets (RFC 5452 §9.2, §10).

Why not one socket per server: besides the 16-bit id, the source port is all an off-path
attacker must guess to have a forged answer accepted and relayed to a container (Kaminsky).
One socket for the server's whole life fixes that port; whoever learns it once (one query seen
leaving, a port scan) then has 65,536 ids to try, forever. So each server gets at most
`Limits.udp_pool` sockets, each bound by the kernel to a random ephemeral port when connected;
every query leaves from one of them picked at random, with an id random and unique among that
socket's queries in flight; a socket is retired after `udp_socket_queries` queries or
`udp_socket_seconds`, or as soon as anything but an answer arrives on it (whoever sent that
may know the port), and closed once its last query is answered or has timed out. Each is an
fd: one server's sockets, retired ones still draining included, stay under `udp_pool_total`
(a silent server must not take every fd), and all servers' under `udp_sockets_total`. At a
cap a due socket stays in use instead of being replaced; a server with none at all takes an
idle socket of another server, and is skipped (counted) only if there is none.

Ids and the socket picks come from os.urandom, never from `random`: that is a Mersenne
Twister, whose next outputs anyone can compute from enough earlier ones, and a container may
name its own upstream server, which then sees every id it is sent.

A reply is accepted only on the socket its query left from (connected: the kernel drops
datagrams from any other address or port), with the id in flight there, and with the query's
question (netns/dns/match.py). Anything else is dropped and counted, and the query keeps
waiting for its real answer.
"""

from __future__ import annotations

import array
import errno
import functools
import os
import socket
import time
from collections.abc import Iterator

from netns.dns import match

TYPE_CHECKING = False  # typing costs milliseconds at start-up, which is benchmarked
if TYPE_CHECKING:
    from typing import Any

    from netns.dns.upstream import Forwarder, _Query

SWEEP = 0.05  # seconds: the resolution of query timeouts and of closing idle sockets
MAX_IN_FLIGHT = 60000  # per socket: ids must stay unique among the 65,536


def sockaddr(server: str, kind: int) -> tuple[int, Any]:
    info = socket.getaddrinfo(server, 53, type=kind, flags=socket.AI_NUMERICHOST)[0]
    return info[0], info[4]


class Entropy:
    """Unpredictable numbers below 2**32, read from os.urandom 8 KiB at a time (one syscall
    per 2,048 queries instead of one per query; iterating an array is the cheapest draw)."""

    __slots__ = ("draw",)

    def __init__(self) -> None:
        self.draw: Iterator[int] = iter(())

    def u32(self) -> int:
        value = next(self.draw, -1)
        if value < 0:
            self.draw = iter(array.array("I", os.urandom(8192)))
            value = next(self.draw)
        return value


class Port:
    """One connected socket: its queries in flight by id, and how long it may still serve."""

    __slots__ = ("sock", "fd", "pending", "left", "until", "retired")

    def __init__(self, sock: socket.socket, left: int, until: float) -> None:
        self.sock = sock
        self.fd = sock.fileno()
        self.pending: dict[int, _Query] = {}
        self.left = left  # queries it may still send
        self.until = until  # monotonic time it is due for retirement
        self.retired = False


class UdpPool:
    """The sockets to one upstream server (dropped from the forwarder once it has none)."""

    def __init__(self, fwd: Forwarder, server: str) -> None:
        self.fwd = fwd
        self.server = server
        self.family, self.addr = sockaddr(server, socket.SOCK_DGRAM)
        self.slots: list[Port | None] = [None] * fwd.limits.udp_pool
        self.retired: dict[Port, None] = {}  # replaced, still waiting for answers
        self.sweeping = False

    def send(self, q: _Query) -> None:
        """Send `q` from a random socket of the pool, or raise OSError (try the next server)."""
        rnd = self.fwd.entropy.u32
        now = time.monotonic()
        r = rnd()
        slot = (r >> 16) % len(self.slots)
        port = self.slots[slot]
        if port is None or port.left <= 0 or port.until <= now:
            port = self._renew(slot, now)
        pending = port.pending
        if len(pending) >= MAX_IN_FLIGHT:
            raise OSError(errno.ENOBUFS, "too many queries in flight")
        qid = r & 0xFFFF
        while qid in pending:
            qid = rnd() & 0xFFFF
        port.sock.send(qid.to_bytes(2, "big") + q.wire[2:])
        port.left -= 1
        q.qid = qid
        q.deadline = now + q.slice
        pending[qid] = q
        if not self.sweeping:
            self.sweeping = True
            self.fwd.loop.call_later(SWEEP, self._sweep)

    def _renew(self, slot: int, now: float) -> Port:
        """A fresh socket for `slot`, retiring the one there. At this pool's cap, or at the cap
        of all pools (or out of fds), the due one stays, or another of this pool serves; a
        pool with none at all takes an idle socket of another pool, else OSError (shed)."""
        old = self.slots[slot]
        fwd = self.fwd
        lim = fwd.limits
        spare = old or next((p for p in self.slots if p is not None), None)
        held = len(self.slots) - self.slots.count(None) + len(self.retired)
        if spare is not None and (held >= lim.udp_pool_total
                                  or fwd.udp_sockets >= lim.udp_sockets_total):
            return spare
        if fwd.udp_sockets >= lim.udp_sockets_total and not fwd.reclaim_idle():
            fwd.stats.shed("udp_sockets_total", self.server)
            raise OSError(errno.ENOBUFS, "udp_sockets_total")
        try:
            sock = socket.socket(self.family, socket.SOCK_DGRAM | socket.SOCK_NONBLOCK
                                 | socket.SOCK_CLOEXEC)
        except OSError:
            if spare is not None:
                return spare  # out of fds: the old socket serves on
            raise
        port = Port(sock, lim.udp_socket_queries, now + lim.udp_socket_seconds)
        try:
            sock.connect(self.addr)  # binds a random ephemeral port; filters the replies
            fwd.loop.add(port.fd, functools.partial(self._read, port))
        except OSError:
            sock.close()
            raise
        fwd.udp_sockets += 1
        self.slots[slot] = port
        if old is not None:
            self._retire(old)
        return port

    def close_one_idle(self) -> bool:
        """Close one socket with nothing in flight (another pool needs the fd)."""
        for i, p in enumerate(self.slots):
            if p is not None and not p.pending:
                self.slots[i] = None
                self._close(p)
                return True
        return False

    def _retire(self, port: Port) -> None:
        if port.pending:
            port.retired = True
            self.retired[port] = None
        else:
            self._close(port)

    def _close(self, port: Port) -> None:
        self.retired.pop(port, None)
        self.fwd.loop.forget(port.fd)  # ours alone: closing takes it out of the epoll set
        port.sock.close()
        port.fd = -1
        self.fwd.udp_sockets -= 1

    def _read(self, port: Port, events: int) -> None:
        pending = port.pending
        recv = port.sock.recv
        for _ in range(64):
            try:
                data = recv(65535)
            except BlockingIOError:
                break
            except OSError:
                # ICMP unreachable on the connected socket (or closed under us): nobody
                # listens there, so its queries move on now rather than at their timeout.
                failed = list(pending.values())
                pending.clear()
                for q in failed:
                    self.fwd.next_udp(q)
                break
            got = pending.get(int.from_bytes(data[:2], "big")) if len(data) >= 12 else None
            if got is None:
                self._stray(port, match.stray(data))
                continue
            why = match.mismatch(data, got.name, got.tc)
            if why is not None:
                self._stray(port, why)
                continue
            del pending[got.qid]
            got.done(got.wire[:2] + data[2:])
            if port.fd < 0:
                return  # answering that client closed this socket (a sweep of another pool)
        if port.retired and not pending and port.fd >= 0:
            self._close(port)

    def _stray(self, port: Port, why: str) -> None:
        """Forged, stray or late: dropped, and the query it may claim to answer still waits.
        Whoever sent it may know this port now, so no new query leaves from it (RFC 5452
        §9.2: a wrong guess should cost the attacker the port it found)."""
        self.fwd.stats.reply_dropped(why, self.server)
        port.left = 0

    def _sweep(self) -> None:
        # One periodic sweep instead of a timer per query: an answered query then leaves no
        # garbage behind, and the cyclic GC has nothing long-lived to walk (p99 latency).
        now = time.monotonic()
        ports = [p for p in self.slots if p is not None] + list(self.retired)
        expired: list[_Query] = []
        for port in ports:
            gone = [q for q in port.pending.values() if q.deadline <= now]
            for q in gone:
                del port.pending[q.qid]
            expired += gone
        for i, p in enumerate(self.slots):
            if p is not None and not p.pending and (p.left <= 0 or p.until <= now):
                self.slots[i] = None  # idle and due: its port goes with it
                self._close(p)
        for p in list(self.retired):
            if not p.pending:
                self._close(p)
        # Only now, with the sockets they held closed if idle, do they try their next server:
        # at the fd cap, that server's pool may need one of them.
        for q in expired:
            self.fwd.next_udp(q)
        if self.retired or any(p is not None for p in self.slots):
            self.fwd.loop.call_later(SWEEP, self._sweep)
        else:
            self.sweeping = False
            self.fwd.pool_empty(self)

    def close(self) -> None:
        for p in [p for p in self.slots if p is not None] + list(self.retired):
            self._close(p)
        self.slots = [None] * len(self.slots)

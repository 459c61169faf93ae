"""Forwarding names that are not ours, keeping the client's transport.

Servers are tried one after another (the container's own, else its networks', else the host's
resolv.conf, chosen by the resolver/server); each attempt gets `timeout / len(servers)` so a
dead first server still leaves time for a good one (aardvark HEAD). The first reply of any
rcode is relayed verbatim with the client's id restored. When every server failed the caller
gets None and answers SERVFAIL: unlike aardvark, the client is never left to time out.

UDP goes through a small pool of connected sockets per upstream whose source ports change
every few queries (netns/dns/udpool.py: aardvark 1.4 built a socket and a client per query,
which is what capped its forwarded rate; one socket for good would give the port away); TCP
opens one connection per query. Either way a reply counts only if it carries the id we sent
and our question (netns/dns/match.py); anything else is dropped, counted, and waited past.
"""

from __future__ import annotations

import errno
import ipaddress
import os
import socket
from collections.abc import Callable

from netns.dns import match
from netns.dns.fastpath import question_end
from netns.dns.limits import Limits, Stats
from netns.dns.udpool import Entropy, UdpPool, sockaddr
from netns.loop import IN, OUT, Loop

__all__ = ["Forwarder", "HostResolvers", "parse_resolv_conf", "question_end"]

RESOLV_CONF_ENV = "BURROW_DNS_RESOLV_CONF"  # tests point this at their own file
TIMEOUT_ENV = "BURROW_DNS_UPSTREAM_TIMEOUT"
MAX_STRAY_FRAMES = 8  # frames that answer nothing before a TCP upstream counts as failed
DEFAULT_TIMEOUT = 4.0  # total per query: below the 5 s clients wait, so SERVFAIL arrives in time
MAX_RESOLV_SERVERS = 3

Deliver = Callable[[bytes | None], None]  # reply with the client's id, or None: all failed


def parse_resolv_conf(text: str) -> tuple[str, ...]:
    out: list[str] = []
    for line in text.splitlines():
        fields = line.split()
        if len(fields) >= 2 and fields[0] == "nameserver":
            try:
                ipaddress.ip_address(fields[1])  # accepts a %zone on link-local IPv6
            except ValueError:
                continue
            out.append(fields[1])
    return tuple(out[:MAX_RESOLV_SERVERS])


class HostResolvers:
    """The host's nameservers, re-read whenever resolv.conf changes (stat is cheaper than
    inotify plumbing and is only paid on forwards that have no configured servers)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self._stamp: tuple[int, int, int] | None = None
        self._servers: tuple[str, ...] = ()

    def servers(self) -> tuple[str, ...]:
        try:
            st = os.stat(self.path)
        except OSError:
            self._stamp, self._servers = None, ()
            return ()
        stamp = (st.st_ino, st.st_mtime_ns, st.st_size)
        if stamp != self._stamp:
            try:
                with open(self.path, encoding="utf-8", errors="replace") as f:
                    self._servers = parse_resolv_conf(f.read())
            except OSError:
                self._servers = ()
            self._stamp = stamp
        return self._servers


class _Query:
    __slots__ = ("fwd", "client", "tcp", "wire", "name", "tc", "servers", "index", "deliver",
                 "deadline", "qid", "slice")

    def __init__(self, fwd: Forwarder, client: str, tcp: bool, wire: bytes,
                 servers: tuple[str, ...], deliver: Deliver) -> None:
        self.fwd = fwd
        self.client = client
        self.tcp = tcp
        self.wire = wire
        asked = match.question(wire)
        # A question we cannot walk is never sent: no answer could be matched to it.
        self.name, self.tc = asked if asked is not None else (b"", b"")
        self.servers = servers if asked is not None else ()
        self.index = 0
        self.deliver = deliver
        self.deadline = 0.0
        self.qid = 0
        self.slice = fwd.timeout / max(1, len(servers))

    def done(self, reply: bytes | None) -> None:
        """The one exit of every query: give its slot back, then answer the client."""
        self.fwd.release(self)
        try:
            self.deliver(reply)
        except Exception as exc:  # noqa: BLE001 - one client's answer never stops a sweep
            self.fwd.stats.fault("forward reply", exc)


class _TcpAttempt:
    """One query over one TCP connection: connect, send the frame, read framed messages until
    one answers it (same id, same question; others are dropped and counted) or time is up."""

    def __init__(self, fwd: Forwarder, q: _Query, server: str) -> None:
        family, addr = sockaddr(server, socket.SOCK_STREAM)
        self.fwd, self.q, self.server = fwd, q, server
        self.sock = socket.socket(family, socket.SOCK_STREAM | socket.SOCK_NONBLOCK)
        self.buf = bytearray()
        self.strays = 0
        self.qid = fwd.entropy.u32() & 0xFFFF
        self.out = len(q.wire).to_bytes(2, "big") + self.qid.to_bytes(2, "big") + q.wire[2:]
        err = self.sock.connect_ex(addr)
        if err not in (0, errno.EINPROGRESS):
            self.sock.close()
            raise OSError(err, os.strerror(err))
        fwd.loop.add(self.sock.fileno(), self._on_event, OUT)
        self.timer = fwd.loop.call_later(q.slice, self._fail)

    def _close(self) -> None:
        self.timer.cancel()
        self.fwd.loop.remove(self.sock.fileno())
        self.sock.close()

    def _fail(self) -> None:
        self._close()
        self.fwd.next_tcp(self.q)

    def _on_event(self, events: int) -> None:
        try:
            if self.out:
                err = self.sock.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
                if err:
                    raise OSError(err, os.strerror(err))
                sent = self.sock.send(self.out)
                self.out = self.out[sent:]
                if not self.out:
                    self.fwd.loop.modify(self.sock.fileno(), IN)
                return
            chunk = self.sock.recv(65537)
        except BlockingIOError:
            return
        except OSError:
            self._fail()
            return
        if not chunk:
            self._fail()
            return
        self.buf += chunk
        self._frames()

    def _frames(self) -> None:
        """Take each whole frame off the buffer (so it never holds more than one frame and a
        read); the first that answers the query ends the attempt. Only the server (or whoever
        is inside its connection) can send frames here, so a stream of frames that answer
        nothing is a broken or hostile server: past MAX_STRAY_FRAMES it is failed, or it could
        keep the loop parsing tiny frames until the attempt's timeout."""
        buf, q = self.buf, self.q
        while len(buf) >= 2 and len(buf) >= 2 + int.from_bytes(buf[:2], "big"):
            size = int.from_bytes(buf[:2], "big")
            reply = bytes(buf[2 : 2 + size])
            del buf[: 2 + size]
            ours = size >= 12 and int.from_bytes(reply[:2], "big") == self.qid
            why = match.mismatch(reply, q.name, q.tc) if ours else match.stray(reply)
            if why is not None:
                self.fwd.stats.reply_dropped(why, self.server)
                self.strays += 1
                if self.strays > MAX_STRAY_FRAMES:
                    self._fail()
                    return
                continue
            self._close()
            q.done(q.wire[:2] + reply[2:])
            return


class Forwarder:
    """Upstream queries in flight, capped per client and in total (limits.Limits)."""

    def __init__(self, loop: Loop, timeout: float = DEFAULT_TIMEOUT, limits: Limits | None = None,
                 stats: Stats | None = None) -> None:
        self.loop = loop
        self.timeout = timeout
        self.limits = limits or Limits()
        self.stats = stats or Stats(None, self.limits)
        self.own: frozenset[str] = frozenset()  # our own listen IPs: never forward to ourselves
        self._udp: dict[str, UdpPool] = {}
        self.udp_sockets = 0  # open in all pools, capped by limits.udp_sockets_total
        self.entropy = Entropy()
        self.pending = 0
        self.tcp_pending = 0
        self.per_client: dict[str, int] = {}

    def forward(self, wire: bytes, servers: tuple[str, ...], deliver: Deliver, tcp: bool,
                client: str = "") -> bool:
        """Start forwarding, or shed the query (counted) and return False: `deliver` is then
        never called, and the caller decides what the client gets."""
        lim = self.limits
        held = self.per_client.get(client, 0)
        if held >= lim.pending_per_client:
            self.stats.shed("pending_per_client", client)
            return False
        if self.pending >= lim.pending_total:
            self.stats.shed("pending_total", client)
            return False
        if tcp and self.tcp_pending >= lim.tcp_upstream_total:
            self.stats.shed("tcp_upstream_total", client)
            return False
        self.per_client[client] = held + 1
        self.pending += 1
        self.tcp_pending += tcp
        servers = tuple(s for s in servers if s not in self.own)
        q = _Query(self, client, tcp, wire, servers, deliver)
        if tcp:
            self.next_tcp(q)
        else:
            self.next_udp(q)
        return True

    def release(self, q: _Query) -> None:
        self.pending -= 1
        self.tcp_pending -= q.tcp
        left = self.per_client[q.client] - 1
        if left:
            self.per_client[q.client] = left
        else:
            del self.per_client[q.client]

    def next_udp(self, q: _Query) -> None:
        while q.index < len(q.servers):
            server = q.servers[q.index]
            q.index += 1
            try:
                pool = self._udp.get(server)
                if pool is None:
                    pool = self._udp[server] = UdpPool(self, server)
                pool.send(q)
                return
            except OSError:
                continue
        q.done(None)

    def reclaim_idle(self) -> bool:
        """Close one upstream socket with nothing in flight, for a pool that has none."""
        return any(pool.close_one_idle() for pool in list(self._udp.values()))

    def pool_empty(self, pool: UdpPool) -> None:
        """A pool with no socket left is forgotten: servers once asked hold nothing."""
        if self._udp.get(pool.server) is pool:
            del self._udp[pool.server]

    def close(self) -> None:
        for pool in list(self._udp.values()):
            pool.close()
        self._udp.clear()

    def next_tcp(self, q: _Query) -> None:
        while q.index < len(q.servers):
            server = q.servers[q.index]
            q.index += 1
            try:
                _TcpAttempt(self, q, server)
                return
            except OSError:
                continue
        q.done(None)

"""TCP: accept on the host, dial into the sandbox, splice both ways.

One connection costs 2 fds while it dials and 6 once it pumps (two sockets, two pipes); the
budget caps how many a client and all clients may hold, and a client over a cap is reset at
once (RST, not FIN) and counted. Established connections are never shed for newcomers: they
carry state their users care about, a refused newcomer can retry.
"""

from __future__ import annotations

import errno
import select
import socket
from dataclasses import dataclass
from functools import partial

from netns.loop import Loop
from rootless.ports.budget import OUT_OF_FDS, Guard, Tally
from rootless.ports.budget import reset as rst
from rootless.ports.clientaddr import Plan
from rootless.ports.pool import DialerPool
from rootless.ports.splice import BigPipes, Pipe, pump
from rootless.ports.target import Listener

ET = select.EPOLLET
RDHUP = select.EPOLLRDHUP
RW = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | ET
# Edge-triggered: data to read on a socket feeds its outbound pipe, room to write drains the
# pipe into it. Pumping only the direction an event concerns saves failed splices.
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
FAILED = select.EPOLLHUP | select.EPOLLERR
SPARE_PIPE_PAIRS = 16
# Errors after which the other address family may still answer (a server bound to one family).
TRY_OTHER_FAMILY = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                              errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


@dataclass(slots=True, eq=False)
class TcpConn:
    a: socket.socket  # client (host side)
    client: str
    netns: str
    port: int
    candidates: list[Plan]
    b: socket.socket | None = None  # backend (in the sandbox, or bound to the client's address)
    connected: bool = False
    watching_a: bool = False
    closed: bool = False
    early_a: int = 0  # the client side's events while the dial was still connecting
    ab: Pipe | None = None
    ba: Pipe | None = None


class TcpProxy:
    def __init__(self, loop: Loop, pool: DialerPool, guard: Guard) -> None:
        self.loop, self.pool, self.guard = loop, pool, guard
        self.conns = Tally()  # every connection, dialling or pumping
        self.dials = Tally()  # connections not yet connected to the sandbox
        self.by_netns: dict[str, set[TcpConn]] = {}  # every connection, by netns (drop_netns)
        # Empty pipes of finished connections kept for the next ones; none at a low fd limit.
        self.big = BigPipes(spare=min(SPARE_PIPE_PAIRS, guard.fd_limit // 256))

    def listen(self, lst: Listener) -> None:
        self.loop.add(lst.sock.fileno(), partial(self._on_accept, lst))

    def _on_accept(self, lst: Listener, ev: int) -> None:
        """One connection per wakeup: the listener is level-triggered, so the loop comes back
        for the next one, and an accept that would only fail with EAGAIN is never made."""
        while True:
            try:
                a, addr = lst.sock.accept()
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ECONNABORTED:
                    continue
                if e.errno in OUT_OF_FDS and self.guard.out_of_fds(lst.sock, self.conns.total):
                    continue
                return
            self._admit(lst, a, addr)
            return

    def _admit(self, lst: Listener, a: socket.socket, addr: tuple[str, int]) -> None:
        client, v4 = self.guard.client_of(addr[0])
        if not self.guard.admit_tcp(self.conns, self.dials, client):
            rst(a)
            return
        a.setblocking(False)
        plans = lst.target.plans(addr[0], addr[1], v4, lst.spec.keep_client, self.pool.avail,
                                 tcp=True)
        conn = TcpConn(a, client, lst.target.netns, lst.ctr_port, plans)
        self.by_netns.setdefault(conn.netns, set()).add(conn)
        self.conns.add(client)
        self.dials.add(client)
        self._dial_next(conn)

    def _dial_next(self, c: TcpConn) -> None:
        if not c.candidates:
            self._close(c, reset=True)
            return
        p = c.candidates.pop(0)
        self.pool.get((p.netns, p.family, "tcp", p.mode), partial(self._dial, c, p))

    def _dial(self, c: TcpConn, p: Plan, b: socket.socket | None) -> None:
        if c.closed:
            if b is not None:
                b.close()
            return
        if b is None:
            if p.fallback is not None:  # no transparent socket: the next way to dial
                c.candidates.insert(0, p.fallback)
            else:  # no socket for this family (the dialer failed): try the other one
                self.guard.shed.dial_failed += not c.candidates
            self._dial_next(c)
            return
        if p.fallback is not None and not self.pool.avail.bind(b, p.bind):
            b.close()  # the client's address cannot be bound: the next way to dial
            c.candidates.insert(0, p.fallback)
            self._dial_next(c)
            return
        # TCP_NODELAY: the dialer set it on b, and a has it from its listener (inherited).
        err = b.connect_ex((p.ip, c.port))  # no exception for the usual EINPROGRESS
        if err == 0:
            c.connected = True
        elif err != errno.EINPROGRESS:
            b.close()
            self._retry(c, err)
            return
        c.b = b
        self.loop.add(b.fileno(), partial(self._on_conn, c, False), RW)
        if not c.watching_a:
            self.loop.add(c.a.fileno(), partial(self._on_conn, c, True), RW)
            c.watching_a = True
        if c.connected:  # at once (rare): anything may be waiting on either side
            self.dials.drop(c.client)
            self._pump(c, b, READABLE | WRITABLE, READABLE | WRITABLE)

    def _retry(self, c: TcpConn, err: int | None) -> None:
        """The dial failed: the other family if the server may be listening there, else RST."""
        if err in TRY_OTHER_FAMILY and c.candidates:
            self._dial_next(c)
        else:
            self._close(c, reset=True)

    def _connect_done(self, c: TcpConn, b: socket.socket, ev: int) -> bool:
        """On the dial's first events: connected (writable, no error), failed, or not yet."""
        if not ev & WRITABLE:
            return False  # still connecting
        # A failed connect always reports EPOLLERR (with HUP): only then is there an error
        # to fetch, a getsockopt saved on every connection that works.
        err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ev & FAILED else 0
        if err:
            self.loop.remove(b.fileno())
            b.close()
            c.b = None
            self._retry(c, err)
            return False
        c.connected = True
        self.dials.drop(c.client)
        return True

    def _on_conn(self, c: TcpConn, client_side: bool, ev: int) -> None:
        """Edge-triggered events of either socket: pump the directions they concern."""
        b = c.b
        if b is None or c.closed:
            if client_side:
                c.early_a |= ev
            return
        if client_side:
            ev_a, ev_b = ev, 0
        else:
            ev_a, ev_b = 0, ev
        if not c.connected:
            if client_side:
                c.early_a |= ev  # kept until the dial connects: edges are not repeated
                return
            if not self._connect_done(c, b, ev):
                return
            ev_a = c.early_a
        self._pump(c, b, ev_a, ev_b)

    def _pump(self, c: TcpConn, b: socket.socket, ev_a: int, ev_b: int) -> None:
        if c.ab is None:
            try:
                c.ab, c.ba = self.big.pair()
            except OSError:  # out of fds: this client is refused, the others go on
                self.guard.shed.out_of_fds += 1
                self._close(c, reset=True)
                return
        ab, ba = c.ab, c.ba
        assert ba is not None
        try:
            # Room to write matters only to a pipe stalled on it: epoll reports EPOLLOUT
            # alongside nearly every EPOLLIN, and a blind read would just fail with EAGAIN.
            if ev_a & READABLE or ev_b & WRITABLE and ab.pending:
                pump(c.a, b, ab, self.big, ev_a & RDHUP)
            if ev_b & READABLE or ev_a & WRITABLE and ba.pending:
                pump(b, c.a, ba, self.big, ev_b & RDHUP)
        except OSError:
            self._close(c, reset=True)
            return
        if ab.done and ba.done:
            self._close(c, reuse=True)

    def drop_netns(self, netns: str) -> None:
        """Reset every connection into netns: its sandbox is gone, and their sockets there
        would keep its namespace alive for as long as their clients keep them open."""
        for c in list(self.by_netns.pop(netns, ())):
            self._close(c, reset=True)

    def _close(self, c: TcpConn, reset: bool = False, reuse: bool = False) -> None:
        """reuse: both directions finished cleanly, so the pipes are empty and may serve the
        next connection (saves two pipe2 and four close per connection)."""
        if c.closed:
            return
        c.closed = True
        live = self.by_netns.get(c.netns)
        if live is not None:
            live.discard(c)
        if not c.connected:
            self.dials.drop(c.client)
        self.conns.drop(c.client)
        for s in (c.a, c.b):
            if s is None or s.fileno() < 0:
                continue
            # Closing takes the socket out of the epoll set (no one else holds it): no
            # EPOLL_CTL_DEL needed, only the handler goes.
            self.loop.forget(s.fileno())
            if reset:
                rst(s)
            else:
                s.close()
        for p in (c.ab, c.ba):
            if p is not None:
                self.big.release(p, reuse)
        c.ab = c.ba = None


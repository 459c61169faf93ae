"""TCP: accept on the host, dial into the sandbox, splice both ways.

One connection costs 2 fds while it dials and 6 once it pumps (two sockets, two pipes); the
budget caps how many a client and all clients may hold, and a client over a cap is reset at
once (RST, not FIN) and counted. Established connections are never shed for newcomers: they
carry state their users care about, a refused newcomer can retry.
"""

from __future__ import annotations

import _socket
import errno
import select
import socket
from functools import partial

from netns.loop import Loop
from rootless.ports import recycle
from rootless.ports.budget import OUT_OF_FDS, Guard, Tally, client_of
from rootless.ports.budget import reset as rst
from rootless.ports.clientaddr import Plan
from rootless.ports.pool import DialerPool, RecycleKey
from rootless.ports.splice import BigPipes, Pipe, copy_one, pump
from rootless.ports.target import Listener

ET = select.EPOLLET
RDHUP = select.EPOLLRDHUP
RW = select.EPOLLIN | select.EPOLLOUT | select.EPOLLRDHUP | ET
A_EVENTS = select.EPOLLIN | select.EPOLLRDHUP | ET  # the client side, until it is slow
# The dial side too: no EPOLLOUT until a pipe towards it holds bytes or the client spoke before
# the dial was known to be connected. Its connect completes inside connect() on this host's
# loopback and veths, and the server's first bytes (or the client's, relayed at once) show
# it; an EPOLLOUT edge for it was a wakeup of its own whenever the server had not answered
# yet by the next poll (on_b, connect_done and a pump for nothing). A failed connect still
# wakes us: EPOLLERR and EPOLLHUP are always reported.
B_EVENTS = A_EVENTS
# Edge-triggered: data to read on a socket feeds its outbound pipe, room to write drains the
# pipe into it. Pumping only the direction an event concerns saves failed splices.
READABLE = select.EPOLLIN | select.EPOLLRDHUP | select.EPOLLHUP | select.EPOLLERR
WRITABLE = select.EPOLLOUT | select.EPOLLHUP | select.EPOLLERR
FAILED = select.EPOLLHUP | select.EPOLLERR
ERR = select.EPOLLERR
OUT = select.EPOLLOUT
IO = select.EPOLLIN | select.EPOLLOUT
IN = select.EPOLLIN
STREAM = int(socket.SOCK_STREAM)
SPARE_PIPE_PAIRS = 16
REFUSED_STEP = 0.005  # seconds more before each new try of a refused dial (refused_retries)
# Errors after which the other address family may still answer (a server bound to one family).
TRY_OTHER_FAMILY = frozenset({errno.ECONNREFUSED, errno.ENETUNREACH, errno.EHOSTUNREACH,
                              errno.EADDRNOTAVAIL, errno.EAFNOSUPPORT})


class TcpConn:
    """One connection. Its handlers are its own bound methods, given to the loop as they are:
    no functools.partial and no dispatch on which side an event is for (the hot path runs
    once per event, several times per connection)."""

    __slots__ = ("proxy", "a", "client", "netns", "port", "candidates", "b", "connected", "closed",
                 "watching_a", "early_a", "out_a", "out_b", "ab", "ba", "key", "plans",
                 "tries")

    def __init__(self, proxy: TcpProxy, a: socket.socket, client: str, netns: str, port: int,
                 candidates: list[Plan]) -> None:
        self.proxy = proxy
        self.a = a  # client (host side)
        self.client = client
        self.netns = netns
        self.port = port
        self.candidates = candidates
        # What a refused dial starts again from (TcpProxy.retry): a copy, as dials pop.
        self.plans = tuple(candidates) if proxy.refused_retries else ()
        self.tries = 0
        self.b: socket.socket | None = None  # backend (in the sandbox, or bound to the client)
        self.connected = False
        self.closed = False
        self.watching_a = False
        self.early_a = 0  # the client side's events while the dial was still connecting
        self.out_a = False  # the client side is watched for room to write (EPOLLOUT)
        self.out_b = False  # the dial side is (B_EVENTS: not until it is needed)
        self.ab: Pipe | None = None
        self.ba: Pipe | None = None
        # The pool key of b, when b goes back to its pool after a clean end (a plain dial
        # socket, or one bound to its client's address only: rootless.ports.recycle).
        self.key: RecycleKey | None = None

    # The common event, a message in copy mode, goes straight to splice's copy_one: the general
    # pump is two more calls and a dozen tests per event (~1 us a round trip: two events).
    # Fast only if nothing else is due: no FIN or error on the event, this direction in copy
    # mode with its pipe empty, and nothing held the other way (that needs EPOLLOUT handled).
    # What copy_one leaves undone (a FIN, a full socket, a bulk flow) the general pump then goes
    # on with, from the pipe's state, as its own loop would have.

    def on_a(self, ev: int) -> None:
        ab, ba = self.ab, self.ba
        if (ev | OUT == IO and ab is not None and ba is not None and not ba.pending
                and not (ab.pending or ab.eof or ab.bulk)):
            try:
                if copy_one(self.a, self.b, ab, self.proxy.big, 0):  # type: ignore[arg-type]
                    return
            except OSError:
                self.proxy.broken(self)
                return
        if self.connected:
            self.proxy.pump(self, ev, 0)
        else:
            self.early_a |= ev  # kept until the dial connects: edges are not repeated
            self.probe()

    def probe(self) -> None:
        """The client spoke (or left) before the dial's connect was seen, as it does where
        the client speaks first: the connect has most likely completed inside connect()
        already, and a send of nothing says so (0), or that it is still going (EAGAIN: then
        EPOLLOUT on the dial socket reports it), or how it failed (its error)."""
        b = self.b
        if b is None or self.closed:
            return  # no dial socket yet: _dial probes once it has one
        try:
            b.send(b"")
        except BlockingIOError:
            if not self.out_b:
                self.watch_out_b()
            return
        except OSError as e:
            self.dial_failed(e.errno)
            return
        self.connected = True
        self.proxy.dials.drop(self.client)
        self.proxy.pump(self, self.early_a, 0)

    def dial_failed(self, err: int | None) -> None:
        """The dial socket failed to connect with err: closed, and the next way tried."""
        b = self.b
        if b is not None:
            self.proxy.loop.remove(b.fileno())
            b.close()
            self.b = None
        self.proxy.retry(self, err)

    def watch_out_b(self) -> None:
        """EPOLLOUT on the dial socket from now on (it may go back to its pool with it: an
        edge it then raises is one wakeup, as before B_EVENTS)."""
        b = self.b
        if b is not None:
            self.out_b = True
            self.proxy.loop.modify(b.fileno(), RW)

    def on_b(self, ev: int) -> None:
        ab, ba = self.ab, self.ba
        if (ev | OUT == IO and ab is not None and ba is not None and not ab.pending
                and not (ba.pending or ba.eof or ba.bulk)):
            try:
                if copy_one(self.b, self.a, ba, self.proxy.big, 0):  # type: ignore[arg-type]
                    return
            except OSError:
                self.proxy.broken(self)
                return
        if self.connected:
            self.proxy.pump(self, 0, ev)
        elif not self.closed and self.proxy.connect_done(self, ev):
            self.proxy.pump(self, self.early_a, ev)


class TcpProxy:
    def __init__(self, loop: Loop, pool: DialerPool, guard: Guard, refused_retries: int = 0) -> None:
        """refused_retries: how often a dial the sandbox refused is made again, the n-th after
        (n - 1) x 5 ms, before the client is reset (burrow-rootlessport: upstream's 9, so a
        server that is (re)starting gets ~180 ms, as with Podman's rootlessport)."""
        self.loop, self.pool, self.guard = loop, pool, guard
        self.refused_retries = refused_retries
        self.conns = Tally()  # every connection, dialling or pumping
        self.dials = Tally()  # connections not yet connected to the sandbox
        self.by_netns: dict[str, set[TcpConn]] = {}  # every connection, by netns (drop_netns)
        # Empty pipes of finished connections kept for the next ones; none at a low fd limit.
        self.big = BigPipes(spare=min(SPARE_PIPE_PAIRS, guard.fd_limit // 256))
        self.returned: list[tuple[RecycleKey, socket.socket]] = []  # for _give_back
        pool.tcp_events = B_EVENTS

    def listen(self, lst: Listener) -> None:
        self.loop.add(lst.sock.fileno(), partial(self._on_accept, lst, int(lst.sock.family)))

    def _on_accept(self, lst: Listener, family: int, ev: int) -> None:
        """One connection per wakeup: the listener is level-triggered, so the loop comes back
        for the next one, and an accept that would only fail with EAGAIN is never made.
        Measured (scripts/profile_tcp_path.py, batch of 64 until EAGAIN vs one): no gain with
        8 clients side by side (0.98x conn/s), a failed accept4 and its exception lost on
        every connection of a sequential client (0.78x, noisy)."""
        sock = lst.sock
        while True:
            try:
                # socket.accept() without its Python layer: it asks for the listener's family
                # and type through two enum conversions and wraps the fd in socket.py's class,
                # ~3 us a connection (measured) for nothing the proxy uses.
                fd, addr = sock._accept()  # type: ignore[attr-defined]
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                if e.errno == errno.ECONNABORTED:
                    continue
                if e.errno in OUT_OF_FDS and self.guard.out_of_fds(sock, self.conns.total):
                    continue
                return
            # The C socket type socket.socket derives from: every method the proxy calls on
            # `a` (recv_into, send, shutdown, setsockopt, fileno, close) is its own.
            a: socket.socket = _socket.socket(family, STREAM, 0, fd)  # type: ignore[assignment]
            self._admit(lst, a, addr)
            return

    def _admit(self, lst: Listener, a: socket.socket, addr: tuple[str, int]) -> None:
        host = addr[0]
        client, v4 = client_of(host)
        if not self.guard.admit_tcp(self.conns, self.dials, client):
            rst(a)
            return
        a.setblocking(False)
        target = lst.target
        c = TcpConn(self, a, client, target.netns, lst.ctr_port,
                    target.plans(host, addr[1] if lst.spec.client_port else 0, v4,
                                 lst.spec.keep_client, self.pool.avail, tcp=True))
        live = self.by_netns.get(target.netns)
        if live is None:
            live = self.by_netns[target.netns] = set()
        live.add(c)
        self.conns.add(client)
        self.dials.add(client)
        self._dial_next(c)

    def _dial_next(self, c: TcpConn) -> None:
        if not c.candidates:
            self._close(c, reset=True)
            return
        p = c.candidates.pop(0)
        bound = p.bound_key
        if bound is not None:  # the client's address, not its port
            b = self.pool.take_bound(bound)  # one bound to it before: no bind
            if b is not None:
                self._dial(c, p, b, bound=True)
                return
        b = self.pool.take(p.tcp_key)  # a pooled socket at once, or wait for the dialer
        if b is not None:
            self._dial(c, p, b)
        else:
            self.pool.get(p.tcp_key, partial(self._dial, c, p))

    def _dial(self, c: TcpConn, p: Plan, b: socket.socket | None, bound: bool = False) -> None:
        if c.closed:
            if b is not None:
                b.close()
            return
        c.key = None
        if b is None:
            if p.fallback is not None:  # no transparent socket: the next way to dial
                c.candidates.insert(0, p.fallback)
            else:  # no socket for this family (the dialer failed): try the other one
                self.guard.shed.dial_failed += not c.candidates
            self._dial_next(c)
            return
        if p.fallback is not None and not bound and not self.pool.avail.bind(b, p.bind):
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
            self.retry(c, err)
            return
        c.b = b
        c.key = p.back_key  # a plain socket, or one bound to the client's address only
        c.out_b = False
        self.loop.handle(b.fileno(), c.on_b)  # in the epoll set since the pool had it
        if c.early_a and not c.connected:  # a retry after the client spoke: as on_a does
            c.probe()
        if not c.watching_a:  # the first dial (a retry finds it registered)
            # Not EPOLLOUT yet: a new socket has room, and that edge would only wake us for
            # nothing; watched once the pipe towards the client holds bytes (pump).
            self.loop.add(c.a.fileno(), c.on_a, A_EVENTS)
            c.watching_a = True
        if c.connected:  # at once (rare): anything may be waiting on either side
            self.dials.drop(c.client)
            self.pump(c, READABLE | WRITABLE, READABLE | WRITABLE)

    def retry(self, c: TcpConn, err: int | None) -> None:
        """The dial failed: the other family if the server may be listening there, else RST."""
        if err in TRY_OTHER_FAMILY and c.candidates:
            self._dial_next(c)
        elif err == errno.ECONNREFUSED and c.tries < self.refused_retries:
            c.tries += 1
            c.candidates = list(c.plans)
            self.loop.call_later((c.tries - 1) * REFUSED_STEP, partial(self._redial, c))
        else:
            self._close(c, reset=True)

    def _redial(self, c: TcpConn) -> None:
        if not c.closed:  # the client, or the sandbox (drop_netns), may have gone meanwhile
            self._dial_next(c)

    def connect_done(self, c: TcpConn, ev: int) -> bool:
        """On the dial's first events: connected (readable or writable, no error), failed,
        or not yet."""
        if not ev & (WRITABLE | IN):
            return False  # still connecting
        b = c.b
        assert b is not None
        # A failed connect always reports EPOLLERR (with HUP): only then is there an error
        # to fetch, a getsockopt saved on every connection that works, and on the stale HUP
        # of a pooled socket below (measured: 0.15-0.19 getsockopt a connection).
        err = b.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR) if ev & ERR else 0
        if err:
            c.dial_failed(err)
            return False
        if ev & FAILED:
            # HUP without an error: an unconnected socket's mask, harvested while b still
            # waited in the pool (it is in the epoll set there, pool.py) and delivered in the
            # batch that took it. The dial's own event comes with the next poll.
            return False
        c.connected = True
        self.dials.drop(c.client)
        return True

    def pump(self, c: TcpConn, ev_a: int, ev_b: int) -> None:
        """Move what the events allow, both ways; close when both directions are done."""
        ab, ba = c.ab, c.ba
        if ab is None or ba is None:
            try:
                ab, ba = c.ab, c.ba = self.big.pair()
            except OSError:  # out of fds: this client is refused, the others go on
                self.guard.shed.out_of_fds += 1
                self._close(c, reset=True)
                return
        a, b = c.a, c.b
        assert b is not None
        try:
            # Room to write matters only to a pipe stalled on it: epoll reports EPOLLOUT
            # alongside nearly every EPOLLIN, and a blind read would just fail with EAGAIN.
            if ev_a & READABLE or ev_b & WRITABLE and ab.pending:
                # A socket that may go back to its pool needs its FIN sent and acknowledged
                # before the close (rootless.ports.recycle): no `last` for it.
                pump(a, b, ab, self.big, ev_a & RDHUP, ba.done and c.key is None)
                if ab.pending and not c.out_b:  # the server is slow: wake us when it drains
                    c.watch_out_b()
            if ev_b & READABLE or ev_a & WRITABLE and ba.pending:
                pump(b, a, ba, self.big, ev_b & RDHUP, ab.done)
                if ba.pending and not c.out_a:  # the client is slow: wake us when it drains
                    c.out_a = True
                    self.loop.modify(a.fileno(), RW)
        except OSError:
            self._close(c, reset=True)
            return
        if ab.done and ba.done:
            self._close(c, reuse=True)

    def broken(self, c: TcpConn) -> None:
        """A system call on c failed (reset, broken pipe): c is reset and closed."""
        self._close(c, reset=True)

    def _give_back(self) -> None:
        """Recycled dial sockets back to their pools once the loop's current batch of events
        is done: that batch may still hold an event of the old connection for the socket's
        fd, which a new connection given the socket in the meantime would take for its own."""
        returned, self.returned = self.returned, []
        for key, b in returned:
            if not self.pool.give_back(key, b):
                b.close()

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
        forget = self.loop.forget
        a, b, key = c.a, c.b, c.key
        if reuse and b is not None and key is not None and recycle.disconnect(b):
            forget(b.fileno())  # it stays in the epoll set, without a handler (pool.py)
            if not self.returned:
                self.loop.soon(self._give_back)
            self.returned.append((key, b))
            c.b = b = None
        # Closing takes a socket out of the epoll set (no one else holds it): no
        # EPOLL_CTL_DEL needed, only the handler goes. (-1: closed before, e.g. a failed dial.)
        for s in (a, b):
            if s is None or (fd := s.fileno()) < 0:
                continue
            forget(fd)
            if reset:
                rst(s)
            else:
                s.close()
        ab, ba = c.ab, c.ba
        if ab is not None:
            self.big.release(ab, reuse)
        if ba is not None:
            self.big.release(ba, reuse)
        c.ab = c.ba = None

"""The dialer socket pool: unconnected sockets made inside sandbox netns, handed out by key.

The dialer process (rootless.ports.dialer) sits in the user namespace and creates sockets in
a sandbox's netns on request; a socket keeps the netns it was made in, so the forwarder
connects it itself and no data ever passes through the dialer. A small pool per
(netns, family, kind) hides the round trip; one request per key is in flight at a time.
"""

from __future__ import annotations

import _socket
import json
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable

from netns.errors import BurrowError
from netns.loop import Loop
from rootless.ports import clientaddr, messages, recycle
from rootless.ports.budget import Shed

log = logging.getLogger("rootless.ports")

# (netns path, 4 or 6, "tcp" or "udp", clientaddr mode: PLAIN, or transparent VIA / INSIDE)
SockKey = tuple[str, int, str, str]
# What a finished connection's dial socket goes back under: its SockKey, plus for a
# transparent one bound to its client's address only, that address (rootless.ports.recycle).
RecycleKey = SockKey | recycle.BoundKey
Waiter = Callable[[socket.socket | None], None]
POOL_LOW, POOL_BATCH = 8, 32
POOL_KEEP = POOL_LOW + POOL_BATCH  # sockets given back beyond this many are closed
AF_INET, AF_INET6 = int(socket.AF_INET), int(socket.AF_INET6)
SOCK_STREAM, SOCK_DGRAM = int(socket.SOCK_STREAM), int(socket.SOCK_DGRAM)


class Ticket:
    """A place in the queue for a socket; cancelled when its client is gone (a shed flow)."""

    __slots__ = ("key", "cb", "live")

    def __init__(self, key: SockKey, cb: Waiter) -> None:
        self.key, self.cb, self.live = key, cb, True


class DialerPool:
    def __init__(self, loop: Loop, chan: socket.socket, shed: Shed,
                 on_dead: Callable[[], None], max_pooled: int = 1 << 16) -> None:
        self.loop, self.chan, self.shed, self.on_dead = loop, chan, shed, on_dead
        # Spare sockets held in total: at a low fd limit the pool must not take the fds
        # clients and the control socket need.
        self.max_pooled = max_pooled
        self.pools: dict[SockKey, deque[socket.socket]] = {}
        self.waiting: dict[SockKey, deque[Ticket]] = {}
        self.live_waiting: dict[SockKey, int] = {}  # tickets not cancelled, per key
        self.requests: dict[int, SockKey] = {}
        self.in_flight: set[SockKey] = set()
        self.live: set[str] = set()  # netns with published ports
        self.size = 0  # pooled sockets: fds the forwarder holds for no client yet
        self.next_id = 0
        self.avail = clientaddr.Availability()  # what transparent dials found out
        # Transparent sockets given back, still bound to their client's address: fds held
        # for no client too, so a share of the same cap.
        self.bound = recycle.ByAddress(max(1, min(recycle.TOTAL, max_pooled // 4)))
        # Set by the TCP proxy: every TCP socket is in the loop's epoll set with these events
        # from its arrival on (no handler until a connection takes it), so a connection
        # registers none, and a recycled one stays in the set (2 epoll_ctl fewer each).
        self.tcp_events: int | None = None
        loop.add(chan.fileno(), self._on_reply)

    def get(self, key: SockKey, cb: Waiter) -> Ticket | None:
        """Call cb with a fresh socket for key (now or later), or with None if none comes.

        Returns the ticket to cancel if cb has to wait."""
        if key[0] not in self.live:  # unpublished meanwhile: nothing will ever come
            cb(None)
            return None
        s = self.take(key)
        if s is not None:
            cb(s)
            return None
        t = Ticket(key, cb)
        queue = self.waiting.setdefault(key, deque())
        queue.append(t)
        live = self.live_waiting[key] = self.live_waiting.get(key, 0) + 1
        if len(queue) > 2 * live + 64:  # a flood of cancelled tickets: drop them at once
            self.waiting[key] = deque(x for x in queue if x.live)
        self._refill(key)
        return t

    def take(self, key: SockKey) -> socket.socket | None:
        """A pooled socket for key at once, or None: then `get` waits for the dialer (the
        per-connection path, without a callback when the pool has one)."""
        pool = self.pools.get(key)
        if not pool or key[0] not in self.live:
            return None
        self.size -= 1
        s = pool.popleft()
        if len(pool) < POOL_LOW or self.live_waiting.get(key):
            self._refill(key)
        return s

    def take_bound(self, key: recycle.BoundKey) -> socket.socket | None:
        """A socket given back bound to key's client address, or None."""
        s = self.bound.take(key) if key[0] in self.live else None
        if s is not None:
            self.avail.kept += 1
            self.avail.reused += 1
        return s

    def give_back(self, key: RecycleKey, s: socket.socket) -> bool:
        """A dial socket of key made unconnected again (rootless.ports.recycle): to the first
        client waiting for one, else into the pool; False (the caller closes it) when the
        netns is gone or the pool holds enough."""
        if key[0] not in self.live:
            return False
        if len(key) == 5:  # bound to a client's address: only that address may use it
            return self.bound.put(key, s)
        t = self._next(key)
        if t is not None:
            t.cb(s)
            return True
        pool = self.pools.get(key)
        if pool is None or len(pool) >= POOL_KEEP or self.size >= self.max_pooled:
            return False
        pool.appendleft(s)  # taken next, while its memory is still in the cache
        self.size += 1
        return True

    def cancel(self, t: Ticket) -> None:
        if t.live:
            t.live = False
            self.live_waiting[t.key] -= 1

    def _next(self, key: SockKey) -> Ticket | None:
        """The first live ticket for key, taken off the queue."""
        queue = self.waiting.get(key)
        while queue:
            t = queue.popleft()
            if t.live:
                self.cancel(t)
                return t
        return None

    def _fail(self, key: SockKey) -> None:
        while (t := self._next(key)) is not None:
            t.cb(None)

    def drop_one(self) -> bool:
        """Close one pooled socket (out of fds: a waiting client needs it more)."""
        if self.bound.drop_one():
            return True
        for pool in self.pools.values():
            if pool:
                pool.pop().close()
                self.size -= 1
                return True
        return False

    def open(self, netns: str) -> None:
        self.live.add(netns)

    def warm(self, key: SockKey) -> None:
        """Fill key's pool ahead of the first client (a transparent key: its set-up runs now,
        so a failure shows in `burrow status` before anyone connects)."""
        if not self.pools.get(key):
            self._refill(key)

    def forget(self, netns: str) -> None:
        """Drop the netns: pooled sockets would keep it alive after its sandbox is gone."""
        self.live.discard(netns)
        self.avail.forget(netns)
        self.bound.drop(netns)
        for key in [k for k in self.pools if k[0] == netns]:
            for s in self.pools.pop(key):
                self.size -= 1
                s.close()
        for key in [k for k in self.waiting if k[0] == netns]:
            self._fail(key)
        self._send(messages.Forget(netns))

    def _send(self, msg: messages.Dial | messages.Forget) -> None:
        try:
            self.chan.send(json.dumps(msg.to_json()).encode())
        except OSError as e:
            log.error("the dialer is gone (%s): stopping", e)
            self.on_dead()

    def _refill(self, key: SockKey) -> None:
        """One request in flight per key, for what the waiters need plus a batch to spare."""
        want = self.live_waiting.get(key, 0)
        if key in self.in_flight or key[0] not in self.live:
            return
        # Spares only while the pool may keep them: at its cap (few fds left) a spare would be
        # closed on arrival and asked for again, forever (a busy loop seen out of fds).
        if want or (len(self.pools.get(key, ())) < POOL_LOW and self.size < self.max_pooled):
            self.next_id += 1
            self.requests[self.next_id] = key
            self.in_flight.add(key)
            spare = max(0, min(POOL_BATCH, self.max_pooled - self.size))
            n = max(1, min(messages.MAX_DIAL_BATCH, want + spare))
            self._send(messages.Dial(self.next_id, key[0], key[1], key[2], n,
                                     key[3] != clientaddr.PLAIN, key[3] == clientaddr.INSIDE))

    def _on_reply(self, ev: int) -> None:
        while True:
            try:
                msg, anc, flags, _ = self.chan.recvmsg(
                    4096, socket.CMSG_SPACE(4 * (messages.MAX_DIAL_BATCH + 3)),
                    socket.MSG_DONTWAIT)
            except (BlockingIOError, InterruptedError):
                return
            except OSError as e:
                log.error("dialer channel: %s: stopping", e)
                self.on_dead()
                return
            if not msg:
                self.on_dead()  # the dialer died: the namespace is going
                return
            fds = _received_fds(anc)
            if flags & socket.MSG_CTRUNC:  # out of fds: the kernel dropped the rest
                self.shed.out_of_fds += 1
            try:
                reply = messages.parse_dialer_reply(msg)
            except (ValueError, BurrowError) as e:
                log.error("dialer: bad reply %r: %s", msg[:80], e)
                close_fds(fds)
                self._fail_in_flight()
                continue
            key = self.requests.get(reply.id)
            socks: list[socket.socket] = []
            if key is None:
                close_fds(fds)
            else:  # family and type given: socket() need not ask the kernel (3 syscalls)
                fam = AF_INET6 if key[1] == 6 else AF_INET
                kind = SOCK_DGRAM if key[2] == "udp" else SOCK_STREAM
                # The C type socket.socket derives from: every method the proxies call on a
                # dial socket is its own, without socket.py's Python layer (__init__, close).
                socks = [_socket.socket(fam, kind, 0, fd) for fd in fds]  # type: ignore[misc]
                if kind == SOCK_STREAM and self.tcp_events is not None:
                    for s in socks:
                        self.loop.register(s.fileno(), self.tcp_events)
            self._deliver(reply, socks)

    def _deliver(self, reply: messages.DialReply, socks: list[socket.socket]) -> None:
        key = self.requests.pop(reply.id, None)
        if key is not None:
            self.in_flight.discard(key)
        if key is None or key[0] not in self.live:
            for s in socks:
                s.close()
            return
        if reply.unsupported and reply.error:
            self.avail.fail(key[0], key[1], reply.error, key[3])
        elif reply.error:
            log.warning("dialer: %s", reply.error)
        pool = self.pools.setdefault(key, deque())
        pool.extend(socks)
        self.size += len(socks)
        while pool and (t := self._next(key)) is not None:
            self.size -= 1
            t.cb(pool.popleft())
        while self.size > self.max_pooled and pool:  # more came than may be kept
            self.size -= 1
            pool.pop().close()
        if reply.error or not socks:
            self._fail(key)
        else:
            # A burst can outrun one batch: without this, clients queued after it waited
            # for a socket until some later client came.
            self._refill(key)

    def _fail_in_flight(self) -> None:
        self.requests.clear()
        keys, self.in_flight = self.in_flight, set()
        for key in keys:
            self._fail(key)

    def close(self) -> None:
        for pool in self.pools.values():
            for s in pool:
                s.close()
        self.pools.clear()
        self.size = 0
        self.bound.drop()


def _received_fds(anc: list[tuple[int, int, bytes]]) -> list[int]:
    fds: list[int] = []
    for level, kind, data in anc:
        if level == socket.SOL_SOCKET and kind == socket.SCM_RIGHTS:
            fds += [int.from_bytes(data[i:i + 4], sys.byteorder)
                    for i in range(0, len(data) - len(data) % 4, 4)]
    return fds


def close_fds(fds: list[int]) -> None:
    for fd in fds:
        os.close(fd)

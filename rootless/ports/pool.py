"""The dialer socket pool: unconnected sockets made inside sandbox netns, handed out by key.

The dialer process (rootless.ports.dialer) sits in the user namespace and creates sockets in
a sandbox's netns on request; a socket keeps the netns it was made in, so the forwarder
connects it itself and no data ever passes through the dialer. A small pool per
(netns, family, kind) hides the round trip; one request per key is in flight at a time.
"""

from __future__ import annotations

import json
import logging
import os
import socket
import sys
from collections import deque
from collections.abc import Callable

from netns.errors import BurrowError
from netns.loop import Loop
from rootless.ports import messages
from rootless.ports.budget import Shed

log = logging.getLogger("rootless.ports")

SockKey = tuple[str, int, str]  # (netns path, 4 or 6, "tcp" or "udp")
Waiter = Callable[[socket.socket | None], None]
POOL_LOW, POOL_BATCH = 8, 32


class DialerPool:
    def __init__(self, loop: Loop, chan: socket.socket, shed: Shed,
                 on_dead: Callable[[], None]) -> None:
        self.loop, self.chan, self.shed, self.on_dead = loop, chan, shed, on_dead
        self.pools: dict[SockKey, deque[socket.socket]] = {}
        self.waiting: dict[SockKey, deque[Waiter]] = {}
        self.requests: dict[int, SockKey] = {}
        self.in_flight: set[SockKey] = set()
        self.live: set[str] = set()  # netns with published ports
        self.size = 0  # pooled sockets: fds the forwarder holds for no client yet
        self.next_id = 0
        loop.add(chan.fileno(), self._on_reply)

    def get(self, key: SockKey, cb: Waiter) -> None:
        """Call cb with a fresh socket for key (now or later), or with None if none comes."""
        if key[0] not in self.live:  # unpublished meanwhile: nothing will ever come
            cb(None)
            return
        pool = self.pools.get(key)
        if pool:
            self.size -= 1
            cb(pool.popleft())
        else:
            self.waiting.setdefault(key, deque()).append(cb)
        self._refill(key)

    def drop_one(self) -> bool:
        """Close one pooled socket (out of fds: a waiting client needs it more)."""
        for pool in self.pools.values():
            if pool:
                pool.pop().close()
                self.size -= 1
                return True
        return False

    def open(self, netns: str) -> None:
        self.live.add(netns)

    def forget(self, netns: str) -> None:
        """Drop the netns: pooled sockets would keep it alive after its sandbox is gone."""
        self.live.discard(netns)
        for key in [k for k in self.pools if k[0] == netns]:
            for s in self.pools.pop(key):
                self.size -= 1
                s.close()
        for key in [k for k in self.waiting if k[0] == netns]:
            for cb in self.waiting.pop(key):
                cb(None)
        self._send(messages.Forget(netns))

    def _send(self, msg: messages.Dial | messages.Forget) -> None:
        try:
            self.chan.send(json.dumps(msg.to_json()).encode())
        except OSError as e:
            log.error("the dialer is gone (%s): stopping", e)
            self.on_dead()

    def _refill(self, key: SockKey) -> None:
        """One request in flight per key, for what the waiters need plus a batch to spare."""
        want = len(self.waiting.get(key, ()))
        if key in self.in_flight or key[0] not in self.live:
            return
        if want or len(self.pools.get(key, ())) < POOL_LOW:
            self.next_id += 1
            self.requests[self.next_id] = key
            self.in_flight.add(key)
            n = min(messages.MAX_DIAL_BATCH, want + POOL_BATCH)
            self._send(messages.Dial(self.next_id, key[0], key[1], key[2], n))

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
            socks = [socket.socket(fileno=fd) for fd in fds]
            try:
                reply = messages.parse_dialer_reply(msg)
            except (ValueError, BurrowError) as e:
                log.error("dialer: bad reply %r: %s", msg[:80], e)
                for s in socks:
                    s.close()
                self._fail_in_flight()
                continue
            self._deliver(reply, socks)

    def _deliver(self, reply: messages.DialReply, socks: list[socket.socket]) -> None:
        key = self.requests.pop(reply.id, None)
        if key is not None:
            self.in_flight.discard(key)
        if key is None or key[0] not in self.live:
            for s in socks:
                s.close()
            return
        if reply.error:
            log.warning("dialer: %s", reply.error)
        pool = self.pools.setdefault(key, deque())
        pool.extend(socks)
        self.size += len(socks)
        waiters = self.waiting.get(key, deque())
        while waiters and pool:
            self.size -= 1
            waiters.popleft()(pool.popleft())
        if reply.error or not socks:
            while waiters:
                waiters.popleft()(None)
        else:
            # A burst can outrun one batch: without this, clients queued after it waited
            # for a socket until some later client came.
            self._refill(key)

    def _fail_in_flight(self) -> None:
        self.requests.clear()
        keys, self.in_flight = self.in_flight, set()
        for key in keys:
            for cb in self.waiting.pop(key, deque()):
                cb(None)

    def close(self) -> None:
        for pool in self.pools.values():
            for s in pool:
                s.close()
        self.pools.clear()
        self.size = 0


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

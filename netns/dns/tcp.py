"""DNS over TCP: accepting with caps, and one length-framed connection per client.

What a TCP peer can hold is bounded (limits.Limits): connections per client IP and in total
(when full, the oldest connection with nothing in flight makes room, else the newcomer is
refused), an absolute deadline for each whole message (bytes trickled in do not extend it:
that is what let a slowloris hold every slot), queries in flight and unread replies per
connection (past those we stop reading: backpressure, not buffering). If accept() itself fails
(out of fds), the listener is paused briefly instead of being polled in a busy loop.
"""

from __future__ import annotations

import errno
import select
import socket
import time

from netns.dns import fastpath
from netns.dns.limits import Limits, Stats
from netns.loop import IN, OUT, Loop

TYPE_CHECKING = False  # typing costs milliseconds at start-up, which is benchmarked
if TYPE_CHECKING:
    from netns.dns.server import Server

SWEEP_EVERY = 0.5  # seconds: the resolution of the per-message deadline
ACCEPT_PAUSE = 0.25  # seconds a listener rests after accept() failed for want of resources
OUT_OF_RESOURCES = (errno.EMFILE, errno.ENFILE, errno.ENOBUFS, errno.ENOMEM)


class TcpClients:
    """Every client connection of the server, and the caps on them."""

    def __init__(self, server: Server, loop: Loop, limits: Limits, stats: Stats) -> None:
        self.server = server
        self.loop = loop
        self.limits = limits
        self.stats = stats
        self.conns: dict[TcpConn, None] = {}  # insertion order: oldest first
        self.per_client: dict[str, int] = {}
        loop.call_later(SWEEP_EVERY, self._sweep)

    def accept(self, listener: socket.socket, listen_ip: str) -> None:
        for _ in range(16):
            try:
                sock, addr = listener.accept()
            except BlockingIOError:
                return
            except OSError as exc:
                if exc.errno in OUT_OF_RESOURCES:
                    self._pause(listener)
                    self.stats.accept_error(exc)
                return
            client = str(addr[0])
            key = self.server.state.table.budget_key(client)
            if not self._admit(key):
                sock.close()
                continue
            sock.setblocking(False)
            conn = TcpConn(self, sock, client, listen_ip, key)
            self.conns[conn] = None
            self.per_client[key] = self.per_client.get(key, 0) + 1

    def _admit(self, client: str) -> bool:
        if self.per_client.get(client, 0) >= self.limits.tcp_per_client:
            self.stats.shed("tcp_per_client", client)
            return False
        if len(self.conns) < self.limits.tcp_total:
            return True
        for conn in self.conns:  # full: the oldest connection with no work in flight goes
            if not conn.pending:
                self.stats.shed("tcp_evicted", conn.source)
                conn.close()
                return True
        self.stats.shed("tcp_total", client)
        return False

    def _pause(self, listener: socket.socket) -> None:
        fd = listener.fileno()
        self.loop.modify(fd, 0)

        def resume() -> None:
            if listener.fileno() == fd:  # still open (a reload may have closed it)
                self.loop.modify(fd, IN)

        self.loop.call_later(ACCEPT_PAUSE, resume)

    def forget(self, conn: TcpConn) -> None:
        if conn in self.conns:
            del self.conns[conn]
            left = self.per_client[conn.key] - 1
            if left:
                self.per_client[conn.key] = left
            else:
                del self.per_client[conn.key]

    def _sweep(self) -> None:
        now = time.monotonic()
        for conn in [c for c in self.conns if not c.pending and c.deadline <= now]:
            self.stats.shed("tcp_timeout", conn.source, quiet=True)  # idle ones too
            conn.close()
        self.loop.call_later(SWEEP_EVERY, self._sweep)

    def close_all(self) -> None:
        for conn in list(self.conns):
            conn.close()


class TcpConn:
    """Length-framed messages, several per connection; a malformed frame closes it."""

    def __init__(self, owner: TcpClients, sock: socket.socket, source: str, listen_ip: str,
                 key: str) -> None:
        self.owner = owner
        self.sock = sock
        self.fd = sock.fileno()
        self.source = source
        self.key = key  # its per-client budget (Table.budget_key), fixed at accept
        self.listen_ip = listen_ip
        self.buf = bytearray()
        self.out = bytearray()
        self.pending = 0
        self.eof = False
        self.draining = False  # inside _drain: answers given now must not re-enter it
        self.deadline = time.monotonic() + owner.limits.tcp_timeout
        self.loop = owner.loop
        self.loop.add(self.fd, self._on_event)

    def close(self) -> None:
        if self.fd >= 0:
            self.loop.remove(self.fd)
            self.sock.close()
            self.fd = -1
            self.owner.forget(self)

    def _on_event(self, events: int) -> None:
        if events & (select.EPOLLHUP | select.EPOLLERR):
            self.close()  # reset, or both directions shut: nobody left to answer
            return
        try:
            if events & OUT:
                self._send()
            if events & IN and self.fd >= 0:
                self._read()
            self._settle()
        except Exception as exc:  # noqa: BLE001 - a fault costs this connection, nothing else
            self.owner.stats.fault("tcp", exc)
            self.close()

    def _read(self) -> None:
        try:
            chunk = self.sock.recv(65537)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        if chunk:
            self.buf += chunk
        else:
            # Half-closed: answer what is in flight, but stop polling for input, or the
            # level-triggered EOF would spin the CPU until then.
            self.eof = True

    def _busy(self) -> bool:
        lim = self.owner.limits
        return self.pending >= lim.tcp_pending_per_conn or len(self.out) >= lim.tcp_out_max

    def _settle(self) -> None:
        """After any change: handle the frames held back if there is room now, poll for what
        can happen next, and close once a half-closed client has all its answers."""
        if self.fd < 0:
            return
        if self.buf and not self._busy():
            self._drain()
            if self.fd < 0:
                return
        reading = not self.eof and not self._busy()
        self.loop.modify(self.fd, (IN if reading else 0) | (OUT if self.out else 0))
        if self.eof and not self.out and self.pending <= 0:
            self.close()

    def _drain(self) -> None:
        """Handle the complete frames buffered, as far as this connection's caps allow."""
        self.draining = True
        try:
            self._drain_frames()
        finally:
            self.draining = False

    def _drain_frames(self) -> None:
        while len(self.buf) >= 2 and self.fd >= 0 and not self._busy():
            size = int.from_bytes(self.buf[:2], "big")
            if size < 12:
                self.close()  # no DNS message is shorter than its header
                return
            if len(self.buf) < 2 + size:
                return
            msg = bytes(self.buf[2 : 2 + size])
            del self.buf[: 2 + size]
            self._handle(msg)
            # A whole message opens the next one's window; bytes alone never do.
            self.deadline = time.monotonic() + self.owner.limits.tcp_timeout

    def _handle(self, msg: bytes) -> None:
        server = self.owner.server
        state = server.state
        default = state.table.by_listen.get(self.listen_ip)
        if default is None:
            self.close()
            return
        scope = state.table.scope_of(self.source) or default
        body = state.tcp.get(scope, msg)
        if body:
            self._write(fastpath.patch(msg, body))
            return
        self.pending += 1
        if not server.slow(state, scope, msg, body is not None, self.source, self._reply, True):
            self.close()  # unparseable message: drop the connection, as aardvark HEAD does

    def _reply(self, wire: bytes) -> None:
        """An answer, now (local) or later (forwarded): never re-enters _drain itself."""
        self.pending -= 1
        if not self.pending:
            self.deadline = time.monotonic() + self.owner.limits.tcp_timeout
        self._write(wire)
        if not self.draining:
            self._settle()  # a forwarded answer: nobody else will look at this connection

    def _write(self, reply: bytes) -> None:
        if self.fd < 0:
            return
        self.out += len(reply).to_bytes(2, "big") + reply
        self._send()

    def _send(self) -> None:
        if not self.out:
            return
        try:
            sent = self.sock.send(self.out)
        except BlockingIOError:
            return
        except OSError:
            self.close()
            return
        del self.out[:sent]

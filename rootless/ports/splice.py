"""TCP pumping: small messages by recv/send, bulk flows socket -> pipe -> socket by os.splice.

Each direction of a connection has a pipe. Edge-triggered epoll tells which side can be read
or written; a pump moves what it can and returns on EAGAIN, and passes the FIN on
(shutdown(SHUT_WR)) once its source has hit EOF and the pipe is drained.

A direction starts in copy mode: one recv into a page-sized buffer and one send. A recv that
returns less than it was offered has emptied the socket's receive queue (tcp_recvmsg walks
the whole queue), and anything arriving later raises a new edge, so no third call is needed
to meet EAGAIN, as a splice would (a short splice may only mean a full pipe): 2 system calls
per message instead of 3, and no exception. With EPOLLRDHUP in the same event, a short recv
also means the FIN is next, so it is passed on without reading the 0. What the destination
cannot take yet goes into the (empty) pipe, which holds a page at least, so nothing waits in
Python. The first recv that fills the buffer marks a bulk flow: from then on that direction
splices, zero-copy.
"""

from __future__ import annotations

import fcntl
import os
import socket
from dataclasses import dataclass

from rootless.ports import inhost

# No SPLICE_F_MORE on the write side: it sets MSG_MORE, TCP then holds a sub-MSS tail until
# more data comes, and a request/response protocol stalls ~200 ms per message. Without it bulk
# throughput measured the same (splice already hands TCP up to a pipe's worth at once).
SPLICE = os.SPLICE_F_MOVE | os.SPLICE_F_NONBLOCK
F_SETPIPE_SZ, F_GETPIPE_SZ = 1031, 1032
# Pipes start at the kernel's default size and grow to BIG_PIPE once a read fills one (a bulk
# flow). iperf3 through burrow-rootlessport, load ~4.5, 3 runs each: 1 MiB pipes 15.7 Gbit/s,
# 256 KiB 13.3, 64 KiB 8.7 (Go's rootlessport 8.3); 1 MiB pipes spliced in 64 KiB calls
# (CHUNK) 11.0. Fewer, fuller wakeups cost the forwarder, the client and the server less per
# GB (170/173/123 ms against 271/249/184 with 64 KiB pipes). The per-user pipe budget
# (fs.pipe-user-pages-soft, 64 MiB by default) is shared with every other program of the user,
# and a user over it gets 8 KiB pipes everywhere, so at most MAX_BIG_PIPES are big at once.
BIG_PIPE = 1 << 20
MAX_BIG_PIPES = 16
CHUNK = 1 << 20
MSG_MORE = int(socket.MSG_MORE)
COPY = 4096  # PIPE_BUF: a write of this much into an empty pipe (one page at least) always fits


@dataclass(slots=True)
class Pipe:
    r: int
    w: int
    cap: int
    pending: int = 0
    eof: bool = False
    done: bool = False
    bulk: bool = False  # a recv filled COPY once: this direction splices from now on

    def close(self) -> None:
        os.close(self.r)
        os.close(self.w)


def _default_size() -> int:
    r, w = os.pipe2(os.O_CLOEXEC)
    try:
        return int(fcntl.fcntl(w, F_GETPIPE_SZ))
    finally:
        os.close(r)
        os.close(w)


# Asked once, not twice per connection: a pipe that starts smaller (the user is over the pipe
# budget) just never grows, which is what F_SETPIPE_SZ would then refuse anyway.
DEFAULT_PIPE = _default_size()


def pipe_pair() -> tuple[Pipe, Pipe]:
    """Two pipes, or OSError (out of fds) with nothing left open."""
    r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    first = Pipe(r, w, DEFAULT_PIPE)
    try:
        r, w = os.pipe2(os.O_NONBLOCK | os.O_CLOEXEC)
    except OSError:
        first.close()
        raise
    return first, Pipe(r, w, DEFAULT_PIPE)


class BigPipes:
    """How many pipes have grown to BIG_PIPE, so their number stays bounded; and a few empty
    default-size pipes of finished connections kept for the next ones (`spare` pairs at most:
    fds held for no client, so the forwarder counts them in its budget)."""

    __slots__ = ("count", "spare", "free", "buf", "view")

    def __init__(self, spare: int = 0) -> None:
        self.count = 0
        self.spare = spare
        self.free: list[Pipe] = []
        # Copy mode's buffer, shared: every message is sent on before the next recv.
        self.buf = bytearray(COPY)
        self.view = memoryview(self.buf)

    @property
    def spare_fds(self) -> int:
        return 2 * len(self.free)

    def pair(self) -> tuple[Pipe, Pipe]:
        """Two empty pipes, reused if any are kept; OSError (out of fds) with nothing open."""
        if len(self.free) >= 2:
            return self.free.pop(), self.free.pop()
        return pipe_pair()

    def drop_spare(self) -> bool:
        """Close the kept pipes (out of fds: a client needs them more)."""
        had = bool(self.free)
        for p in self.free:
            p.close()
        self.free.clear()
        return had

    def grow(self, p: Pipe) -> None:
        if p.cap >= BIG_PIPE or self.count >= MAX_BIG_PIPES:
            return
        try:
            p.cap = fcntl.fcntl(p.w, F_SETPIPE_SZ, BIG_PIPE)
            self.count += 1
        except OSError:
            pass  # over the user's pipe budget: the small pipe still works

    def release(self, p: Pipe, reuse: bool = False) -> None:
        """reuse: the pipe is known empty (its direction finished cleanly)."""
        if p.cap >= BIG_PIPE:
            self.count -= 1
        elif reuse and p.pending == 0 and len(self.free) < 2 * self.spare:
            p.eof = p.done = p.bulk = False
            self.free.append(p)
            return
        p.close()


def pump(src: socket.socket, dst: socket.socket, p: Pipe, big: BigPipes, hup: int = 0,
         last: bool = False) -> None:
    """Move what can move from src to dst now; OSError means the connection is broken.

    hup: EPOLLRDHUP was in src's event (its peer has sent its FIN).
    last: the other direction is done, so once this one is, the caller closes both sockets;
    then the close sends dst's FIN (nothing is left to read on dst: its peer's FIN came),
    and a shutdown before it would be a system call for nothing."""
    while not p.done:
        if p.pending == 0 and not p.eof:
            if not p.bulk:
                if copy_one(src, dst, p, big, hup):
                    return
                continue
            try:
                n = os.splice(src.fileno(), p.w, CHUNK, flags=SPLICE)
            except BlockingIOError:
                return
            if n == 0:
                p.eof = True
            else:
                p.pending += n
                if n >= p.cap:
                    big.grow(p)
        if p.pending:
            try:
                n = os.splice(p.r, dst.fileno(), p.pending, flags=SPLICE)
            except BlockingIOError:
                return
            p.pending -= n
            continue
        if p.eof:
            if not last:
                try:
                    dst.shutdown(socket.SHUT_WR)  # half-close: pass the FIN on
                except OSError:
                    pass
            p.done = True


def _bulk_to(dst: socket.socket) -> None:
    """A flow to a loopback peer (a client on this host) does not pace either: as the dialled
    hop (rootless.ports.inhost), where the host's default is bbr. Set when the flow turns bulk,
    so short connections pay nothing; bbr has then already started pacing the socket, which
    goes on at the rate cubic leaves (cwnd/srtt, huge on loopback). Measured (iperf3 -R through
    burrow-rootlessport, load ~5, 3 runs): 6.9 -> 9.2 Gbit/s (Go's rootlessport 8.5), the
    client's CPU per GB 272 -> 152 ms, the forwarder's 244 -> 187."""
    try:
        peer = dst.getpeername()[0]
    except OSError:
        return
    if inhost.loopback(peer):
        inhost.unpaced(dst)


def copy_one(src: socket.socket, dst: socket.socket, p: Pipe, big: BigPipes, hup: int) -> bool:
    """One message in copy mode (the pipe is empty); True when src has nothing more now."""
    try:
        n = src.recv_into(big.buf)
    except BlockingIOError:
        return True
    if n == 0:
        p.eof = True
        return False
    # The FIN is next (a short read with EPOLLRDHUP): MSG_MORE holds the bytes back for the
    # shutdown that follows at once, which sets FIN on them, so the peer gets the last message
    # and the FIN in one segment (one softirq, one wakeup; a close-delimited reply, the
    # greeting of a short connection) instead of two. Not held: the shutdown pushes it.
    try:
        sent = dst.send(big.view[:n], MSG_MORE if hup and n < COPY else 0)
    except BlockingIOError:
        sent = 0
    if sent < n:  # dst is full: the pipe keeps the rest until dst drains (EPOLLOUT)
        p.pending = os.write(p.w, big.view[sent:n])
    if n == COPY:
        p.bulk = True  # more may be queued: splice it
        _bulk_to(dst)
        return False
    if hup:
        p.eof = True  # the queue is empty and the FIN is next: no recv for the 0
        return False
    return not p.pending

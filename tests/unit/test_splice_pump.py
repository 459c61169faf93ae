"""The forwarder's pump (rootless.ports.splice) on real loopback TCP sockets: small messages
by recv/send, a destination that cannot take them yet, the switch to splice for bulk flows,
and the FIN passed on from EPOLLRDHUP without reading the 0."""

from __future__ import annotations

import fcntl
import select
import socket
import struct
import termios
import threading
import time
from collections.abc import Iterator

import pytest

from rootless.ports.splice import (
    BIG_PIPE,
    COPY,
    DEFAULT_PIPE,
    F_GETPIPE_SZ,
    MAX_BIG_PIPES,
    BigPipes,
    Pipe,
    pipe_pair,
    pump,
)


def tcp_pair() -> tuple[socket.socket, socket.socket]:
    """A connected loopback pair: (the forwarder's end, the peer's end)."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(1)
        peer = socket.create_connection(lst.getsockname())
        mine, _ = lst.accept()
    mine.setblocking(False)
    return mine, peer


@pytest.fixture
def conn() -> Iterator[tuple[socket.socket, socket.socket, socket.socket, socket.socket, Pipe,
                             BigPipes]]:
    """client -> src ... pump ... dst -> server, with src->dst's pipe."""
    src, client = tcp_pair()
    dst, server = tcp_pair()
    ab, ba = pipe_pair()
    yield src, client, dst, server, ab, BigPipes()
    for s in (src, client, dst, server):
        s.close()
    ab.close()
    ba.close()


def recv_exactly(s: socket.socket, n: int) -> bytes:
    s.settimeout(5)
    out = b""
    while len(out) < n:
        d = s.recv(n - len(out))
        assert d, f"EOF after {len(out)} of {n} bytes"
        out += d
    return out


def wait_readable(s: socket.socket) -> None:
    assert select.select([s], [], [], 5)[0]


def test_a_small_message_is_copied_and_the_pipe_stays_empty(conn: tuple) -> None:
    src, client, dst, server, p, big = conn
    client.sendall(b"x" * 64)
    wait_readable(src)
    pump(src, dst, p, big)
    assert recv_exactly(server, 64) == b"x" * 64
    assert (p.pending, p.bulk, p.eof) == (0, False, False)


def test_what_the_destination_cannot_take_waits_in_the_pipe_in_order(conn: tuple) -> None:
    src, client, dst, server, p, big = conn
    dst.setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
    sent = 0
    try:  # fill dst's send buffer and server's receive buffer (server does not read)
        while True:
            sent += dst.send(b"a" * 65536)
    except BlockingIOError:
        pass
    client.sendall(b"b" * 100)
    wait_readable(src)
    pump(src, dst, p, big)
    assert p.pending == 100, "the message went into the pipe, not lost or held in Python"
    got = recv_exactly(server, sent)  # the server reads: dst can take more (EPOLLOUT)
    assert got == b"a" * sent
    pump(src, dst, p, big)
    assert recv_exactly(server, 100) == b"b" * 100
    assert p.pending == 0


def test_a_bulk_flow_turns_to_splice_and_moves_everything(conn: tuple) -> None:
    src, client, dst, server, p, big = conn
    data = bytes(range(256)) * 4096  # 1 MiB: more than the socket buffers hold at once
    got = bytearray()

    def send() -> None:
        client.sendall(data)
        client.shutdown(socket.SHUT_WR)

    def read() -> None:
        server.settimeout(10)
        while (d := server.recv(1 << 20)):
            got.extend(d)

    threads = [threading.Thread(target=send), threading.Thread(target=read)]
    for t in threads:
        t.start()
    deadline = time.monotonic() + 20
    while not p.done and time.monotonic() < deadline:
        select.select([src], [dst] if p.pending else [], [], 1)
        pump(src, dst, p, big)
    for t in threads:
        t.join(10)
    assert bytes(got) == data, "everything arrived, in order, and then the FIN"
    assert p.bulk, f"a recv of {COPY} bytes marks the direction bulk"


def test_rdhup_passes_the_fin_on_after_a_short_read(conn: tuple) -> None:
    src, client, dst, server, p, big = conn
    client.sendall(b"hello\n")
    client.shutdown(socket.SHUT_WR)
    wait_readable(src)
    pump(src, dst, p, big, hup=1)
    assert p.done and p.eof
    server.settimeout(5)
    assert server.recv(64) == b"hello\n"
    assert server.recv(64) == b"", "the FIN came with the message, in one wakeup"


def segments_in(s: socket.socket) -> int:
    """TCP segments s has received so far (tcp_info.tcpi_segs_in, Linux 4.2+)."""
    info = s.getsockopt(socket.IPPROTO_TCP, socket.TCP_INFO, 256)
    if len(info) < 144:
        pytest.skip("the kernel's tcp_info has no tcpi_segs_in (before Linux 4.2)")
    return int(struct.unpack_from("I", info, 140)[0])


def test_the_last_message_and_the_fin_go_in_one_segment(conn: tuple) -> None:
    """A short read with EPOLLRDHUP (the FIN is next) sends the message with MSG_MORE and the
    shutdown sets FIN on it: the peer gets both in one segment, one wakeup (before: the
    message, then the FIN in a segment of its own)."""
    src, client, dst, server, p, big = conn
    client.sendall(b"hello\n")
    client.shutdown(socket.SHUT_WR)
    wait_readable(src)
    before = segments_in(server)
    pump(src, dst, p, big, hup=1)
    assert p.done
    server.settimeout(5)
    assert server.recv(64) == b"hello\n"
    assert server.recv(64) == b""
    assert segments_in(server) - before == 1, "message and FIN in one segment"


def test_a_message_without_the_fin_behind_it_is_not_held(conn: tuple) -> None:
    """No EPOLLRDHUP: the message goes at once (MSG_MORE would hold a sub-MSS message back and
    stall a request/response protocol)."""
    src, client, dst, server, p, big = conn
    client.sendall(b"ping")
    wait_readable(src)
    pump(src, dst, p, big)
    assert not_sent(dst) == 0, "nothing held back in dst's send queue"
    assert recv_exactly(server, 4) == b"ping"
    assert not p.eof


def test_the_last_direction_leaves_the_fin_to_the_close(conn: tuple) -> None:
    """last (the other direction is done): no shutdown, the caller closes both sockets next
    and the close sends the FIN; the peer still gets every byte, then the FIN."""
    src, client, dst, server, p, big = conn
    client.sendall(b"bye")
    client.shutdown(socket.SHUT_WR)
    wait_readable(src)
    pump(src, dst, p, big, hup=1, last=True)
    assert p.done and p.eof
    assert recv_exactly(server, 3) == b"bye"
    server.settimeout(None)  # blocking: MSG_DONTWAIT then says EAGAIN at once
    with pytest.raises(BlockingIOError):
        server.recv(64, socket.MSG_DONTWAIT)  # no FIN yet: dst was not shut down
    dst.close()
    server.settimeout(5)
    assert server.recv(64) == b"", "the close sent the FIN"


def not_sent(s: socket.socket) -> int:
    """Bytes in s's send queue not yet sent (SIOCOUTQNSD)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), 0x894B, b"\0" * 4))[0]  # type: ignore[no-any-return]


def queued(s: socket.socket) -> int:
    """Bytes in s's receive queue (SIOCINQ)."""
    return struct.unpack("i", fcntl.ioctl(s.fileno(), termios.FIONREAD, b"\0" * 4))[0]  # type: ignore[no-any-return]


def size(p: Pipe) -> int:
    """The pipe's size in effect, as the kernel has it."""
    return int(fcntl.fcntl(p.w, F_GETPIPE_SZ))


def test_a_pipe_a_splice_fills_grows_to_big_pipe(conn: tuple) -> None:
    """A splice that fills the default pipe marks a bulk flow: its pipe grows to BIG_PIPE
    (1 MiB pipes measured faster than 64 and 256 KiB ones)."""
    src, client, dst, server, p, big = conn
    assert size(p) == p.cap == DEFAULT_PIPE < BIG_PIPE
    sender = threading.Thread(target=client.sendall, args=(b"z" * (4 * DEFAULT_PIPE),))
    sender.start()
    deadline = time.monotonic() + 10  # more than the pipe holds is queued: one splice fills it
    while queued(src) <= DEFAULT_PIPE + COPY:
        assert time.monotonic() < deadline, "the client's data never queued up"
        time.sleep(0.01)
    got = 0
    while got < 4 * DEFAULT_PIPE:
        assert time.monotonic() < deadline, f"only {got} bytes arrived"
        pump(src, dst, p, big)
        if select.select([server], [], [], 0.1)[0]:
            got += len(server.recv(1 << 20))
    sender.join(10)
    assert (size(p), p.cap, big.count) == (BIG_PIPE, BIG_PIPE, 1)


def test_at_most_max_big_pipes_grow_and_a_released_one_frees_a_place() -> None:
    """Many bulk connections share the user's pipe budget (fs.pipe-user-pages-soft) with every
    other program of the user: past MAX_BIG_PIPES a pipe keeps its default size."""
    big = BigPipes()
    pairs = [pipe_pair() for _ in range(MAX_BIG_PIPES // 2 + 1)]
    pipes = [p for pair in pairs for p in pair]
    try:
        for p in pipes:
            big.grow(p)
        assert [size(p) for p in pipes] == [BIG_PIPE] * MAX_BIG_PIPES + [DEFAULT_PIPE] * 2
        assert big.count == MAX_BIG_PIPES
        big.release(pipes.pop(0))  # closes it
        assert big.count == MAX_BIG_PIPES - 1
        big.grow(pipes[-1])
        assert (size(pipes[-1]), big.count) == (BIG_PIPE, MAX_BIG_PIPES)
    finally:
        for p in pipes:
            p.close()

"""rootless.ports.tcp.TcpProxy.connect_done on real loopback sockets: a dial socket's first
event decides whether it is connected, and an event from its time in the pool (an
unconnected socket's EPOLLHUP|EPOLLOUT, harvested before the dial began) decides nothing."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator
from contextlib import contextmanager

import pytest

from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.pool import DialerPool
from rootless.ports.tcp import B_EVENTS, TcpConn, TcpProxy


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    loop = Loop()
    chan, other = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
    guard = Guard(4096, lambda: 0)
    yield TcpProxy(loop, DialerPool(loop, chan, guard.shed, loop.stop), guard)
    chan.close()
    other.close()


def conn_dialling(proxy: TcpProxy, b: socket.socket) -> TcpConn:
    a = socket.socket()
    c = TcpConn(proxy, a, "127.0.0.1", "/nonexistent", 1, [])
    c.b = b
    proxy.dials.add(c.client)
    return c


@contextmanager
def syn_sent_socket() -> Iterator[socket.socket]:
    """A non-blocking socket whose connect stays in SYN_SENT: the listener's backlog (0: room
    for one unaccepted connection) is full, so its SYN is dropped."""
    with socket.socket() as lst, socket.socket() as queued, socket.socket() as dropped:
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)
        queued.connect(lst.getsockname())
        dropped.setblocking(False)
        dropped.connect_ex(lst.getsockname())
        b = socket.socket()
        b.setblocking(False)
        b.connect_ex(lst.getsockname())
        yield b


def test_a_stale_hangup_of_a_pooled_socket_does_not_count_as_connected(proxy: TcpProxy) -> None:
    with syn_sent_socket() as b:
        c = conn_dialling(proxy, b)
        try:
            assert not proxy.connect_done(c, select.EPOLLHUP | select.EPOLLOUT)
            assert not c.connected and c.b is b, "still dialling, on the same socket"
        finally:
            c.a.close()
            b.close()


def test_a_writable_dial_socket_is_connected(proxy: TcpProxy) -> None:
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        b = socket.create_connection(lst.getsockname())
        c = conn_dialling(proxy, b)
        try:
            assert proxy.connect_done(c, select.EPOLLOUT)
            assert c.connected
        finally:
            c.a.close()
            b.close()


def conn_spoke_early(proxy: TcpProxy, b: socket.socket) -> tuple[TcpConn, socket.socket]:
    """A connection whose client sent its first bytes before the dial's connect was seen."""
    a, peer = socket.socketpair()
    a.setblocking(False)
    c = TcpConn(proxy, a, "127.0.0.1", "/nonexistent", 1, [])
    c.b = b
    c.early_a = select.EPOLLIN
    proxy.conns.add(c.client)
    proxy.dials.add(c.client)
    proxy.loop.register(b.fileno(), B_EVENTS)  # as the pool has it
    return c, peer


def test_the_probe_finds_a_completed_connect(proxy: TcpProxy) -> None:
    """TcpConn.probe: the send of nothing returns 0 on a connected dial socket, so the
    connection pumps at once, without waiting for (or watching) EPOLLOUT."""
    with socket.socket() as lst:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        b = socket.create_connection(lst.getsockname())
        b.setblocking(False)
        c, peer = conn_spoke_early(proxy, b)
        try:
            c.probe()
            assert c.connected and not c.out_b and c.b is b
            assert proxy.dials.total == 0 and proxy.conns.total == 1
        finally:
            proxy._close(c)  # noqa: SLF001 - the test's own connection
            peer.close()


def test_the_probe_waits_for_a_connect_still_going(proxy: TcpProxy) -> None:
    """A dial still in SYN_SENT answers the probe with EAGAIN: then, and only then, the dial
    socket is watched for EPOLLOUT, which reports its connect."""
    with syn_sent_socket() as b:
        c, peer = conn_spoke_early(proxy, b)
        try:
            c.probe()
            assert not c.connected and c.out_b and c.b is b
        finally:
            proxy._close(c)  # noqa: SLF001 - the test's own connection
            peer.close()


def test_the_probe_reports_a_failed_connect(proxy: TcpProxy) -> None:
    """A dial refused (RST) answers the probe with its error: the socket is closed and, with
    no other way to dial, the client is reset and the connection closed."""
    with socket.socket() as unused:
        unused.bind(("127.0.0.1", 0))
        addr = unused.getsockname()  # bound, never listening: a SYN to it is refused
        b = socket.socket()
        b.setblocking(False)
        b.connect_ex(addr)
        c, peer = conn_spoke_early(proxy, b)
        try:
            c.probe()
            assert c.closed and c.b is None and not c.connected
            assert proxy.conns.total == 0 and proxy.dials.total == 0
            assert b.fileno() == -1, "the failed dial socket is closed"
        finally:
            peer.close()

"""rootless.ports.tcp.TcpProxy.connect_done on real loopback sockets: a dial socket's first
event decides whether it is connected, and an event from its time in the pool (an
unconnected socket's EPOLLHUP|EPOLLOUT, harvested before the dial began) decides nothing."""

from __future__ import annotations

import select
import socket
from collections.abc import Iterator

import pytest

from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.pool import DialerPool
from rootless.ports.tcp import TcpConn, TcpProxy


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


def test_a_stale_hangup_of_a_pooled_socket_does_not_count_as_connected(proxy: TcpProxy) -> None:
    with socket.socket() as lst, socket.socket() as queued, socket.socket() as dropped:
        lst.bind(("127.0.0.1", 0))
        lst.listen(0)  # room for one unaccepted connection: later SYNs are dropped
        queued.connect(lst.getsockname())
        dropped.setblocking(False)
        dropped.connect_ex(lst.getsockname())
        b = socket.socket()
        b.setblocking(False)
        b.connect_ex(lst.getsockname())  # stays in SYN_SENT: its SYN is dropped
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

"""Dial sockets used again: a TCP socket whose connection ended cleanly goes back to its pool.

A socket for the sandbox costs the dialer ~17 us to make (socket, TCP_NODELAY, the congestion
control; measured here, load ~3) and the forwarder ~10 us to close: on a short connection about
a fifth of the forwarder's CPU, and in burrow-rootlessport the dialer is a thread that takes the
interpreter from the forwarder while it makes a batch. `connect(AF_UNSPEC)` turns a TCP socket
in state CLOSE back into an unconnected one (tcp_disconnect): its port is released, its options
stay (TCP_NODELAY, the congestion control), and it keeps the netns it was made in, so it can
dial the sandbox again, for ~4 us (the state check and the disconnect).

Only from CLOSE: both FINs sent and acknowledged, or the full socket handed its TIME_WAIT to
the kernel's mini-socket. From any other state tcp_disconnect would send a RST or drop bytes
not yet acknowledged, so anything else is closed as before. Only plain dial sockets: a
transparent one is bound to its client's address, which a disconnect does not undo.
"""

from __future__ import annotations

import socket
from collections.abc import Callable

TCP_CLOSE = 7  # tcpi_state, the first byte of struct tcp_info
SOCKADDR_LEN = 16  # a struct sockaddr of zeros: sa_family AF_UNSPEC, what makes connect() disconnect
IPPROTO_TCP, TCP_INFO = int(socket.IPPROTO_TCP), int(socket.TCP_INFO)

_connect: Callable[[int], int] | None = None


def _libc_connect() -> Callable[[int], int]:
    """connect(fd, AF_UNSPEC) through libc: socket.connect parses an address of the socket's
    own family, so it cannot pass AF_UNSPEC. ctypes is imported on the first use, not at
    start-up; the address is one ctypes buffer made once (a bytes argument is converted on
    every call: 3.3 against 2.4 us a call, measured)."""
    global _connect
    if _connect is None:
        import ctypes

        call, addr = ctypes.CDLL(None, use_errno=True).connect, ctypes.create_string_buffer(SOCKADDR_LEN)
        _connect = lambda fd: call(fd, addr, SOCKADDR_LEN)  # noqa: E731 - bound once
    return _connect


def disconnect(s: socket.socket) -> bool:
    """s unconnected again, ready for another connect; False (s untouched) unless its
    connection is fully closed."""
    try:
        if s.getsockopt(IPPROTO_TCP, TCP_INFO, 1)[0] != TCP_CLOSE:
            return False
    except OSError:
        return False
    return _libc_connect()(s.fileno()) == 0

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
not yet acknowledged, so anything else is closed as before.

A transparent dial socket (rootless.ports.clientaddr) bound to its client's address only
(`bind(ip, 0)`, the default) keeps that address through the disconnect (SOCK_BINDADDR_LOCK)
and releases its port (no SOCK_BINDPORT_LOCK: the next connect picks a new one), so it serves
the next connection from the same address: `ByAddress` keeps them, by address. Measured
(scripts/profile_client_addr.py, load ~1): without it a transparent socket was made, set up,
bound and closed per connection, 12% of conn/s. One bound to the client's port too (the
`client-port` option) keeps that port and is closed as before.
"""

from __future__ import annotations

import socket
from collections import OrderedDict
from collections.abc import Callable

TCP_CLOSE = 7  # tcpi_state, the first byte of struct tcp_info
SOCKADDR_LEN = 16  # a struct sockaddr of zeros: sa_family AF_UNSPEC, what makes connect() disconnect
IPPROTO_TCP, TCP_INFO = int(socket.IPPROTO_TCP), int(socket.TCP_INFO)

# A pool key (rootless.ports.pool.SockKey: netns, family, "tcp", clientaddr mode) and the
# client address the sockets are bound to.
BoundKey = tuple[str, int, str, str, str]
PER_ADDRESS = 16  # one client's connections side by side that find a bound socket
TOTAL = 256  # over all addresses: a client spraying source addresses holds no more than this

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


class ByAddress:
    """Disconnected transparent dial sockets, each still bound to its client's address, for
    that address's next connections: by (pool key, address), capped per address and in total.
    Hostile input is normal: a client spraying source addresses evicts the least recently used
    addresses' sockets (closed), so fds and memory stay within `total`."""

    def __init__(self, total: int = TOTAL, per_address: int = PER_ADDRESS) -> None:
        self.total, self.per_address = total, per_address
        self.pools: OrderedDict[BoundKey, list[socket.socket]] = OrderedDict()
        self.count = 0  # sockets held, over all addresses

    def take(self, key: BoundKey) -> socket.socket | None:
        pool = self.pools.get(key)
        if not pool:
            return None
        s = pool.pop()  # the last given back: its memory is still in the cache
        if not pool:
            del self.pools[key]
        self.count -= 1
        return s

    def put(self, key: BoundKey, s: socket.socket) -> bool:
        """Keep s for key's next connection; False (the caller closes it) when key has its
        share. At the total cap the least recently used address gives one up."""
        pool = self.pools.get(key)
        if pool is None:
            pool = self.pools[key] = []
        elif len(pool) >= self.per_address:
            return False
        else:
            self.pools.move_to_end(key)
        if self.count >= self.total and not self.drop_one():
            if not pool:
                del self.pools[key]
            return False
        pool.append(s)
        self.count += 1
        return True

    def drop_one(self) -> bool:
        """Close one socket of the least recently used address (at the cap, out of fds)."""
        for key, pool in self.pools.items():
            pool.pop(0).close()
            self.count -= 1
            if not pool:
                del self.pools[key]
            return True
        return False

    def drop(self, netns: str | None = None) -> None:
        """Close those made in netns (all with None): they would keep it alive."""
        for key in [k for k in self.pools if netns is None or k[0] == netns]:
            for s in self.pools.pop(key):
                s.close()
                self.count -= 1

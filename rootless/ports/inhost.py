"""Congestion control for the forwarder's dialled TCP sockets: a hop that never leaves the host.

Every TCP socket the dialer makes connects to a server on this machine: over the sandbox's or
container's loopback, or from the user's netns over its bridge. A host whose default congestion
control paces (bbr, `net.ipv4.tcp_congestion_control`, which new namespaces inherit) paces that
hop too. Without an fq qdisc the kernel paces with a per-socket hrtimer, and a send released by
that timer on one CPU while the forwarder sends on the other lands in another CPU's loopback
backlog: the server gets the flow's segments out of order, TCP takes them for lost and sends
them again. Measured (load ~4, iperf3 through burrow-rootlessport, servers in a second netns,
this machine's default bbr): the dialled socket retransmitted 1.6 MB per GB with ~28 segments
of reordering, and the forwarder spent 325 ms of CPU per GB, the server 218; with cubic, 106
bytes in 2 GB, 191 and 133 ms, and 1.9x the Gbit/s. Reno measured the same as cubic.

So the dialled socket gets a loss-based congestion control that does not pace, set before
connect (bbr decides to pace when the connection is established; a later switch would keep
the pacing). cubic first, the kernel's usual default; an unprivileged user may only pick from
`net.ipv4.tcp_allowed_congestion_control` (where we hold no CAP_NET_ADMIN), which always has
reno. The client's side (the accepted socket) keeps the host's choice, as it may face any
network, unless its clients can only be on this host: a listener on a loopback address gets
the same choice, which its accepted sockets inherit before bbr could start; on any other
listener a socket whose peer is a loopback address turns unpaced once a flow towards the
client is bulk (rootless.ports.splice._bulk_to), later, so bbr's pacing has begun and goes on.

Only `_socket` here: burrow-rootlessport's phase 1 (before ready) binds its listeners with it.
"""

from __future__ import annotations

import _socket

UNPACED = ("cubic", "reno")
# Names this process was refused (not built, not allowed): not asked again on every socket.
_refused: set[str] = set()


def unpaced(s: _socket.socket, choices: tuple[str, ...] = UNPACED) -> str | None:
    """Give the unconnected TCP socket s the first of `choices` the kernel lets us use; which
    one, or None when none is (s then keeps the netns's default, which works, only slower)."""
    for name in choices:
        if name in _refused:
            continue
        try:
            s.setsockopt(_socket.IPPROTO_TCP, _socket.TCP_CONGESTION, name.encode())
            return name
        except OSError:
            _refused.add(name)
    return None


def loopback(addr: str) -> bool:
    """An address only this host can send from (or, for a listener, be reached on)."""
    return addr.startswith(("127.", "::ffff:127.")) or addr == "::1"

"""rootless.ports.recycle on real loopback TCP sockets: only a fully closed connection's socket
is made unconnected again, and it then connects anew with its options kept."""

from __future__ import annotations

import socket
import threading

from rootless.ports.clientaddr import IP_BIND_ADDRESS_NO_PORT
from rootless.ports.recycle import ByAddress, disconnect


def serve_once(lst: socket.socket, reply: bytes) -> threading.Thread:
    def run() -> None:
        c, _ = lst.accept()
        with c:
            c.sendall(reply)

    t = threading.Thread(target=run, daemon=True)
    t.start()
    return t


def read_to_eof(s: socket.socket) -> bytes:
    s.settimeout(5)
    got = b""
    while chunk := s.recv(64):
        got += chunk
    return got


def test_an_open_connection_is_left_alone_and_a_closed_one_dials_again() -> None:
    with socket.socket() as lst, socket.socket() as s:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, b"reno")
        t = serve_once(lst, b"one")
        s.connect(lst.getsockname())
        t.join(5)
        assert not disconnect(s), "established (the peer's FIN not read): not touched"
        assert read_to_eof(s) == b"one"
        assert not disconnect(s), "our FIN not sent yet"
        first_port = s.getsockname()[1]
        s.shutdown(socket.SHUT_WR)  # on loopback the peer's ACK comes within this call
        assert disconnect(s)
        t = serve_once(lst, b"two")
        s.connect(lst.getsockname())
        t.join(5)
        assert read_to_eof(s) == b"two"
        assert s.getsockname()[1] != first_port, "a new connection, on a new port"
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY)
        assert s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0") == b"reno"


def test_a_socket_bound_to_an_address_keeps_it_and_frees_its_port() -> None:
    """What ByAddress relies on, on this kernel: a socket bound to an address with port 0
    (as the forwarder binds a transparent dial socket, IP_BIND_ADDRESS_NO_PORT set) keeps
    that address through connect(AF_UNSPEC) (SOCK_BINDADDR_LOCK), and gives its port up (no
    SOCK_BINDPORT_LOCK): another socket can bind it, and the next connection gets a new one.
    Whichever side ends first."""
    with socket.socket() as lst, socket.socket() as s:
        lst.bind(("127.0.0.1", 0))
        lst.listen(4)
        s.setsockopt(socket.SOL_IP, IP_BIND_ADDRESS_NO_PORT, 1)
        s.bind(("127.0.0.2", 0))
        ports = []
        for first in ("server", "client", "server"):
            s.connect(lst.getsockname())
            c, peer = lst.accept()
            port = s.getsockname()[1]
            assert peer == ("127.0.0.2", port), "the server sees the bound address"
            assert port not in ports, "a new port for each connection"
            ports.append(port)
            with c:
                if first == "server":
                    c.close()
                    assert s.recv(1) == b""
                    s.shutdown(socket.SHUT_WR)
                else:
                    s.shutdown(socket.SHUT_WR)
                    assert c.recv(1) == b""
            if first == "client":  # our side ends first: its port waits in TIME_WAIT
                s.settimeout(5)
                assert s.recv(1) == b""
            assert disconnect(s)
            if first == "server":  # nothing holds the port any more
                with socket.socket() as other:
                    other.bind(("127.0.0.2", port))


class Fake:
    def __init__(self) -> None:
        self.closed = False

    def close(self) -> None:
        self.closed = True


def test_by_address_is_capped_per_address_and_in_total() -> None:
    """A client spraying source addresses cannot make the pool hold more than `total`: the
    least recently used address gives its socket up (closed); one address holds at most
    `per_address`; what is taken is what that address gave back."""
    pools = ByAddress(total=4, per_address=2)
    made: list[Fake] = []

    def key(ip: str) -> tuple[str, int, str, str, str]:
        return ("/ns", 4, "tcp", "inside", ip)

    for i in range(10):
        made.append(Fake())
        assert pools.put(key(f"10.0.0.{i}"), made[-1])  # type: ignore[arg-type]
    assert pools.count == 4 and len(pools.pools) == 4
    assert [m.closed for m in made] == [True] * 6 + [False] * 4
    assert pools.take(key("10.0.0.0")) is None, "evicted"
    assert pools.take(key("10.0.0.9")) is made[9]
    assert pools.take(key("10.0.0.9")) is None and pools.count == 3
    one = [Fake() for _ in range(3)]
    assert pools.put(key("10.0.0.1"), one[0]) and pools.put(key("10.0.0.1"), one[1])  # type: ignore[arg-type]
    assert not pools.put(key("10.0.0.1"), one[2]), "over its share: the caller closes it"  # type: ignore[arg-type]
    assert pools.count == 4
    pools.drop("/ns")
    assert pools.count == 0 and not pools.pools and all(m.closed for m in one[:2])

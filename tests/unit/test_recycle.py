"""rootless.ports.recycle on real loopback TCP sockets: only a fully closed connection's socket
is made unconnected again, and it then connects anew with its options kept."""

from __future__ import annotations

import socket
import threading

from rootless.ports.recycle import disconnect


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

"""burrow's TCP proxy (rootless.ports.tcp) on its hot path, in this process.

The real parts: netns.loop on a thread of its own, the dialer process making the sockets in a
throwaway netns, the splice pump, the caps; the server runs in that netns on its loopback (the
kernel path of a dial to a sandbox's own address), the clients on this process's loopback.
"""

from __future__ import annotations

import gc
import os
import select
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from ipaddress import IPv4Address

import pytest

from netns.loop import Loop
from rootless.ports.budget import Guard
from rootless.ports.manager import bind
from rootless.ports.pool import DialerPool
from rootless.ports.spec import PortSpec
from rootless.ports.target import Listener, Target
from rootless.ports.tcp import TcpProxy
from tests.nsutil import Netns

pytestmark = pytest.mark.root

BLOB = os.urandom(1 << 16) * 128  # 8 MiB: far more than a socket buffer and a pipe hold
# Sends BLOB to each client at once, then closes.
BULK_SERVER = """
import socket,sys
blob=open(sys.argv[2],'rb').read()
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
while True:
    c,_=s.accept(); c.sendall(blob); c.close()
"""
# Says "hi" to each client and keeps it open.
HOLD_SERVER = """
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
held=[]
while True:
    c,_=s.accept(); c.sendall(b'hi'); held.append(c)
"""


class Proxy:
    """One published port, 127.0.0.1:port here -> 127.0.0.1:5301 in ns."""

    def __init__(self, ns: Netns, fd_limit: int = 65536) -> None:
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.dialer = subprocess.Popen([sys.executable, "-m", "rootless.ports.dialer",
                                        str(child.fileno())], pass_fds=[child.fileno()],
                                       stdin=subprocess.DEVNULL)
        child.close()
        self.loop = Loop()
        self.guard = Guard(fd_limit, lambda: 0, lambda: (True, False))
        self.pool = DialerPool(self.loop, parent, self.guard.shed, self.loop.stop)
        self.tcp = TcpProxy(self.loop, self.pool, self.guard)
        with socket.socket() as probe:  # a free port (a spec's port must be 1-65535)
            probe.bind(("127.0.0.1", 0))
            self.port = int(probe.getsockname()[1])
        spec = PortSpec.of("127.0.0.1", self.port, 5301)
        sock = bind(spec, self.port)
        self.pool.open(ns.path)
        self.tcp.listen(Listener(sock, spec, self.port, 5301,
                                 Target("t", ns.path, IPv4Address("127.0.0.1"), None)))
        self._stop_r, self._stop_w = os.pipe()
        self.loop.add(self._stop_r, lambda ev: self.loop.stop())
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(10)
        self.dialer.kill()
        self.dialer.wait()


@pytest.fixture
def proxy_in(netns_factory: Callable[[], Netns],
             tmp_path: os.PathLike[str]) -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []

    def make(server: str, *args: str, fd_limit: int = 65536) -> Proxy:
        ns = netns_factory()
        srv = ns.popen([sys.executable, "-c", server, "5301", *args], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        p = Proxy(ns, fd_limit)
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()


def test_a_client_slower_than_its_server_gets_every_byte(
        proxy_in: Callable[..., Proxy], tmp_path: os.PathLike[str]) -> None:
    """The client side is watched for room to write only once bytes wait for it: a client
    that reads nothing while its server sends 8 MiB stalls the pipe towards it, and must get
    all of it, in order, once it reads."""
    blob = os.path.join(tmp_path, "blob")
    with open(blob, "wb") as f:
        f.write(BLOB)
    p = proxy_in(BULK_SERVER, blob)
    with socket.create_connection(("127.0.0.1", p.port), 5) as c:
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        time.sleep(1.0)  # not reading: the forwarder's send to us fills up and stops
        c.settimeout(10)
        got = bytearray()
        while chunk := c.recv(1 << 20):
            got += chunk
    assert len(got) == len(BLOB)
    assert got == BLOB


def test_per_client_cap_holds_on_the_accept_path(proxy_in: Callable[..., Proxy]) -> None:
    """A client over its TCP cap is reset at once and counted; the ones under it are served
    and stay open."""
    p = proxy_in(HOLD_SERVER, fd_limit=48 + 16 + 72)  # a cap of a few connections
    cap = p.guard.caps().tcp_per_client
    assert 2 <= cap <= 16
    served, reset = 0, 0
    held = []
    for _ in range(cap + 3):
        try:  # the reset may come while connect() still returns
            c = socket.create_connection(("127.0.0.1", p.port), 5)
            held.append(c)
            c.settimeout(5)
            if c.recv(2) == b"hi":
                served += 1
            else:
                reset += 1
        except ConnectionResetError:
            reset += 1
    for c in held:
        c.close()
    assert (served, reset) == (cap, 3)
    assert p.guard.shed.tcp_refused_per_client == 3


# Says "hello" to each client and closes (the server ends first).
HELLO_SERVER = """
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
while True:
    c,_=s.accept(); c.sendall(b'hello'); c.close()
"""
# Reads to EOF, answers with what it read, reversed, and closes (the client ends first).
REVERSE_SERVER = """
import socket,sys
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
while True:
    c,_=s.accept(); got=b''
    while (d:=c.recv(65536)): got+=d
    c.sendall(got[::-1]); c.close()
"""


def settled(p: Proxy) -> int:
    """The dialer requests made so far, once none is in flight (the pool filled) and the
    forwarder has closed every connection (its sockets back in the pool)."""
    deadline = time.monotonic() + 10
    while (p.pool.in_flight or p.tcp.conns.total or p.tcp.returned) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not p.pool.in_flight and not p.tcp.conns.total and not p.tcp.returned
    return p.pool.next_id


def exchange(port: int, data: bytes = b"") -> bytes:
    with socket.create_connection(("127.0.0.1", port), 5) as c:
        c.settimeout(5)
        if data:
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
        got = bytearray()
        while chunk := c.recv(65536):
            got += chunk
    return bytes(got)


@pytest.mark.parametrize("first", ["server", "client"])
def test_a_cleanly_ended_connection_gives_its_dial_socket_back(
        proxy_in: Callable[..., Proxy], first: str) -> None:
    """A dial socket whose connection ended cleanly (both FINs, whichever side sent the first)
    dials the next connections (rootless.ports.recycle): sequential clients need no new socket
    from the dialer, and every one of them gets exactly its own answer."""
    from rootless.ports.pool import POOL_BATCH

    p = proxy_in(HELLO_SERVER if first == "server" else REVERSE_SERVER)
    payload = b"" if first == "server" else b"abc"
    want = b"hello" if first == "server" else b"cba"
    assert exchange(p.port, payload) == want  # the first connection fills the pool
    asked = settled(p)
    for i in range(3 * POOL_BATCH):  # three times what a batch from the dialer holds
        data = payload + str(i).encode() if payload else b""
        assert exchange(p.port, data) == (data[::-1] if payload else want)
    assert settled(p) == asked, "the dialer was asked for more sockets"


def in_epoll_set(loop: Loop) -> set[int]:
    """The fds in the loop's epoll set, as the kernel lists them (/proc/self/fdinfo)."""
    with open(f"/proc/self/fdinfo/{loop._ep.fileno()}") as f:  # noqa: SLF001 - the kernel's view
        return {int(line.split()[1]) for line in f if line.startswith("tfd:")}


def test_pooled_dial_sockets_wait_in_the_epoll_set(proxy_in: Callable[..., Proxy]) -> None:
    """Every pooled TCP socket is in the loop's epoll set from its arrival on, fresh from the
    dialer or given back by a finished connection: a connection makes no epoll_ctl for its
    dial socket (the handler is all it sets), and a recycled one never leaves the set."""
    p = proxy_in(HELLO_SERVER)
    assert exchange(p.port) == b"hello"
    settled(p)
    for _ in range(40):
        assert exchange(p.port) == b"hello"
    settled(p)
    pooled = {s.fileno() for pool in p.pool.pools.values() for s in pool}
    assert pooled, "the pool holds sockets"
    assert pooled <= in_epoll_set(p.loop)


# Echoes every read at once (TCP_NODELAY), connection kept open: request/response traffic.
# A read of b"GIVE <n>" is answered with n bytes in one send instead (a big reply to a small
# request: it reaches the forwarder whole, in one segment and one event).
ECHO_SERVER = """
import socket,sys,threading
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
def one(c):
    c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
    while (d:=c.recv(65536)):
        give=d.startswith(b'GIVE ') and d[5:].isdigit()
        c.sendall(bytes(i % 251 for i in range(int(d[5:]))) if give else d)
while True:
    threading.Thread(target=one,args=(s.accept()[0],),daemon=True).start()
"""


def round_trip(c: socket.socket, msg: bytes, want: bytes) -> None:
    c.sendall(msg)
    got = bytearray()
    while len(got) < len(want):
        chunk = c.recv(len(want) - len(got))
        assert chunk, "the forwarder closed the connection"
        got += chunk
    assert got == want, f"a {len(want)}-byte answer came back changed"


def test_small_messages_round_trip_one_by_one(proxy_in: Callable[..., Proxy]) -> None:
    """Request/response on one connection, the forwarder's fast path (TcpConn.on_a/on_b
    straight to splice.copy_one) both ways: every message, of every size around the copy
    buffer's (4096, where a flow turns bulk), comes back whole and in order, and no message
    waits for the next one to be sent on (each round trip completes on its own); then a
    FIN is passed on. A guard test: the general pump passed it too."""
    p = proxy_in(ECHO_SERVER)
    sizes = [1, 2, 63, 64, 65, 1000, 4095, 1, 4096, 3, 4097, 64, 20000, 5, 1]
    with socket.create_connection(("127.0.0.1", p.port), 5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(10)
        for i, n in enumerate(sizes * 20):
            msg = bytes((i + k) % 251 for k in range(n))
            round_trip(c, msg, msg)
        c.shutdown(socket.SHUT_WR)
        assert c.recv(1) == b"", "the FIN was not passed on"


@pytest.mark.parametrize("size", [4097, 8000, 60000])
def test_a_big_reply_on_a_fresh_connection(proxy_in: Callable[..., Proxy], size: int) -> None:
    """A small request, then a reply bigger than the copy buffer that reaches the forwarder
    whole, in one event, on a direction still in copy mode: the fast path reads 4096 of it
    and must leave the rest to the general pump (the flow turned bulk), with no further
    event to come. Fails if the fast path returns there (checked by mutating it)."""
    p = proxy_in(ECHO_SERVER)
    with socket.create_connection(("127.0.0.1", p.port), 5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(10)
        round_trip(c, b"ping", b"ping")  # both directions connected, in copy mode
        round_trip(c, b"GIVE %d" % size, bytes(i % 251 for i in range(size)))
        round_trip(c, b"pong", b"pong")


def test_small_messages_to_a_client_that_stops_reading(proxy_in: Callable[..., Proxy]) -> None:
    """Thousands of small messages sent while the client reads nothing: the forwarder's sends
    to it come up short, the rest waits in the pipe, and the client side's events meanwhile
    must leave the fast path to the general pump (the other direction holds bytes). Once the
    client reads, it gets every byte, in order. A guard test: the general pump passed it too."""
    p = proxy_in(ECHO_SERVER)
    msgs = [bytes([i % 256]) * (1 + (i * 37) % 3000) for i in range(3000)]
    want = b"".join(msgs)  # ~4.5 MB: more than the sockets' and pipes' buffers hold
    with socket.create_connection(("127.0.0.1", p.port), 5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 16)
        c.settimeout(20)

        def send() -> None:
            for m in msgs:
                c.sendall(m)

        sender = threading.Thread(target=send, daemon=True)
        sender.start()
        time.sleep(1.0)  # not reading: the path back to us fills up
        got = bytearray()
        while len(got) < len(want):
            chunk = c.recv(1 << 20)
            assert chunk, "the forwarder closed the connection"
            got += chunk
        sender.join(10)
    assert len(got) == len(want)
    assert got == want


# Sleeps a second before reading anything, then reads the size the client gave in its first 8
# bytes and answers with a digest of what it read (the client's upload stalls meanwhile).
SLOW_READER_SERVER = """
import hashlib,socket,sys,time
s=socket.socket(); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.SOL_SOCKET,socket.SO_RCVBUF,1<<16)  # inherited: a small window
s.bind(('127.0.0.1',int(sys.argv[1]))); s.listen(64)
print('up',flush=True)
def exactly(c,n):
    got=bytearray()
    while len(got)<n:
        d=c.recv(min(1<<20,n-len(got)))
        if not d: break
        got+=d
    return bytes(got)
while True:
    c,_=s.accept(); time.sleep(1.0)
    n=int.from_bytes(exactly(c,8),'big')
    c.sendall(hashlib.sha256(exactly(c,n)).hexdigest().encode()); c.close()
"""


@pytest.mark.parametrize("size", [4 << 20])  # 1 MiB fits the buffers on the way: no stall
def test_a_server_slower_than_its_client_gets_every_byte(
        proxy_in: Callable[..., Proxy], size: int) -> None:
    """The dial side is watched for room to write only once bytes wait for it (B_EVENTS):
    a client uploading to a server that reads nothing for a second, then waiting for its
    answer (sending nothing more), stalls the pipe towards the server, and the server must
    get all of it once it reads. Fails (hangs, then times out) when the stalled pipe does
    not arm EPOLLOUT on the dial socket."""
    import hashlib

    p = proxy_in(SLOW_READER_SERVER)
    upload = BLOB[:size]
    with socket.create_connection(("127.0.0.1", p.port), 5) as c:
        c.settimeout(15)
        sender = threading.Thread(target=c.sendall, args=(size.to_bytes(8, "big") + upload,),
                                  daemon=True)
        sender.start()
        got = bytearray()
        while chunk := c.recv(4096):
            got += chunk
        sender.join(5)
    assert bytes(got) == hashlib.sha256(upload).hexdigest().encode()


def watched(loop: Loop) -> dict[int, int]:
    """fd -> the events the loop's epoll set watches it for, as the kernel lists them."""
    with open(f"/proc/self/fdinfo/{loop._ep.fileno()}") as f:  # noqa: SLF001 - the kernel's view
        return {int(p[1]): int(p[3], 16) for line in f
                if (p := line.split())[0] == "tfd:"}


def test_pooled_dial_sockets_are_not_watched_for_room_to_write(
        proxy_in: Callable[..., Proxy]) -> None:
    """A dial socket waits in the epoll set without EPOLLOUT, fresh or recycled: the edge of
    its connect completing was a wakeup of its own whenever the server had not answered by
    the next poll, and the server's first bytes (or the client's) show the connection."""
    p = proxy_in(HELLO_SERVER)
    for _ in range(3 * 40):
        assert exchange(p.port) == b"hello"
    settled(p)
    pooled = [s.fileno() for pool in p.pool.pools.values() for s in pool]
    assert pooled, "the pool holds sockets"
    events = watched(p.loop)
    assert all(not events[fd] & select.EPOLLOUT for fd in pooled), events


def open_fds() -> int:
    return len(os.listdir("/proc/self/fd"))


def test_a_burst_of_clients_is_answered_and_leaves_no_fd_behind(
        proxy_in: Callable[..., Proxy]) -> None:
    """Bursts of 64 clients connecting side by side, the forwarder accepting them one per
    wakeup (its listener is level-triggered), each answered with its own reply; afterwards
    the forwarder holds no fd beyond its pool and spare pipes: the same count as after the
    first connection. A guard test (the old code passes it too)."""
    p = proxy_in(REVERSE_SERVER)
    assert exchange(p.port, b"warm") == b"mraw"
    settled(p)

    def held() -> int:
        gc.collect()  # earlier tests' garbage (their servers' pipes) closes now, not between
        return open_fds() - p.pool.size - p.pool.bound.count - p.tcp.big.spare_fds

    before = held()
    for burst in range(5):
        clients = [socket.create_connection(("127.0.0.1", p.port), 5) for _ in range(64)]
        for i, c in enumerate(clients):
            c.settimeout(10)
            c.sendall(b"%d-%d" % (burst, i))
            c.shutdown(socket.SHUT_WR)
        for i, c in enumerate(clients):
            got = bytearray()
            while chunk := c.recv(4096):
                got += chunk
            assert bytes(got) == (b"%d-%d" % (burst, i))[::-1]
            c.close()
    settled(p)
    assert held() == before

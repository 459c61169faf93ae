"""Keeping the client's address at the price of a plain dial (issue 13): burrow's TCP proxy
(rootless.ports.tcp) in this process, the real dialer process, and a server that reports the
peer it saw.

A test-owned netns stands in for the host: the listener and the clients' sockets are made in
it, the clients on many addresses of a prefix on its loopback (10.98.0.0/16, 2001:db8:98::N),
none of them loopback, so each is kept. The sandbox is a second netns, its address on its own
loopback; the dial is made inside it (clientaddr INSIDE), as for burrow's own sandboxes.
A transparent dial socket bound to the client's address only goes back to a pool of that
address when its connection ends cleanly (rootless.ports.recycle.ByAddress), so the next
connection from that address makes and binds no new socket; `client-port` keeps the old way.
"""

from __future__ import annotations

import os
import queue
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from ipaddress import IPv4Address, IPv6Address

import pytest

from netns.loop import Loop
from netns.nsenter import entered
from rootless.ports.budget import Guard
from rootless.ports.manager import bind
from rootless.ports.pool import POOL_BATCH, DialerPool
from rootless.ports.spec import PortSpec
from rootless.ports.target import Listener, Target
from rootless.ports.tcp import TcpProxy
from tests.nsutil import Netns

pytestmark = pytest.mark.root

SANDBOX4, SANDBOX6 = "10.99.0.2", "2001:db8:99::2"
HOST4 = "10.98.0.1"  # the listener's address; clients are 10.98.x.y
CLIENT6 = "2001:db8:98::7"
# Dual-stack. A client that sends nothing gets "host port" of the peer it saw and the close
# (the server ends first); one that sends gets what it sent, reversed, after its FIN (the
# client ends first).
WHO_SERVER = """
import socket,sys
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',5301)); s.listen(256)
first=sys.argv[1]
print('up',flush=True)
while True:
    c,peer=s.accept(); who=f'{peer[0].removeprefix("::ffff:")} {peer[1]}'.encode()
    if first=='server':
        c.sendall(who); c.close(); continue
    got=b''
    while (d:=c.recv(65536)): got+=d
    c.sendall(got[::-1]+b'|'+who); c.close()
"""


class Proxy:
    """A published port on the host netns's `::`, to the sandbox's 5301, keeping addresses."""

    def __init__(self, host: Netns, sandbox: Netns, client_port: bool = False,
                 max_pooled: int = 1 << 16) -> None:
        self.host = host
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        self.dialer = subprocess.Popen([sys.executable, "-m", "rootless.ports.dialer",
                                        str(child.fileno())], pass_fds=[child.fileno()],
                                       stdin=subprocess.DEVNULL)
        child.close()
        self.loop = Loop()
        self.guard = Guard(65536, lambda: 0, lambda: (True, False))
        self.pool = DialerPool(self.loop, parent, self.guard.shed, self.loop.stop, max_pooled)
        self.tcp = TcpProxy(self.loop, self.pool, self.guard)
        self.port = 18080
        spec = PortSpec.parse(f"{self.port}:5301/tcp" + (",client-port" if client_port else ""))[0]
        assert getattr(spec, "client_port", False) == client_port  # (old code: no option)
        with self.in_host():
            sock = bind(spec, self.port)
        self.pool.open(sandbox.path)
        target = Target("t", sandbox.path, IPv4Address(SANDBOX4), IPv6Address(SANDBOX6),
                        via=sandbox.path, inside=True)
        self.tcp.listen(Listener(sock, spec, self.port, 5301, target))
        self._stop_r, self._stop_w = os.pipe()
        self.loop.add(self._stop_r, lambda ev: self.loop.stop())
        # settled(): the state is read on the loop's own thread, between its handlers, never
        # half-way through one (e.g. a connection counted closed whose socket is not given back).
        self._ask_r, self._ask_w = os.pipe()
        self._asked: queue.Queue[Callable[[], bool]] = queue.Queue()
        self._answers: queue.Queue[bool] = queue.Queue()
        self.loop.add(self._ask_r, self._answer)
        self.thread = threading.Thread(target=self.loop.run, daemon=True)
        self.thread.start()

    def _answer(self, ev: int) -> None:
        os.read(self._ask_r, 1)
        self._answers.put(self._asked.get_nowait()())

    def on_loop(self, check: Callable[[], bool]) -> bool:
        """check() run on the loop thread, between its handlers."""
        self._asked.put(check)
        os.write(self._ask_w, b"?")
        return self._answers.get(timeout=10)

    def wait(self, check: Callable[[], bool]) -> None:
        deadline = time.monotonic() + 10
        while not (ok := self.on_loop(check)) and time.monotonic() < deadline:
            time.sleep(0.01)
        assert ok

    def quiet(self) -> bool:
        """No dial in flight, no connection open and no dial socket waiting to go back to
        its pool."""
        return not self.pool.in_flight and not self.tcp.conns.total and not self.tcp.returned

    @contextmanager
    def in_host(self) -> Iterator[None]:
        """This thread in the host netns: the sockets made there stay there."""
        fd = os.open(self.host.path, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with entered(fd):
                yield
        finally:
            os.close(fd)

    def ask(self, client: str, data: bytes = b"") -> tuple[bytes, str, int, int]:
        """One connection from `client`: (answer, address and port the server saw, our port)."""
        fam = socket.AF_INET6 if ":" in client else socket.AF_INET
        with self.in_host():
            c = socket.socket(fam)
        with c:
            c.settimeout(5)
            c.bind((client, 0))
            c.connect((HOST4 if fam == socket.AF_INET else CLIENT6, self.port))
            if data:
                c.sendall(data)
                c.shutdown(socket.SHUT_WR)
            got = bytearray()
            while chunk := c.recv(65536):
                got += chunk
            mine = c.getsockname()[1]
        answer, _, who = bytes(got).rpartition(b"|") if data else (b"", b"", bytes(got))
        ip, port = who.decode().split()
        return answer, ip, int(port), mine

    def close(self) -> None:
        os.write(self._stop_w, b"x")
        self.thread.join(10)
        self.dialer.kill()
        self.dialer.wait()
        for fd in (self._ask_r, self._ask_w):
            os.close(fd)


@pytest.fixture
def proxy() -> Iterator[Callable[..., Proxy]]:
    made: list[Proxy] = []
    spaces: list[Netns] = []
    procs: list[subprocess.Popen[str]] = []

    def make(first: str = "server", **kw: object) -> Proxy:
        host, sandbox = Netns(), Netns()
        spaces.extend((host, sandbox))
        host.run(["ip", "addr", "add", f"{HOST4}/16", "dev", "lo"])  # on lo: all of it local
        host.run(["ip", "addr", "add", f"{CLIENT6}/128", "dev", "lo", "nodad"])
        sandbox.run(["ip", "addr", "add", f"{SANDBOX4}/32", "dev", "lo"])
        sandbox.run(["ip", "addr", "add", f"{SANDBOX6}/128", "dev", "lo", "nodad"])
        srv = sandbox.popen([sys.executable, "-c", WHO_SERVER, first], stdout=subprocess.PIPE)
        procs.append(srv)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        p = Proxy(host, sandbox, **kw)  # type: ignore[arg-type]
        made.append(p)
        return p

    yield make
    for p in made:
        p.close()
    for srv in procs:
        srv.kill()
        srv.wait()
    for ns in spaces:
        ns.close()


def settled(p: Proxy) -> int:
    """Dialer requests so far, once none is in flight and every connection is closed."""
    # Asked of the loop thread: read from this one, the counters could all be zero while the
    # loop is between closing the last connection (conns dropped) and putting its socket back
    # (TcpProxy._close appends to `returned` after that; _give_back empties it before the puts).
    p.wait(p.quiet)
    return p.pool.next_id


@pytest.mark.parametrize("first", ["server", "client"])
@pytest.mark.parametrize("client", ["10.98.3.4", CLIENT6])
def test_one_client_address_needs_no_new_dial_socket(proxy: Callable[..., Proxy], first: str,
                                                     client: str) -> None:
    """Sequential connections from one client address, whichever side ends first: the server
    sees that address on every one, each gets exactly its own answer, and after the first the
    dialer is asked for no new socket (the one bound to the address is used again)."""
    p = proxy(first)
    data = b"" if first == "server" else b"abc"
    assert p.ask(client, data)[:2] == (data[::-1], client)
    asked = settled(p)
    for i in range(3 * POOL_BATCH):  # three times what a batch from the dialer holds
        d = data + str(i).encode() if data else b""
        answer, ip, port, mine = p.ask(client, d)
        assert (answer, ip) == (d[::-1], client)
    assert settled(p) == asked, "the dialer was asked for more sockets"
    # One, or a few: a client's next connect may come before the forwarder has seen the
    # last one's end (each found a bound socket or a fresh one from the pool, never the dialer).
    assert 1 <= p.pool.bound.count <= 4 and p.pool.avail.kept == 3 * POOL_BATCH + 1


def test_a_spray_of_client_addresses_stays_within_the_cap(proxy: Callable[..., Proxy]) -> None:
    """Each new address costs one dial socket, and what is kept for them is capped: in total
    (the least recently used addresses give theirs up) and per address; every connection
    still gets its own answer, seen from its own address."""
    p = proxy("client", max_pooled=64)
    cap = p.pool.bound.total
    assert cap == 16
    clients = [f"10.98.{i // 200}.{i % 200 + 10}" for i in range(3 * cap)]
    for i, ip in enumerate(clients):
        assert p.ask(ip, b"x%d" % i)[:2] == ((b"x%d" % i)[::-1], ip)
    settled(p)
    assert p.pool.bound.count == cap
    assert {k[4] for k in p.pool.bound.pools} == set(clients[-cap:]), "the latest are kept"
    # Per address: connections side by side from one address, all given back at once.
    p.pool.bound.per_address = 4
    with p.in_host():
        conns = [socket.socket() for _ in range(10)]
    for c in conns:
        c.bind(("10.98.9.9", 0))
        c.connect((HOST4, p.port))
    # Each holds its own dial socket before any ends (the server answers after the client's
    # FIN): else, on a loaded machine, a later one could take one an earlier one gave back.
    p.wait(lambda: p.tcp.conns.total == len(conns)
           and all(c.b is not None for cs in p.tcp.by_netns.values() for c in cs))
    for i, c in enumerate(conns):
        c.settimeout(5)
        c.sendall(b"%d" % i)
        c.shutdown(socket.SHUT_WR)
    for i, c in enumerate(conns):
        got = bytearray()
        while chunk := c.recv(64):
            got += chunk
        assert bytes(got).startswith(b"%d|10.98.9.9 " % i), got
        c.close()
    settled(p)
    (mine,) = [pool for k, pool in p.pool.bound.pools.items() if k[4] == "10.98.9.9"]
    assert len(mine) == 4
    assert p.pool.bound.count == cap


def test_client_port_keeps_the_port_too(proxy: Callable[..., Proxy]) -> None:
    """`client-port`: the server sees the client's own port as well; such a socket keeps
    that port, so it is closed after its connection, not kept."""
    p = proxy("server", client_port=True)
    for _ in range(3):
        _, ip, port, mine = p.ask("10.98.5.6")
        assert (ip, port) == ("10.98.5.6", mine)
    settled(p)
    assert p.pool.bound.count == 0 and p.pool.avail.kept == 3

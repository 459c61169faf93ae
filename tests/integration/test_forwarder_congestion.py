"""The forwarder's dialled TCP sockets do not pace (rootless.ports.inhost), even where the
netns's default congestion control does (bbr): the dialer gives them cubic, or reno where cubic
is not allowed, before they connect; the server's own sockets and the dialled UDP ones keep the
netns's choice.

Real namespaces whose default is set to bbr (a per-netns sysctl), the real dialer, and
burrow-rootlessport driven as Podman drives it, with `ss` reading the connection in the
container's netns.
"""

from __future__ import annotations

import os
import select
import socket
import subprocess
import sys
import tempfile
import textwrap
import threading
from collections.abc import Callable
from pathlib import Path

import pytest

from netns import nsenter
from rootless.ports import inhost, manager, messages
from rootless.ports.dialer import Dialer
from rootless.ports.spec import PortSpec
from rootless.ports.splice import COPY, BigPipes, pipe_pair, pump
from tests.engine_util import wait_for
from tests.integration.test_rootlessport_contract import CID, DROPIN, Dropin, mappings
from tests.nsutil import Netns

pytestmark = pytest.mark.root
UNPACED = {"cubic", "reno"}


def bbr_netns(netns_factory: Callable[[], Netns]) -> Netns:
    ns = netns_factory()
    res = ns.run(["sysctl", "-w", "net.ipv4.tcp_congestion_control=bbr"], check=False)
    if res.returncode != 0:
        pytest.skip("environment: this kernel has no bbr congestion control")
    return ns


def cc_of(s: socket.socket) -> str:
    return s.getsockopt(socket.IPPROTO_TCP, socket.TCP_CONGESTION, 16).rstrip(b"\0").decode()


def in_thread(fn: Callable[[], list[socket.socket]]) -> list[socket.socket]:
    """fn in a throwaway thread (Dialer.make and setns change the calling thread's netns)."""
    out: list[socket.socket] = []
    t = threading.Thread(target=lambda: out.extend(fn()))
    t.start()
    t.join(10)
    return out


def test_dialled_tcp_sockets_get_an_unpaced_congestion_control(
        netns_factory: Callable[[], Netns]) -> None:
    ns = bbr_netns(netns_factory)

    def plain() -> list[socket.socket]:
        with open(ns.path) as f:
            nsenter.setns(f.fileno())
        return [socket.socket()]

    def dialled() -> list[socket.socket]:
        a, b = socket.socketpair()
        with a, b:
            d = Dialer(a)
            return [socket.socket(fileno=fd) for kind in ("tcp", "udp")
                    for fd in d.make(messages.Dial(1, ns.path, 4, kind, 2))]

    control = in_thread(plain)
    assert cc_of(control[0]) == "bbr", "the netns's default paces: the test means something"
    socks = in_thread(dialled)
    try:
        tcp = [s for s in socks if s.type == socket.SOCK_STREAM]
        assert len(tcp) == 2 and len(socks) == 4
        assert {cc_of(s) for s in tcp} <= UNPACED
    finally:
        for s in socks + control:
            s.close()


def test_a_refused_choice_falls_back_and_is_not_asked_again() -> None:
    """A congestion control the kernel refuses (here: one it does not have, ENOENT; an
    unprivileged user gets EPERM for one not in tcp_allowed_congestion_control) is skipped for
    the next, and remembered: reno is always there and allowed to every user."""
    name = "burrow-none"
    inhost._refused.discard(name)
    try:
        with socket.socket() as s:
            assert inhost.unpaced(s, (name, "reno")) == "reno"
            assert cc_of(s) == "reno"
        assert name in inhost._refused
        with socket.socket() as s:  # all refused: the socket keeps the default, no error
            before = cc_of(s)
            assert inhost.unpaced(s, (name,)) is None
            assert cc_of(s) == before
    finally:
        inhost._refused.discard(name)


def test_unprivileged_user_gets_reno_where_cubic_is_not_allowed(
        rootless_user: object, netns_factory: Callable[[], Netns]) -> None:
    """The EPERM path for real: the unprivileged test user in a netns root made (so without
    CAP_NET_ADMIN there). Which it gets follows the machine's allowed list."""
    ns = netns_factory()
    allowed = Path("/proc/sys/net/ipv4/tcp_allowed_congestion_control").read_text().split()
    script = textwrap.dedent("""\
        import socket
        from rootless.ports import inhost
        s = socket.socket()
        print(inhost.unpaced(s), inhost.unpaced(socket.socket()), sorted(inhost._refused))
    """)
    uid = rootless_user.uid  # type: ignore[attr-defined]
    res = subprocess.run(ns.argv(["setpriv", f"--reuid={uid}", f"--regid={uid}", "--clear-groups",
                                  sys.executable, "-c", script]), capture_output=True, text=True, timeout=30,
                         cwd=str(Path(__file__).resolve().parents[2]))
    assert res.returncode == 0, res.stderr
    got = res.stdout.split()
    if "cubic" in allowed:
        assert got[:2] == ["cubic", "cubic"]
    else:
        assert got == ["reno", "reno", "['cubic']"]


SINK = textwrap.dedent("""\
    import socket, sys
    s = socket.socket(); s.bind(("127.0.0.1", 80)); s.listen(4)
    print("ready", flush=True)
    c, _ = s.accept()
    while c.recv(65536):
        pass
""")


def test_through_burrow_rootlessport_the_connection_to_the_server_does_not_pace(
        netns_factory: Callable[[], Netns]) -> None:
    if not DROPIN.exists():
        pytest.skip("environment: .venv is not built (scripts/install)")
    host, ctr = netns_factory(), bbr_netns(netns_factory)
    sink = subprocess.Popen(ctr.argv([sys.executable, "-c", SINK]), stdout=subprocess.PIPE, text=True)
    tmp = Path(tempfile.mkdtemp(prefix="brlp-cc-", dir="/tmp"))
    d = Dropin(host, {"Mappings": mappings(("127.0.0.1", 8080, 80, 1, "tcp")), "NetNSPath": ctr.path,
                      "TmpDir": str(tmp), "ChildIP": "127.0.0.1", "ContainerID": CID,
                      "RootlessCNI": False})
    client: subprocess.Popen[str] | None = None
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        assert d.ready() == b"1"
        client = subprocess.Popen(host.argv([sys.executable, "-c", textwrap.dedent("""\
            import socket, sys
            c = socket.create_connection(("127.0.0.1", 8080))
            c.sendall(b"x" * (1 << 20))
            sys.stdin.read()
        """)]), stdin=subprocess.PIPE, text=True)

        seen: dict[str, str] = {}

        def both() -> bool:
            """Congestion control by side: the forwarder's dialled socket (peer :80) and the
            server's accepted one (local :80), once both are established."""
            out = ctr.run(["ss", "-tinH", "state", "established"]).stdout.strip().split("\n")
            for head, info in zip(out[::2], out[1::2], strict=False):
                local, peer = head.split()[2:4]
                cc = next((w for w in info.split() if w in ("bbr", "cubic", "reno")), "?")
                seen["dialled" if peer.endswith(":80") else "server" if local.endswith(":80") else local] = cc
            return {"dialled", "server"} <= seen.keys()

        assert wait_for(both, timeout=10), seen
        assert seen["server"] == "bbr", "the container's own sockets keep its choice"
        assert seen["dialled"] in UNPACED
    finally:
        _stop(client, d, sink, tmp)


def test_a_bulk_flow_to_a_loopback_peer_stops_taking_bbr(netns_factory: Callable[[], Netns]) -> None:
    """splice._bulk_to: when a direction turns bulk and its destination's peer is a loopback
    address (a client on this host), that socket leaves bbr too; a destination with any other
    peer keeps the netns's choice (it may face any network)."""
    ns = bbr_netns(netns_factory)
    ns.run(["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"])

    def pairs() -> list[socket.socket]:
        with open(ns.path) as f:
            nsenter.setns(f.fileno())
        out = []
        for ip in ("127.0.0.1", "10.99.0.1", "127.0.0.1"):  # src side, dst (loopback), dst (not)
            with socket.socket() as lst:
                lst.bind((ip, 0))
                lst.listen(1)
                peer = socket.create_connection(lst.getsockname())
                mine, _ = lst.accept()
            out += [mine, peer]
        return out

    socks = in_thread(pairs)
    src, client, far, far_peer, near, near_peer = socks
    try:
        assert {cc_of(s) for s in socks} == {"bbr"}
        for dst, reader in ((near, near_peer), (far, far_peer)):
            src.setblocking(False)
            client.sendall(b"y" * COPY)  # one full copy-mode recv: the flow turns bulk
            assert select.select([src], [], [], 5)[0]
            p, q = pipe_pair()
            try:
                pump(src, dst, p, BigPipes())
                assert p.bulk
                assert len(recv_all(reader, COPY)) == COPY
            finally:
                p.close()
                q.close()
        assert cc_of(near) in UNPACED, "a loopback peer: the hop stays on this host"
        assert cc_of(far) == "bbr", "any other peer keeps the netns's choice"
    finally:
        for s in socks:
            s.close()


def _stop(client: subprocess.Popen[str] | None, d: Dropin, sink: subprocess.Popen[str],
          tmp: Path) -> None:
    """End a drop-in test: the client (its stdin closed), the drop-in, the sink, the temp dir."""
    if client is not None:
        assert client.stdin is not None
        client.stdin.close()
        client.wait(10)
    d.close()
    sink.kill()
    sink.wait()
    subprocess.run(["rm", "-rf", str(tmp)], check=False)


def recv_all(s: socket.socket, n: int) -> bytes:
    s.settimeout(5)
    got = b""
    while len(got) < n:
        d = s.recv(n - len(got))
        assert d
        got += d
    return got


def their_socket(pid: int, fd: int) -> socket.socket | None:
    """A copy of process pid's socket fd (pidfd_getfd), or None."""
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    pidfd = os.pidfd_open(pid)
    try:
        mine = libc.syscall(438, pidfd, fd, 0)  # SYS_pidfd_getfd
    finally:
        os.close(pidfd)
    return socket.socket(fileno=mine) if mine >= 0 else None


def test_burrow_rootlessports_accepted_sockets_nodelay_and_unpaced_on_loopback_ports(
        netns_factory: Callable[[], Netns]) -> None:
    """The listeners set TCP_NODELAY, so every accepted socket has it from the start (Go's
    rootlessport sets it on each connection; the drop-in's listeners had only SO_REUSEADDR).
    A listener on 127.0.0.1 also has an unpaced congestion control, which its accepted sockets
    inherit before the host's bbr could start pacing them; a wildcard one keeps bbr (its
    clients may be anywhere)."""
    if not DROPIN.exists():
        pytest.skip("environment: .venv is not built (scripts/install)")
    host, ctr = bbr_netns(netns_factory), netns_factory()
    sink = subprocess.Popen(ctr.argv([sys.executable, "-c", SINK]), stdout=subprocess.PIPE, text=True)
    tmp = Path(tempfile.mkdtemp(prefix="brlp-nd-", dir="/tmp"))
    d = Dropin(host, {"Mappings": mappings(("127.0.0.1", 8080, 80, 1, "tcp"), ("", 8081, 80, 1, "tcp")),
                      "NetNSPath": ctr.path, "TmpDir": str(tmp), "ChildIP": "127.0.0.1",
                      "ContainerID": CID, "RootlessCNI": False})
    client: subprocess.Popen[str] | None = None
    try:
        assert sink.stdout is not None and sink.stdout.readline().strip() == "ready"
        assert d.ready() == b"1"
        client = subprocess.Popen(host.argv([sys.executable, "-c", textwrap.dedent("""\
            import socket, sys
            cs = [socket.create_connection(("127.0.0.1", p)) for p in (8080, 8081)]
            print(*(c.getsockname()[1] for c in cs), flush=True)
            sys.stdin.read()
        """)]), stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
        assert client.stdout is not None
        loop_port, any_port = map(int, client.stdout.readline().split())
        found: dict[int, tuple[int, str]] = {}

        def accepted() -> bool:
            fds = f"/proc/{d.pid_in_host()}/fd"
            for fd in os.listdir(fds):
                try:
                    if not os.readlink(f"{fds}/{fd}").startswith("socket:"):
                        continue
                except OSError:
                    continue
                s = their_socket(d.pid_in_host(), int(fd))
                if s is None:
                    continue
                with s:
                    if s.type != socket.SOCK_STREAM or s.family not in (socket.AF_INET, socket.AF_INET6):
                        continue
                    try:
                        peer = s.getpeername()
                    except OSError:
                        continue
                    if peer[1] in (loop_port, any_port):
                        found[peer[1]] = (s.getsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY), cc_of(s))
            return len(found) == 2

        assert wait_for(accepted, timeout=10), f"the drop-in's accepted sockets were not found: {found}"
        assert found[loop_port][0] == found[any_port][0] == 1
        assert found[loop_port][1] in UNPACED, "a loopback listener's clients are on this host"
        assert found[any_port][1] == "bbr", "a wildcard listener keeps the host's choice"
    finally:
        _stop(client, d, sink, tmp)


def test_burrows_own_listeners_unpaced_only_on_loopback_addresses(
        netns_factory: Callable[[], Netns]) -> None:
    """rootless.ports.manager.bind, as for `burrow sandbox create -p`: a TCP listener on a
    loopback address gets the unpaced choice (its accepted sockets inherit it); on all
    addresses or another one it keeps the netns's bbr; UDP is untouched."""
    ns = bbr_netns(netns_factory)
    ns.run(["ip", "addr", "add", "10.99.0.1/32", "dev", "lo"])

    def listeners() -> list[socket.socket]:
        with open(ns.path) as f:
            nsenter.setns(f.fileno())
        return [manager.bind(PortSpec.parse(p)[0], 8090 + i) for i, p in enumerate(
            ("127.0.0.1:1:80", "[::1]:1:80", "1:80", "10.99.0.1:1:80", "127.0.0.1:1:53/udp"))]

    socks = in_thread(listeners)
    try:
        assert len(socks) == 5
        assert [cc_of(s) in UNPACED for s in socks[:4]] == [True, True, False, False]
        assert [cc_of(s) for s in socks[2:4]] == ["bbr", "bbr"]
        assert socks[4].type == socket.SOCK_DGRAM
    finally:
        for s in socks:
            s.close()

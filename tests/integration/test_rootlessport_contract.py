"""burrow-rootlessport keeps Podman 4.3's rootlessport contract (spec/rootlessport.md §2-8),
driven here exactly as Podman drives it, between two throwaway namespaces: a "host" netns the
drop-in runs in and a "container" netns with two addresses and servers that say which
address and port they were reached on.

Real sockets and namespaces; Podman itself is in tests/e2e/test_podman_rootlessport.py.
"""

from __future__ import annotations

import json
import os
import socket
import stat
import subprocess
import sys
import tempfile
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.nsutil import VENV_BIN, Netns

pytestmark = pytest.mark.root
DROPIN = VENV_BIN / "burrow-rootlessport"
CID = "b" * 64
IP1, IP2 = "10.89.0.2", "10.89.0.3"

# TCP servers on IP1 and IP2 (port 80, 81) and a UDP one on IP1:53, in the container netns:
# each answers "<proto> <local ip>:<port> <payload>".
SERVERS = textwrap.dedent("""\
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for ip in sys.argv[1:]:
        for port in (80, 81):
            s = socket.socket(); s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind((ip, port)); s.listen(64); sel.register(s, selectors.EVENT_READ, "tcp")
    u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM); u.bind((sys.argv[1], 53))
    sel.register(u, selectors.EVENT_READ, "udp")
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if key.data == "udp":
                data, peer = s.recvfrom(4096)
                s.sendto(b"udp %s:%d " % (s.getsockname()[0].encode(), 53) + data, peer)
                continue
            c, _ = s.accept()
            c.settimeout(3)
            try:
                data = c.recv(4096)
                ip, port = c.getsockname()[:2]
                c.sendall(b"tcp %s:%d " % (ip.encode(), port) + data)
            except OSError:
                pass
            c.close()
""")


class Ctr:
    """A "container" netns with IP1 and IP2 on a veth and the servers above."""

    def __init__(self) -> None:
        self.ns = Netns()
        for cmd in (["ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1"],
                    ["ip", "link", "set", "e1", "up"], ["ip", "link", "set", "e0", "up"],
                    ["ip", "addr", "add", f"{IP1}/24", "dev", "e0"],
                    ["ip", "addr", "add", f"{IP2}/24", "dev", "e0"]):
            self.ns.run(cmd)
        self.servers = subprocess.Popen(self.ns.argv([sys.executable, "-c", SERVERS, IP1, IP2]),
                                        stdout=subprocess.PIPE, text=True)
        assert self.servers.stdout is not None and self.servers.stdout.readline().strip() == "ready"

    def close(self) -> None:
        self.servers.kill()
        self.servers.wait()
        self.ns.close()


class Dropin:
    """burrow-rootlessport as Podman runs it: config on stdin, ExitFD/ReadyFD inherited, its own
    process group, stdout and stderr pipes."""

    def __init__(self, host: Netns, cfg: dict[str, Any]) -> None:
        self.exit_r, self.exit_w = os.pipe()
        self.ready_r, ready_w = os.pipe()
        cfg = {"ExitFD": self.exit_r, "ReadyFD": ready_w, **cfg}
        self.proc = subprocess.Popen(host.argv([str(DROPIN)]), stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                     pass_fds=(self.exit_r, ready_w), process_group=0)
        os.close(ready_w)
        os.close(self.exit_r)
        assert self.proc.stdin is not None
        self.proc.stdin.write(json.dumps(cfg).encode())
        self.proc.stdin.close()

    def ready(self) -> bytes:
        """What Podman reads from ReadyFD (b"" if the helper exited without signalling)."""
        return os.read(self.ready_r, 16)

    def pid_in_host(self) -> int:
        """The helper's pid (nsenter execs it in place: the same pid)."""
        return self.proc.pid

    def stop(self, timeout: float = 10) -> int:
        """conmon's end of ExitFD closes: the container stopped."""
        if self.exit_w >= 0:
            os.close(self.exit_w)
            self.exit_w = -1
        return self.proc.wait(timeout)

    def close(self) -> None:
        if self.proc.poll() is None:
            self.stop()
        os.close(self.ready_r)


@pytest.fixture
def env(netns_factory: Callable[[], Netns]) -> Iterator[tuple[Netns, Ctr, Path]]:
    if not DROPIN.exists():
        pytest.skip("environment: .venv is not built (scripts/install)")
    host = netns_factory()
    ctr = Ctr()
    # A long TmpDir: the control socket path passes the 108-byte sun_path limit.
    tmp = Path(tempfile.mkdtemp(prefix="brlp-", dir="/tmp")) / ("t" * 90) / "libpod" / "tmp"
    tmp.mkdir(parents=True)
    try:
        yield host, ctr, tmp
    finally:
        ctr.close()
        subprocess.run(["rm", "-rf", str(tmp.parents[2])], check=False)


def talk(host: Netns, proto: str, ip: str, port: int, payload: str = "hi") -> str:
    script = textwrap.dedent("""\
        import socket, sys
        proto, ip, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
        fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
        s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
        s.settimeout(3)
        s.connect((ip, port))
        s.send(sys.argv[4].encode())
        print(s.recv(4096).decode(), end="")
    """)
    res = host.run([sys.executable, "-c", script, proto, ip, str(port), payload], check=False)
    return res.stdout if res.returncode == 0 else f"failed: {res.stderr.strip()[-200:]}"


def mappings(*specs: tuple[str, int, int, int, str]) -> list[dict[str, Any]]:
    return [{"host_ip": h, "host_port": hp, "container_port": cp, "range": r, "protocol": p}
            for h, hp, cp, r, p in specs]


def test_ready_then_forwards_v4_and_v6_tcp_udp_ranges_then_exits_on_exitfd_eof(
        env: tuple[Netns, Ctr, Path]) -> None:
    host, ctr, tmp = env
    d = Dropin(host, {"Mappings": mappings(("", 8080, 80, 2, "tcp"), ("127.0.0.1", 8053, 53, 1, "udp")),
                      "NetNSPath": ctr.ns.path, "TmpDir": str(tmp), "ChildIP": IP1,
                      "ContainerID": CID, "RootlessCNI": False})
    try:
        assert d.ready() == b"1"
        # After ready, fds 1 and 2 are /dev/null (Podman's pipes break once it exits).
        for fd in (1, 2):
            assert os.readlink(f"/proc/{d.pid_in_host()}/fd/{fd}") == "/dev/null"
        # One wildcard listener serves v4 and v6 clients; every dial goes to ChildIP.
        assert talk(host, "tcp", "127.0.0.1", 8080) == f"tcp {IP1}:80 hi"
        assert talk(host, "tcp", "::1", 8080) == f"tcp {IP1}:80 hi"
        assert talk(host, "tcp", "127.0.0.1", 8081) == f"tcp {IP1}:81 hi"
        assert talk(host, "udp", "127.0.0.1", 8053) == f"udp {IP1}:53 hi"
        assert not (tmp / "rp").exists()  # no control socket without RootlessCNI
    finally:
        rc = d.stop()
        d.close()
    assert rc == 0
    assert d.proc.stdout is not None and d.proc.stdout.read() == b""
    assert "failed" in talk(host, "tcp", "127.0.0.1", 8080)  # the ports went with it


def test_control_socket_repoints_ports_and_answers_errors(env: tuple[Netns, Ctr, Path]) -> None:
    host, ctr, tmp = env
    d = Dropin(host, {"Mappings": mappings(("", 8080, 80, 1, "tcp")), "NetNSPath": ctr.ns.path,
                      "TmpDir": str(tmp), "ChildIP": IP1, "ContainerID": CID, "RootlessCNI": True})
    try:
        assert d.ready() == b"1"
        rp = tmp / "rp"
        assert stat.S_IMODE(rp.stat().st_mode) == 0o700
        assert stat.S_ISSOCK((rp / CID).stat().st_mode)
        assert talk(host, "tcp", "127.0.0.1", 8080) == f"tcp {IP1}:80 hi"

        def reload(packet: bytes) -> bytes:
            """What Podman's reloadRootlessRLKPortMapping does: one packet, read to EOF."""
            fd = os.open(rp, os.O_RDONLY)
            s = socket.socket(socket.AF_UNIX, socket.SOCK_SEQPACKET)
            try:
                s.settimeout(5)
                s.connect(f"/proc/self/fd/{fd}/{CID}")
                s.send(packet)
                out = b""
                while chunk := s.recv(4096):
                    out += chunk
                return out
            finally:
                s.close()
                os.close(fd)

        assert reload(b'"%s"\n' % IP2.encode()) == b"OK"
        assert talk(host, "tcp", "::1", 8080) == f"tcp {IP2}:80 hi"  # the same listener, re-pointed
        bad = reload(b'"not-an-ip"\n')
        assert bad != b"OK" and b"not an IPv4 or IPv6 address" in bad
        assert reload(b"\xff\x00garbage") != b"OK"
        assert talk(host, "tcp", "127.0.0.1", 8080) == f"tcp {IP2}:80 hi"  # still serving
    finally:
        assert d.stop() == 0
        d.close()
    assert not (tmp / "rp" / CID).exists()  # a clean exit removes the socket


@pytest.mark.parametrize("cfg_over, line", [
    ({"ContainerID": "../x"}, "config field 'ContainerID' must be 64 hex digits"),
    ({"Mappings": [{"host_port": 80, "container_port": 80, "protocol": "sctp"}]}, "protocol 'sctp'"),
    ({"NetNSPath": "netns"}, "config field 'NetNSPath' must be an absolute"),
    ({"NetNSPath": "/etc/hostname"}, "NetNSPath /etc/hostname is not a network namespace"),
    ({"NetNSPath": "/proc/self/ns/user"}, "is not a network namespace"),
    ({"NetNSPath": "/nonexistent/netns"}, "cannot open NetNSPath /nonexistent/netns"),
])
def test_bad_config_is_one_line_on_stdout_and_never_ready(env: tuple[Netns, Ctr, Path],
                                                         cfg_over: dict[str, Any], line: str) -> None:
    host, ctr, tmp = env
    cfg = {"Mappings": mappings(("", 8080, 80, 1, "tcp")), "NetNSPath": ctr.ns.path, "TmpDir": str(tmp),
           "ChildIP": IP1, "ContainerID": CID, "RootlessCNI": True, **cfg_over}
    d = Dropin(host, cfg)
    try:
        assert d.ready() == b""  # exited without signalling
        assert d.proc.wait(10) == 1
        assert d.proc.stdout is not None
        out = d.proc.stdout.read().decode()
        assert out.count("\n") == 1 and line in out, out
    finally:
        d.close()


def test_port_in_use_fails_before_ready_with_upstreams_line_and_binds_nothing(
        env: tuple[Netns, Ctr, Path]) -> None:
    host, ctr, tmp = env
    holder = subprocess.Popen(host.argv([sys.executable, "-c",
                                         "import socket,time; s=socket.socket(); s.bind(('0.0.0.0',8090));"
                                         "s.listen(); print('ok', flush=True); time.sleep(60)"]),
                              stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout is not None and holder.stdout.readline().strip() == "ok"
        d = Dropin(host, {"Mappings": mappings(("", 8089, 80, 1, "tcp"), ("", 8090, 80, 1, "tcp")),
                          "NetNSPath": ctr.ns.path, "TmpDir": str(tmp), "ChildIP": IP1,
                          "ContainerID": CID, "RootlessCNI": True})
        try:
            assert d.ready() == b""
            assert d.proc.wait(10) == 1
            assert d.proc.stdout is not None
            out = d.proc.stdout.read().decode()
            assert out.startswith("listen tcp 0.0.0.0:8090: bind: address already in use"), out
            assert not (tmp / "rp" / CID).exists()
        finally:
            d.close()
        # All or nothing: 8089, bound before 8090 failed, was released.
        res = host.run([sys.executable, "-c", "import socket; s=socket.socket(); s.bind(('0.0.0.0',8089))"],
                       check=False)
        assert res.returncode == 0, res.stderr
    finally:
        holder.kill()
        holder.wait()


def test_sigterm_cleans_up_like_exitfd(env: tuple[Netns, Ctr, Path]) -> None:
    host, ctr, tmp = env
    d = Dropin(host, {"Mappings": mappings(("", 8080, 80, 1, "tcp")), "NetNSPath": ctr.ns.path,
                      "TmpDir": str(tmp), "ChildIP": IP1, "ContainerID": CID, "RootlessCNI": True})
    try:
        assert d.ready() == b"1"
        deadline = time.monotonic() + 5
        while talk(host, "tcp", "127.0.0.1", 8080) != f"tcp {IP1}:80 hi" and time.monotonic() < deadline:
            time.sleep(0.05)
        d.proc.terminate()
        assert d.proc.wait(10) == 0
        assert not (tmp / "rp" / CID).exists()
    finally:
        d.close()


def test_default_route_check_sees_the_containers_own_routes(netns_factory: Callable[[], Netns]) -> None:
    """Kept client addresses need a way back from the container: an --internal network has no
    default route (and a fresh netns only the reject route on lo), so the dial stays inside."""
    from rootless.rootlessport.forward import has_default_route

    ns = netns_factory()
    assert not has_default_route(ns.path, 4) and not has_default_route(ns.path, 6)
    for cmd in (["ip", "link", "add", "e0", "type", "veth", "peer", "name", "e1"],
                ["ip", "link", "set", "e0", "up"], ["ip", "link", "set", "e1", "up"],
                ["ip", "addr", "add", "10.1.0.2/24", "dev", "e0"],
                ["ip", "route", "add", "default", "via", "10.1.0.1"]):
        ns.run(cmd)
    assert has_default_route(ns.path, 4) and not has_default_route(ns.path, 6)
    ns.run(["ip", "-6", "addr", "add", "fd00::2/64", "dev", "e0", "nodad"])
    ns.run(["ip", "-6", "route", "add", "default", "via", "fd00::1"])
    assert has_default_route(ns.path, 6)

"""Rootless Podman 4.3.1 publishing ports through burrow-rootlessport (issue 13 items 1, 4).

`burrow podman enable --user` links rootlessport -> burrow-rootlessport, so every rootless
`podman run -p` here goes through burrow's forwarder: on a bridge network (ChildIP = the
container's address, Podman's control socket for `network connect`/`disconnect`) and in the
default slirp4netns mode (ChildIP 10.0.2.100). The servers answer with the address they were
reached on, so a test sees where the drop-in dialled. Podman's own Go `rootlessport` must never
run; when a container goes, its forwarder, control socket and ports go with it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import tempfile
import textwrap
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.e2e.podman_env import IMAGE, RootlessWorld, free_port_block, wait_for
from tests.nsutil import Netns, have

pytestmark = [pytest.mark.e2e, pytest.mark.rootless]
GO_ROOTLESSPORT = "/usr/lib/podman/rootlessport"

# TCP and UDP on [::]:80 (dual-stack) in a container netns: "<local address> <peer address>"
# over TCP, "udp <peer address>" over UDP.
WHO = textwrap.dedent("""\
    import selectors, socket
    sel = selectors.DefaultSelector()
    for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
        s = socket.socket(socket.AF_INET6, kind)
        s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        s.bind(("::", 80))
        if kind == socket.SOCK_STREAM:
            s.listen(64)
        sel.register(s, selectors.EVENT_READ)
    def plain(a):
        return a[7:] if a.startswith("::ffff:") else a
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s = key.fileobj
            if s.type == socket.SOCK_DGRAM:
                data, peer = s.recvfrom(4096)
                s.sendto(("udp %s" % plain(peer[0])).encode(), peer)
                continue
            c, peer = s.accept()
            here = c.getsockname()
            c.sendall(("%s %s" % (plain(here[0]), plain(peer[0]))).encode())
            c.close()
""")


def who(host: str, port: int, proto: str = "tcp") -> str:
    """Ask the container through a published port, from this machine ('' on failure)."""
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(3)
    try:
        s.connect((host, port))
        if proto == "udp":
            s.send(b"x")
        return s.recv(256).decode()
    except OSError:
        return ""
    finally:
        s.close()


def start_who(w: RootlessWorld, ctr: str) -> subprocess.Popen[str]:
    p = subprocess.Popen(["nsenter", "-t", str(w.pid(ctr)), "-n", "--", sys.executable, "-c", WHO],
                         stdout=subprocess.PIPE, text=True)
    assert p.stdout is not None and p.stdout.readline().strip() == "ready"
    return p


def forwarders(w: RootlessWorld) -> dict[str, list[int]]:
    """This world's port forwarder processes: burrow's by the container's short id in their
    title (setproctitle reuses the environment's memory), Go's as "go" when they carry this
    world's XDG_RUNTIME_DIR (other tests of the same user may run Podman at once)."""
    out: dict[str, list[int]] = {"go": []}
    needle = f"XDG_RUNTIME_DIR={w.session.runtime}".encode()
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != w.user.uid:
                continue
            exe = os.readlink(f"/proc/{entry}/exe")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                argv = f.read().replace(b"\0", b" ").decode(errors="replace").split()
            if exe == GO_ROOTLESSPORT:
                with open(f"/proc/{entry}/environ", "rb") as f:
                    if needle in f.read().split(b"\0"):
                        out["go"].append(int(entry))
        except OSError:
            continue
        if argv[:1] == ["burrow-rootlessport"] and len(argv) > 1:
            out.setdefault(argv[1], []).append(int(entry))
    return out


def port_free(port: int) -> bool:
    """No listener holds the port (SO_REUSEADDR: the closed connections' TIME_WAIT may stay)."""
    for fam, host in ((socket.AF_INET, "127.0.0.1"), (socket.AF_INET6, "::1")):
        s = socket.socket(fam)
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
            s.listen(1)
        except OSError:
            return False
        finally:
            s.close()
    return True


def ctr_id(w: RootlessWorld, name: str) -> str:
    return str(w.podman("inspect", "-f", "{{.Id}}", name).out.strip())


@pytest.fixture(scope="module")
def world(podman_rootfs: Path, rootless_user: Any) -> Iterator[RootlessWorld]:
    base = Path(tempfile.mkdtemp(prefix="brlp-pd-", dir="/tmp"))
    base.chmod(0o755)
    w = RootlessWorld(rootless_user, base / "w", podman_rootfs)
    try:
        w.podman("network", "create", "--subnet", "10.89.21.0/24", "--subnet", "fd89:21::/64", "brlp1")
        w.podman("network", "create", "--subnet", "10.89.22.0/24", "brlp2")
        yield w
    finally:
        w.close()
        shutil.rmtree(base, ignore_errors=True)


def test_enable_links_the_dropin_and_status_reports_it(world: RootlessWorld) -> None:
    assert "rootlessport" in world.enable_out and "burrow-rootlessport" in world.enable_out
    out = world.run([str(Path(__file__).resolve().parents[2] / ".venv/bin/burrow"), "podman", "status",
                     "--user"], check=True).out
    line = next(ln for ln in out.splitlines() if ln.startswith("rootlessport:"))
    assert "burrow-rootlessport" in line and "(burrow)" in line, out


def test_bridge_ports_v4_v6_udp_through_the_dropin_then_teardown_leaves_nothing(
        world: RootlessWorld) -> None:
    w = world
    port = free_port_block(3)
    w.podman("run", "-d", "--name", "brlpa", "--network", "brlp1:ip=10.89.21.10,ip=fd89:21::10",
             "-p", f"127.0.0.1:{port}:80", "-p", f"[::1]:{port}:80", "-p", f"{port + 1}:80",
             "-p", f"127.0.0.1:{port + 2}:80/udp", IMAGE, "sleep", "600")
    w.podman("run", "-d", "--name", "brlpb", "--network", "brlp1", IMAGE, "sleep", "600")
    server = start_who(w, "brlpa")
    cid = ctr_id(w, "brlpa")
    try:
        procs = forwarders(w)
        assert procs["go"] == [], "Podman's Go rootlessport is running"
        assert len(procs.get(cid[:12], [])) == 1, procs
        # Every client family and listener reaches the container at its ChildIP (first IPv4).
        for host, p in (("127.0.0.1", port), ("::1", port), ("127.0.0.1", port + 1), ("::1", port + 1)):
            assert who(host, p).split()[:1] == ["10.89.21.10"], (host, p)
        assert who("127.0.0.1", port + 2, "udp").split()[:1] == ["udp"]
        # Names still resolve (burrow-dns on the bridge): the forwarder changed nothing else.
        res = w.in_ctr("brlpb", ["dig", "+short", "@10.89.21.1", "brlpa"], check=False) if have("dig") else None
        assert res is None or res.stdout.split() == ["10.89.21.10"]
        rp = Path(w.session.runtime) / "libpod" / "tmp" / "rp" / cid
        assert rp.exists()  # the control socket (bridge mode)
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpa", "brlpb")
    # Teardown: conmon's end of ExitFD closed, the forwarder is gone with its socket and ports.
    assert wait_for(lambda: cid[:12] not in forwarders(w), timeout=10), forwarders(w)
    assert not rp.exists()
    assert all(port_free(p) for p in (port, port + 1)), "a published port is still bound"
    assert forwarders(w)["go"] == []


def test_slirp4netns_mode_ports_through_the_dropin(world: RootlessWorld) -> None:
    w = world
    port = free_port_block(1)
    w.podman("run", "-d", "--name", "brlps", "-p", f"127.0.0.1:{port}:80", IMAGE, "sleep", "600")
    server = start_who(w, "brlps")
    cid = ctr_id(w, "brlps")
    try:
        procs = forwarders(w)
        assert procs["go"] == [] and len(procs.get(cid[:12], [])) == 1, procs
        assert who("127.0.0.1", port).split()[:1] == ["10.0.2.100"]  # slirp4netns's ChildIP
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlps")
    assert wait_for(lambda: cid[:12] not in forwarders(w), timeout=10)
    assert port_free(port)


def test_network_disconnect_and_connect_repoint_the_ports(world: RootlessWorld) -> None:
    """Podman re-points rootlessport (its control socket) on `network disconnect` while networks
    remain; the published port follows the container's remaining address."""
    w = world
    port = free_port_block(1)
    addrs = {"brlp1": "10.89.21.30", "brlp2": "10.89.22.30"}
    w.podman("run", "-d", "--name", "brlpc", "--network", f"brlp1:ip={addrs['brlp1']}",
             "--network", f"brlp2:ip={addrs['brlp2']}", "-p", f"127.0.0.1:{port}:80", IMAGE, "sleep", "600")
    server = start_who(w, "brlpc")
    try:
        first = who("127.0.0.1", port).split()[:1]
        assert first and first[0] in addrs.values(), first
        # Disconnect the network ChildIP points into: the port must follow to the other one.
        gone = next(n for n, a in addrs.items() if a == first[0])
        other = next(n for n in addrs if n != gone)
        w.podman("network", "disconnect", gone, "brlpc")
        assert who("127.0.0.1", port).split()[:1] == [addrs[other]]
        # Back on both (Podman sends no reload: the ChildIP it had still works), then the other
        # one away: the port follows a second time. (Disconnecting the last network of the
        # only container fails in Podman 4.3 itself: it drops the rootless netns.)
        w.podman("network", "connect", "--ip", addrs[gone], gone, "brlpc")
        assert who("127.0.0.1", port).split()[:1] == [addrs[other]]
        w.podman("network", "disconnect", other, "brlpc")
        assert who("127.0.0.1", port).split()[:1] == [addrs[gone]]
        assert forwarders(w)["go"] == []
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpc")


CLIENT_IP, HOST_IP = "192.0.2.50", "192.0.2.1"  # TEST-NET-1, only inside the test's namespaces
CLIENT_IP6, HOST_IP6 = "2001:db8:13::50", "2001:db8:13::1"  # documentation prefix, likewise

# argv: address, port[, source address]: what the server said, one line.
WHO_CLIENT = textwrap.dedent("""\
    import socket, sys
    src = (sys.argv[3], 0) if len(sys.argv) > 3 else None
    s = socket.create_connection((sys.argv[1], int(sys.argv[2])), 3, src)
    print(s.recv(256).decode())
""")
# One datagram from a fresh socket, retried: the drop-in's first dial may lose the first one.
WHO_UDP_CLIENT = textwrap.dedent("""\
    import socket, sys
    s = socket.socket(socket.AF_INET6 if ":" in sys.argv[1] else socket.AF_INET, socket.SOCK_DGRAM)
    s.settimeout(1)
    if len(sys.argv) > 3:
        s.bind((sys.argv[3], 0))
    s.connect((sys.argv[1], int(sys.argv[2])))
    for _ in range(5):
        s.send(b"x")
        try:
            print(s.recv(256).decode())
            break
        except TimeoutError:
            pass
""")


@pytest.fixture(scope="module")
def routed(podman_rootfs: Path, rootless_user: Any) -> Iterator[tuple[RootlessWorld, Netns]]:
    """Rootless Podman in a private "host" netns, and a client netns routed to it over a veth
    (192.0.2.50 -> 192.0.2.1): a non-loopback client, as from another machine."""
    host, client = Netns(), Netns()
    base = Path(tempfile.mkdtemp(prefix="brlp-pdr-", dir="/tmp"))
    base.chmod(0o755)
    w = None
    try:
        host.run(["ip", "link", "add", "brlph", "type", "veth", "peer", "name", "brlpc", "netns",
                  str(client.pid)])
        host.run(["ip", "addr", "add", f"{HOST_IP}/24", "dev", "brlph"])
        host.run(["ip", "link", "set", "brlph", "up"])
        client.run(["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "brlpc"])
        client.run(["ip", "link", "set", "brlpc", "up"])
        client.run(["ip", "route", "add", "default", "via", HOST_IP])
        host.run(["ip", "addr", "add", f"{HOST_IP6}/64", "dev", "brlph", "nodad"])
        client.run(["ip", "addr", "add", f"{CLIENT_IP6}/64", "dev", "brlpc", "nodad"])
        client.run(["ip", "-6", "route", "add", "default", "via", HOST_IP6])
        w = RootlessWorld(rootless_user, base / "w", podman_rootfs, host=host)
        w.podman("network", "create", "--subnet", "10.89.23.0/24", "brlp3")
        w.podman("network", "create", "--internal", "--subnet", "10.89.24.0/24", "brlp4")
        w.podman("network", "create", "--subnet", "fd89:25::/64", "brlp5")  # IPv6 only (no --ipv6)
        yield w, client
    finally:
        if w is not None:
            w.close()
        shutil.rmtree(base, ignore_errors=True)
        client.close()
        host.close()


def test_routed_client_keeps_its_address_through_the_dropin(routed: tuple[RootlessWorld, Netns]) -> None:
    w, client = routed
    w.podman("run", "-d", "--name", "brlpr", "--network", "brlp3:ip=10.89.23.10", "-p", "8080:80", IMAGE,
             "sleep", "600")
    server = start_who(w, "brlpr")
    try:
        assert forwarders(w)["go"] == []
        res = client.run([sys.executable, "-c", WHO_CLIENT, HOST_IP, "8080"], check=False)
        assert res.returncode == 0, res.stderr
        here, peer = res.stdout.split()
        # The container sees the client itself (dialled from Podman's rootless netns on a
        # transparent socket), not its own address as with Podman's rootlessport.
        assert (here, peer) == ("10.89.23.10", CLIENT_IP)
        # A loopback client means nothing in the container: dialled inside it as before
        # (rootless.ports.clientaddr), the container sees its own address.
        res = w.host.run([sys.executable, "-c", WHO_CLIENT, "127.0.0.1", "8080"], check=False) \
            if w.host else None
        assert res is not None and res.stdout.split() == ["10.89.23.10", "10.89.23.10"], res
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpr")


def test_routed_udp_client_keeps_its_address_through_the_dropin(
        routed: tuple[RootlessWorld, Netns]) -> None:
    """UDP as TCP above: one transparent socket per client flow, dialled from Podman's rootless
    netns, so the container's server sees the routed client's own address (Podman's Go
    rootlessport would show the container's address); a loopback client sees the container's."""
    w, client = routed
    w.podman("run", "-d", "--name", "brlpu", "--network", "brlp3:ip=10.89.23.11", "-p", "8082:80/udp",
             IMAGE, "sleep", "600")
    server = start_who(w, "brlpu")
    try:
        assert forwarders(w)["go"] == []
        res = client.run([sys.executable, "-c", WHO_UDP_CLIENT, HOST_IP, "8082"], check=False)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["udp", CLIENT_IP], res.stdout
        # A second flow from the same client (a new source port) is its own transparent dial.
        res = client.run([sys.executable, "-c", WHO_UDP_CLIENT, HOST_IP, "8082"], check=False)
        assert res.stdout.split() == ["udp", CLIENT_IP], res.stdout
        res = w.host.run([sys.executable, "-c", WHO_UDP_CLIENT, "127.0.0.1", "8082"], check=False) \
            if w.host else None
        assert res is not None and res.stdout.split() == ["udp", "10.89.23.11"], res
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpu")


def test_routed_ipv6_client_keeps_its_address_tcp_and_udp(routed: tuple[RootlessWorld, Netns]) -> None:
    """On an IPv6-only network ChildIP is the container's IPv6 address: a routed IPv6 client
    is dialled from Podman's rootless netns on an IPV6_TRANSPARENT socket, over TCP and UDP."""
    w, client = routed
    w.podman("run", "-d", "--name", "brlp6", "--network", "brlp5:ip=fd89:25::10", "-p", "8083:80",
             "-p", "8083:80/udp", IMAGE, "sleep", "600")
    server = start_who(w, "brlp6")
    try:
        assert forwarders(w)["go"] == []
        res = client.run([sys.executable, "-c", WHO_CLIENT, HOST_IP6, "8083"], check=False)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["fd89:25::10", CLIENT_IP6]
        res = client.run([sys.executable, "-c", WHO_UDP_CLIENT, HOST_IP6, "8083"], check=False)
        assert res.stdout.split() == ["udp", CLIENT_IP6], (res.stdout, res.stderr)
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlp6")


def test_internal_network_keeps_the_old_dial(routed: tuple[RootlessWorld, Netns]) -> None:
    """A container only on an --internal network has no route back to a client's address: the
    drop-in dials inside it (it sees its own address) rather than hang the connection."""
    w, client = routed
    w.podman("run", "-d", "--name", "brlpi", "--network", "brlp4:ip=10.89.24.10", "-p", "8081:80", IMAGE,
             "sleep", "600")
    server = start_who(w, "brlpi")
    try:
        res = client.run([sys.executable, "-c", WHO_CLIENT, HOST_IP, "8081"], check=False)
        assert res.returncode == 0, res.stderr
        assert res.stdout.split() == ["10.89.24.10", "10.89.24.10"]
    finally:
        server.kill()
        server.wait()
        w.podman("rm", "-f", "-t", "0", "brlpi")

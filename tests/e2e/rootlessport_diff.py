"""Twin rootless Podman worlds for the differential test of burrow-rootlessport against Podman's
own Go `rootlessport` (tests/e2e/test_rootlessport_differential.py).

Each twin is a RootlessWorld (tests/e2e/podman_env.py) of the harness user, inside its own
private "host" netns, with a "client" netns routed to it (192.0.2.50 -> 192.0.2.1, and
2001:db8:13::50 -> ::1 likewise): a non-loopback client, as from another machine. Both run
burrow-netavark for bridge networks (`burrow podman enable --user`); they differ only in
which `rootlessport` Podman finds: the `go` twin has the link removed from burrow's helper dir,
so Podman falls through to /usr/lib/podman/rootlessport (spec/rootlessport.md §2).

Since each twin has its own host netns, a scenario uses the same port numbers in both, and
error lines, `podman port` and listeners compare as they are.
An observation is plain data (dicts, lists, strings) with the container ids and other
per-world values replaced by placeholders, so a difference prints as a readable diff.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import textwrap
import threading
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from tests.e2e.podman_env import RootlessWorld, wait_for
from tests.nsutil import Netns

GO = "/usr/lib/podman/rootlessport"
KINDS = ("go", "burrow")
HOST_IP, CLIENT_IP = "192.0.2.1", "192.0.2.50"  # TEST-NET-1, only inside the twins' namespaces
HOST_IP6, CLIENT_IP6 = "2001:db8:13::1", "2001:db8:13::50"
SPARE_IP = "192.0.2.2"  # a second host address: -p with a specific host_ip

# TCP and UDP servers on [::]:PORT (dual-stack) for each port in argv, in a container netns:
# TCP answers "<port> <local address> <peer address>", UDP "udp <port> <peer address>".
WHO = textwrap.dedent("""\
    import selectors, socket, sys
    sel = selectors.DefaultSelector()
    for port in map(int, sys.argv[1:]):
        for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
            s = socket.socket(socket.AF_INET6, kind)
            s.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 0)
            s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            s.bind(("::", port))
            if kind == socket.SOCK_STREAM:
                s.listen(64)
            sel.register(s, selectors.EVENT_READ, port)
    def plain(a):
        return a[7:] if a.startswith("::ffff:") else a
    print("ready", flush=True)
    while True:
        for key, _ in sel.select():
            s, port = key.fileobj, key.data
            if s.type == socket.SOCK_DGRAM:
                data, peer = s.recvfrom(4096)
                s.sendto(("udp %d %s" % (port, plain(peer[0]))).encode(), peer)
                continue
            c, peer = s.accept()
            c.sendall(("%d %s %s" % (port, plain(c.getsockname()[0]), plain(peer[0]))).encode())
            c.close()
""")

# Ask argv[1]:argv[2] over argv[3] (tcp/udp); prints the answer or "ERR <errno name>".
ASK = textwrap.dedent("""\
    import errno, socket, sys
    host, port, proto = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM if proto == "tcp" else socket.SOCK_DGRAM)
    s.settimeout(1.5)
    try:
        s.connect((host, port))
        if proto == "udp":
            for _ in range(4):  # the first datagram may wait for a dial
                s.send(b"x")
                try:
                    print(s.recv(256).decode()); break
                except TimeoutError:
                    pass
            else:
                print("ERR timeout")
        else:
            print(s.recv(256).decode() or "ERR eof")
    except OSError as e:
        print("ERR " + (errno.errorcode.get(e.errno, "") if e.errno else type(e).__name__))
""")


class Twin:
    """One rootless Podman world with a given rootlessport (see the module doc)."""

    def __init__(self, kind: str, user: Any, base: Path, rootfs_tar: Path) -> None:
        self.kind = kind
        self.host, self.client = Netns(), Netns()
        self.w: RootlessWorld | None = None
        self.servers: list[subprocess.Popen[str]] = []  # killed at close, whatever failed
        try:
            self._route()
            self.w = RootlessWorld(user, base, rootfs_tar, host=self.host)
            link = self.w.data_home / "burrow" / "podman" / "rootlessport"
            assert link.is_symlink(), f"{link}: `burrow podman enable --user` did not link it"
            if kind == "go":
                link.unlink()  # Podman falls through to /usr/lib/podman/rootlessport
        except BaseException:
            self.close()
            raise

    def _route(self) -> None:
        h, c = self.host, self.client
        h.run(["ip", "link", "add", "rdh", "type", "veth", "peer", "name", "rdc", "netns", str(c.pid)])
        for cmd in (["ip", "addr", "add", f"{HOST_IP}/24", "dev", "rdh"],
                    ["ip", "addr", "add", f"{SPARE_IP}/24", "dev", "rdh"],
                    ["ip", "addr", "add", f"{HOST_IP6}/64", "dev", "rdh", "nodad"],
                    ["ip", "link", "set", "rdh", "up"]):
            h.run(cmd)
        for cmd in (["ip", "addr", "add", f"{CLIENT_IP}/24", "dev", "rdc"],
                    ["ip", "addr", "add", f"{CLIENT_IP6}/64", "dev", "rdc", "nodad"],
                    ["ip", "link", "set", "rdc", "up"],
                    ["ip", "route", "add", "default", "via", HOST_IP],
                    ["ip", "-6", "route", "add", "default", "via", HOST_IP6]):
            c.run(cmd)

    @property
    def world(self) -> RootlessWorld:
        assert self.w is not None
        return self.w

    # -- Podman --------------------------------------------------------------------------------
    def podman(self, *args: str, timeout: float = 90) -> dict[str, Any]:
        """One podman command: rc, stdout and stderr with this world's ids and paths blanked,
        and how long it took (noted, never compared)."""
        t = time.monotonic()
        res = self.world.podman(*args, check=False, timeout=timeout)
        return {"rc": res.rc, "out": self.norm(res.out), "err": self.norm(res.err),
                "ms": round((time.monotonic() - t) * 1000)}

    def ok(self, *args: str, timeout: float = 90) -> str:
        res = self.podman(*args, timeout=timeout)
        assert res["rc"] == 0, f"{self.kind}: podman {' '.join(args)}: {res}"
        return str(res["out"])

    def norm(self, text: str) -> str:
        text = re.sub(r"\b[0-9a-f]{64}\b", "<ID>", text)
        text = re.sub(r"\b[0-9a-f]{12}\b", "<SHORTID>", text)
        return text.replace(self.world.session.runtime, "<RUNTIME>").replace(str(self.world.base), "<BASE>")

    def pid(self, ctr: str) -> int:
        return self.world.pid(ctr)

    def ctr_id(self, ctr: str) -> str:
        return self.ok("inspect", "-f", "{{.Id}}", ctr).strip()

    def ports(self, ctr: str) -> dict[str, Any]:
        """What Podman shows of a container's ports: `podman port` and inspect's Ports, each
        list sorted (Podman fills them from a Go map: their order varies from run to run)."""
        def inspect(field: str) -> str:
            got = json.loads(self.ok("inspect", "-f", "{{json " + field + "}}", ctr))
            return json.dumps({k: sorted(v or [], key=lambda b: json.dumps(b, sort_keys=True))
                               for k, v in (got or {}).items()}, sort_keys=True)

        return {"port": sorted(self.ok("port", ctr).splitlines()),
                "inspect": inspect(".NetworkSettings.Ports"), "hostconfig": inspect(".HostConfig.PortBindings")}

    # -- the host netns ------------------------------------------------------------------------
    def listeners(self) -> list[str]:
        """Sockets bound in the host netns by the user's processes (rootlessport, slirp4netns,
        conmon...): `proto local-address:port`, sorted. Other holders (a test's own) are not
        the user's and are left out."""
        out = self.host.run(["ss", "-H", "-lntuap"]).stdout
        rows = set()
        for line in out.splitlines():
            f = line.split()
            if len(f) < 6 or "users:" not in line:
                continue
            pids = [int(p) for p in re.findall(r"pid=(\d+)", line)]
            if not any(_uid(p) == self.world.user.uid for p in pids):
                continue
            rows.add(f"{f[0]} {f[4]}")
        return sorted(rows)

    def helper_pids(self) -> list[int]:
        """This world's rootlessport processes, Go's (by executable) or burrow's (by title;
        setproctitle reuses the environment's memory, so the world is found by its cgroup)."""
        found = []
        for pid in self.world.session.leftover_pids():
            try:
                exe = os.readlink(f"/proc/{pid}/exe")
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0]
            except OSError:
                continue
            if exe == GO or argv0.startswith(b"burrow-rootlessport"):
                found.append(pid)
        return sorted(found)

    def dns_pids(self) -> list[int]:
        """This world's burrow-dns processes (found by title, as helper_pids)."""
        found = []
        for pid in self.world.session.leftover_pids():
            try:
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    if f.read().startswith(b"burrow-dns "):
                        found.append(pid)
            except OSError:
                continue
        return sorted(found)

    def process_shapes(self) -> list[str]:
        """The world's processes by kind (no pids): what `ps` would show a user, per kind of
        process, with rootlessport's two Go processes (parent, child) and burrow's one each
        counted as 'rootlessport'."""
        kinds: dict[str, int] = {}
        for pid in self.world.session.leftover_pids():
            try:
                exe = os.path.basename(os.readlink(f"/proc/{pid}/exe"))
                with open(f"/proc/{pid}/cmdline", "rb") as f:
                    argv0 = f.read().split(b"\0")[0].decode(errors="replace")
            except OSError:
                continue
            name = "rootlessport" if exe == "rootlessport" or argv0.startswith("burrow-rootlessport") \
                else os.path.basename(argv0.split()[0]) if argv0 else exe
            kinds[name] = kinds.get(name, 0) + 1
        return sorted(f"{k} x{n}" for k, n in kinds.items())

    # -- traffic --------------------------------------------------------------------------------
    def start_who(self, ctr: str, ports: Sequence[int] = (80,)) -> subprocess.Popen[str]:
        p = subprocess.Popen(["nsenter", "-t", str(self.pid(ctr)), "-n", "--", sys.executable, "-c", WHO,
                              *map(str, ports)], stdout=subprocess.PIPE, text=True)
        self.servers.append(p)
        assert p.stdout is not None and p.stdout.readline().strip() == "ready", f"{self.kind}: WHO"
        return p

    def ask(self, host: str, port: int, proto: str = "tcp", client: bool = False) -> str:
        """From the host netns (loopback, the host's own addresses) or the routed client."""
        ns = self.client if client else self.host
        return ns.run([sys.executable, "-c", ASK, host, str(port), proto], check=False).stdout.strip()

    def close(self) -> None:
        for p in self.servers:
            p.kill()
            p.wait()
        if self.w is not None:
            self.w.close()
        self.client.close()
        self.host.close()


def _uid(pid: int) -> int:
    try:
        return os.stat(f"/proc/{pid}").st_uid
    except OSError:
        return -1


def both(twins: dict[str, Twin], fn: Callable[[Twin], Any]) -> dict[str, Any]:
    """fn run on each twin at once (two threads: Podman is mostly waiting), results by kind."""
    out: dict[str, Any] = {}
    errors: dict[str, BaseException] = {}

    def run(kind: str) -> None:
        try:
            out[kind] = fn(twins[kind])
        except BaseException as e:  # re-raised below, in the test's thread
            errors[kind] = e

    threads = [threading.Thread(target=run, args=(k,)) for k in KINDS]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    if errors:
        kind, err = next(iter(errors.items()))
        raise AssertionError(f"{kind} twin failed: {err!r}") from err
    return out


def port_free_in(ns: Netns, port: int, proto: str = "tcp") -> bool:
    """Nothing listens on the port in that netns (any address)."""
    out = ns.run(["ss", "-H", "-ln" + ("t" if proto == "tcp" else "u"), f"sport = :{port}"]).stdout
    return not out.strip()


def wait_gone(twin: Twin, timeout: float = 10) -> bool:
    return bool(wait_for(lambda: not twin.helper_pids(), timeout=timeout))


def fd_count(pid: int) -> int:
    try:
        return len(os.listdir(f"/proc/{pid}/fd"))
    except OSError:
        return -1


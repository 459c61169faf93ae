"""The `burrow` CLI in both modes, one scenario each: rootless (run as the unprivileged test
user) and rootful (run as root, which uses the current network namespace and kernel DNAT).

Rootful runs never touch this machine's network: every `burrow` command runs inside a throwaway
net+mount namespace (`tests.nsutil.Netns`), with a state directory of its own. The "host" of
that world is the throwaway namespace, which gets a veth link with a v4 and a v6 address to
publish on. Traffic goes only to loopback or to addresses inside namespaces made here.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Protocol

import pytest

from tests.integration.test_rootless_sandbox import free_ports, serve
from tests.nsutil import VENV_BIN, Netns, unique
from tests.rootless_user import Result, Session

PY = "/usr/bin/python3"
PATH = f"{VENV_BIN}:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

# Client run inside the rootful "host" netns: data on stdin (base64), reply or error on stdout.
CLIENT = """
import base64,socket,sys
proto,addr,port,timeout=sys.argv[1],sys.argv[2],int(sys.argv[3]),float(sys.argv[4])
data=base64.b64decode(sys.stdin.read())
fam=socket.AF_INET6 if ':' in addr else socket.AF_INET
try:
    if proto=='tcp':
        c=socket.socket(fam); c.settimeout(timeout); c.connect((addr,port)); c.sendall(data)
        c.shutdown(socket.SHUT_WR); out=b''
        while (d:=c.recv(65536)): out+=d
    else:
        c=socket.socket(fam,socket.SOCK_DGRAM); c.settimeout(timeout); c.sendto(data,(addr,port))
        out=c.recvfrom(65535)[0]
    print('OK '+base64.b64encode(out).decode())
except OSError as e:
    print('ERR '+type(e).__name__)
"""
HOLD = """
import socket,sys
s=socket.socket(socket.AF_INET,socket.SOCK_STREAM); s.bind((sys.argv[1],0)); s.listen(1)
print(s.getsockname()[1],flush=True); sys.stdin.read()
"""
ERRORS: dict[str, type[OSError]] = {
    "ConnectionRefusedError": ConnectionRefusedError, "ConnectionResetError": ConnectionResetError,
    "BrokenPipeError": BrokenPipeError, "TimeoutError": TimeoutError,
}


class World(Protocol):
    """What a scenario needs from a mode: run burrow, and be a client on the world's host."""
    mode: str
    v4: str  # host addresses to publish on and connect to
    v6: str

    def burrow(self, *args: str, check: bool = False, timeout: float = 60) -> Result: ...
    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[str]: ...
    def tcp(self, addr: str, port: int, data: bytes = b"hi", timeout: float = 5) -> bytes: ...
    def udp(self, addr: str, port: int, data: bytes = b"u") -> bytes: ...
    def hold_port(self) -> Any: ...  # context manager: a host process listening on (v4, port)
    def assert_clean(self) -> None: ...  # after `burrow down`


# -- rootless: the unprivileged user's world; the test process is on its host -----------------
class Rootless:
    mode = "rootless"
    v4, v6 = "127.0.0.1", "::1"

    def __init__(self, session: Session) -> None:
        self.s = session

    def burrow(self, *args: str, check: bool = False, timeout: float = 60) -> Result:
        return self.s.burrow(*args, check=check, timeout=timeout)

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        return self.s.popen(cmd, **kw)

    def tcp(self, addr: str, port: int, data: bytes = b"hi", timeout: float = 5) -> bytes:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam) as c:
            c.settimeout(timeout)
            c.connect((addr, port))
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := c.recv(65536):
                out += chunk
            return out

    def udp(self, addr: str, port: int, data: bytes = b"u") -> bytes:
        fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
        with socket.socket(fam, socket.SOCK_DGRAM) as u:
            u.settimeout(5)
            u.sendto(data, (addr, port))
            return u.recvfrom(65535)[0]

    @contextmanager
    def hold_port(self) -> Iterator[int]:
        with socket.socket() as taken:
            taken.bind((self.v4, 0))
            taken.listen(1)
            yield int(taken.getsockname()[1])

    def assert_clean(self) -> None:
        assert self.s.leftover_pids() == []
        state = Path(self.s.runtime) / "burrow"
        for f in ("holder.json", "connector.json", "forwarder.json", "forwarder.sock"):
            assert not (state / f).exists(), f
        assert not list((state / "sandboxes").glob("*"))


# -- rootful: root in a throwaway "host" netns ---------------------------------------------------
class Rootful:
    mode = "rootful"

    def __init__(self, ns: Netns) -> None:
        self.ns = ns
        idx = int.from_bytes(os.urandom(1), "big")
        self.v4, self.v6 = f"10.77.{idx}.1", f"fd77:0:{idx:x}::1"
        # The host's own "uplink": a veth pair (this kernel has no dummy links), both ends here.
        dev, peer = unique("rfh"), unique("rfp")
        ns.run(["sh", "-c", f"ip link add {dev} type veth peer name {peer} && "
                f"ip link set {dev} up && ip link set {peer} up && "
                f"ip addr add {self.v4}/24 dev {dev} && ip addr add {self.v6}/64 dev {dev} nodad"])
        self.base_links = ns.link_names()
        self.state = Path(tempfile.mkdtemp(prefix=unique("rf") + "-", dir="/tmp"))

    def env(self) -> list[str]:
        return ["env", "-i", f"PATH={PATH}", "HOME=/root", "LANG=C.UTF-8",
                f"BURROW_STATE_DIR={self.state}"]

    def argv(self, cmd: Sequence[str]) -> list[str]:
        return self.ns.argv([*self.env(), *cmd])

    def burrow(self, *args: str, check: bool = False, timeout: float = 60) -> Result:
        res = subprocess.run(self.argv([str(VENV_BIN / "burrow"), *args]), capture_output=True,
                             text=True, timeout=timeout, cwd="/")
        out = Result(res.returncode, res.stdout, res.stderr)
        if check and res.returncode != 0:
            raise AssertionError(f"burrow {' '.join(args)} failed (rc {res.returncode}):\n"
                                 f"stdout: {res.stdout}\nstderr: {res.stderr}")
        return out

    def popen(self, cmd: Sequence[str], **kw: Any) -> subprocess.Popen[str]:
        return subprocess.Popen(self.argv(cmd), text=True, cwd="/", **kw)

    def _client(self, proto: str, addr: str, port: int, data: bytes, timeout: float) -> bytes:
        res = self.ns.run([PY, "-c", CLIENT, proto, addr, str(port), str(timeout)],
                          input=base64.b64encode(data).decode(), timeout=timeout + 30)
        kind, _, payload = res.stdout.strip().partition(" ")
        if kind == "ERR":
            raise ERRORS.get(payload, OSError)(payload)
        return base64.b64decode(payload)

    def tcp(self, addr: str, port: int, data: bytes = b"hi", timeout: float = 5) -> bytes:
        return self._client("tcp", addr, port, data, timeout)

    def udp(self, addr: str, port: int, data: bytes = b"u") -> bytes:
        return self._client("udp", addr, port, data, 5)

    @contextmanager
    def hold_port(self) -> Iterator[int]:
        p = self.ns.popen([PY, "-c", HOLD, self.v4], stdin=subprocess.PIPE,
                          stdout=subprocess.PIPE)
        assert p.stdout is not None and p.stdin is not None
        try:
            yield int(p.stdout.readline())
        finally:
            p.stdin.close()
            p.wait(timeout=10)

    def leftover_pids(self) -> list[int]:
        """Live processes in the throwaway netns (but its holder) or carrying our state dir."""
        ino = os.stat(self.ns.path).st_ino
        needle = f"BURROW_STATE_DIR={self.state}".encode()
        found = []
        for entry in os.listdir("/proc"):
            if not entry.isdigit() or int(entry) in (os.getpid(), self.ns.pid):
                continue
            try:
                if "\nState:\tZ" in Path(f"/proc/{entry}/status").read_text():
                    continue
                in_ns = os.stat(f"/proc/{entry}/ns/net").st_ino == ino
                if in_ns or needle in Path(f"/proc/{entry}/environ").read_bytes().split(b"\0"):
                    found.append(int(entry))
            except (FileNotFoundError, ProcessLookupError, PermissionError):
                pass
        return found

    def assert_clean(self) -> None:
        deadline = time.monotonic() + 3
        while self.leftover_pids() and time.monotonic() < deadline:
            time.sleep(0.05)
        assert self.leftover_pids() == []
        assert self.ns.link_names() == self.base_links
        assert self.ns.run(["nft", "list", "ruleset"]).stdout.strip() == ""
        assert not (self.state / "rootful.json").exists()
        for d in ("sandboxes", "netns", "netavark"):
            assert not list((self.state / d).iterdir()), d
        mounts = Path(f"/proc/{self.ns.pid}/mountinfo").read_text()
        assert str(self.state) not in mounts

    def close(self) -> list[int]:
        try:
            self.burrow("down", timeout=30)
        except subprocess.TimeoutExpired:
            pass
        left = self.leftover_pids()
        self.ns.close()
        shutil.rmtree(self.state, ignore_errors=True)
        return left


@pytest.fixture
def rf(netns_factory: Callable[[], Netns]) -> Iterator[Rootful]:
    w = Rootful(netns_factory())
    yield w
    left = w.close()
    assert not left, f"processes left after `burrow down`: {left}"


@pytest.fixture(params=["rootful", "rootless"])
def w(request: pytest.FixtureRequest) -> World:
    if request.param == "rootful":
        return request.getfixturevalue("rf")  # type: ignore[no-any-return]
    return Rootless(request.getfixturevalue("rl"))


# -- helpers -----------------------------------------------------------------------------------
def sh(w: World, name: str, cmd: str, check: bool = True) -> Result:
    return w.burrow("exec", name, "--", "sh", "-c", cmd, check=check, timeout=30)


def inspect(w: World, name: str) -> dict[str, Any]:
    return json.loads(w.burrow("sandbox", "inspect", name, check=True).out)  # type: ignore[no-any-return]


def status(w: World) -> dict[str, Any]:
    return json.loads(w.burrow("status", "--format", "json", check=True).out)  # type: ignore[no-any-return]


# -- scenarios, both modes ------------------------------------------------------------------------
def test_status_names_the_mode(w: World) -> None:
    st = status(w)
    assert st["mode"] == w.mode and st["sandboxes"] == []
    assert f"mode:       {w.mode}" in w.burrow("status", check=True).out
    w.burrow("up", check=True)
    st = status(w)
    if w.mode == "rootful":
        assert st["connector"] is None and st["forwarder"] is None
        assert st["namespace"]["kind"] == "host" and st["namespace"]["current"] is True
    else:
        assert st["namespace"]["holder_pid"] and st["connector"]["alive"]


def test_static_ip_ip6_mac_alias(w: World) -> None:
    net, other = unique("rf"), unique("rf")
    w.burrow("network", "create", net, "--subnet", "10.92.3.0/24", "--subnet", "fd92:3::/64",
             check=True)
    w.burrow("network", "create", other, "--subnet", "10.92.4.0/24", check=True)
    out = w.burrow("sandbox", "create", "st", "--network",
                   f"{net}:ip=10.92.3.7,ip6=fd92:3::7,mac=02:42:ac:11:00:07,alias=db,alias=cache",
                   check=True, timeout=60).out
    assert out.split() == ["st", "10.92.3.7", "fd92:3::7"]
    w.burrow("sandbox", "create", "cl", "--network", net, check=True, timeout=60)
    link = json.loads(sh(w, "st", "ip -j addr show eth0").out)[0]
    assert link["address"] == "02:42:ac:11:00:07"
    addrs = {a["local"] for a in link["addr_info"]}
    assert {"10.92.3.7", "fd92:3::7"} <= addrs
    for name in ("st", "db", "cache"):
        res = sh(w, "cl", f"getent ahostsv4 {name}; getent ahostsv6 {name}")
        assert "10.92.3.7" in res.out and "fd92:3::7" in res.out, (name, res.out)
    sh(w, "cl", "ping -c1 -W2 db && ping -6 -c1 -W2 cache")
    # Static address on connect, too.
    w.burrow("network", "connect", other, "st", "--ip", "10.92.4.9", "--alias", "beta",
             check=True, timeout=60)
    assert "10.92.4.9" in sh(w, "st", "ip -4 -o addr show eth1").out
    assert inspect(w, "st")["networks"][other]["static_ips"] == ["10.92.4.9"]


def test_dns_across_networks_and_isolation(w: World) -> None:
    na, nb = unique("rf"), unique("rf")
    for net in (na, nb):
        w.burrow("network", "create", net, "--ipv6", "--opt", "isolate=true", check=True)
    w.burrow("sandbox", "create", "a", "--network", f"{na}:alias=alpha", check=True, timeout=60)
    w.burrow("sandbox", "create", "b", "--network", na, "--network", nb, check=True, timeout=60)
    w.burrow("sandbox", "create", "c", "--network", nb, check=True, timeout=60)
    out = sh(w, "b", "getent ahosts alpha; getent ahostsv4 c; cat /etc/resolv.conf").out
    assert "search dns.podman" in out
    a_ips = inspect(w, "a")["networks"][na]["static_ips"]
    c_ip = inspect(w, "c")["networks"][nb]["static_ips"][0]
    assert all(ip in out for ip in a_ips) and c_ip in out
    sh(w, "b", "ping -c1 -W2 a && ping -6 -c1 -W2 a && ping -c1 -W2 c")
    assert a_ips[0] in sh(w, "a", "getent ahostsv4 a").out  # own name: private /etc/hosts
    # Isolation: a is not on nb, so c's name is unknown to it and c is unreachable.
    assert sh(w, "a", "getent hosts c", check=False).rc != 0
    assert sh(w, "a", f"ping -c1 -W1 {c_ip}", check=False).rc != 0
    # connect/disconnect at runtime
    w.burrow("network", "connect", nb, "a", check=True, timeout=60)
    sh(w, "a", "getent hosts c && ping -c1 -W2 c")
    w.burrow("network", "disconnect", nb, "a", check=True, timeout=60)
    assert sh(w, "a", "getent hosts c", check=False).rc != 0
    assert sh(w, "a", f"ping -c1 -W1 {c_ip}", check=False).rc != 0
    res = w.burrow("network", "rm", na)
    assert res.rc != 0 and "burrow sandbox rm" in res.err


def test_ports_v4_v6_tcp_udp_ranges_runtime(w: World) -> None:
    base = free_ports(8)
    w.burrow("sandbox", "create", "web", "-p", f"{base}:80", "-p", f"[{w.v6}]:{base + 1}:81",
             "-p", f"{w.v4}:{base + 2}-{base + 3}:90-91/udp", "-p",
             f"{base + 4}-{base + 5}:92-93/tcp", "-p", f"{base + 6}:94/udp",
             check=True, timeout=60)
    serve(w, "web", "t:80,t:81,u:90,u:91,t:92,t:93,u:94", "web")
    assert w.tcp(w.v4, base) == b"web:hi"
    assert w.tcp(w.v6, base) == b"web:hi"             # all addresses: both families
    assert w.tcp("127.0.0.1", base) == b"web:hi"
    assert w.tcp(w.v6, base + 1) == b"web:hi"         # v6 address only
    with pytest.raises(OSError):
        w.tcp(w.v4, base + 1, timeout=2)
    assert w.udp(w.v4, base + 2) == b"web:u"
    assert w.udp(w.v4, base + 3) == b"web:u"
    assert w.udp(w.v6, base + 6) == b"web:u"
    assert w.udp(w.v4, base + 6) == b"web:u"
    assert w.tcp(w.v4, base + 5) == b"web:hi"
    big = bytes(range(256)) * 8192                    # 2 MiB both ways
    assert w.tcp(w.v4, base, big, timeout=20) == b"web:" + big
    ls = json.loads(w.burrow("port", "ls", "--format", "json", check=True).out)
    assert {(p["host_port"], p["protocol"]) for p in ls} >= {(base, "tcp"), (base + 2, "udp")}
    # Runtime add and remove: a second sandbox publishes a port, then goes away.
    w.burrow("sandbox", "create", "api", "-p", f"{base + 7}:80", check=True, timeout=60)
    serve(w, "api", "t:80", "api")
    assert w.tcp(w.v4, base + 7) == b"api:hi"
    w.burrow("sandbox", "rm", "api", check=True, timeout=60)
    with pytest.raises(ConnectionRefusedError):
        w.tcp(w.v4, base + 7)
    assert w.tcp(w.v4, base) == b"web:hi"


def test_backend_down_is_refused_at_once(w: World) -> None:
    base = free_ports(1)
    w.burrow("sandbox", "create", "idle", "-p", f"{w.v4}:{base}:80", check=True, timeout=60)
    t = time.monotonic()
    with pytest.raises((ConnectionResetError, ConnectionRefusedError, BrokenPipeError)):
        w.tcp(w.v4, base)
    assert time.monotonic() - t < 2.0


def test_bad_input_names_the_fix(w: World) -> None:
    res = w.burrow("sandbox", "create", "x", "--network", "nosuch")
    assert res.rc != 0 and "burrow network create nosuch" in res.err
    for spec in ("80:abc", "1:2:3:4", "70000:80", "[::1:80:80", "80:80/sctp"):
        res = w.burrow("sandbox", "create", "x", "-p", spec)
        assert res.rc != 0 and "invalid port spec" in res.err, spec
    res = w.burrow("sandbox", "create", "x" * 64)
    assert res.rc != 0 and "limit is 63" in res.err
    net = unique("rf")
    w.burrow("network", "create", net, "--subnet", "10.90.1.0/24", check=True)
    base = free_ports(1)
    w.burrow("sandbox", "create", "s1", "--network", f"{net}:ip=10.90.1.5", "-p",
             f"{base}:80", check=True, timeout=60)
    res = w.burrow("sandbox", "create", "s2", "--network", f"{net}:ip=10.90.1.5")
    assert res.rc != 0 and "already in use" in res.err
    res = w.burrow("sandbox", "create", "s2", "--network", f"{net}:ip=10.91.1.5")
    assert res.rc != 0 and f"is not in network {net}" in res.err
    res = w.burrow("sandbox", "create", "s2", "-p", f"{base}:81")
    assert res.rc != 0 and "already published by sandbox s1" in res.err
    with w.hold_port() as port:
        res = w.burrow("sandbox", "create", "s3", "-p", f"{w.v4}:{port}:80")
        assert res.rc != 0 and "already in use" in res.err
    res = w.burrow("sandbox", "create", "s1")
    assert res.rc != 0 and "already exists" in res.err
    if w.mode == "rootless":
        res = w.burrow("sandbox", "create", "x", "-p", "80:80")
        assert res.rc != 0 and "ip_unprivileged_port_start" in res.err
    else:
        res = w.burrow("sandbox", "create", "x", "-p", f"[::1]:{base + 1}:80")
        assert res.rc != 0 and "cannot forward from [::1]" in res.err
    # Failed creates leave nothing behind.
    rows = json.loads(w.burrow("sandbox", "ls", "--format", "json", check=True).out)
    assert [r["name"] for r in rows] == ["s1"]
    assert status(w)["sandboxes"] == ["s1"]


def test_down_leaves_nothing(w: World) -> None:
    na, nb = unique("rf"), unique("rf")
    w.burrow("network", "create", na, "--ipv6", check=True)
    w.burrow("network", "create", nb, check=True)
    base = free_ports(2)
    w.burrow("sandbox", "create", "d1", "--network", na, "--network", nb, "-p", f"{base}:80",
             "-p", f"{base + 1}:80/udp", check=True, timeout=60)
    w.burrow("sandbox", "create", "d2", "--network", nb, check=True, timeout=60)
    srv = serve(w, "d1", "t:80,u:80", "d1")  # a process still running in a sandbox
    assert w.tcp(w.v4, base) == b"d1:hi"
    assert status(w)["dns"]
    res = w.burrow("down", check=True, timeout=60)
    assert "stopped" in res.out
    srv.wait(timeout=10)
    st = status(w)
    assert st["namespace"] is None and st["sandboxes"] == [] and st["dns"] is None
    w.assert_clean()
    # Networks are the user's and stay; a new sandbox brings the world back.
    names = {r["name"] for r in json.loads(w.burrow("network", "ls", "--format", "json",
                                                    check=True).out)}
    assert {na, nb} <= names
    w.burrow("sandbox", "create", "again", "--network", na, check=True, timeout=60)
    sh(w, "again", "ping -c1 -W2 again")
    assert "nothing running" not in w.burrow("down", check=True).out
    assert "nothing running" in w.burrow("down", check=True).out
    w.assert_clean()


# -- rootful only -------------------------------------------------------------------------------
def test_rootful_ports_are_kernel_dnat_with_hairpin(rf: Rootful) -> None:
    base = free_ports(1)
    rf.burrow("sandbox", "create", "h", "-p", f"{base}:80", check=True, timeout=60)
    serve(rf, "h", "t:80", "h")
    rules = rf.ns.run(["nft", "list", "table", "inet", "burrow"]).stdout
    assert f"dport {base}" in rules and "dnat" in rules
    # No userspace forwarder: nothing listens on the host port.
    assert f":{base} " not in rf.ns.run(["ss", "-Htln"]).stdout
    # Hairpin: the sandbox reaches its own published port on the host's address.
    out = sh(rf, "h", f"{PY} -c \"import socket;c=socket.create_connection(('{rf.v4}',{base}),"
             "3);c.sendall(b'x');c.shutdown(1);print(c.recv(99).decode())\"").out
    assert out.strip() == "h:x"
    st = status(rf)
    assert st["mode"] == "rootful" and st["forwarder"] is None and st["connector"] is None


def test_rootful_sandbox_rm_stops_what_runs_in_it(rf: Rootful) -> None:
    rf.burrow("sandbox", "create", "keep", check=True, timeout=60)
    rf.burrow("sandbox", "create", "gone", check=True, timeout=60)
    p = rf.popen(["burrow", "exec", "gone", "--", "sleep", "600"])
    time.sleep(0.3)
    assert p.poll() is None
    out = rf.burrow("sandbox", "rm", "gone", check=True, timeout=60).out
    assert p.wait(timeout=10) != 0
    assert "namespace stopped" not in out
    assert not (rf.state / "netns" / "gone").exists()
    assert "last sandbox" in rf.burrow("sandbox", "rm", "keep", check=True, timeout=60).out
    rf.assert_clean()


def test_rootful_state_dir_belongs_to_one_netns(rf: Rootful,
                                                netns_factory: Callable[[], Netns]) -> None:
    rf.burrow("sandbox", "create", "one", check=True, timeout=60)
    other = netns_factory()
    res = subprocess.run(other.argv([*rf.env(), str(VENV_BIN / "burrow"), "sandbox", "create",
                                     "two"]), capture_output=True, text=True, timeout=60)
    assert res.returncode != 0 and "BURROW_STATE_DIR" in res.stderr
    assert [r["name"] for r in json.loads(
        rf.burrow("sandbox", "ls", "--format", "json", check=True).out)] == ["one"]


def test_rootful_dead_dns_is_reported_and_restarted(rf: Rootful) -> None:
    rf.burrow("sandbox", "create", "a", check=True, timeout=60)
    rf.burrow("sandbox", "create", "b", check=True, timeout=60)
    pid = status(rf)["dns"]["pid"]
    os.kill(pid, signal.SIGKILL)
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        try:
            if "\nState:\tZ" in Path(f"/proc/{pid}/status").read_text():
                break
        except FileNotFoundError:
            break
        time.sleep(0.01)
    res = rf.burrow("status", "--format", "json")
    info = json.loads(res.out)
    assert res.rc == 1 and info["dns"] is None, res
    assert any("burrow-dns" in p and "burrow up" in p for p in info["problems"])
    assert "burrow-dns" in rf.burrow("up", check=True, timeout=60).out
    assert status(rf)["problems"] == []
    b_ip = inspect(rf, "b")["networks"]["burrow"]["static_ips"][0]
    assert b_ip in sh(rf, "a", "getent ahostsv4 b").out


def test_rootful_demo(rf: Rootful) -> None:
    res = rf.burrow("demo", timeout=120)
    assert res.rc == 0, res.err
    assert "demo OK" in res.out and "cleaned up" in res.out
    rf.assert_clean()


def test_rootful_macvlan_puts_a_sandbox_on_the_lan(rf: Rootful,
                                                   netns_factory: Callable[[], Netns]) -> None:
    """-d macvlan -o parent=IF: the sandbox is a peer on the parent's LAN, no bridge, no NAT.

    The LAN is a veth pair: the parent end stays in the rootful "host" netns, the other end is
    a LAN host in a namespace of its own."""
    lan = netns_factory()
    parent, far = unique("rfm"), unique("rfl")
    idx = int.from_bytes(os.urandom(1), "big")
    subnet, lan_host = f"10.66.{idx}.0/24", f"10.66.{idx}.1"
    rf.ns.run(["sh", "-c", f"ip link add {parent} type veth peer name {far} && "
               f"ip link set {far} netns {lan.pid} && ip link set {parent} up"])
    lan.run(["sh", "-c", f"ip link set {far} up && ip addr add {lan_host}/24 dev {far}"])
    rf.burrow("network", "create", "lan", "-d", "macvlan", "-o", f"parent={parent}",
              "--subnet", subnet, "--ip-range", f"10.66.{idx}.16/28", check=True)
    net = json.loads(rf.burrow("network", "inspect", "lan", check=True).out)[0]
    assert (net["driver"], net["network_interface"], net["dns_enabled"]) == \
        ("macvlan", parent, False)
    rf.burrow("sandbox", "create", "m", "--network", "lan", check=True, timeout=60)
    ip = inspect(rf, "m")["networks"]["lan"]["static_ips"][0]
    assert ip.startswith(f"10.66.{idx}.") and 16 <= int(ip.rsplit(".", 1)[1]) < 32
    serve(rf, "m", "t:80", "m")
    # The LAN host reaches the sandbox at its own address, straight over the parent.
    res = lan.run([PY, "-c", CLIENT, "tcp", ip, "80", "5"], input=base64.b64encode(b"x").decode())
    assert res.stdout.strip() == "OK " + base64.b64encode(b"m:x").decode()
    assert parent in rf.ns.link_names() and not any(
        n.startswith("burrow") for n in rf.ns.link_names())  # no bridge was made
    # Wrong input is refused before anything is made.
    bad = rf.burrow("network", "create", "lan2", "-d", "macvlan", "-o", "parent=nosuchif0",
                    "--subnet", "10.67.0.0/24")
    assert bad.rc != 0 and "nosuchif0" in bad.err and "does not exist" in bad.err
    bad = rf.burrow("network", "create", "lan3", "-d", "macvlan", "-o", f"parent={parent}")
    assert bad.rc != 0 and "--subnet" in bad.err
    bad = rf.burrow("sandbox", "create", "m2", "--network", "lan", "-p", "8080:80", timeout=60)
    assert bad.rc != 0 and "bridge" in bad.err, bad.err
    assert "m2" not in rf.burrow("sandbox", "ls", check=True).out
    rf.burrow("sandbox", "rm", "m", check=True, timeout=60)
    rf.burrow("network", "rm", "lan", check=True)

"""The rootless forwarder under hostile local users and bad input, and the dial family.

Every test runs burrow as the unprivileged test user (tests/rootless_user.py) with a world of
its own; clients are on the host's loopback, servers inside the sandbox.
"""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import time
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.integration.test_rootless_sandbox import PY, TCP_SERVER, free_ports, tcp, udp

pytestmark = pytest.mark.rootless

# Servers bound to one family or both: 'mode' 4 = 0.0.0.0 only, 6 = :: with IPV6_V6ONLY,
# d = :: dual-stack. Each answers "<mode>:<the peer address it sees>".
FAMILY_SERVER = """
import socket,sys,threading
def bound(proto,mode,port):
    fam=socket.AF_INET if mode=='4' else socket.AF_INET6
    s=socket.socket(fam,socket.SOCK_STREAM if proto=='t' else socket.SOCK_DGRAM)
    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    if fam==socket.AF_INET6: s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,int(mode=='6'))
    s.bind(('0.0.0.0' if mode=='4' else '::',port))
    if proto=='t': s.listen(64)
    return s
def serve(s,mode):
    while True:
        c,a=s.accept()
        while c.recv(65536): pass
        c.sendall(f'{mode}:{a[0]}'.encode()); c.close()
def answer(s,mode):
    while True:
        d,a=s.recvfrom(65535); s.sendto(f'{mode}:{a[0]}'.encode(),a)
for spec in sys.argv[1].split(','):
    proto,mode,port=spec[0],spec[1],int(spec[3:])
    s=bound(proto,mode,port)
    threading.Thread(target=serve if proto=='t' else answer,args=(s,mode),daemon=True).start()
print('up',flush=True)
threading.Event().wait()
"""


def run_in(rl: Any, name: str, script: str, arg: str) -> subprocess.Popen[str]:
    p = rl.popen(["burrow", "exec", name, "--", PY, "-c", script, arg, name],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "up", p.stderr.read() if p.stderr else ""
    return p


def status(rl: Any, within: float = 30) -> dict[str, Any]:
    """The forwarder's live counts, once its control socket answers `burrow status`.

    A forwarder still working through a flood on a loaded machine may miss status's 2 s
    deadline: that is allowed, as long as it answers again (a dead one never does)."""
    deadline = time.monotonic() + within
    while True:
        res = rl.burrow("status", "--format", "json")
        fwd = json.loads(res.out)["forwarder"] if res.out.strip() else None
        if isinstance(fwd, dict) and "tcp_connections" in fwd:
            return fwd
        assert fwd is not None, f"the forwarder is gone: {res.out}"
        if time.monotonic() >= deadline:  # ask it for its counts through its log instead
            os.kill(fwd["pid"], signal.SIGUSR1)
            time.sleep(0.5)
            log = rl.run(["sh", "-c", 'cat "$XDG_RUNTIME_DIR/burrow/log/forwarder.log"']).out
            raise AssertionError(f"the forwarder does not answer; its log: {log[-3000:]}")
        time.sleep(0.5)


def tcp_from(src: str, port: int, data: bytes = b"hi") -> bytes:
    dst = "::1" if ":" in src else "127.0.0.1"
    with socket.create_connection((dst, port), 5, (src, 0)) as c:
        c.settimeout(5)
        c.sendall(data)
        return c.recv(100)


def udp_answer(addr: str, port: int, tries: int = 3) -> bytes:
    """UDP may lose a datagram on a busy machine: a few tries, each with a timeout."""
    for i in range(tries):
        try:
            return udp(addr, port)
        except TimeoutError:
            if i == tries - 1:
                raise
    raise AssertionError("unreachable")


def test_dial_family_follows_the_client_and_falls_back(rl: Any) -> None:
    """One wildcard host port reaches servers on 0.0.0.0 only, on :: only and on both, from
    127.0.0.1 and from ::1, TCP and UDP. A dual-stack server sees each client arrive in the
    client's own family.

    Regression: the wildcard listener is one `::` socket and the dial always picked the
    sandbox's IPv6 address, so `curl http://127.0.0.1:P/` to an IPv4-only server was reset."""
    base = free_ports(6)
    rl.burrow("sandbox", "create", "fam", "-p", f"{base}-{base + 2}:80-82", "-p",
              f"{base + 3}-{base + 5}:90-92/udp", check=True, timeout=60)
    run_in(rl, "fam", FAMILY_SERVER, "t4:80,t6:81,td:82,u4:90,u6:91,ud:92")
    rec = json.loads(rl.burrow("sandbox", "inspect", "fam", check=True).out)
    ips = [ip for att in rec["networks"].values() for ip in att["static_ips"]]
    v4 = next(ip for ip in ips if ":" not in ip)
    v6 = next(ip for ip in ips if ":" in ip)
    for client in ("127.0.0.1", "::1"):
        for i, mode in enumerate("46d"):
            got = tcp(client, base + i).decode()
            assert got.startswith(f"{mode}:"), (client, mode, got)
            got = udp_answer(client, base + 3 + i).decode()
            assert got.startswith(f"{mode}:"), (client, mode, got)
    # Dual-stack: the dial took the client's family (the peer is the forwarder's dial source,
    # an address of the sandbox's own subnet in that family).
    assert "." in tcp("127.0.0.1", base + 2).decode() and v4.rsplit(".", 1)[0] in \
        tcp("127.0.0.1", base + 2).decode()
    seen6 = tcp("::1", base + 2).decode().split(":", 1)[1]
    assert "." not in seen6 and seen6.split(":")[0] == v6.split(":")[0]


def test_udp_flood_from_thousands_of_source_ports(rl: Any) -> None:
    """Datagrams from 3,000 source ports (a flow each) cannot exhaust the forwarder's fds:
    flows are capped per client and in total, the least recently used shed, and afterwards the
    control socket answers and ordinary UDP and TCP clients are forwarded.

    Regression: flows had no cap; the fd table filled and the next control connection's
    accept raised EMFILE, unhandled, and the forwarder died with every published port."""
    base = free_ports(2)
    rl.run(["prlimit", "--nofile=1024:1024", "burrow", "sandbox", "create", "uf", "-p",
            f"127.0.0.1:{base}:53/udp", "-p", f"127.0.0.1:{base + 1}:7"], check=True,
           timeout=60)
    run_in(rl, "uf", TCP_SERVER, "p:53,e:7")
    pid = status(rl)["pid"]
    socks = []
    for _ in range(3000):
        s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        s.sendto(b"x", ("127.0.0.1", base))
        socks.append(s)
        if len(socks) >= 500:  # keep the test's own fds bounded
            for old in socks:
                old.close()
            socks.clear()
    for s in socks:
        s.close()
    time.sleep(1)
    fwd = status(rl)  # the control socket answers
    assert fwd["pid"] == pid
    assert 0 < fwd["udp_flows"] <= fwd["caps"]["udp_total"]
    assert fwd["shed"]["udp_flows_shed_per_client"] > 0
    assert udp_answer("127.0.0.1", base).isdigit()  # a new flow: the oldest one is shed
    assert tcp_from("127.0.0.1", base + 1) == b"hi"
    ls = json.loads(rl.burrow("port", "ls", "--format", "json", check=True).out)
    assert {p["host_port"] for p in ls} == {base, base + 1}


def test_tcp_connection_flood_leaves_room_for_other_clients(rl: Any) -> None:
    """One client holding hundreds of connections meets its own cap: it is refused (RST) and
    counted, while another client is still forwarded and the control socket answers; once
    the flood ends the first client is served again."""
    base = free_ports(1)
    rl.run(["prlimit", "--nofile=1024:1024", "burrow", "sandbox", "create", "tf", "-p",
            f"{base}:7"], check=True, timeout=60)
    run_in(rl, "tf", TCP_SERVER, "e:7")
    held: list[socket.socket] = []
    refused = 0
    try:
        for _ in range(300):
            try:
                c = socket.create_connection(("127.0.0.1", base), 5)
                c.settimeout(5)
                held.append(c)
                c.sendall(b"f")
                if c.recv(10) != b"f":
                    refused += 1
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
        assert refused > 0
        assert tcp_from("127.0.0.2", base) == b"hi"  # another loopback address: served
        assert tcp_from("::1", base) == b"hi"
        rl.burrow("port", "ls", check=True)
        fwd = status(rl)
        assert fwd["shed"]["tcp_refused_per_client"] > 0
        assert fwd["tcp_connections"] <= fwd["caps"]["tcp_total"]
        assert "shed at the caps" in rl.burrow("status", check=True).out
    finally:
        for c in held:
            c.close()
    time.sleep(0.5)
    assert tcp_from("127.0.0.1", base) == b"hi"


def test_emfile_anywhere_never_kills_the_forwarder(rl: Any) -> None:
    """At a 40-fd limit every cap is at its minimum and the kernel's limit is close: TCP,
    UDP and control floods are refused or shed and counted (EMFILE on accept, pipe2 or the
    dialer's SCM_RIGHTS is handled where it still happens); the forwarder stays up, answers
    its control socket and serves again once the floods end."""
    base = free_ports(2)
    rl.run(["prlimit", "--nofile=40:40", "burrow", "sandbox", "create", "em", "-p",
            f"127.0.0.1:{base}:7", "-p", f"127.0.0.1:{base + 1}:53/udp"], check=True,
           timeout=60)
    run_in(rl, "em", TCP_SERVER, "e:7,p:53")
    pid = status(rl)["pid"]
    held: list[socket.socket] = []
    try:
        for _ in range(100):
            try:
                c = socket.create_connection(("127.0.0.1", base), 5)
                held.append(c)
                c.settimeout(5)
                c.sendall(b"x")
                c.recv(1)
            except OSError:
                pass
        for _ in range(500):
            with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
                u.sendto(b"x", ("127.0.0.1", base + 1))
        for _ in range(30):
            u2 = socket.socket(socket.AF_UNIX)
            held.append(u2)
            u2.connect(f"{rl.runtime}/burrow/forwarder.sock")
    finally:
        for c in held:
            c.close()
    fwd = status(rl)
    assert fwd["pid"] == pid and fwd["fd_limit"] == 40
    assert fwd["refused_out_of_fds"] > 0 and fwd["handler_faults"] == 0
    time.sleep(0.5)
    assert tcp_from("127.0.0.1", base) == b"hi"
    assert udp_answer("127.0.0.1", base + 1).isdigit()
    assert status(rl)["pid"] == pid


# -- the control protocol, fuzzed against a live forwarder ---------------------------------
NAMES = st.sampled_from(["../x", "..", "a/b", "", "x" * 200, "ok-1", "x\n", "é"]) | st.text(
    max_size=12).filter(lambda s: s != "fz")
PATHS = st.sampled_from(["../n", "/a/../b", "rel", "", "/x\0y", "/" + "a" * 5000, "/ok/n"]) \
    | st.text(max_size=20)
JUNK = st.none() | st.booleans() | st.integers() | st.floats(allow_nan=False) | st.text(
    max_size=10) | st.lists(st.integers(), max_size=3)


def _port(base: int) -> st.SearchStrategy[dict[str, Any]]:
    return st.fixed_dictionaries({}, optional={
        "host_ip": st.sampled_from(["127.0.0.1", "::1", "1.2.3", "x"]) | JUNK,
        "host_port": st.sampled_from([0, 80, 65535, 70000, -1]) | st.integers(base + 1,
                                                                              base + 8) | JUNK,
        "container_port": st.integers(-2, 70000) | JUNK,
        "range": st.integers(-1, 4) | JUNK,
        "protocol": st.sampled_from(["tcp", "udp", "sctp", "tcp,udp", ""]) | JUNK})


def _requests(base: int) -> st.SearchStrategy[bytes]:
    op = st.sampled_from(["add", "remove", "list", "ping", "nope"]) | JUNK
    obj = st.fixed_dictionaries({"op": op}, optional={
        "sandbox": NAMES | JUNK.filter(lambda v: v != "fz"), "netns": PATHS | JUNK, "ip4": st.sampled_from(
            ["10.0.0.9", "::1", "999.1.1.1"]) | JUNK, "ip6": st.sampled_from(
            ["fd00::9", "10.0.0.1"]) | JUNK, "ports": st.lists(_port(base), max_size=3) | JUNK})
    line = obj.map(lambda o: json.dumps(o).encode() + b"\n")
    return line | st.binary(max_size=300).map(lambda b: b + b"\n") | st.binary(max_size=300)


def test_control_protocol_fuzz_never_kills_the_forwarder(rl: Any) -> None:
    """Malformed, partial, huge and hostile control requests (bad ports, `../` names and
    paths, wrong types) get an error or a closed connection; the forwarder keeps serving."""
    base = free_ports(10)
    rl.burrow("sandbox", "create", "fz", "-p", f"127.0.0.1:{base}:7", check=True, timeout=60)
    run_in(rl, "fz", TCP_SERVER, "e:7")
    pid = status(rl)["pid"]
    path = f"{rl.runtime}/burrow/forwarder.sock"

    def send(data: bytes) -> bytes:
        with socket.socket(socket.AF_UNIX) as c:
            c.settimeout(5)
            c.connect(path)
            c.sendall(data)
            c.shutdown(socket.SHUT_WR)
            out = b""
            while chunk := c.recv(65536):
                out += chunk
            return out

    @settings(max_examples=150, deadline=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
    @given(_requests(base))
    def one(data: bytes) -> None:
        out = send(data)
        for line in out.splitlines():
            reply = json.loads(line)
            assert "ok" in reply or "error" in reply

    one()
    # Huge and deeply nested requests, a request cut off half-way, and idle connections
    # beyond the cap.
    assert b"longer than" in send(b"x" * (1 << 20) + b"y" * 1000)
    assert b"not JSON" in send(b"[" * 100000 + b"\n")
    assert send(b'{"op": "pi') == b""
    idle = [socket.socket(socket.AF_UNIX) for _ in range(40)]
    try:
        for c in idle:
            c.connect(path)
        fwd = status(rl)
    finally:
        for c in idle:
            c.close()
    assert fwd["pid"] == pid and fwd["shed"]["control_shed"] > 0
    assert tcp_from("127.0.0.1", base) == b"hi"  # still forwarding
    assert "fz" in rl.burrow("port", "ls", check=True).out

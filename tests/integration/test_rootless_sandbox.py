"""Sandboxes, networks, DNS, port forwarding and egress, with burrow run as an unprivileged
user. Every address used is inside namespaces these tests create, or the host's loopback."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import time
from typing import Any

import pytest

pytestmark = pytest.mark.rootless

PY = "/usr/bin/python3"
# TCP echo-ish server: replies "<tag>:<data>" and closes after the client half-closes;
# proto 'e' echoes every read at once instead (a request/response protocol); UDP proto 'p'
# answers every datagram with the sender's port.
TCP_SERVER = """
import socket,sys,threading
tag=sys.argv[2].encode()
def bound(proto,port):
    # Bind before printing 'up': the test connects as soon as it reads it.
    s=socket.socket(socket.AF_INET6,socket.SOCK_DGRAM if proto in 'up' else socket.SOCK_STREAM)
    s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
    s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',port))
    if proto in 'te': s.listen(64)
    return s
def serve(s):
    while True:
        c,_=s.accept(); buf=b''
        while (d:=c.recv(65536)): buf+=d
        c.sendall(tag+b':'+buf); c.close()
def echo(s):
    def one(c):
        while (d:=c.recv(65536)): c.sendall(d)
    while True:
        threading.Thread(target=one,args=(s.accept()[0],),daemon=True).start()
def port_of(u):
    while True:
        d,a=u.recvfrom(65535); u.sendto(str(a[1]).encode(),a)
def udp(u):
    while True:
        d,a=u.recvfrom(65535); u.sendto(tag+b':'+d,a)
socks=[(proto,bound(proto,int(port))) for proto,port in (spec.split(':') for spec in sys.argv[1].split(','))]
for proto,s in socks:
    threading.Thread(target={'t':serve,'e':echo,'u':udp,'p':port_of}[proto],args=(s,),daemon=True).start()
print('up',flush=True)
threading.Event().wait()
"""


def serve(rl: Any, name: str, ports: str, tag: str) -> subprocess.Popen[str]:
    p = rl.popen(["burrow", "exec", name, "--", PY, "-c", TCP_SERVER, ports, tag],
                 stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert p.stdout is not None
    assert p.stdout.readline().strip() == "up", p.stderr.read() if p.stderr else ""
    return p


def tcp(addr: str, port: int, data: bytes = b"hi", timeout: float = 5) -> bytes:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam) as c:
        c.settimeout(timeout)
        c.connect((addr, port))
        c.sendall(data)
        c.shutdown(socket.SHUT_WR)  # half-close: the server answers only after our FIN
        out = b""
        while chunk := c.recv(65536):
            out += chunk
        return out


def udp(addr: str, port: int, data: bytes = b"u") -> bytes:
    fam = socket.AF_INET6 if ":" in addr else socket.AF_INET
    with socket.socket(fam, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        u.sendto(data, (addr, port))
        return u.recvfrom(65535)[0]


def free_ports(n: int) -> int:
    """A base port with n consecutive free TCP and UDP ports on the host's loopback."""
    for base in range(20000 + (time.time_ns() // 1000) % 20000, 60000, 37):
        ok = True
        for p in range(base, base + n):
            for kind in (socket.SOCK_STREAM, socket.SOCK_DGRAM):
                with socket.socket(socket.AF_INET6, kind) as s:
                    try:
                        s.bind(("::", p))
                    except OSError:
                        ok = False
        if ok:
            return base
    raise AssertionError("no free ports")


def sh(rl: Any, name: str, cmd: str, check: bool = True) -> Any:
    return rl.burrow("exec", name, "--", "sh", "-c", cmd, check=check, timeout=30)


def test_ports_tcp_udp_v4_v6_ranges_runtime(rl: Any) -> None:
    base = free_ports(8)
    rl.burrow("sandbox", "create", "web", "-p", f"{base}:80", "-p", f"[::1]:{base + 1}:81",
              "-p", f"127.0.0.1:{base + 2}-{base + 3}:90-91/udp", "-p",
              f"{base + 4}-{base + 5}:92-93/tcp", check=True, timeout=60)
    serve(rl, "web", "t:80,t:81,u:90,u:91,t:92,t:93", "web")
    assert tcp("127.0.0.1", base) == b"web:hi"
    assert tcp("::1", base) == b"web:hi"              # dual-stack listener
    assert tcp("::1", base + 1) == b"web:hi"          # [::1] only
    with pytest.raises(OSError):
        tcp("127.0.0.1", base + 1, timeout=2)
    assert udp("127.0.0.1", base + 2) == b"web:u"
    assert udp("127.0.0.1", base + 3) == b"web:u"
    assert tcp("127.0.0.1", base + 5) == b"web:hi"
    big = bytes(range(256)) * 8192                    # 2 MiB both ways through splice
    assert tcp("127.0.0.1", base, big, timeout=20) == b"web:" + big
    ls = json.loads(rl.burrow("port", "ls", "--format", "json", check=True).out)
    assert {(p["host_port"], p["protocol"]) for p in ls} >= {(base, "tcp"), (base + 2, "udp")}
    # Runtime add and remove: a second sandbox publishes a port, then goes away.
    rl.burrow("sandbox", "create", "api", "-p", f"{base + 6}:80", check=True, timeout=60)
    serve(rl, "api", "t:80", "api")
    assert tcp("127.0.0.1", base + 6) == b"api:hi"
    rl.burrow("sandbox", "rm", "api", check=True, timeout=60)
    with pytest.raises(ConnectionRefusedError):
        tcp("127.0.0.1", base + 6)
    assert tcp("127.0.0.1", base) == b"web:hi"


def test_request_response_is_not_held_back(rl: Any) -> None:
    """Small messages go through at once, both ways, on a connection that stays open.

    Regression: writing with SPLICE_F_MORE made TCP hold every sub-MSS message until more
    data came, a ~200 ms stall per message (20 round trips took 8 s). The bound below is 25x
    looser than that stall allows and far above a normal round trip (well under 1 ms)."""
    base = free_ports(1)
    rl.burrow("sandbox", "create", "rr", "-p", f"127.0.0.1:{base}:7", check=True, timeout=60)
    serve(rl, "rr", "e:7", "rr")
    with socket.create_connection(("127.0.0.1", base), 5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = time.monotonic()
        for i in range(20):
            msg = f"request {i}\n".encode()
            c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(len(msg) - len(got))
            assert got == msg
        assert time.monotonic() - t < 2.0


def test_sequential_connections_reuse_pipes_cleanly(rl: Any) -> None:
    """The pipes of a finished connection serve the next ones (the forwarder's spare pipes,
    a guard for that optimisation): after a connection reset mid-transfer, 150 connections in
    a row with payloads of random sizes (empty to three pipes' worth) are each answered with
    exactly their own bytes."""
    import random
    base = free_ports(2)
    rl.burrow("sandbox", "create", "seq", "-p", f"127.0.0.1:{base}-{base + 1}:80-81",
              check=True, timeout=60)
    serve(rl, "seq", "t:80,t:81", "seq")
    rnd = random.Random(13)
    # Reset with data in flight (on another port: that server's thread dies of the reset).
    with socket.create_connection(("127.0.0.1", base + 1), 5) as c:
        c.sendall(b"x" * 300000)
        c.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, b"\1\0\0\0\0\0\0\0")
    for i in range(150):
        data = rnd.randbytes(rnd.choice([0, 1, 7, 1500, 65536, 70000, rnd.randrange(200000)]))
        assert tcp("127.0.0.1", base, data, timeout=10) == b"seq:" + data, i


def test_many_connections_and_a_bounded_pipe_budget(rl: Any) -> None:
    """400 connections open at once, all answered; bulk ones get big pipes, a bounded number.

    Each connection costs the forwarder 6 fds: with the usual soft RLIMIT_NOFILE of 1024 it
    stopped at ~170. And 1 MiB pipes for every connection would eat the user's whole pipe
    budget (fs.pipe-user-pages-soft), which the user's other programs share."""
    import fcntl

    from rootless.ports.splice import BIG_PIPE, F_GETPIPE_SZ, MAX_BIG_PIPES

    base = free_ports(1)
    rl.burrow("sandbox", "create", "many", "-p", f"127.0.0.1:{base}:7", check=True, timeout=60)
    serve(rl, "many", "e:7", "many")
    conns = []
    try:
        for _ in range(400):
            c = socket.create_connection(("127.0.0.1", base), 10)
            c.settimeout(10)
            conns.append(c)
        blob = bytes(range(256)) * 4096  # 1 MiB each way on 40 connections at once
        for c in conns[:40]:
            c.sendall(blob[:65536])
        for i, c in enumerate(conns):
            msg = blob if i < 40 else f"hello {i}".encode()
            if i < 40:
                c.sendall(blob[65536:])
            else:
                c.sendall(msg)
            got = b""
            while len(got) < len(msg):
                got += c.recv(len(msg) - len(got))
            assert got == msg, i
        pid = json.loads(rl.burrow("status", "--format", "json", check=True).out)["forwarder"]["pid"]
        sizes = []
        for fd in os.listdir(f"/proc/{pid}/fd"):
            if os.readlink(f"/proc/{pid}/fd/{fd}").startswith("pipe:"):
                f = os.open(f"/proc/{pid}/fd/{fd}", os.O_RDONLY | os.O_NONBLOCK)
                try:
                    sizes.append(fcntl.fcntl(f, F_GETPIPE_SZ))
                finally:
                    os.close(f)
        assert len(sizes) >= 4 * 400 / 2  # two pipes (4 fds, counted by end) per connection
        big = sum(1 for z in sizes if z >= BIG_PIPE) // 2  # both ends of a pipe are listed
        assert 0 < big <= MAX_BIG_PIPES
    finally:
        for c in conns:
            c.close()


def test_out_of_fds_refuses_clients_and_recovers(rl: Any) -> None:
    """With few fds, extra clients are reset at once; the forwarder neither hangs nor spins.

    One client (127.0.0.1) meets its own cap first, which leaves room for another
    (127.0.0.2, also loopback); once both fill the budget the rest are refused for want of
    fds, counted and logged."""
    base = free_ports(1)
    # The world (and its forwarder) starts with this command, so it inherits the limit.
    rl.run(["prlimit", "--nofile=160:160", "burrow", "sandbox", "create", "fd", "-p",
            f"{base}:7"], check=True, timeout=60)
    serve(rl, "fd", "e:7", "fd")
    pid = json.loads(rl.burrow("status", "--format", "json", check=True).out)["forwarder"]["pid"]
    conns: list[socket.socket] = []

    def flood(src: str, n: int) -> tuple[int, int]:
        answered = refused = 0
        for _ in range(n):  # 6 fds each: far more than 160 fds hold
            try:
                # The reset can come before connect() returns: that is a refusal too.
                c = socket.create_connection(("127.0.0.1", base), 5, (src, 0))
                c.settimeout(5)  # a hang would raise TimeoutError and fail the test
                conns.append(c)
                c.sendall(b"hi")
                answered += c.recv(10) == b"hi"
            except (ConnectionResetError, BrokenPipeError):
                refused += 1
        return answered, refused

    try:
        first = flood("127.0.0.1", 40)
        assert first[0] > 0 and first[1] > 0 and sum(first) == 40
        second = flood("127.0.0.2", 40)  # another client: served although the first is capped
        assert second[0] > 0 and second[1] > 0 and sum(second) == 40

        def cpu() -> float:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

        before = cpu()
        time.sleep(1)
        assert cpu() - before < 0.5  # a listener it cannot serve must not make it spin
    finally:
        for c in conns:
            c.close()
    time.sleep(0.3)
    with socket.create_connection(("127.0.0.1", base), 5) as c:  # fds back: served again
        c.settimeout(5)
        c.sendall(b"again")
        assert c.recv(10) == b"again"
    log = rl.run(["sh", "-c", 'cat "$XDG_RUNTIME_DIR/burrow/log/forwarder.log"'], check=True).out
    assert "out of file descriptors (limit 160" in log and "its cap" in log
    fwd = json.loads(rl.burrow("status", "--format", "json", check=True).out)["forwarder"]
    assert fwd["fd_limit"] == 160 and fwd["refused_out_of_fds"] > 0
    assert fwd["shed"]["tcp_refused_per_client"] > 0 and fwd["shed"]["tcp_refused_total"] > 0
    assert "clients refused for want of fds" in rl.burrow("status", check=True).out


def test_a_new_udp_client_is_one_flow(rl: Any) -> None:
    """Datagrams sent before the flow's socket is ready join that flow: one source port."""
    base = free_ports(1)
    rl.burrow("sandbox", "create", "u1", "-p", f"127.0.0.1:{base}:53/udp", check=True,
              timeout=60)
    serve(rl, "u1", "p:53", "u1")
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as u:
        u.settimeout(5)
        for i in range(5):  # back to back: the first flow's socket is still on its way
            u.sendto(f"q{i}".encode(), ("127.0.0.1", base))
        ports = {u.recvfrom(100)[0] for _ in range(5)}
    assert len(ports) == 1, ports


def test_backend_down_is_refused_at_once(rl: Any) -> None:
    base = free_ports(1)
    rl.burrow("sandbox", "create", "idle", "-p", f"127.0.0.1:{base}:80", check=True, timeout=60)
    t = time.monotonic()
    with pytest.raises((ConnectionResetError, ConnectionRefusedError, BrokenPipeError)):
        tcp("127.0.0.1", base)
    assert time.monotonic() - t < 1.0


def test_ports_follow_network_connect_and_disconnect(rl: Any) -> None:
    """Published ports keep reaching a sandbox whose first network is disconnected: the
    forwarder is re-pointed at its address on the network it is still on. Before, it went on
    dialling the removed address (TCP and UDP got no answer). A sandbox on an IPv4 network
    that connects to a dual-stack one is dialled on its new IPv6 address by an IPv6 client."""
    base = free_ports(2)
    rl.burrow("network", "create", "rpa", check=True)
    rl.burrow("network", "create", "rpb", "--ipv6", check=True)
    rl.burrow("sandbox", "create", "mv", "--network", "rpa", "-p", f"{base}:80",
              "-p", f"{base + 1}:81/udp", check=True, timeout=60)
    serve(rl, "mv", "t:80,u:81", "mv")
    assert tcp("127.0.0.1", base) == b"mv:hi"
    rl.burrow("network", "connect", "rpb", "mv", check=True, timeout=60)
    assert tcp("::1", base) == b"mv:hi"
    rl.burrow("network", "disconnect", "rpa", "mv", check=True, timeout=60)
    assert tcp("127.0.0.1", base) == b"mv:hi"
    assert tcp("::1", base) == b"mv:hi"
    assert udp("127.0.0.1", base + 1) == b"mv:u"
    ls = json.loads(rl.burrow("port", "ls", "--format", "json", check=True).out)
    assert {p["host_port"] for p in ls if p["sandbox"] == "mv"} == {base, base + 1}


def test_dns_across_networks_and_isolation(rl: Any) -> None:
    for net in ("rla", "rlb"):
        rl.burrow("network", "create", net, "--ipv6", "--opt", "isolate=true", check=True)
    rl.burrow("sandbox", "create", "a", "--network", "rla:alias=alpha", check=True, timeout=60)
    rl.burrow("sandbox", "create", "b", "--network", "rla", "--network", "rlb", check=True,
              timeout=60)
    rl.burrow("sandbox", "create", "c", "--network", "rlb", check=True, timeout=60)
    # By name, both families, through burrow-dns and the dns.podman search domain.
    out = sh(rl, "b", "getent ahosts alpha; getent ahostsv4 c; cat /etc/resolv.conf").out
    assert "search dns.podman" in out
    a = json.loads(rl.burrow("sandbox", "inspect", "a", check=True).out)
    c = json.loads(rl.burrow("sandbox", "inspect", "c", check=True).out)
    a_ips = a["networks"]["rla"]["static_ips"]
    assert all(ip in out for ip in a_ips)
    assert c["networks"]["rlb"]["static_ips"][0] in out
    sh(rl, "a", f"ping -c1 -W2 {a_ips[0]}")  # itself
    sh(rl, "b", "ping -c1 -W2 a && ping -6 -c1 -W2 a && ping -c1 -W2 c")
    # Own names come from the private /etc/hosts.
    assert a_ips[0] in sh(rl, "a", "getent ahostsv4 a").out
    # Isolation: a is not on rlb, so c's name is unknown to it and c is unreachable.
    assert sh(rl, "a", "getent hosts c", check=False).rc != 0
    c_ip = c["networks"]["rlb"]["static_ips"][0]
    assert sh(rl, "a", f"ping -c1 -W1 {c_ip}", check=False).rc != 0
    # connect/disconnect at runtime
    rl.burrow("network", "connect", "rlb", "a", check=True, timeout=60)
    sh(rl, "a", "getent hosts c && ping -c1 -W2 c")
    rl.burrow("network", "disconnect", "rlb", "a", check=True, timeout=60)
    assert sh(rl, "a", "getent hosts c", check=False).rc != 0
    res = rl.burrow("network", "rm", "rla")
    assert res.rc != 0 and "burrow sandbox rm" in res.err


@pytest.mark.parametrize("connector", ["slirp4netns", "pasta"])
def test_egress_to_host_loopback(rl: Any, connector: str) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    try:
        rl.burrow("--connector", connector, "--allow-host-loopback", "sandbox", "create", "eg",
                  check=True, timeout=60)
        st = json.loads(rl.burrow("status", "--format", "json", check=True).out)
        host = st["connector"]["host_v4"]
        p = rl.popen(["burrow", "exec", "eg", "--", PY, "-c",
                      f"import socket;c=socket.create_connection(('{host}',{port}),5);"
                      "print(c.recv(10).decode())"], stdout=subprocess.PIPE)
        srv.settimeout(10)
        conn, peer = srv.accept()
        conn.sendall(b"hello")
        conn.close()
        out, _ = p.communicate(timeout=10)
        assert out.strip() == "hello"
        assert peer[0] == "127.0.0.1"
    finally:
        srv.close()


def test_host_loopback_closed_by_default(rl: Any) -> None:
    srv = socket.socket()
    srv.bind(("127.0.0.1", 0))
    srv.listen(4)
    port = srv.getsockname()[1]
    try:
        rl.burrow("--connector", "slirp4netns", "sandbox", "create", "eg", check=True,
                  timeout=60)
        res = sh(rl, "eg", f"{PY} -c \"import socket;socket.create_connection(('10.0.2.2',"
                 f"{port}),3)\"", check=False)
        assert res.rc != 0
    finally:
        srv.close()


def test_bad_input_names_the_fix(rl: Any) -> None:
    res = rl.burrow("sandbox", "create", "x", "--network", "nosuch")
    assert res.rc != 0 and "burrow network create nosuch" in res.err
    res = rl.burrow("sandbox", "create", "x", "-p", "80:abc")
    assert res.rc != 0 and "invalid port spec" in res.err
    res = rl.burrow("sandbox", "create", "x" * 64)
    assert res.rc != 0 and "limit is 63" in res.err
    res = rl.burrow("sandbox", "create", "x", "-p", "80:80")
    assert res.rc != 0 and "ip_unprivileged_port_start" in res.err
    rl.burrow("network", "create", "rlc", "--subnet", "10.90.1.0/24", check=True)
    rl.burrow("sandbox", "create", "s1", "--network", "rlc:ip=10.90.1.5", check=True, timeout=60)
    res = rl.burrow("sandbox", "create", "s2", "--network", "rlc:ip=10.90.1.5")
    assert res.rc != 0 and "already in use" in res.err
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen(1)
        port = taken.getsockname()[1]
        res = rl.burrow("sandbox", "create", "s3", "-p", f"127.0.0.1:{port}:80")
        assert res.rc != 0 and "already in use" in res.err
    # Failed creates leave nothing behind.
    names = [r["name"] for r in json.loads(
        rl.burrow("sandbox", "ls", "--format", "json", check=True).out)]
    assert names == ["s1"]


def test_network_cli(rl: Any) -> None:
    rl.burrow("network", "create", "rld", "--subnet", "10.91.0.0/24", "--subnet",
              "fd91::/64", "--gateway", "10.91.0.254", "--internal", "--disable-dns",
              "--opt", "mtu=9000", check=True)
    net = json.loads(rl.burrow("network", "inspect", "rld", check=True).out)[0]
    assert net["subnets"][0] == {"subnet": "10.91.0.0/24", "gateway": "10.91.0.254"}
    assert net["internal"] and not net["dns_enabled"] and net["options"]["mtu"] == "9000"
    assert net["ipv6_enabled"] and len(net["id"]) == 64
    rows = json.loads(rl.burrow("network", "ls", "--format", "json", check=True).out)
    assert [r["name"] for r in rows] == ["rld"]
    res = rl.burrow("network", "create", "rle", "--subnet", "10.91.0.128/25")
    assert res.rc != 0 and "already used by network rld" in res.err
    assert "rld" in rl.burrow("network", "prune", "-f", check=True).out
    res = rl.burrow("network", "inspect", "rld")
    assert res.rc != 0 and "does not exist" in res.err


def test_demo(rl: Any) -> None:
    res = rl.burrow("demo", timeout=120)
    assert res.rc == 0, res.err
    assert "demo OK" in res.out and "cleaned up" in res.out
    assert rl.leftover_pids() == []


def test_demo_leaves_a_sandbox_of_the_users_alone(rl: Any) -> None:
    """A sandbox the user already had under a demo name makes the demo fail, and survives its
    clean-up (the demo once removed a `demo-client` it had failed to create)."""
    rl.burrow("sandbox", "create", "demo-client", check=True, timeout=60)
    res = rl.burrow("demo", timeout=120)
    assert res.rc == 1 and "demo-client already exists" in res.err, (res.out, res.err)
    assert "cleaned up" in res.out
    names = rl.burrow("sandbox", "ls", "-q", check=True).out.split()
    assert names == ["demo-client"], names


def test_parallel_creates_get_distinct_addresses(rl: Any) -> None:
    procs = [rl.popen(["burrow", "sandbox", "create", f"p{i}"], stdout=subprocess.PIPE,
                      stderr=subprocess.PIPE) for i in range(4)]
    outs = [p.communicate(timeout=120) for p in procs]
    assert all(p.returncode == 0 for p in procs), outs
    rows = json.loads(rl.burrow("sandbox", "ls", "--format", "json", check=True).out)
    ips = [ip for r in rows for ip in r["ips"]]
    assert len(rows) == 4 and len(ips) == 8 and len(set(ips)) == 8


def test_udp_flows_time_out(rl: Any) -> None:
    base = free_ports(1)
    rl.run(["env", "BURROW_UDP_TIMEOUT=1", "burrow", "sandbox", "create", "u", "-p",
            f"127.0.0.1:{base}:90/udp"], check=True, timeout=60)
    serve(rl, "u", "u:90", "u")
    st = json.loads(rl.burrow("status", "--format", "json", check=True).out)
    fpid = st["forwarder"]["pid"]

    def fds() -> int:
        import os
        return len(os.listdir(f"/proc/{fpid}/fd"))

    assert udp("127.0.0.1", base) == b"u:u"
    open_flow = fds()  # includes the flow's socket inside the sandbox
    deadline = time.monotonic() + 5
    while fds() >= open_flow and time.monotonic() < deadline:
        time.sleep(0.1)
    assert fds() == open_flow - 1
    assert udp("127.0.0.1", base) == b"u:u"  # a new flow after expiry


def test_netavark_passthrough(rl: Any) -> None:
    res = rl.burrow("netavark", "version", check=True)
    assert json.loads(res.out)["version"]

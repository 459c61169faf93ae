#!/usr/bin/env python3
"""Rootless bench rows, all measured in one run, as an unprivileged user.

- inbound forwarding, host 127.0.0.1:P -> iperf3 server in a sandbox: burrow's forwarder vs
  Podman's rootlessport (same sandbox) vs pasta's own -t forwarding (pasta's namespace), with
  host loopback as the ceiling; Gbit/s (iperf3), connections/s (connect, read, close) and the
  round trip of a small request/response on an open connection (microseconds);
- what this machine's loopback carries with two TCP streams at once: every forwarder moves
  each byte over two loopback connections, so this bounds any of them;
- outbound, sandbox -> host loopback iperf3 server through slirp4netns and pasta (up and -R);
- time to create a sandbox on a warm and on a cold namespace;
- the cost of keeping the client's address (issue 13): the same sandbox servers through burrow's
  forwarder with it on and with `/tcp,no-client-addr`, from a client whose address is not
  loopback (CLIENT_ADDR, on a veth of the netns the bench runs in), in alternating rounds.

Run as root, it makes a netns of its own standing in for the host (a veth with
CLIENT_ADDR and a default route on it: nothing of the machine's own network is touched) and
re-runs itself there as the test user from tests/rootless_user.py. Run as another user, it
runs where it is, and the client-address rows need CLIENT_ADDR to be an address there.

    .venv/bin/python scripts/bench_rootless.py [--seconds 3] [--runs 3] [--only client-addr]
    sudo .venv/bin/python scripts/bench_rootless.py --only inbound --repeat 5 --seconds 1 --runs 1
      (every forwarder set up at once, measured in interleaved rounds: each round's paired
      ratios burrow/pasta, burrow own netns/pasta and burrow/rootlessport, their median and
      spread, and each forwarder's CPU and context switches per connection)
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
ROOTLESSPORT = "/usr/lib/podman/rootlessport"
ECHO_SERVER = """
import socket,sys
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',int(sys.argv[1]))); s.listen(512)
while True:
    c,_=s.accept(); c.sendall(b'hello\\n'); c.close()
"""
# Echoes every read at once, connection kept open: request/response round trips.
RR_SERVER = """
import socket,sys,threading
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',int(sys.argv[1]))); s.listen(512)
def one(c):
    c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
    while (d:=c.recv(65536)): c.sendall(d)
while True:
    threading.Thread(target=one,args=(s.accept()[0],),daemon=True).start()
"""
RR_ROUNDS = 1000
CLIENT_ADDR, CLIENT_ADDR6 = "198.51.100.1", "2001:db8:5::1"  # TEST-NET: never routed anywhere


def burrow(*args: str, check: bool = True, timeout: float = 120) -> str:
    res = subprocess.run([str(BIN / "burrow"), *args], capture_output=True, text=True,
                         timeout=timeout)
    if check and res.returncode:
        raise SystemExit(f"burrow {' '.join(args)} failed: {res.stderr.strip()}")
    return res.stdout


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_port(port: int, timeout: float = 10) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), 0.5).close()
            return
        except OSError:
            time.sleep(0.05)
    raise SystemExit(f"port {port} never came up (at {sys._getframe(1).f_lineno})")


def wait_backend(port: int, timeout: float = 15, host: str = "127.0.0.1") -> None:
    """A forwarder accepts before its backend listens; ready means not reset at once."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection((host, port), 1) as c:
                c.settimeout(0.3)
                try:
                    if c.recv(16):
                        return  # the echo server spoke
                except TimeoutError:
                    return  # iperf3 waits for our cookie: it is there
        except OSError:
            pass
        time.sleep(0.1)
    raise SystemExit(f"backend behind port {port} never came up")


def cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the whole machine, from /proc/stat."""
    with open("/proc/stat") as f:
        vals = [int(v) for v in f.readline().split()[1:]]
    idle = vals[3] + vals[4]  # idle + iowait
    return sum(vals) - idle, sum(vals)


def iperf(port: int, seconds: float, runs: int, host: str = "127.0.0.1",
          prefix: Sequence[str] = (), reverse: bool = False,
          extra: Sequence[str] = ()) -> tuple[float, list[float], float]:
    """Median Gbit/s, every run's, and the median share of all CPUs busy during a run."""
    vals, busy = [], []
    for _ in range(runs):
        # iperf3 reads -t as a whole number, and 0 (from 0.5) as "run forever"
        argv = [*prefix, "iperf3", "-c", host, "-p", str(port), "-t",
                str(max(1, round(seconds))), "-J",
                *extra]
        if reverse:
            argv.append("-R")
        b0, t0 = cpu_times()
        res = subprocess.run(argv, capture_output=True, text=True, timeout=seconds + 30)
        b1, t1 = cpu_times()
        busy.append((b1 - b0) / max(1, t1 - t0))
        try:
            data = json.loads(res.stdout)
            vals.append(data["end"]["sum_received"]["bits_per_second"] / 1e9)
        except (ValueError, KeyError):
            vals.append(0.0)
    return statistics.median(vals), vals, statistics.median(busy)


def conn_rate(port: int, seconds: float, host: str = "127.0.0.1") -> float:
    n = 0
    end = time.monotonic() + seconds
    while time.monotonic() < end:
        try:
            with socket.create_connection((host, port), 2) as c:
                while c.recv(64):
                    pass
            n += 1
        except OSError:
            pass
    return n / seconds


def round_trip_us(port: int, rounds: int = RR_ROUNDS, batches: int = 5,
                  host: str = "127.0.0.1") -> float:
    """Round trip of a 64-byte request and its echo on one open connection: the median over
    `batches` batches of the mean per batch (single round trips are too noisy on a VM)."""
    msg = b"x" * 64
    means = []
    with socket.create_connection((host, port), 5) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        c.settimeout(5)
        for _ in range(batches):
            t = time.perf_counter()
            for _ in range(rounds):
                c.sendall(msg)
                got = 0
                while got < len(msg):
                    got += len(c.recv(len(msg) - got))
            means.append((time.perf_counter() - t) / rounds * 1e6)
    return statistics.median(means)


def two_streams(seconds: float, runs: int) -> tuple[float, list[float], float]:
    """Two loopback iperf3 streams at once (-P 2): their total."""
    port = free_port()
    srv = bg(["iperf3", "-s", "-p", str(port)])
    wait_port(port)
    try:
        return iperf(port, seconds, runs, extra=("-P", "2"))
    finally:
        stop(srv)


def _fds_to_3_4(a: int, b: int) -> None:
    # rootlessport reads ExitFD 3 and writes ReadyFD 4; dup first so neither clobbers the other.
    a2, b2 = os.dup(a), os.dup(b)
    os.dup2(a2, 3)
    os.dup2(b2, 4)


def holder_pid() -> int:
    return int(json.loads(burrow("status", "--format", "json"))["namespace"]["holder_pid"])


def bg(argv: Sequence[str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(list(argv), stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, start_new_session=True)


def stop(p: subprocess.Popen[bytes]) -> None:
    try:
        os.killpg(p.pid, signal.SIGTERM)
    except ProcessLookupError:
        pass
    try:
        p.wait(timeout=5)
    except subprocess.TimeoutExpired:
        os.killpg(p.pid, signal.SIGKILL)
        p.wait()


Ports = tuple[int, int, int]  # iperf3, echo (conn/s), round-trip echo
Cleanup = Callable[[], None]
Row = tuple[str, float, list[float], float, float, float]  # name Gbit/s runs busy conn/s rtt
LOOPBACK, BURROW, OWN, ROOTLESSPORT_ROW, PASTA = (
    "host loopback (no forwarder)", "burrow forwarder (splice, fd-passing dialer)",
    "burrow forwarder, servers in its own netns*", "podman rootlessport",
    "pasta -t (own namespace*)")
# pasta again, its servers in pasta's own session (so its autogroup: sched_autogroup puts a
# session's processes in one task group), as this bench ran them before; in the PASTA row
# each server has a session of its own, as burrow's sandbox servers have, and as a Podman
# container's processes (conmon's) have apart from pasta's.
PASTA_SHARED = "pasta -t, servers in pasta's session"
# The paired ratios --repeat reports: (mine, reference), each round's from that round alone.
PAIRS = ((BURROW, PASTA), (OWN, PASTA), (BURROW, ROOTLESSPORT_ROW), (BURROW, PASTA_SHARED),
         (PASTA_SHARED, PASTA), ("burrow forwarder, short scheduler slice", BURROW),
         ("burrow forwarder, short scheduler slice", PASTA))


def start_loopback() -> tuple[Ports, Cleanup]:
    """Ceiling: host loopback, no forwarder."""
    lp, ep, rrp = free_port(), free_port(), free_port()
    procs = [bg(["iperf3", "-s", "-p", str(lp)]),
             bg([sys.executable, "-c", ECHO_SERVER, str(ep)]),
             bg([sys.executable, "-c", RR_SERVER, str(rrp)])]
    for port in (lp, ep, rrp):
        wait_port(port)

    def cleanup() -> None:
        for p in procs:
            stop(p)
    return (lp, ep, rrp), cleanup


def forwarder_counters() -> Counters:
    pid = int(json.loads(burrow("status", "--format", "json"))["forwarder"]["pid"])
    return Counters(pid)


def start_burrow() -> tuple[Ports, dict[str, object], Cleanup]:
    """burrow: sandbox behind the bridge; iperf3 and echo servers inside it."""
    bp, bep, brr = (free_port() for _ in range(3))
    burrow("sandbox", "create", "bench", "-p", f"127.0.0.1:{bp}:5201",
           "-p", f"127.0.0.1:{bep}:5301", "-p", f"127.0.0.1:{brr}:5401")
    rec = json.loads(burrow("sandbox", "inspect", "bench"))
    servers = [bg([str(BIN / "burrow"), "exec", "bench", "--", "iperf3", "-s", "-p", "5201"]),
               bg([str(BIN / "burrow"), "exec", "bench", "--", sys.executable, "-c",
                   ECHO_SERVER, "5301"]),
               bg([str(BIN / "burrow"), "exec", "bench", "--", sys.executable, "-c",
                   RR_SERVER, "5401"])]

    def cleanup() -> None:
        for s in servers:
            stop(s)
        burrow("sandbox", "rm", "bench")
    for port in (bp, bep, brr):
        wait_backend(port)
    return (bp, bep, brr), rec, cleanup


def start_rootlessport(rec: dict[str, object]) -> tuple[Ports, Cleanup, Counters] | None:
    """Podman's forwarder, into the same sandbox (its child in the sandbox netns)."""
    if not os.access(ROOTLESSPORT, os.X_OK):
        return None
    nets = rec["networks"]
    assert isinstance(nets, dict)
    ip4 = next(ip for a in nets.values() for ip in a["static_ips"] if ":" not in ip)
    rp, rep, rrr = (free_port() for _ in range(3))
    h = holder_pid()
    tmp = Path(tempfile.mkdtemp(prefix="rlport-", dir=os.environ.get("XDG_RUNTIME_DIR")))
    cfg = {"Mappings": [
        {"host_ip": "127.0.0.1", "container_port": c, "host_port": p, "range": 1,
         "protocol": "tcp"} for p, c in ((rp, 5201), (rep, 5301), (rrr, 5401))],
        "NetNSPath": rec["netns"], "ExitFD": 3, "ReadyFD": 4, "TmpDir": str(tmp),
        "ChildIP": ip4, "ContainerID": "bench", "RootlessCNI": True}
    exit_r, exit_w = os.pipe()
    ready_r, ready_w = os.pipe()
    rl = subprocess.Popen(
        ["nsenter", "--preserve-credentials", "-U", "-m", "-p", "-t", str(h), "--", ROOTLESSPORT],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=open(tmp / "log", "w"),
        pass_fds=[3, 4], start_new_session=True,
        preexec_fn=lambda: _fds_to_3_4(exit_r, ready_w))
    assert rl.stdin is not None
    rl.stdin.write(json.dumps(cfg).encode())
    rl.stdin.close()
    os.close(exit_r)
    os.close(ready_w)
    if os.read(ready_r, 1) != b"1":
        raise SystemExit(f"rootlessport: {(tmp / 'log').read_text().strip()}")
    os.close(ready_r)

    def cleanup() -> None:
        os.close(exit_w)
        stop(rl)
        shutil.rmtree(tmp, ignore_errors=True)
    for port in (rp, rep, rrr):
        wait_backend(port)
    return (rp, rep, rrr), cleanup, Counters(rl.pid)


def start_pasta(wrap: Sequence[str] = (),
                shared: bool = False) -> tuple[Ports, Cleanup, Counters] | None:
    """pasta's own forwarding (-t), into pasta's own namespace (not behind a bridge); run
    under `wrap` (strace: pasta makes itself undumpable, so it is traced from its start).
    Each server in a session of its own, unless `shared` (PASTA_SHARED)."""
    if not shutil.which("pasta"):
        return None
    pp, pep, prr = free_port(), free_port(), free_port()
    own = "" if shared else "setsid -w "
    script = Path(tempfile.mkdtemp(dir=os.environ.get("XDG_RUNTIME_DIR"))) / "echo.py"
    script.write_text(ECHO_SERVER)
    (script.parent / "rr.py").write_text(RR_SERVER)
    pasta = subprocess.Popen(
        [*wrap, "pasta", "--config-net", "-f", "-t", f"{pp}:5201,{pep}:5301,{prr}:5401", "-u",
         "none", "-T", "none", "-U", "none", "--", "sh", "-c",
         f"{own}iperf3 -s -p 5201 >/dev/null 2>&1 & {own}{sys.executable} "
         f"{script.parent}/rr.py 5401 & exec {own}{sys.executable} {script} 5301"],
        stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, start_new_session=True)

    def cleanup() -> None:
        stop(pasta)
        shutil.rmtree(script.parent, ignore_errors=True)
    for port in (pp, pep, prr):
        wait_backend(port)
    return (pp, pep, prr), cleanup, Counters(pasta.pid, False)


def start_own_netns() -> tuple[Ports, Cleanup]:
    """burrow's forwarder with pasta -t's topology: the servers in the forwarder's own
    namespace (the user's netns, on its loopback), no bridge and veth hop. Published with a
    raw `add` whose netns is the user's own (the dialer sees it as /proc/1/ns/net)."""
    h = holder_pid()
    ports = [free_port() for _ in range(3)]
    enter = ["nsenter", "--preserve-credentials", "-U", "-n", "-t", str(h), "--"]
    servers = [bg([*enter, "iperf3", "-s", "-B", "127.0.0.1", "-p", "5211"]),
               bg([*enter, sys.executable, "-c", ECHO_SERVER, "5311"]),
               bg([*enter, sys.executable, "-c", RR_SERVER, "5411"])]
    control({"op": "add", "sandbox": "bench-ownns", "netns": "/proc/1/ns/net",
             "ip4": "127.0.0.1", "ip6": None, "ports": [
                 {"host_ip": "127.0.0.1", "container_port": c, "host_port": p, "range": 1,
                  "protocol": "tcp"} for p, c in zip(ports, (5211, 5311, 5411), strict=True)]})

    def cleanup() -> None:
        control({"op": "remove", "sandbox": "bench-ownns"})
        for srv in servers:
            stop(srv)
    for port in ports:
        wait_backend(port)
    return (ports[0], ports[1], ports[2]), cleanup


# Per connection (or round trip): user us, sys us (/proc ticks), context switches, on-CPU us
# and us waiting on a run queue while runnable (schedstat, ns exact): under load the wait is
# what a wakeup costs beyond the work.
Cost = tuple[float, float, float, float, float]
SCALE = (1e6, 1e6, 1.0, 1e-3, 1e-3)  # Counters' units -> Cost's


@dataclass(frozen=True)
class Counters:
    """A forwarder's processes: pid, and its descendants with tree (burrow's forwarder and
    its dialers; rootlessport and its child). pasta: tree=False, its children are the
    servers."""

    pid: int
    tree: bool = True

    def pids(self) -> list[int]:
        out, todo = [], [self.pid]
        while todo:
            p = todo.pop()
            out.append(p)
            if self.tree:
                try:
                    for t in Path(f"/proc/{p}/task").iterdir():
                        todo += [int(c) for c in (t / "children").read_text().split()]
                except (OSError, ValueError):
                    continue
        return out

    def __call__(self) -> list[float]:
        """[user s, sys s, context switches, on-CPU ns, run-queue wait ns] of all their
        threads."""
        tick = os.sysconf("SC_CLK_TCK")
        got = [0.0] * 5
        for p in self.pids():
            try:
                f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
                got[0] += int(f[11]) / tick
                got[1] += int(f[12]) / tick
                for t in Path(f"/proc/{p}/task").iterdir():
                    for line in (t / "status").read_text().splitlines():
                        if "ctxt_switches:" in line:
                            got[2] += int(line.split()[1])
                    run, wait = (t / "schedstat").read_text().split()[:2]
                    got[3] += int(run)
                    got[4] += int(wait)
            except (OSError, ValueError):
                continue
        return got


def per_unit(spent: list[float], n: float) -> Cost:
    a, b, c, d, e = (x / max(1.0, n) * k for x, k in zip(spent, SCALE, strict=True))
    return a, b, c, d, e


def syscalls(cost: Counters, port: int, n: int) -> tuple[dict[str, float], str]:
    """System calls per connection by name, `strace -c -f` on the forwarder's processes over
    n sequential connections (strace slows them: counts only, no times)."""
    out = Path(tempfile.mkstemp(prefix="strace-", dir=os.environ.get("XDG_RUNTIME_DIR"))[1])
    argv = ["strace", "-c", "-f", "-qq", "-o", str(out)]
    for p in cost.pids():
        argv += ["-p", str(p)]
    sequential(port, 50)  # anything set up lazily, before the count
    tr = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE)
    time.sleep(1.0)  # attached
    sequential(port, n)
    time.sleep(0.2)  # the forwarder's last close
    tr.send_signal(signal.SIGINT)
    _, err = tr.communicate(timeout=30)
    per = {c: k / n for c, k in strace_counts(out).items()}
    return per, err.decode(errors="replace").strip()[-200:]


def sequential(port: int, n: int) -> None:
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), 2) as c:
            while c.recv(64):
                pass


def strace_counts(out: Path) -> dict[str, int]:
    """`strace -c`'s calls column by system call name (the file removed)."""
    text = out.read_text()
    out.unlink()
    got = {}
    for line in text.splitlines():
        f = line.split()
        # % time, seconds, usecs/call, calls, [errors], syscall
        if len(f) >= 5 and f[0][0].isdigit() and f[-1] != "total":
            got[f[-1]] = int(f[3])
    return got


def pasta_syscalls(n: int) -> dict[str, float]:
    """pasta's per connection: two pastas traced from their start, one given n connections
    more than the other; the difference of their counts over n (set-up and exit cancel)."""
    counts = []
    for extra in (0, n):
        out = Path(tempfile.mkstemp(prefix="strace-", dir=os.environ.get("XDG_RUNTIME_DIR"))[1])
        started = start_pasta(("strace", "-c", "-qq", "-o", str(out)))
        assert started is not None
        ports, cleanup, _ = started
        sequential(ports[1], 50 + extra)
        cleanup()
        counts.append(strace_counts(out))
    return {c: (counts[1].get(c, 0) - counts[0].get(c, 0)) / n
            for c in counts[0].keys() | counts[1].keys()}


def print_syscalls(targets: dict[str, tuple[Ports, Counters | None]], n: int) -> None:
    got = {}
    for name, (ports, cost) in targets.items():
        if name == PASTA:
            got[name] = pasta_syscalls(n)
        elif cost is not None:
            per, err = syscalls(cost, ports[1], n)
            if per:
                got[name] = per
            else:
                print(f"strace {short(name)}: nothing counted ({err})")
    if not got:
        return
    names = sorted({c for per in got.values() for c in per},
                   key=lambda c: -max(per.get(c, 0) for per in got.values()))
    print(f"\n## system calls per connection (strace -c -f, {n} sequential connections)")
    print(f"{'syscall':18}" + "".join(f"{short(x):>20}" for x in got))
    for c in names:
        print(f"{c:18}" + "".join(f"{per.get(c, 0):20.2f}" for per in got.values()))
    print(f"{'total':18}" + "".join(f"{sum(per.values()):20.2f}" for per in got.values()))


SLICES = 5  # conn/s and round-trip slices per round, alternating between the forwarders


SLICED = "burrow forwarder, short scheduler slice"
TUNED: dict[str, tuple[Counters, int]] = {}  # a row measured with its processes' slice set


def set_slice(pids: list[int], ns: int) -> None:
    """The EEVDF slice (sched_setattr's sched_runtime, Linux >= 6.12) of pids' threads; 0 is
    the kernel's default. An unprivileged user may set it on their own processes."""
    import ctypes
    import struct

    libc = ctypes.CDLL(None, use_errno=True)
    attr = ctypes.create_string_buffer(struct.pack("IIQiIQQQII", 56, 0, 0, 0, 0, ns, 0, 0, 0,
                                                   0), 56)
    for p in pids:
        for t in Path(f"/proc/{p}/task").iterdir():
            libc.syscall(314, int(t.name), attr, 0)  # SYS_sched_setattr, x86_64


class tuned:
    """The row's processes with its slice while it is measured, the default after."""

    def __init__(self, name: str) -> None:
        self.t = TUNED.get(name)

    def __enter__(self) -> None:
        if self.t:
            set_slice(self.t[0].pids(), self.t[1])

    def __exit__(self, *_: object) -> None:
        if self.t:
            set_slice(self.t[0].pids(), 0)


def measure_round(targets: dict[str, tuple[Ports, Counters | None]], order: list[str],
                  seconds: float, runs: int
                  ) -> tuple[dict[str, Row], dict[str, Cost | None], dict[str, Cost | None]]:
    """One round: each forwarder's iperf3 run(s) in turn, then conn/s and round trips in
    SLICES short slices that alternate between the forwarders, so load that comes and goes
    within the round lands on all of them alike; and each one's cost per connection during
    its conn/s slices and per round trip during its round-trip batches."""
    gbps = {}
    for name in order:
        with tuned(name):
            gbps[name] = iperf(targets[name][0][0], seconds, runs)
    conns = dict.fromkeys(order, 0.0)
    spent = {name: [0.0] * 5 for name in order}
    for _ in range(SLICES):
        for name in order:
            ports, cost = targets[name]
            with tuned(name):
                c0 = cost() if cost else None
                conns[name] += conn_rate(ports[1], seconds / SLICES) * seconds / SLICES
            if cost and c0:
                for i, v in enumerate(cost()):
                    spent[name][i] += v - c0[i]
    rtt, rt_spent, trips = round_trips({name: targets[name] for name in order})
    rows, per, per_rt = {}, {}, {}
    for name in order:
        rows[name] = (name, *gbps[name], conns[name] / seconds, rtt[name])
        known = targets[name][1] is not None
        per[name] = per_unit(spent[name], conns[name]) if known else None
        per_rt[name] = per_unit(rt_spent[name], trips) if known else None
    return rows, per, per_rt


def round_trips(targets: dict[str, tuple[Ports, Counters | None]], rounds: int = RR_ROUNDS // 5,
                batches: int = 5 * SLICES
                ) -> tuple[dict[str, float], dict[str, list[float]], int]:
    """round_trip_us for several forwarders at once: one open connection each, batches of
    `rounds` round trips taken in turn; each one's median of its batch means, what its
    processes spent over all its batches, and the number of round trips each made."""
    msg = b"x" * 64
    socks = {}
    means: dict[str, list[float]] = {name: [] for name in targets}
    spent = {name: [0.0] * 5 for name in targets}
    try:
        for name, (ports, _) in targets.items():
            c = socks[name] = socket.create_connection(("127.0.0.1", ports[2]), 5)
            c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            c.settimeout(5)
        for _ in range(batches):
            for name, c in socks.items():
                cost = targets[name][1]
                with tuned(name):
                    c0 = cost() if cost else None
                    t = time.perf_counter()
                    for _ in range(rounds):
                        c.sendall(msg)
                        got = 0
                        while got < len(msg):
                            got += len(c.recv(len(msg) - got))
                    means[name].append((time.perf_counter() - t) / rounds * 1e6)
                if cost and c0:
                    for i, v in enumerate(cost()):
                        spent[name][i] += v - c0[i]
    finally:
        for c in socks.values():
            c.close()
    return ({name: statistics.median(m) for name, m in means.items()}, spent,
            rounds * batches)


def inbound(seconds: float, runs: int, repeat: int = 1,
            strace: int = 0, slice_us: float = 0
            ) -> tuple[list[list[Row]], dict[str, list[Cost]], dict[str, list[Cost]]]:
    """Every forwarder set up at once (idle ones cost nothing), then `repeat` rounds, each
    measuring every forwarder once, in an order rotated each round: a ratio of two rows of
    one round is paired (same load), which a ratio of two runs is not."""
    targets: dict[str, tuple[Ports, Counters | None]] = {}
    cleanups: list[Cleanup] = []
    try:
        ports, c = start_loopback()
        targets[LOOPBACK] = ports, None
        cleanups.append(c)
        ports, rec, c = start_burrow()
        cleanups.append(c)
        fwd = forwarder_counters()
        targets[BURROW] = ports, fwd
        ports, c = start_own_netns()
        targets[OWN] = ports, fwd
        cleanups.append(c)
        for name, started in ((ROOTLESSPORT_ROW, start_rootlessport(rec)),
                              (PASTA, start_pasta()),
                              (PASTA_SHARED, start_pasta(shared=True))):
            if started is not None:
                ports, c, cnt = started
                targets[name] = ports, cnt
                cleanups.append(c)
        if slice_us:  # burrow's forwarder again, with a short slice while this row runs
            targets[SLICED] = targets[BURROW]
            TUNED[SLICED] = fwd, int(slice_us * 1000)
        names = list(targets)
        if strace:
            print_syscalls(targets, strace)
        rounds: list[list[Row]] = []
        costs: dict[str, list[Cost]] = {n: [] for n in names}
        rt_costs: dict[str, list[Cost]] = {n: [] for n in names}
        for r in range(repeat):
            order = names[r % len(names):] + names[:r % len(names)]
            got, per, per_rt = measure_round(targets, order, seconds, runs)
            rounds.append([got[name] for name in names])
            for name in names:
                cost, cost_rt = per[name], per_rt[name]
                if cost is not None and cost_rt is not None:
                    costs[name].append(cost)
                    rt_costs[name].append(cost_rt)
            if repeat > 1:
                print_round(r + 1, rounds[-1], per)
        return rounds, costs, rt_costs
    finally:
        for c in reversed(cleanups):
            c()


def pair_ratios(row: list[Row]) -> dict[tuple[str, str], tuple[float, float, float]]:
    """(mine, reference) -> (throughput, conn/s, round trip) ratios within one round."""
    by = {r[0]: r for r in row}
    out = {}
    for mine, ref in PAIRS:
        m, o = by.get(mine), by.get(ref)
        if m and o and o[1] and o[4] and o[5]:
            out[(mine, ref)] = (m[1] / o[1], m[4] / o[4], m[5] / o[5])
    return out


def short(name: str) -> str:
    return {BURROW: "burrow", OWN: "burrow own netns*", PASTA: "pasta",
            PASTA_SHARED: "pasta (servers in its session)", SLICED: "burrow short slice",
            ROOTLESSPORT_ROW: "rootlessport"}.get(name, name)


def print_round(r: int, row: list[Row], cost: dict[str, Cost | None]) -> None:
    by = {x[0]: x for x in row}
    raw = "  ".join(f"{short(n)} {by[n][4]:.0f}/s {by[n][5]:.0f}us "
                    f"{c[3]:.0f}us-cpu/conn" for n in by if (c := cost.get(n)))
    ratios = "  ".join(f"{short(m)}/{short(o)} {t:.2f} {c:.2f} {rt:.2f}"
                       for (m, o), (t, c, rt) in pair_ratios(row).items())
    print(f"round {r} (load {os.getloadavg()[0]:.1f}): {ratios}\n    {raw}", flush=True)


def spread(xs: list[float]) -> str:
    """median [min-max], and the quartiles when there are enough rounds for them."""
    s = f"{statistics.median(xs):.2f} [{min(xs):.2f}-{max(xs):.2f}]"
    if len(xs) >= 4:
        q1, _, q3 = statistics.quantiles(xs, n=4)
        s += f" IQR {q1:.2f}-{q3:.2f}"
    return s


def print_paired(rounds: list[list[Row]]) -> None:
    per = [pair_ratios(r) for r in rounds]
    print(f"\npaired ratios over {len(rounds)} interleaved rounds: median [min-max] "
          "(throughput and conn/s: higher is better for the first; round trip: lower is).\n"
          "The last pair is pasta against pasta: how far a paired ratio moves here when "
          "nothing differs but the servers' sessions.")
    for mine, ref in PAIRS:
        got = [p[(mine, ref)] for p in per if (mine, ref) in p]
        if not got:
            continue
        t, c, rt = ([g[i] for g in got] for i in range(3))
        wins = sum(x > 1 for x in c), sum(x < 1 for x in rt)
        first = short(mine).split(" (")[0]
        print(f"{short(mine)} / {short(ref)}:\n  throughput {spread(t)}\n  conn/s     "
              f"{spread(c)}  ({first} ahead in {wins[0]} of {len(c)})\n  round trip "
              f"{spread(rt)}  ({first} ahead in {wins[1]} of {len(rt)})")
        print("  rounds: conn/s " + " ".join(f"{x:.2f}" for x in c) + " | round trip "
              + " ".join(f"{x:.2f}" for x in rt))


def print_costs(costs: dict[str, list[Cost]], unit: str) -> None:
    """The forwarders' own cost per connection or round trip, medians over the rounds."""
    print(f"\nforwarder's own cost per {unit} (median of rounds):\n  {'':24}{'user us':>8} "
          f"{'sys us':>7} {'on-CPU us':>9} {'ctx sw':>7} {'run-queue wait us':>18}")
    for name, got in costs.items():
        if got:
            u, s_, c, run, wait = (statistics.median(g[i] for g in got) for i in range(5))
            print(f"  {short(name):24}{u:8.1f} {s_:7.1f} {run:9.1f} {c:7.2f} {wait:18.1f}")


def median_rows(rounds: list[list[Row]]) -> list[Row]:
    """Each row's figures as medians over the rounds (its iperf3 runs all listed)."""
    out: list[Row] = []
    for i, first in enumerate(rounds[0]):
        rs = [r[i] for r in rounds]
        out.append((first[0], statistics.median(x[1] for x in rs), [v for x in rs for v in x[2]],
                    statistics.median(x[3] for x in rs), statistics.median(x[4] for x in rs),
                    statistics.median(x[5] for x in rs)))
    return out


def have_address(ip: str) -> bool:
    fam = socket.AF_INET6 if ":" in ip else socket.AF_INET
    with socket.socket(fam) as s:
        try:
            s.bind((ip, 0))
            return True
        except OSError:
            return False


CaRow = tuple[str, float, float, float, float]  # name Gbit/s conn/s rtt CPU-us-per-conn


def tree_cpu(pid: int) -> float:
    """user+sys seconds of pid and all its descendants (the forwarder and its dialer)."""
    total, todo = 0.0, [pid]
    while todo:
        p = todo.pop()
        try:
            f = Path(f"/proc/{p}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")
            for t in Path(f"/proc/{p}/task").iterdir():
                todo += [int(c) for c in (t / "children").read_text().split()]
        except (OSError, ValueError):
            continue
    return total


def conn_cpu(pid: int, port: int, seconds: float, host: str) -> tuple[float, float]:
    """conn/s, and the forwarder's (with its dialer's) CPU per connection in microseconds:
    under load the rate swings with what else runs, its CPU much less."""
    c0 = tree_cpu(pid)
    rate = conn_rate(port, seconds, host)
    return rate, (tree_cpu(pid) - c0) / max(1.0, rate * seconds) * 1e6


def client_address(seconds: float, rounds: int) -> tuple[list[CaRow], dict[str, object]]:
    """Keeping the client's address on vs off: medians over alternating rounds, each round
    one iperf3 run, one conn/s run and one round-trip run per mode."""
    host = CLIENT_ADDR
    ports = {mode: [free_port() for _ in range(3)] for mode in ("on", "off")}
    specs = []
    for mode, ps in ports.items():
        suffix = "/tcp" if mode == "on" else "/tcp,no-client-addr"
        specs += [x for p, c in zip(ps, (5201, 5301, 5401), strict=True)
                  for x in ("-p", f"{p}:{c}{suffix}")]
    burrow("sandbox", "create", "cabench", *specs)
    servers = [bg([str(BIN / "burrow"), "exec", "cabench", "--", "iperf3", "-s", "-p", "5201"]),
               bg([str(BIN / "burrow"), "exec", "cabench", "--", sys.executable, "-c",
                   ECHO_SERVER, "5301"]),
               bg([str(BIN / "burrow"), "exec", "cabench", "--", sys.executable, "-c",
                   RR_SERVER, "5401"])]
    try:
        for ps in ports.values():
            for port in ps:
                wait_backend(port, host=host)
        pid = int(json.loads(burrow("status", "--format", "json"))["forwarder"]["pid"])
        got: dict[str, list[tuple[float, float, float, float]]] = {"on": [], "off": []}
        for _ in range(rounds):
            for mode, (ip_, ep, rr) in ports.items():
                rate, cpu = conn_cpu(pid, ep, seconds, host)
                got[mode].append((iperf(ip_, seconds, 1, host)[0], rate,
                                  round_trip_us(rr, host=host), cpu))
        fwd = json.loads(burrow("status", "--format", "json"))["forwarder"]
    finally:
        for srv in servers:
            stop(srv)
        burrow("sandbox", "rm", "cabench")
    rows = [(f"client address {'kept' if m == 'on' else 'not kept (no-client-addr)'}",
             *(statistics.median(v[i] for v in got[m]) for i in range(4)))
            for m in ("on", "off")]
    return rows, dict(fwd.get("client_address") or {})  # type: ignore[return-value]


def print_client_address(seconds: float, rounds: int) -> None:
    print(f"\n## keeping the client's address: client {CLIENT_ADDR} -> burrow forwarder -> "
          f"sandbox ({rounds} alternating rounds, median)")
    if not have_address(CLIENT_ADDR):
        print(f"skipped: {CLIENT_ADDR} is not an address here (run as root: the bench then "
              "makes a netns of its own with it)")
        return
    rows, ca = client_address(seconds, rounds)
    print(f"{'mode':40} {'Gbit/s':>6} {'conn/s':>7} {'rtt us':>7} {'CPU us/conn':>11}")
    for name, gbps, rate, rtt, cpu in rows:
        print(f"{name:40} {gbps:6.2f} {rate:7.0f} {rtt:7.1f} {cpu:11.1f}")
    (_, g1, c1, r1, u1), (_, g0, c0, r0, u0) = rows
    print(f"cost of keeping it: throughput {1 - g1 / g0:+.1%}, conn/s {1 - c1 / c0:+.1%}, "
          f"round trip {r1 / r0 - 1:+.1%}, forwarder CPU per connection {u1 / u0 - 1:+.1%} "
          "(positive = slower)")
    print(f"forwarder: {ca.get('kept')} dials bound to the client's address ({ca.get('reused')} "
          f"on a socket kept bound to it), unavailable: {ca.get('unavailable') or 'none'}")


def control(req: dict[str, object]) -> dict[str, object]:
    """One request to the running forwarder's control socket."""
    path = json.loads(burrow("status", "--format", "json"))["forwarder"]["socket"]
    with socket.socket(socket.AF_UNIX) as s:
        s.settimeout(10)
        s.connect(path)
        s.sendall(json.dumps(req).encode() + b"\n")
        reply: dict[str, object] = json.loads(s.makefile().readline())
    if "error" in reply:
        raise SystemExit(f"forwarder: {reply['error']}")
    return reply


def outbound(seconds: float, runs: int) -> list[tuple[str, float, float]]:
    rows = []
    for conn in ("slirp4netns", "pasta"):
        if not shutil.which(conn):
            continue
        port = free_port()
        srv = bg(["iperf3", "-s", "-p", str(port)])
        wait_port(port)
        burrow("--connector", conn, "--allow-host-loopback", "sandbox", "create", "out")
        host = json.loads(burrow("status", "--format", "json"))["connector"]["host_v4"]
        prefix = [str(BIN / "burrow"), "exec", "out", "--"]
        up = iperf(port, seconds, runs, host, prefix)[0]
        down = iperf(port, seconds, runs, host, prefix, reverse=True)[0]
        rows.append((conn, up, down))
        burrow("sandbox", "rm", "out")
        stop(srv)
    return rows


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def create_times(n: int) -> tuple[float, float]:
    cold, warm = [], []
    for i in range(n):
        burrow("down")
        cold.append(timed(lambda i=i: burrow("sandbox", "create", f"c{i}")))
        warm.append(timed(lambda i=i: burrow("sandbox", "create", f"w{i}")))
    burrow("down")
    return statistics.median(warm), statistics.median(cold)


def worker(args: argparse.Namespace) -> int:
    print(f"# burrow rootless bench ({args.runs}x{args.seconds:g}s iperf3, median; "
          f"{os.cpu_count()} CPUs, load {os.getloadavg()[0]:.1f})", flush=True)
    if args.only == "client-addr":
        print_client_address(args.seconds, args.rounds)
        burrow("down")
        return 0
    if args.repeat > 1:
        print(f"\n## inbound, {args.repeat} interleaved rounds: per round the paired ratios "
              "(throughput conn/s round-trip)\n   and each forwarder's conn/s, round trip and "
              "CPU per connection", flush=True)
    rounds, costs, rt_costs = inbound(args.seconds, args.runs, args.repeat, args.strace,
                                      args.slice_us)
    print("\n## inbound port forwarding: host 127.0.0.1 -> server in a sandbox"
          + (f" (medians of {args.repeat} rounds)" if args.repeat > 1 else ""))
    both = ("two loopback streams at once (-P 2), total", *two_streams(args.seconds, args.runs),
            0.0, 0.0)
    print_inbound(median_rows(rounds), both)
    print_costs(costs, "connection (conn/s slices)")
    print_costs(rt_costs, "round trip (round-trip batches)")
    print("  (burrow: the forwarder and its dialers; pasta: its one process, not its children "
          "(the servers);\n  user/sys: /proc ticks of 10 ms, on-CPU and wait: schedstat)")
    if args.repeat > 1:
        print_paired(rounds)
    if args.only == "inbound":
        burrow("down")
        return 0
    return report(args)


def print_inbound(rows: list[Row], both: Row) -> None:
    print(f"{'forwarder':46} {'Gbit/s':>6} {'runs':17} {'CPU':>4} {'Gb/s@2c':>7} "
          f"{'conn/s':>6} {'rtt us':>6}")
    for name, gbps, vals, busy, rate, rtt in [*rows, both]:
        print(f"{name:46} {gbps:6.2f} {' '.join(f'{v:.1f}' for v in vals):17} "
              f"{busy * 100:3.0f}% {gbps / busy if busy else 0:7.1f} "
              + (f"{rate:6.0f} {rtt:6.1f}" if rate else ""))
    by = {r[0].split(" (")[0]: r for r in rows}
    b = by.get("burrow forwarder")
    own = by.get("burrow forwarder, servers in its own netns*")
    if b:
        print()
        for mine, other in ((b, "podman rootlessport"), (b, "pasta -t"), (b, "host loopback"),
                            (own, "pasta -t")):
            o = by.get(other)
            if mine and o and o[1] and o[4] and mine[5]:
                label = "burrow" if mine is b else "burrow own netns*"
                print(f"{label} / {other:20} throughput {mine[1] / o[1]:.2f}x   conn/s "
                      f"{mine[4] / o[4]:.2f}x   round trip {mine[5] / o[5]:.2f}x (lower is "
                      "better)")
    print("* pasta forwards into its own namespace (no bridge hop), as in spec §3b; the "
          "'own netns' row is burrow's\n  forwarder in that same topology (servers on the "
          "user netns' loopback), the like-for-like pair.")
    print("CPU: share of all CPUs busy during the iperf3 runs (whole machine). Gb/s@2c: the "
          "throughput if all of it\nscaled to every CPU busy, a ceiling for that path here. A "
          "forwarder carries each byte over two\nloopback TCP connections; -P 2 is what this "
          "machine's loopback carries over two at once.")


def report(args: argparse.Namespace) -> int:
    out = outbound(args.seconds, args.runs)
    print("\n## outbound: sandbox -> host loopback iperf3 (bridge+veth MTU 65520)")
    print(f"{'connector':14} {'upload Gbit/s':>14} {'download (-R)':>14}")
    for name, up, down in out:
        print(f"{name:14} {up:14.2f} {down:14.2f}")
    print_client_address(args.seconds, args.rounds)
    warm, cold = create_times(args.create_runs)
    print("\n## sandbox create (CLI wall time, median of "
          f"{args.create_runs})\nwarm namespace: {warm * 1000:.0f} ms\n"
          f"cold (namespace + connector + sandbox): {cold * 1000:.0f} ms")
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--create-runs", type=int, default=3)
    ap.add_argument("--rounds", type=int, default=5, help="client-address on/off rounds")
    ap.add_argument("--only", choices=["client-addr", "inbound"], help="run only that part")
    ap.add_argument("--repeat", type=int, default=1, metavar="K",
                    help="inbound: K interleaved rounds of every forwarder, per-round paired "
                         "ratios and their median and spread (short: --repeat 5 --seconds 1 "
                         "--runs 1)")
    ap.add_argument("--slice-us", type=float, default=0, metavar="US",
                    help="inbound: one more row, burrow's forwarder with this EEVDF slice (x86_64) "
                         "(sched_setattr) while it is measured, paired with the default's")
    ap.add_argument("--strace", type=int, default=0, metavar="N",
                    help="inbound: first, each forwarder's system calls per connection by "
                         "name (strace -c -f over N sequential connections)")
    args = ap.parse_args()
    if os.geteuid() == 0:
        return as_test_user()
    return worker(args)


def as_test_user() -> int:
    """Re-run as the test user, inside a netns of our own standing in for the host."""
    sys.path.insert(0, str(REPO))
    from tests.nsutil import Netns
    from tests.rootless_user import RootlessUser

    with Netns() as ns:
        for cmd in (["ip", "link", "add", "bsrcb0", "type", "veth", "peer", "name", "bsrcb1"],
                    ["ip", "link", "set", "bsrcb1", "up"],
                    ["ip", "addr", "add", f"{CLIENT_ADDR}/24", "dev", "bsrcb0"],
                    ["ip", "addr", "add", f"{CLIENT_ADDR6}/64", "dev", "bsrcb0", "nodad"],
                    ["ip", "link", "set", "bsrcb0", "up"],
                    ["ip", "route", "add", "default", "via", "198.51.100.254"],
                    ["ip", "-6", "route", "add", "default", "via", "2001:db8:5::fe"]):
            ns.run(cmd)
        session = RootlessUser.ensure().session()
        enter = ["nsenter", "-t", str(ns.pid), "-n", "--"]
        try:
            return subprocess.call([*enter, *session.argv([sys.executable, __file__,
                                                          *sys.argv[1:]])], cwd="/")
        finally:
            subprocess.run([*enter, *session.argv([str(BIN / "burrow"), "down"])],
                           capture_output=True, timeout=60, cwd="/")
            session.close()


if __name__ == "__main__":
    sys.exit(main())

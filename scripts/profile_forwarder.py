#!/usr/bin/env python3
"""Where a forwarded connection's time goes: burrow's forwarder next to pasta -t.

For sequential connections (connect, read a short greeting, close) to an echo server behind
each forwarder, it reports the rate, the forwarder process's CPU per connection split into
user (for burrow: the Python interpreter) and system (the kernel: TCP handshakes, splice,
shutdown), and, with --strace, the system calls per connection by name (strace -c). The same
for round trips of a 64-byte message on one open connection (an echo server that answers at
once): the round trip, the forwarder's CPU and system calls per round trip. CPU per
connection is less sensitive to a loaded machine than the rate; the system call counts are
exact.

With --tree DIR (twice or more; each a checkout with its .venv, e.g. /work/main and last
stop's tree), each tree's burrow forwarder runs in a world of its own, all at once, and the
rounds measure them in turn, order alternating; then the medians, each tree's ratio to the
first and to pasta, and the per-round ratios: an A/B of the whole forwarder, end to end.

Run as root (it runs burrow as the test user from tests/rootless_user.py, as the benches do):
    .venv/bin/python scripts/profile_forwarder.py [--conns 2000] [--rounds 3] [--strace]
    .venv/bin/python scripts/profile_forwarder.py --tree /work/wt-cn-base --tree . --rounds 8
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))
from tests.rootless_user import VENV_BIN, RootlessUser, Session  # noqa: E402

ECHO = """
import socket,sys
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',int(sys.argv[1])))
s.listen(512)
while True:
    c,_=s.accept(); c.sendall(b'hello\\n'); c.close()
"""
RR = """
import socket,sys,threading
s=socket.socket(socket.AF_INET6); s.setsockopt(socket.SOL_SOCKET,socket.SO_REUSEADDR,1)
s.setsockopt(socket.IPPROTO_IPV6,socket.IPV6_V6ONLY,0); s.bind(('::',int(sys.argv[1])))
s.listen(512)
def one(c):
    c.setsockopt(socket.IPPROTO_TCP,socket.TCP_NODELAY,1)
    while (d:=c.recv(65536)): c.sendall(d)
while True:
    threading.Thread(target=one,args=(s.accept()[0],),daemon=True).start()
"""


def cpu(pid: int) -> tuple[int, int]:
    """(user, system) clock ticks of a process."""
    with open(f"/proc/{pid}/stat") as f:
        v = f.read().rsplit(")", 1)[1].split()
    return int(v[11]), int(v[12])


def conns(port: int, n: int) -> float:
    t = time.perf_counter()
    for _ in range(n):
        with socket.create_connection(("127.0.0.1", port), 2) as c:
            while c.recv(64):
                pass
    return n / (time.perf_counter() - t)


def round_trips(port: int, n: int, each: list[float] | None = None) -> float:
    """Mean microseconds per round trip of a 64-byte message, n of them on one connection;
    each: gets every single round trip's microseconds."""
    msg = b"x" * 64
    pc = time.perf_counter
    with socket.create_connection(("127.0.0.1", port), 2) as c:
        c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        t = last = pc()
        for _ in range(n):
            c.sendall(msg)
            got = 0
            while got < len(msg):
                got += len(c.recv(len(msg) - got))
            if each is not None:
                now = pc()
                each.append((now - last) * 1e6)
                last = now
        return (pc() - t) / n * 1e6


def on_cpu_ns(pid: int) -> int:
    """Nanoseconds pid's threads have run (schedstat: exact, where /proc/PID/stat counts
    10 ms ticks)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError):
            pass
    return total


def measure_rr(name: str, port: int, pid: int, n: int) -> tuple[float, float, float]:
    """(median round trip, its 10th percentile, the forwarder's CPU per round trip), in us."""
    round_trips(port, 200)
    c0, ns0 = cpu(pid), on_cpu_ns(pid)
    each: list[float] = []
    rtt = round_trips(port, n, each)
    c1, ns1 = cpu(pid), on_cpu_ns(pid)
    us = [(b - a) / os.sysconf("SC_CLK_TCK") / n * 1e6 for a, b in zip(c0, c1, strict=True)]
    each.sort()
    p50, p10, per = each[len(each) // 2], each[len(each) // 10], (ns1 - ns0) / n / 1e3
    print(f"{name:18} {rtt:7.1f} us per round trip (median {p50:5.1f}, p10 {p10:5.1f})   CPU "
          f"per round trip {per:5.1f} us: user {us[0]:5.1f} us, system {us[1]:5.1f} us   "
          f"(load {os.getloadavg()[0]:.1f})", flush=True)
    return p50, p10, per


def measure(name: str, port: int, pid: int, n: int) -> tuple[float, float]:
    """(connections/s, the forwarder's CPU per connection in us)."""
    conns(port, 100)  # warm: pools filled, code paths hot
    c0, ns0 = cpu(pid), on_cpu_ns(pid)
    rate = conns(port, n)
    c1, ns1 = cpu(pid), on_cpu_ns(pid)
    us = [(b - a) / os.sysconf("SC_CLK_TCK") / n * 1e6 for a, b in zip(c0, c1, strict=True)]
    per = (ns1 - ns0) / n / 1e3
    print(f"{name:18} {rate:7.0f} conn/s   CPU per connection {per:5.1f} us: user {us[0]:6.1f} "
          f"us, system {us[1]:6.1f} us   (load {os.getloadavg()[0]:.1f})", flush=True)
    return rate, per


def syscalls(name: str, port: int, pid: int, n: int = 500, rr: bool = False) -> None:
    out = tempfile.mktemp(prefix="bsrc-strace-")
    st = subprocess.Popen(["strace", "-c", "-f", "-o", out, "-p", str(pid)],
                          stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # attached
    if rr:
        round_trips(port, n)
    else:
        conns(port, n)
    time.sleep(0.3)
    st.terminate()
    st.wait()
    rows = []
    for line in Path(out).read_text().splitlines():
        p = line.split()
        if len(p) >= 5 and p[0][0].isdigit() and p[-1] != "total":
            try:
                rows.append((int(p[3]) / n, p[-1]))
            except ValueError:
                continue
    os.unlink(out)
    rows.sort(reverse=True)
    print(f"{name:18} {sum(c for c, _ in rows):5.1f} syscalls per "
          f"{'round trip' if rr else 'connection'}: "
          + ", ".join(f"{s} {c:.2f}" for c, s in rows if c >= 0.05), flush=True)


def py_spy(port: int, pid: int, seconds: float, rr: bool) -> None:
    """Sample the forwarder's Python stacks (py-spy, if installed) while clients run: the
    functions its time goes to, by self time (leaf frames; idle epoll waits not counted)."""
    exe = shutil.which("py-spy") or shutil.which("py-spy", path=str(Path(sys.executable).parent))
    if exe is None:
        print("py-spy is not installed: no stack samples")
        return
    out = tempfile.mktemp(prefix="bsrc-pyspy-")
    sp = subprocess.Popen([exe, "record", "-f", "raw", "-r", "500", "-d", str(int(seconds)), "-o",
                           out, "-p", str(pid)], stdout=subprocess.DEVNULL,
                          stderr=subprocess.PIPE, text=True)
    time.sleep(1.0)
    end = time.monotonic() + seconds - 1.5
    while time.monotonic() < end:
        round_trips(port, 500) if rr else conns(port, 100)
    _, err = sp.communicate()
    if not os.path.exists(out):
        print(f"py-spy failed: {err.strip()[-300:]}")
        return
    leaf: dict[str, int] = {}
    total = 0
    for line in Path(out).read_text().splitlines():
        stack, _, n = line.rpartition(" ")
        frame = stack.rsplit(";", 1)[-1]
        leaf[frame] = leaf.get(frame, 0) + int(n)
        total += int(n)
    os.unlink(out)
    print(f"py-spy, {'round trips' if rr else 'connections'}: {total} samples (busy only); "
          "self time by function:")
    for frame, n in sorted(leaf.items(), key=lambda kv: -kv[1])[:14]:
        print(f"  {n / total:6.1%}  {frame}")


def descendants(pid: int) -> list[int]:
    """pid and every process under it (burrow's forwarder: its dialer, behind nsenter)."""
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        for task in Path(f"/proc/{p}/task").glob("*/children"):
            todo += [int(c) for c in task.read_text().split()]
    return out


def perf_breakdown(name: str, port: int, procs: list[int], n: int) -> None:
    """Where the CPU of a connection goes, as shares: each system call's kernel time (its own
    work and the softirq work it runs, e.g. a connect's whole handshake on loopback), the entry
    and exit around them (incl. being scheduled out), and user space (for burrow: the Python
    interpreter). perf's cpu-clock samples with call graphs of procs; sampling costs the
    sampled processes CPU of its own, so the measure() rows, taken without perf, give the
    CPU per connection these shares split."""
    out = tempfile.mktemp(prefix="bsrc-perf-")
    rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "2500", "-g",
                            "-o", out, "-p", ",".join(map(str, procs))],
                           stderr=subprocess.DEVNULL)
    time.sleep(1.0)
    conns(port, n)
    rec.send_signal(2)
    rec.wait()
    rep = subprocess.run(["perf", "report", "-i", out, "--children", "--sort", "sym", "-q",
                          "-g", "none", "--percent-limit", "0.3"], capture_output=True,
                         text=True).stdout
    os.unlink(out)
    share: dict[str, float] = {}
    for line in rep.splitlines():
        p = line.split()
        if len(p) >= 4 and p[2] == "[k]":
            share[p[3]] = float(p[0].rstrip("%"))
    kernel = share.get("entry_SYSCALL_64_after_hwframe", 0.0)
    calls = sorted(((v, k[len("__x64_sys_"):]) for k, v in share.items()
                    if k.startswith("__x64_sys_")), reverse=True)
    inside = sum(v for v, _ in calls)
    print(f"{name:18} CPU shares (perf): user space {100 - kernel:4.1f}%, system calls "
          f"{inside:4.1f}% (" + ", ".join(f"{c} {v:.1f}" for v, c in calls if v >= 0.5)
          + f"), syscall entry/exit and scheduling {kernel - inside:4.1f}%", flush=True)


def pasta(s: Session, port: int) -> tuple[subprocess.Popen[str], int, Path]:
    d = Path(tempfile.mkdtemp(dir=s.runtime))
    os.chown(d, s.user.uid, s.user.gid)
    (d / "echo.py").write_text(ECHO)
    (d / "rr.py").write_text(RR)
    p = s.popen(["pasta", "--config-net", "-f", "-t", f"{port}:5301,{port + 1}:5401", "-u",
                 "none", "-T", "none", "-U", "none", "-P", str(d / "pid"), "--", "sh", "-c",
                 f"/usr/bin/python3 {d}/rr.py 5401 & exec /usr/bin/python3 {d}/echo.py 5301"],
                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 10
    while not (d / "pid").exists() and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1)
    return p, int((d / "pid").read_text()), d


def burrow_up(s: Session, tree: Path, port: int) -> tuple[int, list[subprocess.Popen[str]]]:
    """tree's burrow forwarder with the echo servers behind it: (forwarder pid, servers)."""
    burrow = str(tree / ".venv" / "bin" / "burrow")
    s.run([burrow, "sandbox", "create", "prof", "-p", f"127.0.0.1:{port}:5301", "-p",
           f"127.0.0.1:{port + 1}:5401"], check=True, timeout=60)
    servers = [s.popen([burrow, "exec", "prof", "--", "/usr/bin/python3", "-c", script, cport],
                       stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
               for script, cport in ((ECHO, "5301"), (RR, "5401"))]
    time.sleep(2)
    pid = int(json.loads(s.run([burrow, "status", "--format", "json"], check=True).out)
              ["forwarder"]["pid"])
    # Its title is set (setproctitle); its dialer's command line names the python it runs.
    cmds = []
    for p in descendants(pid):
        with open(f"/proc/{p}/cmdline", "rb") as f:
            cmds.append(f.read())
    if not any(str(tree / ".venv").encode() in c for c in cmds):
        raise SystemExit(f"the forwarder {pid} does not run {tree}'s code: {cmds!r}")
    return pid, servers


def trees_ab(args: argparse.Namespace, port: int,
             others: tuple[subprocess.Popen[str], int, Path] | None) -> None:
    """--tree: every tree's forwarder up at once, each in a world (session) of its own, and
    pasta; each round measures each in turn, order alternating. Placement on this machine's
    CPUs swings a round trip between ~45 and ~110 us for the same code, over seconds: short
    interleaved batches let every forwarder see the same swings, and the per-round ratios
    show how far they reach."""
    import statistics
    trees = [Path(t).resolve() for t in args.tree]
    sessions: list[Session] = []
    servers: list[subprocess.Popen[str]] = []
    kinds: list[tuple[str, int, int]] = []  # name, port, pid
    try:
        for i, tree in enumerate(trees):
            s = RootlessUser.ensure().session()
            sessions.append(s)
            pid, srv = burrow_up(s, tree, port + 4 + 2 * i)
            servers += srv
            kinds.append((str(tree), port + 4 + 2 * i, pid))
        if others:
            kinds.append(("pasta -t", port + 2, others[1]))
        got: dict[str, list[tuple[float, ...]]] = {k: [] for k, _, _ in kinds}
        for _, kp, _ in kinds:  # warm
            conns(kp, 100)
            round_trips(kp + 1, 500)
        for r in range(args.rounds):
            for name, kp, pid in (kinds if r % 2 == 0 else kinds[::-1]):
                got[name].append((*measure(name[-18:], kp, pid, args.conns),
                                  *measure_rr(name[-18:], kp + 1, pid, args.round_trips)))
    finally:
        for p in servers:
            p.kill()
            p.wait()
        for s in sessions:
            s.close()
    cols = ("conn/s", "CPU per connection", "round trip median", "round trip p10", "CPU per round trip")
    med = {k: [statistics.median(x[i] for x in v) for i in range(len(cols))]
           for k, v in got.items()}
    base = str(trees[0])
    print("medians over the rounds:")
    for k, m in med.items():
        print(f"  {k[-24:]:24} " + ", ".join(f"{c} {v:.1f}" for c, v in zip(cols, m,
                                                                              strict=True)))
    for k in got:
        for ref in (base, "pasta -t"):
            if ref == k or ref not in got:
                continue
            print(f"{k[-18:]} / {ref[-18:]}, median of the per-round ratios (and their range):")
            for i, c in enumerate(cols):
                paired = sorted(b[i] / a[i] for a, b in zip(got[ref], got[k], strict=True))
                print(f"  {c:20} {statistics.median(paired):.3f}x  ({paired[0]:.2f}-"
                      f"{paired[-1]:.2f})")
    print(f"load {os.getloadavg()[0]:.1f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--conns", type=int, default=2000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--round-trips", type=int, default=5000, help="per round-trip row")
    ap.add_argument("--strace", action="store_true", help="also count system calls")
    ap.add_argument("--perf", action="store_true",
                    help="also break each one's CPU per connection down with perf")
    ap.add_argument("--py-spy", type=float, default=0, metavar="SECONDS",
                    help="also sample the forwarder's Python stacks for this long")
    ap.add_argument("--tree", action="append",
                    help="checkouts (with .venv) whose forwarders alternate: an A/B")
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it runs burrow as the test user")
    s = RootlessUser.ensure().session()
    try:
        port = 20000 + os.getpid() % 20000
        if args.tree:
            others = pasta(s, port + 2) if shutil.which("pasta") else None
            try:
                trees_ab(args, port, others)
            finally:
                if others:
                    others[0].terminate()
                    subprocess.run(["kill", str(others[1])], check=False)
            return 0
        s.burrow("sandbox", "create", "prof", "-p", f"127.0.0.1:{port}:5301", "-p",
                 f"127.0.0.1:{port + 1}:5401", check=True, timeout=60)
        for script, cport in ((ECHO, "5301"), (RR, "5401")):
            s.popen([str(VENV_BIN / "burrow"), "exec", "prof", "--", "/usr/bin/python3", "-c",
                     script, cport], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(2)
        fwd = json.loads(s.burrow("status", "--format", "json", check=True).out)["forwarder"]
        others = None
        if shutil.which("pasta"):
            others = pasta(s, port + 2)
        for _ in range(args.rounds):  # alternating, so both see the same load
            measure("burrow forwarder", port, fwd["pid"], args.conns)
            if others:
                measure("pasta -t", port + 2, others[1], args.conns)
        for _ in range(args.rounds):
            measure_rr("burrow forwarder", port + 1, fwd["pid"], args.round_trips)
            if others:
                measure_rr("pasta -t", port + 3, others[1], args.round_trips)
        if args.strace:
            syscalls("burrow forwarder", port, fwd["pid"])
            if others:
                syscalls("pasta -t", port + 2, others[1])
            syscalls("burrow forwarder", port + 1, fwd["pid"], rr=True)
            if others:
                syscalls("pasta -t", port + 3, others[1], rr=True)
        if args.perf:
            # burrow: the forwarder and its dialer; pasta: itself (its children are the
            # servers in its namespace).
            perf_breakdown("burrow forwarder", port, descendants(fwd["pid"]), args.conns)
            if others:
                perf_breakdown("pasta -t", port + 2, [others[1]], args.conns)
        if args.py_spy:
            py_spy(port, fwd["pid"], args.py_spy, rr=False)
            py_spy(port + 1, fwd["pid"], args.py_spy, rr=True)
        if others:
            others[0].terminate()
            subprocess.run(["kill", str(others[1])], check=False)
    finally:
        s.close()
    print("burrow dials into a sandbox behind the bridge; pasta into its own namespace.")
    return 0


if __name__ == "__main__":
    sys.exit(main())

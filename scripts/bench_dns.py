#!/usr/bin/env python3
"""burrow-dns vs aardvark-dns 1.4, side by side, inside throwaway namespaces.

Setup (spec/aardvark.md §3.1, without touching the machine's network): a "server" netns with
veth 10.89.0.1/24 and a "client" netns with its peer 10.89.0.2/24 (= container ctr0, so the
queries come from a known container). The server netns gets its own /etc/resolv.conf (bind
mount inside its private mount namespace) naming a fake upstream on 127.0.0.1:53 that this
script starts there. Servers are pinned to CPU 0, dnsperf to CPU 1, rounds are interleaved.

Rows: dnsperf qps and average latency (10 clients, 100 outstanding) for local container
names and for forwarded names, and the server's CPU per forwarded query (the fake upstream is
one Python thread, so it may cap the forwarded qps before burrow-dns does: then CPU per query
is the row that compares two burrow-dns trees); p99 latency at the same fixed offered load for
every server (a `dnsperf -v` pass with -Q); start-to-first-answer (median); RSS with 1,000
containers.

`--baseline TREE` adds a third server: burrow-dns from another checkout (its netns/ with this
venv's packages), interleaved with the others, for old-vs-new ratios of a change;
`--no-aardvark` leaves aardvark-dns out (shorter runs while comparing two trees).

`--forwarder N` measures only the UDP forwarding engine (netns/dns/upstream.Forwarder) in
process, ours and --baseline's alternately, N queries each with 100 in flight to the fake
upstream in a throwaway netns: user and system CPU per query of the forwarder's process alone
(no dnsperf, no listener), much less noisy than the dnsperf rows on a busy machine.

    .venv/bin/python scripts/bench_dns.py [--rounds 2] [--seconds 8] [--quick]
        [--baseline TREE] [--no-aardvark] [--forwarder N]
"""

from __future__ import annotations

import argparse
import os
import re
import signal
import statistics
import sys
import sysconfig
import tempfile
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from netns import statefiles  # noqa: E402
from tests.nsutil import Netns, unique  # noqa: E402

AARDVARK = "/usr/lib/podman/aardvark-dns"
BURROW = str(REPO / ".venv" / "bin" / "burrow-dns")
PY = sys.executable
SERVER_IP = "10.89.0.1"
CLIENT_IP = "10.89.0.2"

UPSTREAM = r"""
import socket, sys
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1 << 22)
s.bind(("127.0.0.1", 53))
ANSWER = b"\xc0\x0c\x00\x01\x00\x01\x00\x00\x00\x3c\x00\x04\xc0\x00\x02\x01"
print("ready", flush=True)
while True:
    data, addr = s.recvfrom(4096)
    i = 12
    while i < len(data) and data[i]:
        i += data[i] + 1
    q = data[12:i + 5]
    s.sendto(data[:2] + b"\x81\x80\x00\x01\x00\x01\x00\x00\x00\x00" + q + ANSWER, addr)
"""

FIRST_ANSWER = r"""
import os, socket, subprocess, sys, time
argv = sys.argv[1:]
q = bytes.fromhex("abcd01000001000000000000046374723000000100 01".replace(" ", ""))
s = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
s.settimeout(0.001)
t0 = time.perf_counter()
p = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL)
while time.perf_counter() - t0 < 5:
    s.sendto(q, ("10.89.0.1", 53))
    try:
        s.recv(512)
        break
    except OSError:
        pass
print((time.perf_counter() - t0) * 1000)
p.wait()
"""


FORWARDER = r"""
import os, sys, time
sys.path.insert(0, sys.argv[1])
from netns.loop import Loop
from netns.dns.upstream import Forwarder
n, window = int(sys.argv[2]), int(sys.argv[3])
def wire(i):
    labels = (b"host%d" % i, b"example", b"test")
    name = b"".join(bytes([len(x)]) + x for x in labels) + b"\0"
    return b"\x12\x34\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00" + name + b"\x00\x01\x00\x01"
wires = [wire(i) for i in range(100)]
loop = Loop()
fwd = Forwarder(loop, 4.0)
st = {"sent": 0, "done": 0, "failed": 0}
def deliver(reply):
    st["done"] += 1
    st["failed"] += reply is None
    if st["sent"] < n:
        issue()
    elif st["done"] == n:
        loop.stop()
def issue():
    i = st["sent"]
    st["sent"] += 1
    fwd.forward(wires[i % 100], ("127.0.0.1",), deliver, False, "c%d" % (i % 8))
for _ in range(window):
    issue()
t0, c0 = time.monotonic(), os.times()
loop.run()
wall, c1 = time.monotonic() - t0, os.times()
print(n / wall, (c1.user - c0.user) / n * 1e6, (c1.system - c0.system) / n * 1e6, st["failed"])
"""


def forwarder_run(trees: dict[str, Path], n: int, rounds: int,
                  say: Callable[[str], None]) -> str:
    res: dict[str, list[tuple[float, ...]]] = {k: [] for k in trees}
    for rnd in range(rounds):
        for label in list(trees)[:: 1 if rnd % 2 else -1]:
            ns = Netns()
            try:
                up = ns.popen([PY, "-c", UPSTREAM.replace("1 << 22", "1 << 24")], stdout=-1)
                assert up.stdout is not None
                up.stdout.readline()
                out = ns.run([PY, "-c", FORWARDER, str(trees[label]), str(n), "100"],
                             timeout=300).stdout.split()
            finally:
                ns.close()
            qps, user, system, failed = (float(x) for x in out)
            res[label].append((qps, user, system, failed))
            say(f"round {rnd + 1} {label}: {qps:,.0f} q/s, user {user:.2f} + sys {system:.2f}"
                f" us/query, {failed:.0f} failed")
    rows = ["| forwarder, in process | " + " | ".join(trees) + " |",
            "|---|" + "---|" * len(trees)]
    for i, what in ((1, "user CPU us/query (median)"), (2, "system CPU us/query (median)")):
        rows.append(f"| {what} | " + " | ".join(
            f"{statistics.median(r[i] for r in res[k]):.2f}" for k in trees) + " |")
    rows.append("| total CPU us/query (median) | " + " | ".join(
        f"{statistics.median(r[1] + r[2] for r in res[k]):.2f}" for k in trees) + " |")
    return "\n".join(rows)


def write_config(path: Path, count: int) -> None:
    path.mkdir(parents=True, exist_ok=True)
    lines = [SERVER_IP]
    for i in range(count):
        ip = f"10.89.{(i + 2) // 256}.{(i + 2) % 256}"
        lines.append(f"{i:064x} {ip} fd89::{i + 2:x} ctr{i},alias{i}")
    (path / "adnet").write_text("\n".join(lines) + "\n")


class World:
    def __init__(self, work: Path) -> None:
        self.work = work
        self.srv = Netns()
        self.cli = Netns()
        veth = unique("dn")
        self.srv.run(["ip", "link", "add", veth, "type", "veth", "peer", "name", veth + "p"])
        self.srv.run(["ip", "link", "set", veth + "p", "netns", str(self.cli.pid)])
        self.srv.run(["ip", "addr", "add", f"{SERVER_IP}/16", "dev", veth])
        self.srv.run(["ip", "link", "set", veth, "up"])
        self.cli.run(["ip", "addr", "add", f"{CLIENT_IP}/16", "dev", veth + "p"])
        self.cli.run(["ip", "link", "set", veth + "p", "up"])
        resolv = work / "resolv.conf"
        resolv.write_text("nameserver 127.0.0.1\n")
        self.srv.run(["mount", "--bind", str(resolv), "/etc/resolv.conf"])
        self.upstream = self.srv.popen([PY, "-c", UPSTREAM], stdout=-1)
        assert self.upstream.stdout is not None
        self.upstream.stdout.readline()
        write_config(work / "cfg100", 100)
        write_config(work / "cfg1000", 1000)
        (work / "q_local.txt").write_text("".join(f"ctr{i} A\n" for i in range(100)))
        (work / "q_fwd.txt").write_text("".join(f"host{i}.example.test A\n" for i in range(100)))

    def close(self) -> None:
        self.srv.close()
        self.cli.close()


LAUNCHER = """#!{py} -S
import sys
sys.path[:0] = [{tree!r}, {site!r}]
from netns.dns.cli import main
sys.exit(main())
"""
BINARIES = {"burrow": BURROW, "aardvark": AARDVARK}


def baseline_launcher(tree: Path, work: Path) -> str:
    """burrow-dns of another checkout, as the venv's own entry script starts ours."""
    path = work / "burrow-dns-baseline"
    path.write_text(LAUNCHER.format(py=PY, tree=str(tree.resolve()),
                                    site=sysconfig.get_paths()["purelib"]))
    path.chmod(0o755)
    return str(path)


def argv_for(server: str, cfg: Path) -> list[str]:
    return [BINARIES[server], "--config", str(cfg), "-p", "53", "run"]


def alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def start(world: World, server: str, cfg: Path) -> int:
    pidf = cfg / "aardvark.pid"
    pidf.unlink(missing_ok=True)
    world.srv.run(["taskset", "-c", "0", *argv_for(server, cfg)], env={**os.environ})
    deadline = time.monotonic() + 5
    while not pidf.exists() and time.monotonic() < deadline:
        time.sleep(0.01)
    pid = int(pidf.read_text())
    time.sleep(0.3)  # aardvark 1.4 is "ready" before it binds
    return pid


def stop(pid: int, cfg: Path) -> None:
    try:
        os.kill(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    deadline = time.monotonic() + 5
    while alive(pid) and time.monotonic() < deadline:
        time.sleep(0.01)
    # A killed burrow-dns leaves its stats dotfile and reload socket; aardvark-dns 1.4 takes
    # every file but its pid file for a network and exits on the JSON, so the next aardvark
    # round on this dir would measure a dead server.
    for leftover in ("aardvark.pid", statefiles.DNS_STATS, statefiles.DNS_CONTROL):
        (cfg / leftover).unlink(missing_ok=True)


def cpu_ticks(pid: int) -> int:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])


def dnsperf(world: World, qfile: str, seconds: float, *extra: str) -> str:
    cmd = ["taskset", "-c", "1", "dnsperf", "-s", SERVER_IP, "-d", str(world.work / qfile),
           "-l", str(seconds), "-c", "10", "-q", "100", *extra]
    return world.cli.run(cmd, timeout=seconds + 30).stdout


def qps_run(world: World, pid: int, qfile: str, seconds: float) -> dict[str, float]:
    t0, c0 = time.monotonic(), cpu_ticks(pid)
    out = dnsperf(world, qfile, seconds)
    cpu = (cpu_ticks(pid) - c0) / os.sysconf("SC_CLK_TCK") / (time.monotonic() - t0)
    qps = float(re.search(r"Queries per second:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    avg = float(re.search(r"Average Latency \(s\):\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    lost = re.search(r"Queries lost:\s+(\d+)", out)
    codes = re.search(r"Response codes:\s+(.*)", out)
    if not codes or not codes.group(1).startswith("NOERROR") or "," in codes.group(1):
        raise RuntimeError(f"unexpected answers from the server under test:\n{out}")
    return {"qps": qps, "avg_ms": avg * 1000, "cpu": cpu * 100,
            "lost": float(lost.group(1)) if lost else 0.0}


PERCENTILES = (0.5, 0.9, 0.99, 0.999)


def latency_run(world: World, qfile: str, rate: int, seconds: float) -> dict[float, float]:
    """Latency percentiles (ms) at a fixed offered load, from every answer's own time
    (`dnsperf -v`)."""
    out = dnsperf(world, qfile, seconds, "-v", "-Q", str(rate))
    lat = sorted(float(m) for m in re.findall(r"^> \S+ .* ([\d.]+)$", out, re.M))
    if not lat:
        return {p: float("nan") for p in PERCENTILES}
    return {p: lat[min(len(lat) - 1, int(len(lat) * p))] * 1000 for p in PERCENTILES}


def p99_run(world: World, qfile: str, rate: int, seconds: float) -> float:
    return latency_run(world, qfile, rate, seconds)[0.99]


def first_answer(world: World, server: str, runs: int) -> float:
    cfg = world.work / "cfg100"
    times = []
    for _ in range(runs):
        out = world.srv.run([PY, "-c", FIRST_ANSWER, *argv_for(server, cfg)]).stdout
        times.append(float(out.split()[-1]))
        pid = int((cfg / "aardvark.pid").read_text())
        stop(pid, cfg)
        time.sleep(0.1)
    return statistics.median(times)


def rss_kb(world: World, server: str) -> int:
    cfg = world.work / "cfg1000"
    pid = start(world, server, cfg)
    dnsperf(world, "q_local.txt", 1)
    rss = int(re.search(r"VmRSS:\s+(\d+)", Path(f"/proc/{pid}/status").read_text()).group(1))  # type: ignore[union-attr]
    stop(pid, cfg)
    return rss


def run(rounds: int, seconds: float, p99_rate: int, starts: int, servers: list[str],
        baseline: Path | None = None,
        say: Callable[[str], None] = print) -> dict[str, dict[str, list[float]]]:
    res: dict[str, dict[str, list[float]]] = {s: {} for s in servers}

    def add(server: str, key: str, value: float) -> None:
        res[server].setdefault(key, []).append(value)

    with tempfile.TemporaryDirectory(prefix="dnbench") as tmp:
        world = World(Path(tmp))
        if baseline is not None:
            BINARIES["base"] = baseline_launcher(baseline, world.work)
        try:
            for rnd in range(rounds):
                order = servers[::-1] if rnd % 2 == 0 else servers
                for server in order:
                    cfg = world.work / "cfg100"
                    pid = start(world, server, cfg)
                    dnsperf(world, "q_local.txt", 1)  # warm-up (fills burrow's reply cache)
                    loc = qps_run(world, pid, "q_local.txt", seconds)
                    fwd = qps_run(world, pid, "q_fwd.txt", seconds)
                    p_loc = p99_run(world, "q_local.txt", p99_rate, min(seconds, 4))
                    p_fwd = p99_run(world, "q_fwd.txt", p99_rate // 4, min(seconds, 4))
                    stop(pid, cfg)
                    for k, v in loc.items():
                        add(server, "local_" + k, v)
                    for k, v in fwd.items():
                        add(server, "fwd_" + k, v)
                    add(server, "local_p99", p_loc)
                    add(server, "fwd_p99", p_fwd)
                    add(server, "fwd_cpu_us", fwd["cpu"] / 100 / fwd["qps"] * 1e6)
                    say(f"round {rnd + 1} {server}: local {loc['qps']:.0f} qps "
                        f"(cpu {loc['cpu']:.0f}%), fwd {fwd['qps']:.0f} qps "
                        f"(cpu {fwd['cpu']:.0f}%), p99 {p_loc:.2f}/{p_fwd:.2f} ms")
            for server in servers:
                add(server, "start_ms", first_answer(world, server, starts))
                add(server, "rss_kb", float(rss_kb(world, server)))
        finally:
            world.close()
    return res


def table(res: dict[str, dict[str, list[float]]], p99_rate: int) -> str:
    rows = [
        ("local names: qps (10 clients x 100 outstanding, mean)", "local_qps", "{:,.0f}", True),
        ("local names: avg latency ms", "local_avg_ms", "{:.3f}", False),
        (f"local names: p99 ms at {p99_rate:,} qps (median of rounds)", "local_p99", "{:.3f}", False),
        ("local names: server CPU %", "local_cpu", "{:.0f}", None),
        ("forwarded names: qps", "fwd_qps", "{:,.0f}", True),
        ("forwarded names: avg latency ms", "fwd_avg_ms", "{:.3f}", False),
        ("forwarded names: server CPU %", "fwd_cpu", "{:.0f}", None),
        ("forwarded names: server CPU µs per query", "fwd_cpu_us", "{:.1f}", False),
        (f"forwarded names: p99 ms at {p99_rate // 4:,} qps (median)", "fwd_p99", "{:.3f}", False),
        ("start to first answer ms (median)", "start_ms", "{:.1f}", False),
        ("RSS with 1,000 containers KiB", "rss_kb", "{:,.0f}", False),
    ]
    names = {"burrow": "burrow-dns", "base": "burrow-dns baseline",
             "aardvark": "aardvark-dns 1.4"}
    servers = [s for s in ("burrow", "base", "aardvark") if s in res]
    others = [s for s in servers if s != "burrow"]
    head = ["metric", *(names[s] for s in servers), *(f"burrow/{s}" for s in others)]
    out = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for label, key, fmt, _higher_better in rows:
        # p99 is the most noise-sensitive row (one disturbed round dominates a mean): median
        agg = statistics.median if key.endswith("p99") else statistics.mean
        v = {s: agg(res[s][key]) for s in servers}
        ratios = [f"{v['burrow'] / v[s]:.2f}x" if v[s] else "-" for s in others]
        out.append("| " + " | ".join([label, *(fmt.format(v[s]) for s in servers), *ratios])
                   + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0] if __doc__ else None)
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=8)
    ap.add_argument("--p99-rate", type=int, default=40000)
    ap.add_argument("--starts", type=int, default=7)
    ap.add_argument("--quick", action="store_true", help="1 round of 3 s (smoke run)")
    ap.add_argument("--baseline", type=Path, metavar="TREE",
                    help="also run burrow-dns from this checkout (old vs new)")
    ap.add_argument("--no-aardvark", action="store_true", help="leave aardvark-dns out")
    ap.add_argument("--forwarder", type=int, metavar="N",
                    help="only the in-process forwarder A/B, N queries per run")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_dns: needs root (throwaway namespaces)", file=sys.stderr)
        return 1
    if args.quick:
        args.rounds, args.seconds, args.starts = 1, 3, 3
    servers = ["burrow"] + (["base"] if args.baseline else []) + \
        ([] if args.no_aardvark else ["aardvark"])
    if args.baseline and not (args.baseline / "netns" / "dns" / "cli.py").is_file():
        print(f"bench_dns: {args.baseline} is no burrow checkout", file=sys.stderr)
        return 1
    if args.forwarder:
        trees = {"burrow": REPO, **({"base": args.baseline} if args.baseline else {})}
        print(forwarder_run(trees, args.forwarder, args.rounds,
                            say=lambda s: print(s, file=sys.stderr)))
        return 0
    res = run(args.rounds, args.seconds, args.p99_rate, args.starts, servers, args.baseline,
              say=lambda s: print(s, file=sys.stderr))
    print(table(res, args.p99_rate))
    return 0


if __name__ == "__main__":
    sys.exit(main())

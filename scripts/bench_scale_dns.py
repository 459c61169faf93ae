"""DNS as containers pile up (issue 15): burrow (engine + burrow-dns) vs netavark 1.4 + aardvark-dns 1.4.

1. Time from a setup's return to the new container's name resolving: N containers (fresh
   netns each, bench_scale.py's dual-stack + DNS + one port shape) are set up one after another;
   right after each setup returns, the container asks its gateway for its own name in a tight
   loop (1 ms receive timeout) until the answer carries its address. Every other container
   first lets one packet go to the gateway (its ARP exchange, flooded to every bridge port),
   and its clock starts after that: the DNS server's part alone. Printed for both: medians of
   the first 10 (N ~ 1) and the last 10 (N ~ 500), and the worst of each.
2. Queries/s and latency (p50/p90/p99/p99.9) with 5,000 names across 50 networks vs 50 names across the same 50
   networks (one each): both servers started directly on the same config (scripts/bench_dns.py's
   namespaces, dnsperf pinned to CPU 1, servers to CPU 0), the client being a container on all
   50 networks, so every name is visible to it; 100 distinct names in the query file.

Run through `scripts/bench scale` (part of scripts/bench_scale.py), or alone:
    sudo .venv/bin/python scripts/bench_scale_dns.py [--n 500] [--seconds 5]
An A/B of two burrow trees, resolve rows only, 2 rounds in alternating order:
    sudo .venv/bin/python scripts/bench_scale_dns.py --skip-qps --no-netavark --resolve-rounds 2 \
        --burrow-venv OLD/.venv --burrow-venv .venv
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import socket
import statistics
import struct
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from netns import statefiles  # noqa: E402
from scripts import bench_dns  # noqa: E402
from scripts.bench_engine import AARDVARK, NETAVARK, Tool  # noqa: E402
from scripts.bench_scale import options as scale_options  # noqa: E402
from tests.integration.test_dns_support import ns_socket  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

GATEWAY = "10.89.255.254"


# -- 1. setup return -> name resolves ------------------------------------------------------
def _options(i: int) -> dict[str, Any]:
    """The issue's second shape, as the table measures it: dual-stack + DNS + one port."""
    return scale_options(i, dual=True)


def _ip(i: int) -> str:
    return f"10.89.{i // 250}.{i % 250 + 2}"


def _query(name: str, qid: int) -> bytes:
    labels = b"".join(bytes([len(p)]) + p.encode() for p in name.split("."))
    return struct.pack("!6H", qid, 0x0100, 1, 0, 0, 0) + labels + b"\0" + struct.pack("!HH", 1, 1)


def _socket_in(ns: Netns) -> socket.socket:
    """A UDP socket of the container's netns: it exists before setup, so nothing is started
    after setup returns."""
    return ns_socket(ns, socket.AF_INET, socket.SOCK_DGRAM)


def _until_resolves(sock: socket.socket, name: str, ip: str, timeout: float = 10) -> float:
    """ms until `name` is answered with `ip`; the clock started by the caller (setup's return)."""
    want = socket.inet_aton(ip)
    sock.settimeout(0.001)
    deadline = time.perf_counter() + timeout
    qid = 1
    while time.perf_counter() < deadline:
        qid = qid % 65535 + 1
        try:
            sock.sendto(_query(name, qid), (GATEWAY, 53))
        except OSError:
            time.sleep(0.001)  # no route yet
            continue
        try:
            while True:
                reply = sock.recv(512)
                if reply[:2] == struct.pack("!H", qid):
                    break
        except OSError:
            continue
        if struct.unpack("!H", reply[6:8])[0] > 0 and reply.endswith(want):
            return 0.0
    return float("nan")


def _first_packet(ns: Netns) -> None:
    """Let the container's first packet to the gateway go (and its ARP exchange finish): one
    datagram to a closed port, then 20 ms."""
    with _socket_in(ns) as s:
        try:
            s.sendto(b"x", (GATEWAY, 9))
        except OSError:
            pass
    time.sleep(0.02)


def resolve_after_setup(tool: Tool, n: int) -> tuple[list[float], list[float]]:
    """ms from setup's return to the name resolving: for even containers as they come (the
    query is the container's first packet), for odd ones once a first packet has gone (the
    clock starts after it: what is left is the DNS server's part). At N = 500 the first
    packet's ARP request is flooded to all 500 bridge ports, which is the kernel's cost, not
    the DNS server's, and the same for both tools."""
    ctrs: list[tuple[Netns, dict[str, Any]]] = []
    cold: list[float] = []
    warm: list[float] = []
    try:
        for i in range(n):
            ctr, opts = Netns(), _options(i)
            ctrs.append((ctr, opts))
            sock = _socket_in(ctr)
            with sock:
                tool.call("setup", ctr, opts)
                if i % 2:
                    _first_packet(ctr)
                t0 = time.perf_counter()
                failed = _until_resolves(sock, f"c{i}", _ip(i))
                (warm if i % 2 else cold).append(
                    failed if failed != failed else (time.perf_counter() - t0) * 1000)
        for ctr, opts in reversed(ctrs):
            tool.call("teardown", ctr, opts)
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        pid_file = tool.config / "aardvark-dns" / "aardvark.pid"
        if pid_file.exists():  # a teardown that failed midway must not leave the server behind
            try:
                os.kill(int(pid_file.read_text()), signal.SIGTERM)
            except (ValueError, ProcessLookupError):
                pass
        tool.close()
    return cold, warm


def _burrow(venv: Path, label: str) -> Tool:
    bin_ = venv / "bin"
    argv = [str(bin_ / "burrow-netavark"), "--rootless=false", f"--aardvark-binary={bin_ / 'burrow-dns'}"]
    return Tool(label, argv, {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600",
                              "NETAVARK_FW": "nftables"})


def resolve_rows(n: int, venvs: list[Path] | None = None, netavark: bool = True,
                 rounds: int = 1, dump: Path | None = None) -> list[str]:
    """One row per tool and round; with several burrow trees (`venvs`, e.g. before and after a
    change) the rounds alternate their order, so load drift hits each alike."""
    tools: list[tuple[str, Any]] = []  # made one at a time: each holds a "host" netns
    if netavark:
        tools.append(("netavark 1.4 + aardvark-dns 1.4", lambda: Tool(
            "netavark 1.4 + aardvark-dns 1.4", [NETAVARK, "--rootless=false",
            f"--aardvark-binary={AARDVARK}"], {"NETAVARK_FW": "iptables"})))
    venvs = [v.resolve() for v in venvs or [VENV_BIN.parent]]
    for k, venv in enumerate(venvs):
        label = "burrow + burrow-dns (warm)" + (f" [{k}]" if len(venvs) > 1 else "")
        tools.append((label, lambda venv=venv, label=label: _burrow(venv, label)))
    rows = [f"== setup return -> name resolves, N = {n} containers on one network, dual-stack + "
            "DNS + 1 port (ms; median of the first 10 -> last 10, worst of each)",
            f"{'':34} {'the query is the first packet':>36}   {'after a first packet (DNS alone)':>36}"]
    rows += [f"  [{k}] = {v}" for k, v in enumerate(venvs) if len(venvs) > 1]
    raw: list[dict[str, Any]] = []
    for rnd in range(rounds):
        for label, make in tools if rnd % 2 == 0 else tools[::-1]:
            cells = []
            cold, warm = resolve_after_setup(make(), n)
            raw.append({"tool": label, "round": rnd, "cold": cold, "warm": warm})
            if dump is not None:  # every latency, in setup order (cold: even i, warm: odd i)
                dump.write_text(json.dumps(raw))
            for ms in (cold, warm):
                first, last = ms[:10], ms[-10:]
                cells.append(f"{statistics.median(first):6.2f} -> {statistics.median(last):6.2f}"
                             f" (worst {max(first):5.1f}/{max(last):5.1f})")
            rows.append(f"{label:34} {cells[0]:>36}   {cells[1]:>36}")
            print(rows[-1], f"(load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
    return rows


# -- 2. qps / p99 with 5,000 names across 50 networks -----------------------------------------
CLIENT_ID = "c" * 64


def write_networks(cfg: Path, nets: int, per: int) -> list[str]:
    """`nets` networks (listen 10.89.k.1), `per` names each, plus the client (10.89.0.2 on
    network 0) on every one of them. Returns the names the query file cycles through."""
    cfg.mkdir(parents=True, exist_ok=True)
    names = []
    for k in range(nets):
        lines = [f"10.89.{k}.1", f"{CLIENT_ID} 10.89.{k}.2  client"]
        for i in range(per):
            lines.append(f"{k:032x}{i:032x} 10.89.{k}.{i % 250 + 3}  n{k}x{i}")
            names.append(f"n{k}x{i}")
        (cfg / f"net{k}").write_text("\n".join(lines) + "\n")
    step = max(1, len(names) // 100)
    return names[::step][:100]


def _one_run(world: Any, server: str, cfg: Path, qfile: str, seconds: float,
             p99_rate: int) -> dict[str, float]:
    """One qps + p99 measurement; NaN (and why) if the server died."""
    # Both servers take turns on one config dir, and bench_dns.stop() SIGKILLs: burrow-dns's
    # stats dotfile stays behind, and aardvark-dns 1.4 reads every file but its pid file as a
    # network (src/config/mod.rs, 1.4), fails to parse the JSON and exits right after start.
    # That was the `nan` of the aardvark rows: every round after burrow-dns had run on a dir.
    for leftover in burrow_dns_files():
        (cfg / leftover).unlink(missing_ok=True)
    pid = bench_dns.start(world, server, cfg)
    try:
        bench_dns.dnsperf(world, qfile, 1)  # warm-up
        if not bench_dns.alive(pid):
            print(f"({server} exited after start; started again)", flush=True)
            pid = bench_dns.start(world, server, cfg)
            bench_dns.dnsperf(world, qfile, 1)
        run = bench_dns.qps_run(world, pid, qfile, seconds)
        # The server's own CPU per answer at full load: what load on the machine disturbs least.
        run["cpu_us"] = run["cpu"] / 100 / run["qps"] * 1e6 if run["qps"] else float("nan")
        lat = bench_dns.latency_run(world, qfile, p99_rate, min(seconds, 4))
        run.update({_pkey(p): v for p, v in lat.items()})
        print(f"  {server} {cfg.name}: {run['qps']:,.0f} qps, {run['cpu_us']:.1f} us CPU each; at {p99_rate:,} qps "
              + " ".join(f"{_pkey(p)} {v:.3f}" for p, v in lat.items())
              + f" ms (load {os.getloadavg()[0]:.1f})", file=sys.stderr, flush=True)
        return run
    except (OSError, RuntimeError, AttributeError) as exc:
        print(f"({server}: run failed: {exc!r})", flush=True)
        return {"qps": float("nan"), "cpu_us": float("nan"),
                **{_pkey(p): float("nan") for p in bench_dns.PERCENTILES}}
    finally:
        bench_dns.stop(pid, cfg)


def _pkey(p: float) -> str:
    return f"p{p * 100:g}"


def burrow_dns_files() -> tuple[str, ...]:
    """What a killed burrow-dns leaves in its config dir (none of it a network)."""
    return statefiles.DNS_STATS, statefiles.DNS_CONTROL


def qps_rows(seconds: float, p99_rate: int, rounds: int) -> list[str]:
    """Rounds interleave the configs and the servers, so load drift hits all four alike;
    printed are the medians over the rounds."""
    nets = 50
    runs: dict[tuple[str, int], list[dict[str, float]]] = {}
    with tempfile.TemporaryDirectory(prefix="bd2-scale-dns") as tmp:
        world = bench_dns.World(Path(tmp))
        try:
            veth = world.srv.run(["sh", "-c", "ip -o addr show to 10.89.0.1 | cut -d' ' -f2"]).stdout.strip()
            for k in range(1, nets):
                world.srv.run(["ip", "addr", "add", f"10.89.{k}.1/32", "dev", veth])
            for per in (1, 100):
                picked = write_networks(world.work / f"scale{per}", nets, per)
                (world.work / f"q_scale{per}.txt").write_text(
                    "".join(f"{n} A\n" for n in picked * (100 // len(picked) or 1)))
            for rnd in range(rounds):
                for per in (1, 100) if rnd % 2 == 0 else (100, 1):
                    for server in ("aardvark", "burrow") if rnd % 2 == 0 else ("burrow", "aardvark"):
                        cfg, qfile = world.work / f"scale{per}", f"q_scale{per}.txt"
                        runs.setdefault((server, per), []).append(
                            _one_run(world, server, cfg, qfile, seconds, p99_rate))
        finally:
            world.close()
    rows = [f"== DNS with 50 names vs 5,000 names across {nets} networks (client on all of them)",
            f"{'':34} {'50 names':>22}  {'5,000 names':>22}",
            f"{'':34} {'qps':>10} {'p99 ms':>11}  {'qps':>10} {'p99 ms':>11}"]
    pkeys = [_pkey(p) for p in bench_dns.PERCENTILES]
    res = {k: {m: statistics.median(r[m] for r in v) for m in ("qps", "cpu_us", *pkeys)}
           for k, v in runs.items()}
    servers = (("aardvark", "aardvark-dns 1.4"), ("burrow", "burrow-dns"))
    for server, label in servers:
        a, b = res[(server, 1)], res[(server, 100)]
        rows.append(f"{label:34} {a['qps']:10,.0f} {a['p99']:11.3f}  {b['qps']:10,.0f} {b['p99']:11.3f}")
    rows.append(f"(medians of {rounds} interleaved rounds; p99 at a fixed offered load of {p99_rate:,} qps)")
    rows.append(f"latency at {p99_rate:,} qps offered, ms (median of the rounds' own percentiles)")
    rows.append(f"{'':34} " + " ".join(f"{k:>8}" for k in pkeys) + "  CPU us/answer at full load")
    for per, what in ((1, "50 names"), (100, "5,000 names")):
        for server, label in servers:
            rows.append(f"{label + ', ' + what:34} "
                        + " ".join(f"{res[(server, per)][k]:8.3f}" for k in pkeys)
                        + f"  {res[(server, per)]['cpu_us']:8.1f}")
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--seconds", type=float, default=5)
    ap.add_argument("--p99-rate", type=int, default=20000)
    ap.add_argument("--rounds", type=int, default=3, help="qps/p99 rounds (interleaved)")
    ap.add_argument("--skip-resolve", action="store_true")
    ap.add_argument("--skip-qps", action="store_true")
    ap.add_argument("--burrow-venv", type=Path, action="append",
                    help="a burrow tree's venv (repeat for an A/B: before and after a change)")
    ap.add_argument("--no-netavark", action="store_true", help="resolve rows: burrow only")
    ap.add_argument("--dump", type=Path, help="resolve rows: write every latency there (JSON)")
    ap.add_argument("--resolve-rounds", type=int, default=1,
                    help="resolve rows: rounds, alternating the tools' order")
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        print("bench_scale_dns: needs root (throwaway namespaces)", file=sys.stderr)
        return 1
    if not args.skip_resolve:
        print(f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs", flush=True)
        rows = resolve_rows(args.n, args.burrow_venv, not args.no_netavark, args.resolve_rounds,
                            args.dump)
        print("\n".join(rows), flush=True)
    if not args.skip_qps:
        print("\n".join(qps_rows(args.seconds, args.p99_rate, args.rounds)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

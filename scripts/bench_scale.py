"""Issue 15's table: setup/teardown latency as containers pile up, burrow vs netavark 1.4.

Each tool gets its own throwaway "host" netns and config dir; N containers (fresh netns each,
one bridge network 10.89.0.0/16, one published tcp port each) are set up one after another,
then torn down in reverse order. Two shapes: IPv4 + one port, and dual-stack + DNS + one
port. Printed per tool: medians of the first 10 and the last 10 calls, and their ratio
(1.0 = flat); per shape, burrow's last-10 medians over netavark's. Tools run one after
another, so load drift can favour either. Then, in the same run:
- the kernel's floor: the same objects made by a minimal client, its growth in ms
  (scripts/bench_scale_floor.py);
- where a setup's (and a teardown's) time goes at N (scripts/bench_scale_profile.py);
- DNS: setup return -> name resolves, qps/p99 with 5,000 names (scripts/bench_scale_dns.py);
- rootless: sandbox create 1st vs 100th, the forwarder idle with 1,000 published ports
  (scripts/bench_scale_rootless.py).

Run: sudo .venv/bin/python scripts/bench_scale.py [--n 500] [--quick] [--burrow-venv DIR]
(`--burrow-venv` measures another checkout's burrow, e.g. the code before a change.) With
`--repeat R` each tool runs R times per shape, alternating, and the median of the runs' own
ratios is printed: a run's first 10 and last 10 share its load, so that median is steadier
than one run's. Each row also counts the frames the bridge gave the containers' ports per setup
(broadcast and multicast copies: every container's stack pays for each; bench_scale_frames.py
shows them by kind).
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_engine import AARDVARK, NETAVARK, Tool, config_parent  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

NET_ID = secrets.token_hex(32)


def options(i: int, dual: bool) -> dict[str, Any]:
    subnets = [{"subnet": "10.89.0.0/16", "gateway": "10.89.255.254"}]
    ips = [f"10.89.{i // 250}.{i % 250 + 2}"]
    if dual:
        subnets.append({"subnet": "fd89::/64", "gateway": "fd89::ffff"})
        ips.append(f"fd89::{i + 2:x}")
    return {
        "container_id": secrets.token_hex(32), "container_name": f"c{i}",
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 20000 + i,
                           "range": 1, "protocol": "tcp"}],
        "networks": {"scale": {"static_ips": ips, "aliases": [f"a{i}"], "interface_name": "eth0"}},
        "network_info": {"scale": {
            "name": "scale", "id": NET_ID, "driver": "bridge", "network_interface": "bwscale0",
            "subnets": subnets, "ipv6_enabled": dual, "internal": False, "dns_enabled": dual,
            "ipam_options": {"driver": "host-local"}}},
    }  # fmt: skip


@dataclass(frozen=True)
class Run:
    setup: list[float]
    teardown: list[float]  # in call order: the first one at N containers
    frames: int  # frames the bridge gave the containers' ports during the N setups


def frames_to_ports(host: Netns) -> int:
    """Frames sent to the containers so far: what the host ends of the veths transmitted
    (the bridge's copies of every broadcast and multicast, and the few unicasts)."""
    links = json.loads(host.run(["ip", "-s", "-j", "link", "show", "type", "veth"]).stdout or "[]")
    return sum(int(link.get("stats64", {}).get("tx", {}).get("packets", 0)) for link in links)


def cpu_busy(interval: float = 1.0) -> float:
    """The machine's busy share over `interval` (from /proc/stat: all but idle and iowait)."""
    def sample() -> tuple[int, int]:
        vals = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(vals), vals[3] + vals[4]

    t0, i0 = sample()
    time.sleep(interval)
    t1, i1 = sample()
    return 1 - (i1 - i0) / max(1, t1 - t0)


def wait_quiet(limit: float = 60.0) -> None:
    """Before a run: wait (at most `limit` s) until the kernel has finished the last run's
    namespaces (their cleanup runs in a workqueue for seconds after the holders die). Its CPU
    would otherwise slow this run's first 10 calls and flatter the last-10/first-10 ratio."""
    deadline = time.monotonic() + limit
    while cpu_busy() > 0.15 and time.monotonic() < deadline:
        pass


def run_tool(tool: Tool, n: int, dual: bool) -> Run:
    ctrs: list[tuple[Netns, dict[str, Any]]] = []
    setup, teardown = [], []
    wait_quiet()
    try:
        for i in range(n):
            ctr, opts = Netns(), options(i, dual)
            ctrs.append((ctr, opts))
            setup.append(tool.call("setup", ctr, opts))
        frames = frames_to_ports(tool.host)
        for ctr, opts in reversed(ctrs):
            teardown.append(tool.call("teardown", ctr, opts))
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        tool.close()
    return Run(setup, teardown, frames)


def medians(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs[:10]), statistics.median(xs[-10:])


def growth(xs: list[float]) -> float:
    first, last = medians(xs)
    return last / first


def row(name: str, run: Run) -> str:
    def cols(xs: list[float]) -> str:
        first, last = medians(xs)
        return f"{first:7.1f} → {last:7.1f} ms (×{last / first:4.2f})"
    # Teardown runs in reverse: its first 10 calls are at N containers, its last 10 near 1.
    return (f"{name:28} setup {cols(run.setup)}   teardown {cols(run.teardown[::-1])}"
            f"   frames to ports {run.frames / len(run.setup):.0f}/setup")


def shape(n: int, dual: bool, keys: list[str], tools: dict[str, Any], repeat: int) -> None:
    label = "dual-stack + DNS + 1 port" if dual else "IPv4 + 1 port"
    print(f"\n== {label}, N = {n}: medians of the first 10 → last 10 calls (teardown: at 10 → "
          f"at N containers)", flush=True)
    got: dict[str, list[Run]] = {key: [] for key in keys}
    for _ in range(repeat):  # tools alternate, so a drift in load hits each alike
        for key in keys:
            tool = tools[key](dual)
            got[key].append(run_tool(tool, n, dual))
            print(row(tool.name, got[key][-1]) + f"   load {os.getloadavg()[0]:.1f}", flush=True)
    if repeat > 1:  # each run's own first-10 and last-10 are measured alike, in one run
        for key, runs in got.items():
            s = sorted(growth(r.setup) for r in runs)
            t = sorted(growth(r.teardown[::-1]) for r in runs)
            print(f"{key:28} median of {repeat} runs' ratios: setup ×{statistics.median(s):.2f} "
                  f"({', '.join(f'{x:.2f}' for x in s)})   teardown ×{statistics.median(t):.2f} "
                  f"({', '.join(f'{x:.2f}' for x in t)})")
    ref = got.get("netavark")
    for key, runs in got.items():
        if key != "netavark" and ref is not None:
            mine = statistics.median(medians(r.setup)[1] for r in runs)
            theirs = statistics.median(medians(r.setup)[1] for r in ref)
            mine_t = statistics.median(medians(r.teardown[::-1])[1] for r in runs)
            theirs_t = statistics.median(medians(r.teardown[::-1])[1] for r in ref)
            print(f"{'':28} last 10 / netavark's last 10: setup {mine / theirs:.2f}"
                  f"   teardown {mine_t / theirs_t:.2f}")


def burrow_tool(venv: Path, driver: str, named: bool) -> Any:
    bin_ = venv / "bin"
    argv = [str(bin_ / "burrow-netavark"), "--rootless=false", f"--aardvark-binary={bin_ / 'burrow-dns'}"]
    env = {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600", "NETAVARK_FW": driver}
    name = f"burrow ({driver}, warm)" if not named else f"burrow {driver} {venv.parent.name}"
    return lambda dual: Tool(name, argv, env)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="a short smoke run of every part (CI)")
    ap.add_argument("--burrow-venv", type=Path, action="append",
                    help="the burrow to measure (default: this checkout's .venv); given twice or "
                         "more, each one's rows, alternating (an A/B in one run)")
    ap.add_argument("--only", action="append",
                    choices=["netavark", "nftables", "iptables", "floor", "profile", "dns",
                             "rootless"])
    ap.add_argument("--shape", choices=["v4", "dual"], action="append")
    ap.add_argument("--dns-seconds", type=float, default=5, help="dnsperf run length (DNS rows)")
    ap.add_argument("--repeat", type=int, default=1,
                    help="runs of each tool per shape (alternating); then the median of the "
                         "runs' own last-10/first-10 ratios")
    args = ap.parse_args()
    n = 30 if args.quick else args.n
    venvs = [v.resolve() for v in args.burrow_venv or [VENV_BIN.parent]]
    tools: dict[str, Any] = {
        "netavark": lambda dual: Tool("netavark 1.4 (iptables)", [NETAVARK, "--rootless=false",
                                      f"--aardvark-binary={AARDVARK}"],
                                      {"NETAVARK_FW": "iptables", "NETAVARK_DNS_PORT": "53"}),
    }  # fmt: skip
    for i, venv in enumerate(venvs):
        for driver in ("nftables", "iptables"):
            tools[driver if i == 0 else f"{driver}#{i}"] = burrow_tool(venv, driver, len(venvs) > 1)
    parts = args.only or ["netavark", "nftables", "floor", "profile", "dns", "rootless"]
    print(f"== scripts/bench scale: N = {n}; burrow from {', '.join(map(str, venvs))}; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; config dirs in "
          f"{config_parent() or 'the temp dir (no tmpfs found)'}")
    for dual in [s == "dual" for s in args.shape or ["v4", "dual"]]:
        keys = [k for k in tools if k.split("#")[0] in parts]
        if keys:
            shape(n, dual, keys, tools, max(1, args.repeat))
        if "floor" in parts:  # the kernel's own growth under these rows (bench_scale_floor.py)
            subprocess.run([sys.executable, str(REPO / "scripts/bench_scale_floor.py"),
                            "--n", str(n), "--shape", "dual" if dual else "v4", "--no-burrow",
                            "--variant", "floor"], check=True)
        if "profile" in parts:
            subprocess.run([sys.executable, str(REPO / "scripts/bench_scale_profile.py"),
                            "--n", str(n), *(["--dual"] if dual else [])], check=True)
    if "dns" in parts:  # burrow-dns vs aardvark-dns 1.4 (issue 15)
        # Two processes: aardvark-dns 1.4 was seen exiting right after its start in the qps
        # rows when the resolve rows had run first in the same process (cause not found).
        dns = [sys.executable, str(REPO / "scripts/bench_scale_dns.py"), "--n", str(n),
               "--seconds", str(1 if args.quick else args.dns_seconds)]
        for skip in ("--skip-qps", "--skip-resolve"):
            if subprocess.run([*dns, skip], check=False).returncode:
                print(f"DNS rows ({skip}) failed", flush=True)
    if "rootless" in parts:
        quick = ["--n", "3", "--ports", "50", "--idle", "1"] if args.quick else []
        subprocess.run([sys.executable, str(REPO / "scripts/bench_scale_rootless.py"), *quick],
                       check=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

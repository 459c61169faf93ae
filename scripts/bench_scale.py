"""Issue 15's table: setup/teardown latency as containers pile up, burrow vs netavark 1.4.

Each tool gets its own throwaway "host" netns and config dir; N containers (fresh netns each,
one bridge network 10.89.0.0/16, one published tcp port each) are set up one after another,
then torn down in reverse order. Two shapes: IPv4 + one port, and dual-stack + DNS + one
port. Printed per tool: medians of the first 10 and the last 10 calls, and their ratio
(1.0 = flat); per shape, burrow's last-10 medians over netavark's. Tools run one after
another, so load drift can favour either. Then, in the same run:
- where a setup's (and a teardown's) time goes at N (scripts/bench_scale_profile.py);
- DNS: setup return -> name resolves, qps/p99 with 5,000 names (scripts/bench_scale_dns.py);
- rootless: sandbox create 1st vs 100th, the forwarder idle with 1,000 published ports
  (scripts/bench_scale_rootless.py).

Run: sudo .venv/bin/python scripts/bench_scale.py [--n 500] [--quick] [--burrow-venv DIR]
(`--burrow-venv` measures another checkout's burrow, e.g. the code before a change.)
"""

from __future__ import annotations

import argparse
import os
import secrets
import statistics
import subprocess
import sys
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


def run_tool(tool: Tool, n: int, dual: bool) -> tuple[list[float], list[float]]:
    ctrs: list[tuple[Netns, dict[str, Any]]] = []
    setup, teardown = [], []
    try:
        for i in range(n):
            ctr, opts = Netns(), options(i, dual)
            ctrs.append((ctr, opts))
            setup.append(tool.call("setup", ctr, opts))
        for ctr, opts in reversed(ctrs):
            teardown.append(tool.call("teardown", ctr, opts))
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        tool.close()
    return setup, teardown


def medians(xs: list[float]) -> tuple[float, float]:
    return statistics.median(xs[:10]), statistics.median(xs[-10:])


def row(name: str, setup: list[float], teardown: list[float]) -> str:
    def cols(xs: list[float]) -> str:
        first, last = medians(xs)
        return f"{first:7.1f} → {last:7.1f} ms (×{last / first:4.2f})"
    # Teardown runs in reverse: its first 10 calls are at N containers, its last 10 near 1.
    return f"{name:28} setup {cols(setup)}   teardown {cols(teardown[::-1])}"


def shape(n: int, dual: bool, keys: list[str], tools: dict[str, Any]) -> None:
    label = "dual-stack + DNS + 1 port" if dual else "IPv4 + 1 port"
    print(f"\n== {label}, N = {n}: medians of the first 10 → last 10 calls (teardown: at 10 → "
          f"at N containers)", flush=True)
    got: dict[str, tuple[list[float], list[float]]] = {}
    for key in keys:
        tool = tools[key](dual)
        got[key] = run_tool(tool, n, dual)
        print(row(tool.name, *got[key]), flush=True)
    ref = got.get("netavark")
    for key, (s, t) in got.items():
        if key != "netavark" and ref is not None:
            print(f"{'':28} last 10 / netavark's last 10: setup {medians(s)[1] / medians(ref[0])[1]:.2f}"
                  f"   teardown {medians(t[::-1])[1] / medians(ref[1][::-1])[1]:.2f}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--quick", action="store_true", help="a short smoke run of every part (CI)")
    ap.add_argument("--burrow-venv", type=Path, default=VENV_BIN.parent)
    ap.add_argument("--only", action="append",
                    choices=["netavark", "nftables", "iptables", "profile", "dns", "rootless"])
    ap.add_argument("--shape", choices=["v4", "dual"], action="append")
    ap.add_argument("--dns-seconds", type=float, default=5, help="dnsperf run length (DNS rows)")
    args = ap.parse_args()
    n = 30 if args.quick else args.n
    bin_ = args.burrow_venv / "bin"
    burrow = [str(bin_ / "burrow-netavark"), "--rootless=false", f"--aardvark-binary={bin_ / 'burrow-dns'}"]
    env = {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600"}
    tools = {
        "netavark": lambda dual: Tool("netavark 1.4 (iptables)", [NETAVARK, "--rootless=false",
                                      f"--aardvark-binary={AARDVARK}"],
                                      {"NETAVARK_FW": "iptables", "NETAVARK_DNS_PORT": "53"}),
        "nftables": lambda dual: Tool("burrow (nftables, warm)", burrow, {**env, "NETAVARK_FW": "nftables"}),
        "iptables": lambda dual: Tool("burrow (iptables, warm)", burrow, {**env, "NETAVARK_FW": "iptables"}),
    }  # fmt: skip
    parts = args.only or ["netavark", "nftables", "profile", "dns", "rootless"]
    print(f"== scripts/bench scale: N = {n}; burrow from {args.burrow_venv}; "
          f"load {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs; config dirs in "
          f"{config_parent() or 'the temp dir (no tmpfs found)'}")
    for dual in [s == "dual" for s in args.shape or ["v4", "dual"]]:
        keys = [k for k in ("netavark", "nftables", "iptables") if k in parts]
        if keys:
            shape(n, dual, keys, tools)
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

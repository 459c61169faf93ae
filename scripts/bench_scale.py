"""Setup/teardown latency as containers pile up: burrow-netavark vs Debian's netavark 1.4.

Each tool gets its own throwaway "host" netns and config dir; N containers (fresh netns each,
one bridge network 10.89.0.0/16, one published tcp port each) are set up one after another,
then torn down in reverse order. Printed: medians of the first 10 and the last 10 calls, and
their ratio (1.0 = flat). Tools run one after another, so load drift can favour either.

Run: sudo .venv/bin/python scripts/bench_scale.py [--n 200] [--burrow-venv DIR]
(`--burrow-venv` measures another checkout's burrow, e.g. the code before a change.)
"""

from __future__ import annotations

import argparse
import secrets
import statistics
import sys
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts import bench_scale_dns  # noqa: E402
from scripts.bench_engine import AARDVARK, NETAVARK, Tool  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

NET_ID = secrets.token_hex(32)


def options(i: int) -> dict[str, Any]:
    return {
        "container_id": secrets.token_hex(32), "container_name": f"c{i}",
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 20000 + i,
                           "range": 1, "protocol": "tcp"}],
        "networks": {"scale": {"static_ips": [f"10.89.{i // 250}.{i % 250 + 2}"],
                               "interface_name": "eth0"}},
        "network_info": {"scale": {
            "name": "scale", "id": NET_ID, "driver": "bridge", "network_interface": "bwscale0",
            "subnets": [{"subnet": "10.89.0.0/16", "gateway": "10.89.255.254"}],
            "ipv6_enabled": False, "internal": False, "dns_enabled": False,
            "ipam_options": {"driver": "host-local"}}},
    }  # fmt: skip


def run_tool(tool: Tool, n: int) -> tuple[list[float], list[float]]:
    ctrs: list[tuple[Netns, dict[str, Any]]] = []
    setup, teardown = [], []
    try:
        for i in range(n):
            ctr, opts = Netns(), options(i)
            ctrs.append((ctr, opts))
            setup.append(tool.call("setup", ctr, opts))
        for ctr, opts in reversed(ctrs):
            teardown.append(tool.call("teardown", ctr, opts))
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        tool.close()
    return setup, teardown


def row(name: str, setup: list[float], teardown: list[float]) -> str:
    def cols(xs: list[float]) -> str:
        first, last = statistics.median(xs[:10]), statistics.median(xs[-10:])
        return f"{first:7.1f} → {last:7.1f} ms (×{last / first:4.2f})"
    # Teardown runs in reverse: its first 10 calls are at N containers, its last 10 near 1.
    return f"{name:28} setup {cols(setup)}   teardown {cols(teardown[::-1])}"


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=200)
    ap.add_argument("--burrow-venv", type=Path, default=VENV_BIN.parent)
    ap.add_argument("--only", choices=["netavark", "nftables", "iptables", "dns"], action="append")
    ap.add_argument("--dns-seconds", type=float, default=5, help="dnsperf run length (DNS rows)")
    args = ap.parse_args()
    bin_ = args.burrow_venv / "bin"
    burrow = [str(bin_ / "burrow-netavark"), "--rootless=false", f"--aardvark-binary={bin_ / 'burrow-dns'}"]
    env = {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600"}
    tools = {
        "netavark": lambda: Tool("netavark 1.4 (iptables)", [NETAVARK, "--rootless=false",
                                 f"--aardvark-binary={AARDVARK}"], {"NETAVARK_FW": "iptables"}),
        "nftables": lambda: Tool("burrow (nftables, warm)", burrow, {**env, "NETAVARK_FW": "nftables"}),
        "iptables": lambda: Tool("burrow (iptables, warm)", burrow, {**env, "NETAVARK_FW": "iptables"}),
    }  # fmt: skip
    print(f"== N = {args.n} containers, one network, one port each; medians of the first 10 → "
          f"last 10 (teardown: at 10 → at N containers); burrow from {args.burrow_venv}")
    for key in [k for k in args.only or list(tools) if k in tools]:
        tool = tools[key]()
        setup, teardown = run_tool(tool, args.n)
        print(row(tool.name, setup, teardown), flush=True)
    if not args.only or "dns" in args.only:  # burrow-dns vs aardvark-dns 1.4 (issue 15)
        bench_scale_dns.main(["--n", str(args.n), "--seconds", str(args.dns_seconds)])
    return 0


if __name__ == "__main__":
    sys.exit(main())

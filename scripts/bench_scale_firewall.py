"""The firewall's share of setup and teardown as containers pile up (issue 15), alone.

N containers (one port each, as `bench_scale.py`: one bridge network, IPv4 or dual-stack with
DNS on port 5353) are set up one after another through the firewall backend only (the
engine's `netns.firewall.select`, in-process as in the warm engine), then torn down in
reverse, inside a throwaway "host" netns. Printed: median ms per call, first 10 → last 10,
and per call the backend's own work: runner calls (libnftables batches or execs), the bytes
they carried, and for nftables the rules the commands name; growth in those is work
proportional to N.

Run: sudo .venv/bin/python scripts/bench_scale_firewall.py [--n 500] [--dual]
                                                        [--driver nftables|iptables]
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import sys
import tempfile
import time
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netns.firewall import select  # noqa: E402
from netns.firewall.runner import ExecResult, Runner  # noqa: E402
from netns.firewall.types import NetworkFw, PortFw  # noqa: E402
from netns.nsenter import entered  # noqa: E402
from netns.schema import PortMapping  # noqa: E402
from tests.nsutil import Netns  # noqa: E402

NET_ID = "5ca1e" + "0" * 59


class Counting:
    """The backend's runner, counting calls and bytes in and out."""

    def __init__(self, inner: Runner) -> None:
        self.inner = inner
        self.calls = self.bytes = 0

    def __call__(self, argv: Sequence[str], stdin: str) -> ExecResult:
        res = self.inner(argv, stdin)
        self.calls += 1
        self.bytes += len(stdin) + len(res.stdout)
        return res


def network(dual: bool) -> NetworkFw:
    subnets = [ip_network("10.89.0.0/16")] + ([ip_network("fd89::/64")] if dual else [])
    gws = [ip_address("10.89.255.254")] + ([ip_address("fd89::ffff")] if dual else [])
    return NetworkFw(name="scale", id=NET_ID, bridge="bwscale0", subnets=tuple(subnets),
                     gateways=tuple(gws), dns_port=5353 if dual else None)


def port(net: NetworkFw, i: int, dual: bool) -> PortFw:
    v6 = IPv6Address(f"fd89::{i + 2:x}") if dual else None
    return PortFw(f"{i:064x}", net, IPv4Address(f"10.89.{i // 250}.{i % 250 + 2}"), v6,
                  (PortMapping("", 80, 20000 + i, 1, "tcp"),))


def run(n: int, dual: bool, driver: str) -> list[str]:
    config = Path(tempfile.mkdtemp(prefix="sf-fwscale-"))
    host = Netns()
    fd = os.open(host.path, os.O_RDONLY | os.O_CLOEXEC)
    net = network(dual)
    times: dict[str, list[float]] = {"setup": [], "teardown": []}
    work: dict[str, list[tuple[int, int]]] = {"setup": [], "teardown": []}
    try:
        with entered(fd):
            fw = select(driver, config, {})
            inner = getattr(fw, "inner", fw)  # under firewalld's trusted-zone hook
            counting = Counting(inner.runner)
            inner.runner = counting
            ports = [port(net, i, dual) for i in range(n)]
            order = [("setup", i) for i in range(n)] + [("teardown", i) for i in reversed(range(n))]
            for what, i in order:
                first, last = i == 0, i == 0
                nets = [net] if (what == "setup" and first) or (what == "teardown" and last) else []
                counting.calls = counting.bytes = 0
                t0 = time.perf_counter()
                if what == "setup":
                    fw.setup(nets, [ports[i]], fresh=[net.bridge] if first else [])
                else:
                    fw.teardown(nets, [ports[i]])
                times[what].append((time.perf_counter() - t0) * 1000)
                work[what].append((counting.calls, counting.bytes))
    finally:
        os.close(fd)
        host.close()
        shutil.rmtree(config, ignore_errors=True)
    shape = "dual-stack + DNS" if dual else "IPv4"
    rows = [f"== firewall alone, {driver}, {shape}, one port per container, N = {n}; "
            f"first 10 → last 10 (teardown: at 10 → at {n} containers)"]
    for what in ("setup", "teardown"):
        xs = times[what] if what == "setup" else times[what][::-1]
        ws = work[what] if what == "setup" else work[what][::-1]
        lo, hi = statistics.median(xs[1:11]), statistics.median(xs[-10:])
        c_lo, c_hi = _mid(ws[1:11], 0), _mid(ws[-10:], 0)
        b_lo, b_hi = _mid(ws[1:11], 1), _mid(ws[-10:], 1)
        rows.append(f"{what:9} {lo:6.2f} → {hi:6.2f} ms (×{hi / lo:4.2f})   "
                    f"calls {c_lo} → {c_hi}   bytes {b_lo} → {b_hi}")
    return rows


def _mid(ws: list[tuple[int, int]], k: int) -> int:
    return int(statistics.median(w[k] for w in ws))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--dual", action="store_true", help="dual-stack + DNS + one port")
    ap.add_argument("--driver", default="nftables", choices=["nftables", "iptables"])
    args = ap.parse_args(argv)
    if os.geteuid() != 0:
        raise SystemExit("needs root (a throwaway netns and real rules)")
    print("\n".join(run(args.n, args.dual, args.driver)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

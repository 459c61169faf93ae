"""Where a setup's (and a teardown's) time goes as containers pile up: the engine in-process.

N containers are set up one after another on one bridge network (as `bench_scale.py`), then
torn down in reverse, by calling the engine's own entry point (`netavark_cli.run`) in this
process inside a throwaway "host" netns. cProfile runs for the first 10 and the last 10 of
each; every function's own time is put in a bucket by the file it lives in (built-ins such
as `open` or `send` go to the bucket of the function that called them):

    netlink   netns/netlink.py, netns/drivers/, pyroute2       (links, addresses, routes)
    firewall  netns/firewall/ (incl. libnftables, nfnetlink), iptables-restore execs
    dns       netns/dns/, netns/aardvark.py                     (config files, the server)
    state     netns/firewall/state.py, ipam, statefiles, json, file and lock syscalls
    other     everything else (planning, validation, logging, the interpreter)

Printed per bucket: ms per call, first 10 → last 10. The profiler's own overhead inflates
the totals a little; the split is what it is for. Then the median call's time on a CPU, in the
runqueue (other work had the CPUs) and blocked (locks, RCU grace periods, I/O): on a loaded
machine, on-CPU time is the part other processes change least.

Run: sudo .venv/bin/python scripts/bench_scale_profile.py [--n 500] [--dual] [--driver nftables]
"""

from __future__ import annotations

import argparse
import contextlib
import cProfile
import io
import json
import os
import pstats
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from netns import netavark_cli  # noqa: E402
from netns.nsenter import entered  # noqa: E402
from scripts.bench_engine import config_parent  # noqa: E402
from scripts.bench_scale import options  # noqa: E402  (the one container shape of the scale rows)
from tests.nsutil import VENV_BIN, Netns  # noqa: E402

BUCKETS = ("netlink", "firewall", "dns", "state", "other")


def bucket(filename: str) -> str:
    f = filename.replace(os.sep, "/")
    if "/netns/firewall/state.py" in f or "/netns/ipam" in f or "/netns/statefiles" in f \
            or "/netns/locks" in f or "/json/" in f:
        return "state"
    if "/netns/firewall/" in f or "subprocess" in f:
        return "firewall"
    if "/netns/netlink" in f or "/netns/drivers/" in f or "pyroute2" in f:
        return "netlink"
    if "/netns/dns/" in f or "/netns/aardvark" in f:
        return "dns"
    return "other"


def split(stats: pstats.Stats) -> dict[str, float]:
    """Own time per bucket (seconds); a built-in's time goes to its callers' buckets."""
    out = dict.fromkeys(BUCKETS, 0.0)
    raw: dict[Any, Any] = stats.stats  # type: ignore[attr-defined]
    for (filename, _line, _name), (_cc, _nc, tt, _ct, callers) in raw.items():
        if filename != "~" and not filename.startswith("<"):
            out[bucket(filename)] += tt
            continue
        total = sum(c[2] for c in callers.values()) or 1.0  # callers' own share of tt
        for (cf, _cl, _cn), c in callers.items():
            b = bucket(cf) if cf != "~" else "other"
            if b == "other" and cf != "~":
                b = "state" if _name_is_file_io(_name) else b
            out[b] += tt * c[2] / total
    return out


def _name_is_file_io(name: str) -> bool:
    return any(k in name for k in ("io.open", "posix.", "flock", "fsync", "method 'read'",
                                   "method 'write'"))


@contextlib.contextmanager
def host_netns() -> Iterator[Netns]:
    host = Netns()
    fd = os.open(host.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            yield host
    finally:
        os.close(fd)
        host.close()


def call(config: Path, driver: str, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
    argv = ["--rootless=false", f"--firewall-driver={driver}",
            f"--aardvark-binary={VENV_BIN / 'burrow-dns'}", "--config", str(config),
            command, ctr.path]
    env = {"NETAVARK_DNS_PORT": "53", "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"}
    out, err, code = netavark_cli.run(argv, json.dumps(opts).encode(), env)
    if code != 0:
        raise SystemExit(f"{command} failed ({code}): {out} {err}")


def sched() -> tuple[float, float]:
    """This thread's time on a CPU and waiting for one (ms, /proc/thread-self/schedstat); the
    on-CPU time includes the softirq work the kernel did on its back (flooded frames)."""
    with open("/proc/thread-self/schedstat") as f:
        run, wait, _ = f.read().split()
    return int(run) / 1e6, int(wait) / 1e6


def growing(first: pstats.Stats, last: pstats.Stats, top: int) -> list[str]:
    """The `top` functions whose own time per call grew most (ms per setup, first 10 → last
    10), built-ins included (a `send` or `recv` that grows is the kernel's answer growing)."""
    a: dict[Any, Any] = first.stats  # type: ignore[attr-defined]
    b: dict[Any, Any] = last.stats  # type: ignore[attr-defined]
    rows = []
    for key in set(a) | set(b):
        lo = a[key][2] * 100 if key in a else 0.0  # own seconds over 10 calls -> ms per call
        hi = b[key][2] * 100 if key in b else 0.0
        calls = (b[key][1] if key in b else 0) / 10
        rows.append((hi - lo, lo, hi, calls, key))
    rows.sort(key=lambda r: r[0], reverse=True)
    return [f"{'':9} {d:+6.2f} ms  {lo:6.2f} → {hi:6.2f}  {calls:5.1f} calls  "
            f"{Path(k[0]).name}:{k[1]} {k[2]}" for d, lo, hi, calls, k in rows[:top]]


def run(n: int, dual: bool, driver: str, top: int = 0) -> list[str]:
    config = Path(tempfile.mkdtemp(prefix="bfw-prof-", dir=config_parent()))
    prof = {k: cProfile.Profile() for k in ("s_first", "s_last", "t_first", "t_last")}
    times: dict[str, list[tuple[float, float, float]]] = {k: [] for k in prof}
    ctrs: list[tuple[Netns, dict[str, Any]]] = []

    def one(key: str | None, command: str, ctr: Netns, opts: dict[str, Any]) -> None:
        (cpu0, wait0), t0 = sched(), time.perf_counter()
        with _profiled(prof[key] if key else None):
            call(config, driver, command, ctr, opts)
        (cpu1, wait1), wall = sched(), (time.perf_counter() - t0) * 1000
        if key:
            times[key].append((cpu1 - cpu0, wait1 - wait0, wall - (cpu1 - cpu0) - (wait1 - wait0)))

    try:
        with host_netns():
            for i in range(n):
                ctr, opts = Netns(), options(i, dual)
                ctrs.append((ctr, opts))
                one("s_first" if i < 10 else "s_last" if i >= n - 10 else None, "setup", ctr, opts)
            for i, (ctr, opts) in reversed(list(enumerate(ctrs))):
                one("t_first" if i < 10 else "t_last" if i >= n - 10 else None, "teardown", ctr, opts)
            _stop_dns(config)
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        subprocess.run(["rm", "-rf", str(config)], check=False)
    rows = [f"\n== where the time goes, {driver}{', dual-stack + DNS' if dual else ', IPv4'}, "
            f"ms per call (cProfile, in-process), first 10 → last 10 of N = {n}"]
    for what, a, b in (("setup", "s_first", "s_last"), ("teardown", "t_first", "t_last")):
        lo, hi = (split(pstats.Stats(prof[k], stream=io.StringIO())) for k in (a, b))
        cells = [f"{k} {lo[k] * 100:5.1f} → {hi[k] * 100:5.1f}" for k in BUCKETS]
        total = f"total {sum(lo.values()) * 100:5.1f} → {sum(hi.values()) * 100:5.1f}"
        rows.append(f"{what:9} {total}   " + "   ".join(cells))
        # Medians of the calls (profiled): on a CPU, waiting for one, waiting for anything else.
        med = [[statistics.median(x[j] for x in times[k]) for j in range(3)] for k in (a, b)]
        rows.append(f"{'':9} on CPU {med[0][0]:5.1f} → {med[1][0]:5.1f}   runqueue "
                    f"{med[0][1]:5.1f} → {med[1][1]:5.1f}   blocked {med[0][2]:5.1f} → {med[1][2]:5.1f}")
        if top:
            rows += growing(pstats.Stats(prof[a]), pstats.Stats(prof[b]), top)
    return rows


@contextlib.contextmanager
def _profiled(p: cProfile.Profile | None) -> Iterator[None]:
    if p is None:
        yield
        return
    p.enable()
    try:
        yield
    finally:
        p.disable()


def _stop_dns(config: Path) -> None:
    """Teardown of the last container stops burrow-dns; a leftover one is killed by its pid."""
    for pid_file in config.rglob("*.pid"):
        with contextlib.suppress(OSError, ValueError):
            os.kill(int(pid_file.read_text().split()[0]), 15)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=500)
    ap.add_argument("--dual", action="store_true", help="dual-stack + DNS + one port")
    ap.add_argument("--driver", default="nftables", choices=["nftables", "iptables"])
    ap.add_argument("--top", type=int, default=0,
                    help="also list the functions whose own time grew most, this many")
    args = ap.parse_args(argv)
    print("\n".join(run(args.n, args.dual, args.driver, args.top)), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())

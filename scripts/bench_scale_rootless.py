#!/usr/bin/env python3
"""Rootless rows of issue 15, as the unprivileged test user, in one fresh burrow world:

- sandbox create time (CLI wall time) as sandboxes pile up: the 1st, the Nth, and the
  medians of the first 10 and the last 10 of N (default 100);
- the port forwarder idle with P published ports in total (default 1,000: 10 sandboxes
  publishing a 100-port range each): its CPU time over a 10 s window in which nothing
  connects, and its RSS.

Run as root (it re-runs itself as the test user from tests/rootless_user.py) or as any user:
    .venv/bin/python scripts/bench_scale_rootless.py [--n 100] [--ports 1000] [--idle 10]
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
BIN = Path(sys.executable).parent
PER_SANDBOX = 100  # ports per publishing sandbox (one range)
BASE_PORT = 31000


def burrow(*args: str) -> float:
    t = time.perf_counter()
    res = subprocess.run([str(BIN / "burrow"), *args], capture_output=True, text=True,
                         timeout=300)
    if res.returncode:
        raise SystemExit(f"burrow {' '.join(args)} failed ({res.returncode}): "
                         f"{res.stderr.strip() or res.stdout.strip()}")
    return (time.perf_counter() - t) * 1000


def forwarder_pid() -> int | None:
    """This world's forwarder, as the world records it (<runtime>/burrow/forwarder.json)."""
    try:
        data = json.loads(Path(os.environ["XDG_RUNTIME_DIR"], "burrow", "forwarder.json")
                          .read_text())
        return int(data["proc"]["pid"])
    except (KeyError, OSError, ValueError, TypeError):
        return None


def cpu_ms(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) * 1000 / os.sysconf("SC_CLK_TCK")


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def create_rows(n: int) -> list[str]:
    times = [burrow("sandbox", "create", f"s{i}") for i in range(n)]
    k = min(10, n)
    first, last = statistics.median(times[:k]), statistics.median(times[-k:])
    return [f"sandbox create, ms: 1st {times[0]:.0f}, {n}th {times[-1]:.0f}; median of the first "
            f"{k} {first:.0f} → last {k} {last:.0f} (×{last / first:.2f})"]


def forwarder_rows(ports: int, idle: float) -> list[str]:
    made = 0
    for i in range(0, ports, PER_SANDBOX):
        count = min(PER_SANDBOX, ports - i)
        lo = BASE_PORT + i
        burrow("sandbox", "create", f"p{i // PER_SANDBOX}", "-p",
               f"127.0.0.1:{lo}-{lo + count - 1}:{lo}-{lo + count - 1}")
        made += count
    pid = forwarder_pid()
    if pid is None:
        return ["forwarder: no `burrow forwarder` process found"]
    time.sleep(1)  # let the last publish settle
    c0 = cpu_ms(pid)
    time.sleep(idle)
    used = cpu_ms(pid) - c0
    return [f"forwarder idle with {made} published ports: CPU {used:.1f} ms over {idle:g} s "
            f"({used / idle / 10:.3f}% of a CPU), RSS {rss_kib(pid) / 1024:.1f} MiB"]


def worker(args: argparse.Namespace) -> int:
    print(f"\n== rootless (as uid {os.getuid()}; load {os.getloadavg()[0]:.1f})", flush=True)
    burrow("down")
    try:
        rows = create_rows(args.n)
        print("\n".join(rows), flush=True)
        print("\n".join(forwarder_rows(args.ports, args.idle)), flush=True)
    finally:
        subprocess.run([str(BIN / "burrow"), "down"], capture_output=True, timeout=300)
    return 0


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=100, help="sandboxes created one after another")
    ap.add_argument("--ports", type=int, default=1000, help="published ports in total")
    ap.add_argument("--idle", type=float, default=10.0, help="idle window, seconds")
    args = ap.parse_args()
    if os.geteuid() == 0:
        sys.path.insert(0, str(REPO))
        from tests.rootless_user import RootlessUser

        session = RootlessUser.ensure().session()
        try:
            return subprocess.call(session.argv([sys.executable, __file__, *sys.argv[1:]]),
                                   cwd="/")
        finally:
            session.close()
    return worker(args)


if __name__ == "__main__":
    sys.exit(main())

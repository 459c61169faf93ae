"""What one new container makes every other container on its bridge receive (issue 15).

The bridge copies each broadcast/multicast frame a container sends to every other port, so a
frame costs work in all N containers' stacks (softirq time, taken from whatever runs next).
This sets up a few containers on one bridge network (the shapes of bench_scale.py), opens a
packet socket on one of them, sets up one more container, and counts by kind the frames that
reach the first container's port in the seconds after (nothing else runs in these namespaces,
so they all come from the new container or the bridge).

Run: sudo .venv/bin/python scripts/bench_scale_frames.py [--dual] [--seconds 20] [--burrow-venv DIR]
(`--burrow-venv` runs another checkout's engine in a child, e.g. the code before a change.)
"""

from __future__ import annotations

import argparse
import collections
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from scripts.bench_engine import config_parent  # noqa: E402
from scripts.bench_scale import options  # noqa: E402
from tests.frames import Frame, collect, drain, sniffer  # noqa: E402
from tests.nsutil import VENV_BIN, Netns  # noqa: E402


def mac_of(ns: Netns, dev: str = "eth0") -> str:
    return str(json.loads(ns.run(["ip", "-j", "link", "show", dev]).stdout)[0]["address"])


def call(bin_: Path, host: Netns, config: Path, command: str, ctr: Netns, opts: dict[str, object]) -> None:
    """As bench_scale.py calls it: the client, which hands the call to the warm engine."""
    argv = [str(bin_ / "burrow-netavark"), "--rootless=false", "--firewall-driver=nftables",
            f"--aardvark-binary={bin_ / 'burrow-dns'}", "--config", str(config), command, ctr.path]
    env = ["env", "-i", "PATH=/usr/sbin:/usr/bin:/sbin:/bin", "BURROW_ENGINE_IDLE=60",
           "NETAVARK_DNS_PORT=53", "DBUS_SYSTEM_BUS_ADDRESS="]
    res = host.run([*env, *argv], input=json.dumps(opts), check=False)
    if res.returncode != 0:
        raise SystemExit(f"{command} failed: {res.stdout} {res.stderr}")


def report(what: str, frames: list[Frame], names: dict[str, str]) -> None:
    """Frames by sender ("new", "older", "bridge") and kind, with when they came."""
    by: dict[str, list[float]] = collections.defaultdict(list)
    for f in frames:
        by[f"{names.get(f.src, f.src)}: {f.kind}{f' [{f.detail}]' if f.detail else ''}"].append(f.at)
    print(f"{what}: {len(frames)} frames")
    for k, times in sorted(by.items(), key=lambda kv: -len(kv[1])):
        print(f"  {len(times):3}  {k:48} at {', '.join(f'{t:.1f}' for t in times[:8])} s")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--dual", action="store_true", help="dual-stack + DNS + one port")
    ap.add_argument("--seconds", type=float, default=20, help="how long to count after each call")
    ap.add_argument("--others", type=int, default=2, help="containers set up before the new one")
    ap.add_argument("--burrow-venv", type=Path, default=VENV_BIN.parent)
    ap.add_argument("--pre", action="append", default=[], metavar="PATH=VALUE",
                    help="a /proc/sys write in the new container's netns before its setup")
    args = ap.parse_args()
    bin_ = args.burrow_venv / "bin"
    host = Netns()
    config = Path(tempfile.mkdtemp(prefix="sc-frames-", dir=config_parent()))
    ctrs: list[tuple[Netns, dict[str, object]]] = []
    shape = f"{'dual' if args.dual else 'v4'}, {args.burrow_venv}"
    try:
        for i in range(args.others):
            ctr, opts = Netns(), options(i, args.dual)
            ctrs.append((ctr, opts))
            call(bin_, host, config, "setup", ctr, opts)
        time.sleep(2)
        sock = sniffer(ctrs[0][0])
        drain(sock)  # what came before the new container
        ctr, opts = Netns(), options(args.others, args.dual)
        ctrs.append((ctr, opts))
        for pre in args.pre:
            path, value = pre.split("=")
            ctr.run(["sh", "-c", f"echo {value} > /proc/sys/{path}"])
        t0 = time.monotonic()
        call(bin_, host, config, "setup", ctr, opts)
        macs = {mac_of(ctr): "new", mac_of(host, "bwscale0"): "bridge",
                **{mac_of(c): "older" for c, _ in ctrs[:-1]}}
        report(f"on another container's port within {args.seconds:.0f} s of a setup ({shape})",
               collect(sock, args.seconds, t0), macs)
        t0 = time.monotonic()
        call(bin_, host, config, "teardown", ctr, opts)
        ctrs.pop()
        ctr.close()
        report(f"... and within {args.seconds:.0f} s of its teardown",
               collect(sock, args.seconds, t0), macs)
        sock.close()
        for ctr, opts in reversed(ctrs):
            call(bin_, host, config, "teardown", ctr, opts)
    finally:
        for ctr, _ in ctrs:
            ctr.close()
        host.close()
        subprocess.run(["rm", "-rf", str(config)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

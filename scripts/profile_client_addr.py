#!/usr/bin/env python3
"""Keeping the client's address, per connection, in one process: kept vs not kept (issue 13).

scripts/profile_tcp_path.py's worker with a client that is not loopback: the worker runs in
a netns of its own (the host), with CLIENT_IP on its loopback; the sandbox is a second netns
with SANDBOX_IP on its loopback and a sequential echo server (connect, "hello", close) on 0.0.0.0. The
forwarder's TCP parts (netns.loop, rootless.ports.pool with the real dialer process,
rootless.ports.tcp) run in the worker; the port is published to the sandbox as burrow's own
sandboxes have it (clientaddr INSIDE), with the client's address kept ("on") or not ("off",
`no-client-addr`). Nothing of the machine's own network is touched.

Modes: rate (conn/s and the forwarder's CPU per connection, the dialer's too), strace (system
calls per connection, forwarder and dialer), cprofile (the forwarder's Python calls).

    flock /work/brief/bench.lock .venv/bin/python scripts/profile_client_addr.py \
        --conns 3000 --rounds 3 [--mode strace] [--tree /work/main --tree .]
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
from typing import Any

REPO = Path(__file__).resolve().parent.parent
CLIENT_IP, SANDBOX_IP, PORT = "10.98.0.1", "10.99.0.2", 5301
sys.path.insert(0, str(REPO / "scripts"))
import profile_tcp_path as ptp  # noqa: E402

ECHO = ptp.ECHO.replace("'127.0.0.1'", "'0.0.0.0'")
CLIENT = ptp.CLIENT.replace("'127.0.0.1'", f"'{CLIENT_IP}'")


def sh(*cmd: str) -> None:
    subprocess.run(cmd, check=True, capture_output=True)


def children_cpu(pid: int) -> float:
    """user+sys seconds of process pid (the dialer)."""
    f = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(f[11]) + int(f[12])) / os.sysconf("SC_CLK_TCK")


def worker(args: argparse.Namespace) -> None:
    sys.path.insert(0, str(Path(args.tree).resolve()))
    import socket
    from ipaddress import IPv4Address

    from netns.loop import Loop
    from netns.nsenter import unshare_net
    from rootless.ports import tcp as tcpmod
    from rootless.ports.budget import Guard
    from rootless.ports.manager import bind
    from rootless.ports.pool import DialerPool
    from rootless.ports.spec import PortSpec
    from rootless.ports.target import Listener, Target
    from tests.nsutil import Netns
    unshare_net()  # this process is the host now: a netns of its own
    sh("ip", "link", "set", "lo", "up")
    sh("ip", "addr", "add", f"{CLIENT_IP}/32", "dev", "lo")  # not 127/8: a real client
    with Netns() as ns:
        ns.run(["ip", "addr", "add", f"{SANDBOX_IP}/32", "dev", "lo"])
        srv = ns.popen([sys.executable, "-c", ECHO, str(PORT)], stdout=subprocess.PIPE)
        assert srv.stdout is not None and srv.stdout.readline().strip() == "up"
        parent, child = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        dialer = ptp.DialerProc(args, child)
        loop = Loop()
        guard = Guard(65536, lambda: 0)
        pool = DialerPool(loop, parent, guard.shed, loop.stop)
        proxy = tcpmod.TcpProxy(loop, pool, guard)
        spec = PortSpec.of(CLIENT_IP, 40000 + os.getpid() % 20000, PORT)
        if args.keep == "off":
            import dataclasses
            spec = dataclasses.replace(spec, keep_client=False)
        target = Target("prof", ns.path, IPv4Address(SANDBOX_IP), None, via=ns.path,
                        inside=True)
        lsock = bind(spec, spec.host_port)
        pool.open(ns.path)
        proxy.listen(Listener(lsock, spec, spec.host_port, PORT, target))
        cl = subprocess.Popen([sys.executable, "-c", CLIENT, str(spec.host_port),
                               str(args.conns)], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                              text=True)
        out: list[str] = []

        def on_client(ev: int) -> None:
            assert cl.stdout is not None
            line = cl.stdout.readline()
            if not line:
                loop.remove(cl.stdout.fileno())
                return
            out.append(line)
            loop.stop()

        assert cl.stdout is not None and cl.stdin is not None
        loop.add(cl.stdout.fileno(), on_client)
        loop.run()  # the warm-up
        assert out == ["warm\n"], out
        out.clear()
        tracers = []
        if args.mode == "strace":
            for who, pid in (("fwd", os.getpid()), ("dialer", dialer.p.pid)):
                path = f"/tmp/ca-strace-{who}-{os.getpid()}"
                tracers.append((who, path, subprocess.Popen(
                    ["strace", "-c", "-f", "-o", path, "-p", str(pid)],
                    stderr=subprocess.DEVNULL)))
            time.sleep(1.0)
        prof = None
        if args.mode == "cprofile":
            import cProfile
            prof = cProfile.Profile()
        c0, d0 = ptp.cpu(), children_cpu(dialer.p.pid)
        cl.stdin.write("go\n")
        cl.stdin.flush()
        if prof is not None:
            prof.enable()
        loop.run()
        if prof is not None:
            prof.disable()
        c1, d1 = ptp.cpu(), children_cpu(dialer.p.pid)
        for _, _, st in tracers:
            st.terminate()
            st.wait()
        res = json.loads(out[0])
        n = args.conns
        res.update(user_us=(c1[0] - c0[0]) / n * 1e6, sys_us=(c1[1] - c0[1]) / n * 1e6,
                   dialer_us=(d1 - d0) / n * 1e6, kept=pool.avail.kept,
                   shed={k: v for k, v in guard.shed.to_json().items() if v})
        if tracers:
            res["syscalls"] = {who: ptp.report_strace(path, n) for who, path, _ in tracers}
        if prof is not None:
            res["calls"] = ptp.report_profile(prof, n, args.top)
        print(json.dumps(res), flush=True)
        cl.wait()
        srv.kill()
        dialer.stop()


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--mode", choices=["rate", "strace", "cprofile"], default="rate")
    ap.add_argument("--conns", type=int, default=3000)
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--tree", action="append", help="repo trees to compare (default: this)")
    ap.add_argument("--top", type=int, default=25)
    ap.add_argument("--keep", choices=["on", "off"], help=argparse.SUPPRESS)
    ap.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    args = ap.parse_args()
    if os.geteuid() != 0:
        raise SystemExit("run as root: it makes namespaces")
    if args.worker:
        args.tree = args.tree[0]
        worker(args)
        return 0
    variants = [(t, k) for t in args.tree or [str(REPO)] for k in ("on", "off")]
    got: dict[tuple[str, str], list[dict[str, Any]]] = {v: [] for v in variants}
    print(f"# {args.mode}, {args.conns} sequential connections x {args.rounds} rounds, "
          f"load {os.getloadavg()[0]:.2f}", flush=True)
    for r in range(args.rounds):
        for t, k in (variants if r % 2 == 0 else variants[::-1]):
            res = subprocess.run([sys.executable, __file__, "--worker", "--mode", args.mode,
                                  "--conns", str(args.conns), "--tree", t, "--keep", k,
                                  "--top", str(args.top)],
                                 capture_output=True, text=True, timeout=600)
            if res.returncode:
                raise SystemExit(res.stderr[-3000:])
            d = json.loads(res.stdout.strip().splitlines()[-1])
            got[(t, k)].append(d)
            print(f"{t} keep={k:3} {d['rate']:6.0f} conn/s  fwd user {d['user_us']:5.1f} sys "
                  f"{d['sys_us']:5.1f} us  dialer {d['dialer_us']:5.1f} us  kept {d['kept']}"
                  f"  (load {os.getloadavg()[0]:.2f}) {d['shed'] or ''} {d['errors'] or ''}",
                  flush=True)
            for key in ("syscalls", "calls"):
                if key in d:
                    print(json.dumps(d[key], indent=1))
    for t in args.tree or [str(REPO)]:
        med = {k: statistics.median(d["rate"] for d in got[(t, k)]) for k in ("on", "off")}
        cpu = {k: statistics.median(d["user_us"] + d["sys_us"] + d["dialer_us"]
                                    for d in got[(t, k)]) for k in ("on", "off")}
        ratios = [a["rate"] / b["rate"] for a, b in zip(got[(t, "on")], got[(t, "off")],
                                                         strict=True)]
        print(f"median {t}: kept {med['on']:.0f} vs not kept {med['off']:.0f} conn/s: cost "
              f"{1 - med['on'] / med['off']:+.1%} (per-round ratios "
              f"{', '.join(f'{x:.3f}' for x in ratios)}); CPU per connection (forwarder + "
              f"dialer) {cpu['on']:.1f} vs {cpu['off']:.1f} us")
    return 0


if __name__ == "__main__":
    sys.exit(main())

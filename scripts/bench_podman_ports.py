#!/usr/bin/env python3
"""Rootless `podman run -p`: burrow-rootlessport vs Podman's own rootlessport, side by side.

One rootless Podman world (the harness user, tests/e2e/podman_env.RootlessWorld, `burrow
podman enable --user`, network `bdns` on burrow-netavark); the two forwarders differ only in
the `rootlessport` link of burrow's helper dir: present -> burrow-rootlessport, removed ->
Podman falls through to /usr/lib/podman/rootlessport. Rows:
- start-up added to `podman run --rm`: `-p 127.0.0.1:P:80` minus the same run without -p,
  rounds interleaved (no -p, drop-in, Go) so load drift cancels;
- helper exec -> ready byte, outside Podman (a "host" and a "container" netns as root, the
  same config on stdin): the helper's own start-up, without Podman's noise;
- through a running container (servers in its netns): iperf3 Gbit/s, connections/s (connect,
  read, close), round trip of a 64-byte echo on an open connection (scripts/bench_rootless.py's
  clients, so the rows compare with that bench's forwarder rows), alternating forwarders; and
  the CPU each part spends per GB (the forwarder, the iperf3 client, the iperf3 server).
  Sessions matter here: every process is in the root cgroup of the cpu controller, where the
  kernel's autogroups apply (one session, one CPU share), and the forwarder stays in the
  session of the `podman run` that started it. By default that is the bench's own session,
  the clients' (as last stop measured): on 2 cores the iperf3 client and the forwarder then
  split about one core, so Gbit/s follows their summed CPU per GB, and a woken forwarder runs
  at once after its client blocks. `--own-session` runs `podman run` under `setsid` (a user's
  terminal, clients elsewhere): each of client, forwarder and server has its own share, and on
  a loaded machine the forwarder waits its turn behind every other session at each wakeup.
Target (issue 13): drop-in >= 2x rootlessport's conn/s and >= 1.2x its throughput.

    sudo .venv/bin/python scripts/bench_podman.py --mode ports [--rounds N] [--part flow] [--own-session]
        [--baseline DIR]   (DIR: another checkout with its .venv, e.g. main before a change: its
                            drop-in joins the flows as a third kind, old vs new in one run)
"""

from __future__ import annotations

import json
import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from functools import partial
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

import bench_rootless as br  # noqa: E402

from tests.e2e.podman_env import IMAGE, RootlessWorld  # noqa: E402
from tests.nsutil import Netns  # noqa: E402

GO = "/usr/lib/podman/rootlessport"
DROPIN = REPO / ".venv" / "bin" / "burrow-rootlessport"
KINDS = ("burrow-rootlessport", "podman rootlessport")
BASE = "baseline drop-in"  # --baseline: another checkout's burrow-rootlessport, flows only


class Switch:
    """Which rootlessport Podman finds: burrow's link in the helper dir, or none (Podman's);
    with a baseline, the link may point at another checkout's drop-in instead."""

    def __init__(self, w: RootlessWorld, baseline: Path | None = None) -> None:
        self.link = w.data_home / "burrow" / "podman" / "rootlessport"
        if not self.link.is_symlink():
            raise SystemExit(f"{self.link} missing: `burrow podman enable --user` did not link it")
        self.targets = {KINDS[0]: os.readlink(self.link)}
        if baseline is not None:
            self.targets[BASE] = str(baseline / ".venv" / "bin" / "burrow-rootlessport")

    def use(self, kind: str) -> None:
        want = self.targets.get(kind)
        if self.link.is_symlink():
            if want is not None and os.readlink(self.link) == want:
                return
            self.link.unlink()
        if want is not None:
            self.link.symlink_to(want)


def startup(w: RootlessWorld, sw: Switch, rounds: int) -> dict[str, list[float]]:
    runs: dict[str, list[float]] = {"no -p": [], **{k: [] for k in KINDS}}
    order = list(runs)
    for r in range(rounds + 1):  # round 0 warms up
        for kind in order[r % 3:] + order[:r % 3]:  # each kind first in turn: no order bias
            sw.use(kind if kind != "no -p" else KINDS[0])
            args = ["run", "--rm", "--network", "bdns"]
            if kind != "no -p":  # a fresh port: the last run's helper may still be exiting
                args += ["-p", f"127.0.0.1:{br.free_port()}:80"]
            t = time.monotonic()
            w.podman(*args, IMAGE, "true", timeout=120)
            if r:
                runs[kind].append((time.monotonic() - t) * 1000)
    return runs


def exec_to_ready(rounds: int) -> dict[str, list[float]]:
    """Each helper as Podman starts it, timed from exec to the ready byte."""
    host, ctr = Netns(), Netns()
    tmp = Path(tempfile.mkdtemp(prefix="brlp-bench-", dir="/tmp"))
    out: dict[str, list[float]] = {k: [] for k in KINDS}
    try:
        for r in range(rounds + 1):
            for kind, exe in zip(KINDS, (str(DROPIN), GO), strict=True):
                exit_r, exit_w = os.pipe()
                ready_r, ready_w = os.pipe()
                cfg = {"Mappings": [{"host_ip": "127.0.0.1", "container_port": 80, "host_port": 18480,
                                     "range": 1, "protocol": "tcp"}],
                       "NetNSPath": ctr.path, "ExitFD": 3, "ReadyFD": 4, "TmpDir": str(tmp),
                       "ChildIP": "127.0.0.1", "ContainerID": "c" * 64, "RootlessCNI": True}
                t = time.monotonic()
                p = subprocess.Popen(host.argv([exe]), stdin=subprocess.PIPE, stdout=subprocess.DEVNULL,
                                     stderr=subprocess.DEVNULL, pass_fds=(3, 4), process_group=0,
                                     preexec_fn=partial(br._fds_to_3_4, exit_r, ready_w))
                os.close(exit_r)
                os.close(ready_w)
                assert p.stdin is not None
                p.stdin.write(json.dumps(cfg).encode())
                p.stdin.close()
                ok = os.read(ready_r, 16)
                dt = (time.monotonic() - t) * 1000
                os.close(exit_w)
                os.close(ready_r)
                p.wait(10)
                if not ok:
                    raise SystemExit(f"{kind} never became ready")
                if r:
                    out[kind].append(dt)
    finally:
        host.close()
        ctr.close()
        subprocess.run(["rm", "-rf", str(tmp)], check=False)
    return out


def forwarder_pids(uid: int, kind: str) -> list[int]:
    """The user's forwarder processes of this kind (one container runs at a time): burrow's
    by its title, Podman's (parent and rootlessport-child) by their executable."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            if os.stat(f"/proc/{entry}").st_uid != uid:
                continue
            exe = os.readlink(f"/proc/{entry}/exe")
            with open(f"/proc/{entry}/cmdline", "rb") as f:
                title = f.read().split(b"\0")[0].split(b" ")[0]
        except OSError:
            continue
        if (kind == KINDS[1] and exe == GO) or (kind != KINDS[1] and title == b"burrow-rootlessport"):
            out.append(int(entry))
    return out


def cpu_ms(pids: list[int]) -> float:
    """User + system CPU of these processes (all their threads) so far, in ms."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += int(fields[11]) + int(fields[12])
        except OSError:
            pass
    return total * 1000 / tick


def children_cpu_ms() -> float:
    """User + system CPU of this process's waited-for children (the iperf3 clients), in ms."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return (ru.ru_utime + ru.ru_stime) * 1000



def start(w: RootlessWorld, name: str, ctr_ports: tuple[int, ...], own_session: bool) -> list[int]:
    """`podman run -d` a sleeping container publishing each of `ctr_ports` on a free
    127.0.0.1 port (in its own session if asked; see the module doc): those host ports."""
    ports = [br.free_port() for _ in ctr_ports]
    run = ["run", "-d", "--name", name, "--network", "bdns"]
    for host, ctr in zip(ports, ctr_ports, strict=True):
        run += ["-p", f"127.0.0.1:{host}:{ctr}"]
    run += [IMAGE, "sleep", "3600"]
    if own_session:
        w.run(["setsid", "-w", "podman", *run], check=True)
    else:
        w.podman(*run)
    return ports


def through(w: RootlessWorld, sw: Switch, kind: str, seconds: float, runs: int,
            streams: tuple[str, ...] = (), own_session: bool = False) -> dict[str, Any]:
    """own_session: `podman run` (and so the forwarder it starts, which stays in its session)
    runs in a session of its own, as when a user starts the container from one terminal and
    clients come from elsewhere. Otherwise the forwarder shares this bench's session, and so
    its scheduler autogroup, with the clients (see the module doc)."""
    sw.use(kind)
    ip, ep, rr = start(w, "brlpbench", (5201, 5301, 5401), own_session)
    servers = []
    tmp = Path(tempfile.mkdtemp(prefix="brlp-srv-", dir="/tmp"))
    try:
        pid = w.pid("brlpbench")
        ns = ["nsenter", "-t", str(pid), "-n", "--"]
        (tmp / "echo.py").write_text(br.ECHO_SERVER)
        (tmp / "rr.py").write_text(br.RR_SERVER)
        servers = [br.bg([*ns, "iperf3", "-s", "-p", "5201"]),
                   br.bg([*ns, sys.executable, str(tmp / "echo.py"), "5301"]),
                   br.bg([*ns, sys.executable, str(tmp / "rr.py"), "5401"])]
        for port in (ip, ep, rr):
            br.wait_backend(port)
        # CPU the forwarder itself spends: on a loaded machine the rates follow the CPU share
        # a process gets (Go's several threads get more), the cost per unit does not.
        # The iperf3 client and server are charged too: on 2 cores the three processes share
        # the CPUs, so a forwarder cheaper per GB only wins where they leave it room.
        pids = forwarder_pids(w.user.uid, kind)
        c0, s0, k0 = cpu_ms(pids), cpu_ms([servers[0].pid]), children_cpu_ms()
        gbps, vals, busy = br.iperf(ip, seconds, runs, extra=streams)
        c1, s1, k1 = cpu_ms(pids), cpu_ms([servers[0].pid]), children_cpu_ms()
        conn_s = br.conn_rate(ep, seconds)
        c2 = cpu_ms(pids)
        gbytes = sum(vals) * seconds / 8

        def per_gb(ms: float) -> float:
            return ms / gbytes if gbytes else float("nan")

        rtt = br.round_trip_us(rr)
        # Downloads too: the server's data reaches the client through the accepted socket.
        gbps_r, vals_r, _ = br.iperf(ip, seconds, runs, extra=streams, reverse=True)
        return {"gbps": gbps, "gbps_runs": vals, "cpu": busy, "conn_s": conn_s,
                "gbps_reverse": gbps_r, "gbps_reverse_runs": vals_r,
                "rtt_us": rtt, "pids": len(pids),
                "cpu_ms_per_gb": per_gb(c1 - c0), "client_ms_per_gb": per_gb(k1 - k0),
                "server_ms_per_gb": per_gb(s1 - s0),
                "cpu_ms_per_1000_conns": (c2 - c1) / (conn_s * seconds) * 1000 if conn_s else float("nan")}
    finally:
        for s in servers:
            br.stop(s)
        w.podman("rm", "-f", "-t", "0", "brlpbench", check=False)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def conns(w: RootlessWorld, sw: Switch, kind: str, seconds: float,
          own_session: bool = False) -> dict[str, float]:
    """`--part conn`: connections/s, the forwarder's CPU per connection and the round trip
    through one fresh container, without the iperf3 flows (short rounds, so many of them
    alternate in a few minutes: drift and load hit every kind alike)."""
    sw.use(kind)
    ep, rr = start(w, "brlpconn", (5301, 5401), own_session)
    servers = []
    tmp = Path(tempfile.mkdtemp(prefix="brlp-srv-", dir="/tmp"))
    try:
        ns = ["nsenter", "-t", str(w.pid("brlpconn")), "-n", "--"]
        (tmp / "echo.py").write_text(br.ECHO_SERVER)
        (tmp / "rr.py").write_text(br.RR_SERVER)
        servers = [br.bg([*ns, sys.executable, str(tmp / "echo.py"), "5301"]),
                   br.bg([*ns, sys.executable, str(tmp / "rr.py"), "5401"])]
        for port in (ep, rr):
            br.wait_backend(port)
        br.conn_rate(ep, 0.3)  # warm: the forwarder's imports, its socket pool
        pids = forwarder_pids(w.user.uid, kind)
        rec = None
        if PERF_DIR is not None:  # --perf: where the forwarder's CPU goes, per kind and round
            out = PERF_DIR / f"{kind.replace(' ', '-')}-{time.monotonic_ns()}.data"
            rec = subprocess.Popen(["perf", "record", "-q", "-e", "cpu-clock", "-F", "10000", "-g",
                                    "-o", str(out), "-p", ",".join(map(str, pids))],
                                   stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(0.5)
        c0 = cpu_ms(pids)
        rate = br.conn_rate(ep, seconds)
        c1 = cpu_ms(pids)
        if rec is not None:
            rec.send_signal(2)
            rec.wait(30)
        return {"conn_s": rate, "rtt_us": br.round_trip_us(rr),
                "cpu_ms_per_1000_conns": (c1 - c0) / (rate * seconds) * 1000 if rate else float("nan")}
    finally:
        for s in servers:
            br.stop(s)
        w.podman("rm", "-f", "-t", "0", "brlpconn", check=False)
        subprocess.run(["rm", "-rf", str(tmp)], check=False)


def precompile() -> None:
    """Byte-code for burrow's modules, as an installed burrow has it (pip compiles on install);
    with PYTHONDONTWRITEBYTECODE set, or a checkout the user cannot write, every start of the
    drop-in would compile them again and the start-up rows would measure the compiler."""
    env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
    subprocess.run([sys.executable, "-m", "compileall", "-q", "rootless", "netns"], cwd=REPO, env=env,
                   stdout=subprocess.DEVNULL, check=False)


PERF_DIR: Path | None = None  # --perf DIR: `--part conn` records each forwarder with perf there
PARTS = ("startup", "ready", "flow")  # the default; "conn" only when asked for


def bench(tar: Path, rounds: int, seconds: float = 3.0, runs: int = 3,
          parts: tuple[str, ...] = PARTS, streams: int = 1, own_session: bool = False,
          baseline: Path | None = None) -> dict[str, Any]:
    from tests.rootless_user import RootlessUser

    precompile()
    base = Path(tempfile.mkdtemp(prefix="brlp-bench-", dir="/tmp"))
    base.chmod(0o755)
    w = RootlessWorld(RootlessUser.ensure(), base / "w", tar)
    try:
        w.podman("network", "create", "--subnet", "10.89.61.0/24", "bdns")
        sw = Switch(w, baseline)
        res: dict[str, Any] = {"mode": "ports", "rounds": rounds, "streams": streams,
                               "own_session": own_session, "baseline": str(baseline) if baseline else None}
        if "startup" in parts:
            res["startup"] = startup(w, sw, rounds)
        if "ready" in parts:
            res["exec_ready"] = exec_to_ready(max(2 * rounds, 20))
        if "flow" in parts:
            extra = ("-P", str(streams)) if streams > 1 else ()
            kinds = (*KINDS, BASE) if baseline is not None else KINDS
            flow: dict[str, list[dict[str, Any]]] = {k: [] for k in kinds}
            for _ in range(2):  # alternate: drift hits both
                for kind in kinds:
                    flow[kind].append(through(w, sw, kind, seconds, runs, extra, own_session))
            res["flow"] = flow
        if "conn" in parts:
            kinds = (*KINDS, BASE) if baseline is not None else KINDS
            conn: dict[str, list[dict[str, float]]] = {k: [] for k in kinds}
            for r in range(rounds):
                for kind in kinds[r % len(kinds):] + kinds[:r % len(kinds)]:  # each first in turn
                    conn[kind].append(conns(w, sw, kind, seconds, own_session))
            res["conn"] = conn
        sw.use(KINDS[0])
        return res
    finally:
        w.close()
        subprocess.run(["rm", "-rf", str(base)], check=False)


def table(res: dict[str, Any]) -> str:
    def med(xs: list[float]) -> float:
        return statistics.median(xs) if xs else float("nan")

    lines = [f"\nrootless podman run -p: burrow-rootlessport vs Podman's rootlessport "
             f"({res['rounds']} interleaved rounds; medians)",
             f"{'':36}{KINDS[0]:>22}{KINDS[1]:>22}{'ratio':>8}"]

    def row(label: str, a: float, b: float, fmt: str, better_high: bool) -> None:
        ratio = (a / b if better_high else b / a) if a and b else float("nan")
        lines.append(f"{label:36}{format(a, fmt):>22}{format(b, fmt):>22}{ratio:>7.2f}x")

    if "startup" in res:
        st = res["startup"]
        base = med(st["no -p"])
        row("start-up added to podman run, ms", med(st[KINDS[0]]) - base, med(st[KINDS[1]]) - base,
            ".1f", False)
        paired = [a - b for a, b in zip(st[KINDS[0]], st[KINDS[1]], strict=True)]
        lines.append(f"{'  drop-in minus Go, same round, ms':36}{med(paired):>22.1f}"
                     f"{'(median of ' + str(len(paired)) + ' rounds)':>30}")
        lines.append(f"{'  podman run --rm without -p, ms':36}{base:>22.1f}")
    if "exec_ready" in res:
        er = res["exec_ready"]
        row("helper exec -> ready, ms", med(er[KINDS[0]]), med(er[KINDS[1]]), ".1f", False)
        row("  fastest of the runs, ms", min(er[KINDS[0]]), min(er[KINDS[1]]), ".1f", False)
    if "flow" in res:
        fl = res["flow"]

        def flow(kind: str, key: str) -> float:
            return med([r[key] for r in fl[kind]])

        row("connections/s", flow(KINDS[0], "conn_s"), flow(KINDS[1], "conn_s"), ".0f", True)
        lines.append("flows: the forwarder " + ("in a session of its own (a user's terminal), the clients in "
                     "the bench's" if res.get("own_session", False) else "in the clients' session (one autogroup)"))
        row(f"Gbit/s (iperf3, {res.get('streams', 1)} stream(s))", flow(KINDS[0], "gbps"),
            flow(KINDS[1], "gbps"), ".2f", True)
        if all("gbps_reverse" in r for k in KINDS for r in fl[k]):
            row("Gbit/s reverse (iperf3 -R, downloads)", flow(KINDS[0], "gbps_reverse"),
                flow(KINDS[1], "gbps_reverse"), ".2f", True)
        row("round trip, us", flow(KINDS[0], "rtt_us"), flow(KINDS[1], "rtt_us"), ".1f", False)
        row("CPU busy during iperf3 (share)", flow(KINDS[0], "cpu"), flow(KINDS[1], "cpu"), ".2f", False)
        row("forwarder CPU ms / 1000 conns", flow(KINDS[0], "cpu_ms_per_1000_conns"),
            flow(KINDS[1], "cpu_ms_per_1000_conns"), ".0f", False)
        for key, label in (("cpu_ms_per_gb", "forwarder"), ("client_ms_per_gb", "iperf3 client"),
                           ("server_ms_per_gb", "iperf3 server")):
            if all(key in r for k in KINDS for r in fl[k]):
                row(f"{label} CPU ms / GB", flow(KINDS[0], key), flow(KINDS[1], key), ".0f", False)
    if "conn" in res:
        lines += conn_table(res)
    if "flow" in res and BASE in res["flow"]:
        lines.append(f"\nthis tree vs the baseline drop-in ({res.get('baseline')}), same run:")
        for key, label, high in (("gbps", "Gbit/s", True), ("gbps_reverse", "Gbit/s reverse", True),
                                 ("conn_s", "connections/s", True), ("rtt_us", "round trip, us", False),
                                 ("cpu_ms_per_gb", "forwarder CPU ms / GB", False),
                                 ("client_ms_per_gb", "iperf3 client CPU ms / GB", False)):
            this, base = (med([r[key] for r in res["flow"][k]]) for k in (KINDS[0], BASE))
            ratio = (this / base if high else base / this) if this and base else float("nan")
            lines.append(f"{label:36}{this:>22.2f}{base:>22.2f}{ratio:>7.2f}x")
        this, base = (med([r["cpu_ms_per_1000_conns"] for r in res["flow"][k]]) for k in (KINDS[0], BASE))
        lines.append(f"{'forwarder CPU ms / 1000 conns':36}{this:>22.2f}{base:>22.2f}{base / this:>7.2f}x")
    lines.append("(ratio: how many times better burrow is; target conn/s >= 2x, Gbit/s >= 1.2x, "
                 "start-up added <= rootlessport's)")
    return "\n".join(lines)


def conn_table(res: dict[str, Any]) -> list[str]:
    """`--part conn`: medians per kind, and the median of the per-round ratios (each round runs
    every kind back to back, so a ratio within a round cancels the load of that moment)."""
    conn = res["conn"]
    kinds = list(conn)
    lines = [f"\n--part conn: {len(conn[KINDS[0]])} rounds, each kind once per round (medians; "
             f"paired: median of the per-round ratios)",
             f"{'':36}" + "".join(f"{k:>22}" for k in kinds)]
    for key, label in (("conn_s", "connections/s"), ("cpu_ms_per_1000_conns", "forwarder CPU ms / 1000 conns"),
                       ("rtt_us", "round trip, us")):
        lines.append(f"{label:36}" + "".join(f"{statistics.median(r[key] for r in conn[k]):>22.1f}"
                                              for k in kinds))
    for other in kinds[1:]:
        for key, label, high in (("conn_s", "connections/s", True), ("rtt_us", "round trip", False),
                                 ("cpu_ms_per_1000_conns", "CPU per connection", False)):
            ratios = [(a[key] / b[key] if high else b[key] / a[key]) if a[key] and b[key] else float("nan")
                      for a, b in zip(conn[KINDS[0]], conn[other], strict=True)]
            lines.append(f"{KINDS[0]} vs {other}, {label}: paired {statistics.median(ratios):.2f}x "
                         f"(rounds {' '.join(f'{x:.2f}' for x in ratios)})")
    return lines

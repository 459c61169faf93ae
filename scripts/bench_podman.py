#!/usr/bin/env python3
"""`podman run --rm IMG true` overhead over `--network none`: burrow vs netavark 1.4 vs CNI.

Variants per backend: bridge without DNS, bridge with DNS, bridge + DNS + one published port
(CNI has no DNS plugin here, so its "dns" row is a plain bridge). Every round runs every
variant of every backend back to back (interleaved), which cancels slow load drift.
Rootful runs in private net+mount namespaces (tests/e2e/podman_env.RootfulWorld: nothing of
the machine's network or Podman state is touched); rootless runs as the harness user
(tests/rootless_user.py) with private XDG dirs, one config home per backend.

`--mode ports` (scripts/bench_podman_ports.py): rootless `podman run -p` through
burrow-rootlessport vs Podman's own rootlessport: start-up added to `podman run`, the helper's
exec -> ready, connections/s, Gbit/s, round trip.

usage: sudo .venv/bin/python scripts/bench_podman.py [--rounds N] [--mode rootful|rootless|ports|both|all]
       [--part startup|ready|flow]... [--streams N] [--seconds S]   (the last three: --mode ports)
Target (issue 5): burrow's overhead <= 0.6 x netavark's. Issue 13: the drop-in >= 2x
rootlessport's connections/s and >= 1.2x its throughput.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path[:0] = [str(REPO), str(REPO / "scripts")]

from tests.e2e.podman_env import (  # noqa: E402
    BASE_CONF,
    IMAGE,
    RootfulWorld,
    RootlessWorld,
    build_rootfs_tar,
    ensure_host_fixes,
    environment_problem,
)

BACKENDS = ("burrow", "netavark", "cni")
VARIANTS = ("none", "nodns", "dns", "dns+1port")


def net_args(variant: str, port: int) -> list[str]:
    return {"none": ["--network", "none"], "nodns": ["--network", "bnodns"],
            "dns": ["--network", "bdns"],
            "dns+1port": ["--network", "bdns", "-p", f"127.0.0.1:{port}:80"]}[variant]


def make_networks(podman: Any) -> None:
    podman("network", "create", "--disable-dns", "--subnet", "10.89.60.0/24", "bnodns")
    podman("network", "create", "--subnet", "10.89.61.0/24", "bdns")


def rootful_runners(base: Path, tar: Path) -> tuple[dict[str, Any], list[Any]]:
    worlds, runners = [], {}
    for b in BACKENDS:
        w = RootfulWorld(base / b, tar, backend=b)
        worlds.append(w)
        make_networks(w.podman)
        runners[b] = (lambda w: lambda args: w.ns.run(w.podman_argv("run", "--rm", *args, IMAGE, "true"),  # noqa: B023 - w is bound by the outer lambda
                                                       check=False, env=w.env(), timeout=120))(w)  # noqa: B023
    return runners, worlds


def rootless_runners(base: Path, tar: Path) -> tuple[dict[str, Any], list[Any]]:
    from tests.rootless_user import RootlessUser

    user = RootlessUser.ensure()
    worlds, runners = [], {}
    for b in BACKENDS:
        d = Path(tempfile.mkdtemp(prefix=f"{b}-", dir=base))  # removed with base
        d.chmod(0o755)
        w = RootlessWorld(user, d / "w", tar)
        conf = w.config_home / "containers"
        if b != "burrow":
            w.run([str(REPO / ".venv/bin/burrow"), "podman", "disable", "--user"], check=True)
        (conf / "containers.conf").write_text(BASE_CONF.format(backend="cni" if b == "cni" else "netavark"))
        if b == "cni":  # CNI keeps its config in ~/.config/cni/net.d (XDG_CONFIG_HOME) rootless
            w.podman("image", "ls")
        worlds.append(w)
        make_networks(w.podman)
        runners[b] = (lambda w: lambda args: w.run(["podman", "run", "--rm", *args, IMAGE, "true"],  # noqa: B023 - w is bound by the outer lambda
                                                    timeout=120))(w)
    return runners, worlds


def bench(mode: str, rounds: int, tar: Path) -> dict[str, Any]:
    base = Path(tempfile.mkdtemp(prefix="burrow-bench-", dir="/tmp"))
    base.chmod(0o755)  # the rootless worlds below it belong to the test user
    try:
        return _bench(mode, rounds, tar, base)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _bench(mode: str, rounds: int, tar: Path, base: Path) -> dict[str, Any]:
    runners, worlds = (rootful_runners if mode == "rootful" else rootless_runners)(base, tar)
    port = 18190 if mode == "rootful" else 28190
    raw: dict[str, list[float]] = {f"{b} {v}": [] for b in BACKENDS for v in VARIANTS}
    fails: dict[str, int] = {k: 0 for k in raw}
    try:
        for r in range(rounds + 1):  # round 0 is warm-up
            for b in BACKENDS:
                for v in VARIANTS:
                    t = time.monotonic()
                    res = runners[b](net_args(v, port))
                    dt = (time.monotonic() - t) * 1000
                    rc = res.returncode if hasattr(res, "returncode") else res.rc
                    if rc != 0:
                        fails[f"{b} {v}"] += 1
                        err = res.stderr if hasattr(res, "stderr") else res.err
                        print(f"FAIL {mode} {b} {v}: {err.strip()[-300:]}", file=sys.stderr)
                    elif r > 0:
                        raw[f"{b} {v}"].append(dt)
    finally:
        for w in worlds:
            w.close()
    med = {k: statistics.median(v) if v else float("nan") for k, v in raw.items()}
    return {"mode": mode, "rounds": rounds, "raw": raw, "median": med, "fails": fails}


def table(res: dict[str, Any]) -> str:
    med = res["median"]
    lines = [f"\n{res['mode']} ({res['rounds']} interleaved rounds; median ms, +overhead over --network none)",
             f"{'variant':<10}" + "".join(f"{b:>22}" for b in BACKENDS) + f"{'burrow/netavark':>18}"]
    for v in VARIANTS:
        cells, over = [], {}
        for b in BACKENDS:
            m, none = med[f"{b} {v}"], med[f"{b} none"]
            over[b] = m - none
            cells.append(f"{m:8.1f}" + ("" if v == "none" else f" (+{over[b]:6.1f})").rjust(14))
        ratio = "" if v == "none" else f"{over['burrow'] / over['netavark']:.2f}x" if over["netavark"] > 0 else "-"
        lines.append(f"{v:<10}" + "".join(f"{c:>22}" for c in cells) + f"{ratio:>18}")
    lines.append("(CNI has no DNS plugin here: its dns rows are a plain bridge; target burrow/netavark <= 0.6x)")
    if any(res["fails"].values()):
        lines.append(f"failures: { {k: n for k, n in res['fails'].items() if n} }")
    return "\n".join(lines)


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--rounds", type=int, default=10)
    ap.add_argument("--mode", choices=("rootful", "rootless", "ports", "both", "all"), default="all")
    ap.add_argument("--json", help="write raw results here")
    ap.add_argument("--part", action="append", choices=("startup", "ready", "flow", "conn"),
                    help="--mode ports: only these parts (repeatable; default startup, ready, flow; "
                         "conn: connections/s, CPU per connection and round trip only, --rounds "
                         "fresh containers per kind)")
    ap.add_argument("--streams", type=int, default=1, help="--mode ports: parallel iperf3 streams")
    ap.add_argument("--seconds", type=float, default=3.0, help="--mode ports: seconds per flow run")
    ap.add_argument("--own-session", action="store_true",
                    help="--mode ports: podman run (so the forwarder) in a session of its own, not the clients'")
    ap.add_argument("--baseline", type=Path,
                    help="--mode ports: another checkout (with .venv) whose drop-in joins the flows")
    ap.add_argument("--perf", type=Path, help="--part conn: perf record each forwarder's conn/s run into this dir")
    a = ap.parse_args()
    problem = environment_problem()
    if problem:
        print(problem, file=sys.stderr)
        return 1
    ensure_host_fixes()
    tar = build_rootfs_tar(Path(tempfile.mkdtemp(prefix="burrow-bench-img-", dir="/tmp")))
    tar.parent.chmod(0o755)
    out = []
    modes = {"both": ("rootful", "rootless"), "all": ("rootful", "rootless", "ports")}.get(a.mode, (a.mode,))
    for mode in modes:
        if mode == "ports":
            import bench_podman_ports as ports

            if a.perf:
                a.perf.mkdir(parents=True, exist_ok=True)
                ports.PERF_DIR = a.perf.resolve()

            res = ports.bench(tar, a.rounds, seconds=a.seconds, parts=tuple(a.part or ports.PARTS),
                              streams=a.streams, own_session=a.own_session,
                              baseline=a.baseline.resolve() if a.baseline else None)
            out.append(res)
            print(ports.table(res), flush=True)
            continue
        res = bench(mode, a.rounds, tar)
        out.append(res)
        print(table(res), flush=True)
    if a.json:
        Path(a.json).write_text(json.dumps(out, indent=1))
    subprocess.run(["rm", "-rf", str(tar.parent)], check=False)
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Setup/teardown latency and processes exec'd: burrow-netavark vs Debian's netavark 1.4.

Each tool gets its own persistent throwaway "host" netns (like a real host, where firewall
chains and a warm engine outlive one container) and a fresh "container" netns per iteration.
Iterations interleave the tools, so load drift hits both alike. Each iteration is the cold
single-container case Podman's `run --rm` pays: the bridge is created and deleted every time.

Run: sudo .venv/bin/python scripts/bench_engine.py [--runs N]
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import re
import secrets
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))

from tests.nsutil import VENV_BIN, Netns  # noqa: E402

NETAVARK = "/usr/lib/podman/netavark"
AARDVARK = "/usr/lib/podman/aardvark-dns"


def case(dual: bool) -> dict[str, Any]:
    subnets = [{"subnet": "10.89.7.0/24", "gateway": "10.89.7.1"}]
    ips = ["10.89.7.2"]
    if dual:
        subnets.append({"subnet": "fd10:89:7::/64", "gateway": "fd10:89:7::1"})
        ips.append("fd10:89:7::2")
    return {
        "container_id": secrets.token_hex(32), "container_name": "web1",
        "port_mappings": [{"host_ip": "", "container_port": 80, "host_port": 8080, "range": 1, "protocol": "tcp"}],
        "networks": {"nanet1": {"static_ips": ips, "aliases": ["web"], "interface_name": "eth0"}},
        "network_info": {"nanet1": {
            "name": "nanet1", "id": secrets.token_hex(32), "driver": "bridge", "network_interface": "nabr1",
            "subnets": subnets, "ipv6_enabled": dual, "internal": False, "dns_enabled": dual,
            "ipam_options": {"driver": "host-local"}}},
    }  # fmt: skip


def config_parent() -> str | None:
    """A tmpfs for the tools' config dirs, as on a Podman host: rootful Podman keeps netavark's
    config (IPAM, DNS and firewall state) in /run/containers/networks, and /run is a tmpfs there.
    This machine's /run and /tmp are one ext4 (no journal), where each file create also scans the
    inodes freed in the last 30 s, a cost that grows with every change and is nobody's to fix.
    Both tools get the same directory kind; None (the default temp dir) when there is no tmpfs."""
    with open("/proc/mounts") as f:
        tmpfs = {fields[1] for fields in (line.split() for line in f) if fields[2] == "tmpfs"}
    return next((d for d in ("/run", "/dev/shm") if d in tmpfs and os.access(d, os.W_OK)), None)


@dataclass
class Tool:
    name: str
    argv: list[str]
    env: dict[str, str]
    host: Netns = field(default_factory=Netns)
    config: Path = field(default_factory=lambda: Path(
        tempfile.mkdtemp(prefix="burrow-bench-", dir=config_parent())))
    setup_ms: list[float] = field(default_factory=list)
    teardown_ms: list[float] = field(default_factory=list)

    def call(self, command: str, ctr: Netns, opts: dict[str, Any], trace: Path | None = None) -> float:
        argv = [*self.argv, "--config", str(self.config), command, ctr.path]
        if trace is not None:
            argv = ["strace", "-f", "-q", "-e", "trace=execve", "-o", str(trace), *argv]
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", **self.env}
        full = self.host.argv(["env", "-i", *(f"{k}={v}" for k, v in env.items()), *argv])
        t0 = time.perf_counter()
        data = json.dumps(opts).encode()
        if trace is None:
            res = subprocess.run(full, input=data, capture_output=True)
            code, out = res.returncode, res.stdout + res.stderr
        else:
            code, out = _traced(full, data, trace), b""
        elapsed = (time.perf_counter() - t0) * 1000
        if code != 0:
            raise SystemExit(f"{self.name} {command} failed ({code}): {out!r}")
        return elapsed

    def close(self) -> None:
        self.host.close()
        shutil.rmtree(self.config, ignore_errors=True)


def _traced(argv: list[str], data: bytes, trace: Path) -> int:
    """Run under strace -f until the tool itself exits, then stop strace.

    A DNS daemon the tool starts is traced too (-f) and would keep strace alive forever, so we
    watch the trace for the first process's exit and then let strace detach.
    """
    proc = subprocess.Popen(argv, stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    assert proc.stdin is not None
    proc.stdin.write(data)
    proc.stdin.close()
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline and proc.poll() is None:
        lines = trace.read_text().splitlines() if trace.exists() else []
        if lines:
            first = lines[0].split()[0]
            done = [ln for ln in lines if ln.split()[0] == first and "+++ exited with" in ln]
            if done:
                proc.kill()  # SIGTERM makes strace wait for its tracees; the daemon lives on
                proc.wait()
                return int(done[0].split()[-2])
        time.sleep(0.02)
    proc.wait()
    return proc.returncode


def execs(trace: Path) -> dict[str, int]:
    """Successful execve calls by program name, minus the tool itself."""
    counts: dict[str, int] = {}
    for line in trace.read_text().splitlines():
        m = re.search(r'execve\("([^"]+)".* = 0$', line)
        if m:
            prog = os.path.basename(m.group(1))
            counts[prog] = counts.get(prog, 0) + 1
    return counts


def nsenter_baseline(host: Netns, runs: int) -> float:
    times = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(host.argv(["true"]), check=True)
        times.append((time.perf_counter() - t0) * 1000)
    return statistics.median(times)


def run_case(label: str, dual: bool, runs: int) -> list[str]:
    burrow_env = {"NETAVARK_DNS_PORT": "53", "BURROW_ENGINE_IDLE": "600"}
    tools = [
        Tool("netavark 1.4", [NETAVARK, "--rootless=false", f"--aardvark-binary={AARDVARK}"],
             {"NETAVARK_FW": "iptables", "NETAVARK_DNS_PORT": "53"}),
        Tool("burrow (warm engine)", [str(VENV_BIN / "burrow-netavark"), "--rootless=false",
             f"--aardvark-binary={VENV_BIN / 'burrow-dns'}"], burrow_env),
        Tool("burrow (in-process)", [str(VENV_BIN / "burrow-netavark"), "--rootless=false",
             f"--aardvark-binary={VENV_BIN / 'burrow-dns'}"], {**burrow_env, "BURROW_ENGINE": "off"}),
    ]  # fmt: skip
    opts = case(dual)
    rows = []
    try:
        for i in range(runs + 2):  # two warm-up rounds: chains exist, the engine is started
            for tool in tools:
                ctr = Netns()
                try:
                    o = copy.deepcopy(opts)
                    s = tool.call("setup", ctr, o)
                    t = tool.call("teardown", ctr, o)
                finally:
                    ctr.close()
                if i >= 2:
                    tool.setup_ms.append(s)
                    tool.teardown_ms.append(t)
        exec_counts = {}
        for tool in tools:
            ctr = Netns()
            with tempfile.TemporaryDirectory() as d:
                st, tt = Path(d, "s"), Path(d, "t")
                tool.call("setup", ctr, opts, trace=st)
                tool.call("teardown", ctr, opts, trace=tt)
                exec_counts[tool.name] = (execs(st), execs(tt))
            ctr.close()
        base = nsenter_baseline(tools[0].host, 10)
        ref_s = statistics.median(tools[0].setup_ms)
        ref_t = statistics.median(tools[0].teardown_ms)
        rows.append(f"\n{label}: n={runs} per tool, medians in ms (nsenter+env baseline {base:.1f} ms included)")
        rows.append(f"{'tool':24} {'setup':>8} {'ratio':>6} {'teardown':>9} {'ratio':>6}   processes exec'd (setup / teardown)")
        for tool in tools:
            s, t = statistics.median(tool.setup_ms), statistics.median(tool.teardown_ms)
            se, te = exec_counts[tool.name]
            fmt = lambda c: ", ".join(f"{k} {v}" for k, v in sorted(c.items()) if k not in ("env", "nsenter", "strace")) or "0"  # noqa: E731
            rows.append(f"{tool.name:24} {s:8.1f} {s / ref_s:6.2f} {t:9.1f} {t / ref_t:6.2f}   {fmt(se)} / {fmt(te)}")
    finally:
        for tool in tools:
            tool.close()
    return rows


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=15)
    args = ap.parse_args()
    if not Path(NETAVARK).exists():
        print(f"{NETAVARK} is not installed (apt-get install netavark): nothing to compare with")
        return 1
    rows = ["== burrow-netavark vs netavark 1.4 (setup/teardown latency, one container, cold bridge; "
            f"config dirs in {config_parent() or tempfile.gettempdir()})"]
    rows += run_case("IPv4, 1 tcp port, no DNS", False, args.runs)
    rows += run_case("dual-stack, DNS, 1 tcp port", True, args.runs)
    print("\n".join(rows))
    print("\nexec counts: strace -f -e execve of one more setup/teardown per tool; the warm engine's own "
          "execs happen in the engine process, so its row is the client's (see the in-process row for the "
          "engine's work).")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

"""ADD/DEL latency and processes exec'd: burrow-cni vs the reference CNI chain, side by side.

The reference is what a conflist for Debian's containernetworking-plugins (/usr/lib/cni) uses
to get what burrow-cni does in one plugin: bridge (with host-local IPAM) + portmap + firewall
+ tuning, run as libcni runs a chain (each plugin exec'd in turn with the previous result as
prevResult; DEL in reverse order). Both get the same conflist shape: one /24, a default route,
one published port. Each tool has its own persistent throwaway "host" netns with one resident
container (so the bridge exists, as on a busy node) and a fresh "container" netns per
iteration; iterations interleave the tools, so load drift hits all alike. burrow-cni runs with
its warm engine (the default) and in-process (BURROW_ENGINE=off).

Run: sudo .venv/bin/python scripts/bench_cni.py [--runs N]
"""

from __future__ import annotations

import argparse
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

REF_DIR = "/usr/lib/cni"
PORTS = {"portMappings": [{"hostPort": 8080, "containerPort": 80, "protocol": "tcp"}]}


def ipam(data_dir: Path) -> dict[str, Any]:
    return {"type": "host-local", "ranges": [[{"subnet": "10.81.0.0/24"}]],
            "routes": [{"dst": "0.0.0.0/0"}], "dataDir": str(data_dir)}  # fmt: skip


def reference_chain(work: Path) -> list[dict[str, Any]]:
    return [
        {"type": "bridge", "bridge": "bn-ref0", "isGateway": True, "ipMasq": True, "ipam": ipam(work / "ipam")},
        {"type": "portmap", "capabilities": {"portMappings": True}},
        {"type": "firewall"},
        {"type": "tuning"},
    ]


def burrow_chain(work: Path) -> list[dict[str, Any]]:
    return [{"type": "burrow-cni", "bridge": "bn-bur0", "isGateway": True, "ipMasq": True,
             "ipam": ipam(work / "ipam"), "stateDir": str(work / "state"),
             "capabilities": {"portMappings": True}}]  # fmt: skip


@dataclass
class Tool:
    name: str
    plugins: list[dict[str, Any]]
    bindir: str
    env: dict[str, str]
    work: Path
    host: Netns = field(default_factory=Netns)
    add_ms: list[float] = field(default_factory=list)
    del_ms: list[float] = field(default_factory=list)

    def exe(self, kind: str) -> str:
        return str(VENV_BIN / "burrow-cni") if kind == "burrow-cni" else f"{self.bindir}/{kind}"

    def invoke(self, command: str, plugin: dict[str, Any], cid: str, netns: str,
               prev: dict[str, Any] | None, trace: Path | None = None) -> dict[str, Any] | None:  # fmt: skip
        conf = {"cniVersion": "1.0.0", "name": "bn-bench", **plugin}
        if "portMappings" in plugin.get("capabilities", {}):
            conf["runtimeConfig"] = PORTS
        if prev is not None:
            conf["prevResult"] = prev
        env = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "CNI_COMMAND": command, "CNI_CONTAINERID": cid,
               "CNI_NETNS": netns, "CNI_IFNAME": "eth0", "CNI_PATH": self.bindir, **self.env}  # fmt: skip
        argv = [self.exe(plugin["type"])]
        if trace is not None:  # a directory: one trace file per plugin exec
            out = trace / secrets.token_hex(4)
            argv = ["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none", "-o", str(out), *argv]
        argv = ["nsenter", "-t", str(self.host.pid), "-n", "-m", "--", *argv]
        res = subprocess.run(argv, input=json.dumps(conf), capture_output=True, text=True, env=env)
        if res.returncode != 0:
            raise RuntimeError(f"{self.name} {command} {plugin['type']}: {res.stdout} {res.stderr}")
        return json.loads(res.stdout) if res.stdout.strip() else None

    def add(self, cid: str, netns: str, trace: Path | None = None) -> dict[str, Any] | None:
        prev = None
        for p in self.plugins:
            prev = self.invoke("ADD", p, cid, netns, prev, trace)
        return prev

    def delete(self, cid: str, netns: str, prev: dict[str, Any] | None, trace: Path | None = None) -> None:
        for p in reversed(self.plugins):
            self.invoke("DEL", p, cid, netns, prev, trace)


def timed(fn: Any, *args: Any) -> tuple[float, Any]:
    t0 = time.perf_counter()
    out = fn(*args)
    return (time.perf_counter() - t0) * 1000, out


def nsenter_overhead(host: Netns, runs: int = 5) -> float:
    """What `nsenter` itself costs per exec (subtracted per plugin exec from every tool)."""
    samples = []
    for _ in range(runs):
        t0 = time.perf_counter()
        subprocess.run(["nsenter", "-t", str(host.pid), "-n", "-m", "--", "true"], check=True)
        samples.append((time.perf_counter() - t0) * 1000)
    return statistics.median(samples)


def count_execs(tool: Tool, tmp: Path) -> tuple[int, int]:
    """Processes exec'd by one ADD and one DEL (strace -f over every plugin exec; the plugin
    processes themselves included, strace and nsenter not)."""
    counts = []
    for phase in ("add", "del"):
        for f in tmp.iterdir():
            f.unlink()
        ctr = Netns()
        try:
            cid = secrets.token_hex(32)
            if phase == "add":
                prev = tool.add(cid, ctr.path, tmp)
                n = _execs(tmp)
                tool.delete(cid, ctr.path, prev)
            else:
                prev = tool.add(cid, ctr.path)
                tool.delete(cid, ctr.path, prev, tmp)
                n = _execs(tmp)
        finally:
            ctr.close()
        counts.append(n)
    return counts[0], counts[1]


def _execs(tmp: Path) -> int:
    n = 0
    for f in tmp.iterdir():
        n += sum(1 for line in f.read_text().splitlines() if re.search(r"execve\(.*\) = 0", line))
    return n


def engine_execs(tool: Tool) -> int | None:
    """Processes the warm engine itself exec'd during one ADD+DEL (strace attached to it)."""
    sock = tool.work / "state" / "burrow-engine.sock"
    pids = [p for p in os.listdir("/proc") if p.isdigit() and _is_engine(p, sock)]
    if not pids or not shutil.which("strace"):
        return None
    out = tool.work / "engine-trace"
    tracer = subprocess.Popen(["strace", "-f", "-qq", "-e", "trace=execve", "-e", "signal=none",
                               "-o", str(out), "-p", pids[0]])  # fmt: skip
    time.sleep(0.5)
    ctr = Netns()
    try:
        cid = secrets.token_hex(32)
        tool.delete(cid, ctr.path, tool.add(cid, ctr.path))
    finally:
        ctr.close()
        tracer.terminate()
        tracer.wait()
    return sum(1 for line in out.read_text().splitlines() if re.search(r"execve\(.*\) = 0", line))


def _is_engine(pid: str, sock: Path) -> bool:
    try:
        cmd = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
        # The engine sets its title to `burrow engine <state dir>`.
        return "burrow engine" in cmd and str(sock.parent) in cmd
    except OSError:
        return False


def summary(ms: list[float]) -> str:
    return f"median {statistics.median(ms):7.1f} ms  p90 {sorted(ms)[int(0.9 * (len(ms) - 1))]:7.1f} ms"


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", type=int, default=20)
    args = ap.parse_args()
    if os.geteuid() != 0:
        print("bench_cni: run as root (it builds namespaces)", file=sys.stderr)
        return 1
    tmp = Path(tempfile.mkdtemp(prefix="bn-bench-cni-"))
    tools: list[Tool] = []
    try:
        for name, env in (("reference chain", {}), ("burrow-cni warm", {}),
                          ("burrow-cni in-process", {"BURROW_ENGINE": "off"})):  # fmt: skip
            work = tmp / name.replace(" ", "-")
            work.mkdir()
            plugins = reference_chain(work) if name == "reference chain" else burrow_chain(work)
            tools.append(Tool(name, plugins, REF_DIR, env, work))
        resident: list[tuple[Tool, Netns, str, Any]] = []
        for t in tools:  # one resident container each: the bridge stays, as on a busy node
            ns, cid = Netns(), secrets.token_hex(32)
            resident.append((t, ns, cid, t.add(cid, ns.path)))
            t.add_ms.clear()
        # Warm-up (page cache, the warm engine's first start), then the measured rounds.
        for i in range(args.runs + 2):
            for t in tools:
                ctr = Netns()
                try:
                    cid = secrets.token_hex(32)
                    add_ms, prev = timed(t.add, cid, ctr.path)
                    del_ms, _ = timed(t.delete, cid, ctr.path, prev)
                finally:
                    ctr.close()
                if i >= 2:
                    t.add_ms.append(add_ms)
                    t.del_ms.append(del_ms)
        overhead = nsenter_overhead(tools[0].host)
        print(f"# {args.runs} runs each; each plugin exec is `nsenter ... plugin` from this runner "
              f"(nsenter alone: {overhead:.1f} ms, included in every exec of every tool)")
        ref = tools[0]
        for t in tools:
            traced = tmp / f"trace-{t.name.replace(' ', '-')}"
            traced.mkdir()
            execs = count_execs(t, traced)
            ratio = (f"  ADD {statistics.median(t.add_ms) / statistics.median(ref.add_ms):4.2f}x "
                     f"DEL {statistics.median(t.del_ms) / statistics.median(ref.del_ms):4.2f}x of the reference")  # fmt: skip
            print(f"{t.name:24s} ADD {summary(t.add_ms)} | DEL {summary(t.del_ms)} | "
                  f"execs per ADD {execs[0]}, per DEL {execs[1]}" + ("" if t is ref else ratio))
        warm = tools[1]
        n = engine_execs(warm)
        if n is not None:
            print(f"burrow-cni warm engine: {n} processes exec'd by the engine itself for one ADD+DEL")
        for t, ns, cid, prev in resident:
            t.delete(cid, ns.path, prev)
            ns.close()
    finally:
        for t in tools:
            t.host.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())

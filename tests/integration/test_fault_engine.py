"""kill -9 of the warm engine at chosen points of setup and teardown: all or nothing, always.

The engine is a real process serving a real client in throwaway namespaces. strace attaches to
it and SIGKILLs it at the N-th call of one side-effecting syscall (a netlink request, an nft
batch, a state-file write or rename, the fork of the DNS server, the reply), so every kill
lands between two real changes of kernel or file state. Points come from a seeded RNG over the
calls a clean run makes (BURROW_FAULT_SEED, BURROW_FAULT_ROUNDS to explore more). Both
firewall backends, a container alone on its network and one beside another container.

What must hold (issue 12, "setup is all-or-nothing across crashes"):
- setup exit 0: the very state a clean setup makes (links, addresses, nft rules, firewall and
  DNS state files), and the container reaches its gateway;
- setup exit non-zero: nothing of this container is left, same as after a clean teardown;
- teardown after a kill: exit 0 and nothing left;
- and the world keeps converging: the next teardown/setup behave as on a clean world.
"""

from __future__ import annotations

import contextlib
import json
import os
import random
import re
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.engine_util import network, options, ping, port
from tests.integration.test_warm_engine import Result, call, gone, start_engine, wait_until
from tests.nsutil import VENV_BIN, Netns, have, unique

pytestmark = [
    pytest.mark.root,
    pytest.mark.skipif(not have("strace"), reason="environment: strace is not installed"),
    pytest.mark.skipif(not have("nft"), reason="environment: nft is not installed"),
]

SEED = int(os.environ.get("BURROW_FAULT_SEED", "1229"))
ROUNDS = int(os.environ.get("BURROW_FAULT_ROUNDS", "3"))
# Each is a step that changes state (or answers): rtnetlink requests and the reply go out by
# sendto, the nft batch by sendmsg, sysctls and state files by write/rename/unlink, the DNS
# server by clone.
POINTS = ("sendto", "sendmsg", "write", "rename", "unlink", "clone")
GATEWAY = "10.77.0.1"
# Locks, pids, the engine's own files, the DNS server's live counters, and the firewall's note of whether its empty table
# skeleton exists (compared directly: the kernel's ruleset is in the snapshot).
IGNORED_FILES = {"burrow-engine.sock", "burrow-engine.log", "burrow.lock", "lock", "aardvark.lock",
                 "aardvark.pid", "installed.json", ".burrow-ledger.json", ".burrow-dns-stats.json"}  # fmt: skip
COUNTER = re.compile(r"counter packets \d+ bytes \d+")  # iptables-nft counts; traffic is not state
# The empty skeleton burrow keeps after the last teardown (or not, after a full rebuild):
# the same "nothing", so it is left out. Chains of networks and every rule are kept.
SKELETON = re.compile(r"\s*(table inet netavark \{|chain (INPUT|OUTPUT|FORWARD|PREROUTING|POSTROUTING|"
                      r"NETAVARK-[A-Z0-9-]+) \{|type .* hook .*|\}|)\Z")  # fmt: skip


class Tracer:
    """strace attached to the engine: counts POINTS calls, or signals it at one of them."""

    def __init__(self, pid: int, out: Path, kill_at: tuple[str, int] | None = None,
                 sig: str = "KILL") -> None:  # fmt: skip
        argv = ["strace", "-p", str(pid), "-e", f"trace={','.join(POINTS)}", "-o", str(out)]
        if kill_at is not None:
            argv += ["-e", f"inject={kill_at[0]}:signal={sig}:when={kill_at[1]}"]
        self.out = out
        self.proc = subprocess.Popen(argv, stderr=subprocess.PIPE, text=True)
        assert self.proc.stderr is not None
        line = self.proc.stderr.readline()  # "strace: Process N attached": only then go on
        assert "attached" in line, line

    def close(self) -> Counter[str]:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)  # detach; the engine lives on
        self.proc.wait(timeout=30)
        names = (line.split("(", 1)[0] for line in self.out.read_text().splitlines())
        return Counter(name for name in names if name in POINTS)


@dataclass
class Rig:
    host: Netns
    ctr: Netns
    config: str
    argv: list[str]
    opts: dict[str, Any]
    tmp: Path

    def run(self, command: str, **env: str) -> Result:
        return call(self.host, self.config, *self.argv, command, self.ctr.path,
                    stdin=json.dumps(self.opts).encode(), env={"NETAVARK_DNS_PORT": "5353", **env})  # fmt: skip

    def snapshot(self) -> dict[str, Any]:
        """Everything a setup may change, minus what differs between two clean runs."""
        return {
            "host": _links(self.host), "ctr": _links(self.ctr),
            "nft": _rules(self.host.run(["nft", "list", "ruleset"]).stdout),
            "files": _files(Path(self.config)),
        }  # fmt: skip

    def fresh_engine(self) -> int:
        """A newly started engine, as after a crash: the first request it serves is ours.

        Any engine of this config dir goes first, found by its title: one that survived the
        last kill point, and one an in-process fallback spawned that may still be starting."""
        title = f"burrow engine {self.config}"
        for pid in (int(p) for p in subprocess.run(["pgrep", "-f", title], text=True,
                                                   capture_output=True).stdout.split()):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGTERM)
            wait_until(lambda pid=pid: gone(pid), 10, "the engine to exit")
        return start_engine(self.host, self.config)

    def traced(self, command: str, kill_at: tuple[str, int] | None, sig: str = "KILL",
               **env: str) -> tuple[Result, Counter[str]]:  # fmt: skip
        pid = self.fresh_engine()
        tracer = Tracer(pid, self.tmp / f"trace-{unique('')}", kill_at, sig)
        try:
            res = self.run(command, **env)
        finally:
            counts = tracer.close()
        return res, counts


def diff(a: dict[str, Any], b: dict[str, Any]) -> str:
    """What differs between two snapshots, readably."""
    lines = []
    for key in a:
        if a[key] != b[key]:
            left, right = (json.dumps(x[key], indent=0).splitlines() for x in (a, b))
            lines += [f"{key}: only now: {sorted(set(left) - set(right))}",
                      f"{key}: only expected: {sorted(set(right) - set(left))}"]  # fmt: skip
    return "\n".join(lines)


def _rules(ruleset: str) -> list[str]:
    lines = (COUNTER.sub("counter", line) for line in ruleset.splitlines())
    return sorted(line for line in lines if not SKELETON.match(line))


def _links(ns: Netns) -> list[Any]:
    data = json.loads(ns.run(["ip", "-j", "-d", "addr", "show"]).stdout)
    return sorted(
        (
            d["ifname"], d.get("master"), d.get("linkinfo", {}).get("info_kind"), d["operstate"],
            sorted(f"{a['local']}/{a['prefixlen']}" for a in d["addr_info"]
                   if a.get("scope") != "link"),  # link-local v6 follows the random MAC
        )
        for d in data
    )  # fmt: skip


def _files(config: Path) -> dict[str, str]:
    out = {}
    for path in sorted(config.rglob("*")):
        if path.is_file() and path.name not in IGNORED_FILES:
            # nft rule handles count up in the kernel: whether the file is there is the state.
            handles = path.parent.name in (".burrow-nft-handles", ".burrow-ipt-handles")
            out[str(path.relative_to(config))] = "" if handles else path.read_text()
    return out


@pytest.fixture
def rig(netns_factory: Callable[[], Netns], tmp_path: Path) -> Iterator[Rig]:
    host, ctr = netns_factory(), netns_factory()
    config = tmp_path / "cfg"
    config.mkdir()
    net = network(unique("n"), unique("fb"), [("10.77.0.0/24", GATEWAY), ("fd77::/64", "fd77::1")],
                  dns_enabled=True)  # fmt: skip
    per = {"interface_name": "eth0", "static_ips": ["10.77.0.2", "fd77::2"],
           "static_mac": "92:d0:c6:0a:29:11", "aliases": ["web"],
           "options": {"host_interface_name": unique("fv")}}  # fmt: skip
    opts = options("c1", [(net, per)], [port(8080, 80), port(5300, 53, "udp")])
    argv = ["--rootless=false", f"--aardvark-binary={VENV_BIN / 'burrow-dns'}",
            "--firewall-driver", "nftables"]  # fmt: skip
    yield Rig(host, ctr, str(config), argv, opts, tmp_path)


def _points(counts: Counter[str]) -> list[tuple[str, int]]:
    return [(name, n) for name in POINTS for n in range(1, counts[name] + 1)]


def _calibrate(rig: Rig) -> tuple[dict[str, Any], dict[str, Any], Counter[str], Counter[str]]:
    """A clean setup and teardown, each on a fresh engine: the states and the calls they make."""
    res = rig.run("setup")  # the world's first setup (tables, state dirs) is not what we test
    assert res.code == 0, res.out
    assert rig.run("teardown").code == 0
    empty = rig.snapshot()
    res, setup_calls = rig.traced("setup", None)
    assert res.code == 0 and res.warm, (res.out, res.served_by)
    full = rig.snapshot()
    res, teardown_calls = rig.traced("teardown", None)
    assert res.code == 0 and res.warm, (res.out, res.served_by)
    assert rig.snapshot() == empty
    assert full != empty and setup_calls["sendto"] > 3 and teardown_calls["sendto"] > 1
    return empty, full, setup_calls, teardown_calls


def _neighbour(rig: Rig, ctr: Netns) -> Rig:
    """Another container on the same network (bridge, network rules and DNS file shared)."""
    net = next(iter(rig.opts["network_info"].values()))
    per = {"interface_name": "eth0", "static_ips": ["10.77.0.3", "fd77::3"],
           "static_mac": "92:d0:c6:0a:29:12", "options": {"host_interface_name": unique("fn")}}
    opts = options("c0", [(net, per)], [port(8081, 80)])
    return Rig(rig.host, ctr, rig.config, rig.argv, opts, rig.tmp)  # fmt: skip


def _converged(res: Any) -> bool:
    """Teardown succeeded, or failed only because the container interface was gone already."""
    if res.code == 0:
        return True
    text = res.out.decode() if isinstance(res.out, bytes) else str(res.out)
    lines = [ln for ln in json.loads(text)["error"].splitlines() if ln.strip()]
    lines = [ln for ln in lines if not ln.startswith("netavark encountered multiple errors")]
    return res.code == 1 and all("does not exist in the container namespace" in ln for ln in lines)


@pytest.mark.parametrize(
    "firewall,shared",
    [("nftables", False), ("nftables", True), ("iptables", True)],
    ids=["nftables-alone", "nftables-beside-another-container", "iptables-beside-another-container"],
)
def test_setup_and_teardown_killed_at_random_points_are_all_or_nothing(
    rig: Rig, netns_factory: Callable[[], Netns], firewall: str, shared: bool
) -> None:
    """Alone, recovery removes the bridge and the network's rules it made; beside another
    container, the teardown that recovery runs first must leave that container's share."""
    if not have("iptables-restore") and firewall == "iptables":
        pytest.skip("environment: iptables-restore is not installed")
    rig.argv[3] = firewall
    seed = SEED + shared
    rng = random.Random(seed)
    if shared:
        other = _neighbour(rig, netns_factory())
        assert other.run("setup").code == 0
    empty, full, setup_calls, teardown_calls = _calibrate(rig)
    for point in rng.sample(_points(setup_calls), min(ROUNDS, len(_points(setup_calls)))):
        res, _ = rig.traced("setup", point)
        where = f"setup killed at {point[0]} #{point[1]} (seed {seed}): {res.served_by}"
        if res.code == 0:
            assert (now := rig.snapshot()) == full, f"{where}\n{diff(now, full)}"
            assert ping(rig.ctr, GATEWAY), where
        else:
            assert (now := rig.snapshot()) == empty, f"{where}: exit {res.code} left state behind\n{diff(now, empty)}"
        # The engine is dead or finished: the next teardown converges either way (exit 1 only
        # for a container interface that was already gone, as netavark reports it).
        assert _converged(rig.run("teardown")), where
        assert (now := rig.snapshot()) == empty, f"{where}\n{diff(now, empty)}"
        # Nothing the crash did stops a clean setup afterwards (stale socket, locks, state).
        assert rig.run("setup").code == 0, where
        assert (now := rig.snapshot()) == full, f"{where}\n{diff(now, full)}"
        assert rig.run("teardown").code == 0, where
    for point in rng.sample(_points(teardown_calls), min(ROUNDS, len(_points(teardown_calls)))):
        assert rig.run("setup").code == 0
        res, _ = rig.traced("teardown", point)
        where = f"teardown killed at {point[0]} #{point[1]} (seed {seed}): {res.served_by}"
        # The client's retry after a killed engine may find the interface gone already.
        assert _converged(res), f"{where}: {res.out!r}"
        assert (now := rig.snapshot()) == empty, f"{where}\n{diff(now, empty)}"
    if shared:
        assert ping(other.ctr, GATEWAY)


def test_setup_that_fails_late_and_is_killed_leaves_nothing(rig: Rig) -> None:
    """A setup that fails at its last step (the DNS server) after links and rules were made."""
    rng = random.Random(SEED + 1)
    broken = rig.tmp / "broken-dns"
    broken.write_text("#!/bin/sh\necho 'failed to bind udp listener: Address in use' >&2\nexit 1\n")
    broken.chmod(0o755)
    rig.argv[1] = f"--aardvark-binary={broken}"
    assert rig.run("setup").code == 1  # the world's first setup leaves firewall bookkeeping
    empty = rig.snapshot()
    res, calls = rig.traced("setup", None)
    assert res.code == 1 and res.warm and b"failed to bind" in res.out, (res.out, res.served_by)
    assert rig.snapshot() == empty
    assert calls["sendto"] > 3 and calls["sendmsg"] >= 1  # it did make links and rules first
    for point in rng.sample(_points(calls), min(ROUNDS, len(_points(calls)))):
        res, _ = rig.traced("setup", point)
        where = f"setup killed at {point[0]} #{point[1]} (seed {SEED + 1}): {res.served_by}"
        assert res.code == 1 and b"failed to bind" in res.out, f"{where}: {res.out!r}"
        assert (now := rig.snapshot()) == empty, f"{where}: left state behind\n{diff(now, empty)}"


def test_a_wedged_engine_is_killed_and_the_setup_completes(rig: Rig) -> None:
    """An engine stopped mid-setup (SIGSTOP at its nft batch, links already made) would have
    held the client for 10 minutes and then left the links behind with exit 1."""
    empty, full, setup_calls, _ = _calibrate(rig)
    assert setup_calls["sendmsg"] >= 1
    res, _ = rig.traced("setup", ("sendmsg", 1), "STOP", BURROW_ENGINE_TIMEOUT="3")
    assert res.code == 0, res.out
    assert res.served_by.startswith("in-process reason=wedged (no answer in 3 s; engine killed)"), (
        res.served_by)
    assert (now := rig.snapshot()) == full, diff(now, full)
    assert rig.run("teardown").code == 0
    assert (now := rig.snapshot()) == empty, diff(now, empty)

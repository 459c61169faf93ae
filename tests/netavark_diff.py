"""Run one Netavark request on Debian's netavark 1.4 and on burrow-netavark, each in a private
"host" netns of its own, and take normalised snapshots of what each left in the kernel.

Used by tests/integration/test_netavark_differential.py. A `Side` is one tool's world: a host
netns, container netns made on demand (one per container key), a config dir. `snapshot()`
reads, from inside each netns, links (kind, mtu, master, flags, static MACs, bridge and port
settings), addresses, routes of every table, neighbours, every sysctl under
/proc/sys/net/ipv{4,6}/conf/* plus ip_forward, and (host) iptables-save/ip6tables-save.
Names the kernel or a random number picks (ifindexes, generated MACs, link-local addresses
made from them) are blanked; nothing else is. Which documented deviations a comparison then
removes is the test's business, each with its reason, never this module's.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from netns.nsenter import entered
from tests.nsutil import VENV_BIN, Netns

NETAVARK = Path("/usr/lib/podman/netavark")
# The DNS server both tools start (`<bin> --config DIR -p PORT run`, as aardvark-dns): it leaves
# a process that ignores SIGHUP and writes its pid where aardvark-dns does, then exits, so both
# write their aardvark-format files for real, find "the server" at teardown and signal it, and
# no real server races the snapshots. It lives in the host netns and dies with it.
FAKE_DNS = """#!/bin/sh
trap '' HUP
sleep 3600 </dev/null >/dev/null 2>&1 &
printf %s $! > "$2/aardvark.pid"  # no newline: netavark 1.4 parses the whole file
"""
PATH = "PATH=/usr/sbin:/usr/bin:/sbin:/bin"

# What the snapshot asks `ip` for, in one batch (one JSON array per line, in this order).
IP_BATCH = "link show\naddr show\nroute show table all\nneigh show\n"

# operstate: the kernel's linkwatch reports a bridge's change up to a second late (timing).
_LINK_DROP = {"operstate", "ifindex", "link_index", "link_netnsid", "stats", "stats64", "promiscuity",
              "allmulti", "num_tx_queues", "num_rx_queues", "gso_max_size", "gso_max_segs",
              "gro_max_size", "gso_ipv4_max_size", "gro_ipv4_max_size", "tso_max_size",
              "tso_max_segs", "inet6_addr_gen_mode", "parentbus", "parentdev", "altnames"}
_MAC = re.compile(r"\b[0-9a-f]{2}(?::[0-9a-f]{2}){5}\b")
_LL6 = re.compile(r"\bfe80::[0-9a-f:]+\b")


@dataclass
class Result:
    """One command's outcome: exit code, stdout parsed as JSON when it is JSON, stderr."""

    code: int
    out: Any
    err: str

    @property
    def error_class(self) -> str:
        """What a caller can tell apart without reading text: ok, an {"error"} reply (exit 1),
        a usage error (exit 2, nothing on stdout), or anything else (a crash)."""
        if self.code == 0:
            return "ok"
        if self.code == 1 and isinstance(self.out, dict) and set(self.out) == {"error"}:
            return "error"
        if self.code == 2 and self.out in (None, ""):
            return "usage"
        return f"other({self.code}, {self.out!r:.80}, {self.err[-200:]!r})"


@dataclass
class Side:
    """One tool's private world: host netns, containers by key, config dir."""

    # "netavark", or burrow's firewall driver ("iptables", "nftables"), run in-process, or
    # with "+warm" by its warm engine (started by the first call, in the host netns)
    tool: str
    factory: Callable[[], Netns]
    config: Path
    host: Netns = field(init=False)
    ctrs: dict[str, Netns] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.host = self.factory()
        # As Podman's /run/containers/networks: there before the first call (netavark 1.4
        # makes only the aardvark-dns dir under it, and fails after the kernel work without it).
        self.config.mkdir(parents=True, exist_ok=True)
        self.dns_bin = self.config.parent / f"fake-dns-{self.tool}"
        self.dns_bin.write_text(FAKE_DNS)
        self.dns_bin.chmod(0o755)

    def ctr(self, key: str) -> Netns:
        if key not in self.ctrs:
            self.ctrs[key] = self.factory()
        return self.ctrs[key]

    def argv(self, command: str) -> list[str]:
        common = ["--config", str(self.config), "--rootless", "false",
                  "--aardvark-binary", str(self.dns_bin)]  # fmt: skip
        if self.tool == "netavark":
            return ["env", "-i", PATH, "NETAVARK_FW=iptables", str(NETAVARK), *common, command]
        driver, _, warm = self.tool.partition("+")
        engine = [] if warm else ["BURROW_ENGINE=off"]
        return ["env", "-i", PATH, *engine, "DBUS_SYSTEM_BUS_ADDRESS=",
                str(VENV_BIN / "python"), "-m", "netns.netavark_cli", *common,
                "--firewall-driver", driver, command]  # fmt: skip

    def run(self, command: str, ctr: str, request: Any) -> Result:
        """`setup`/`teardown` of container `ctr` (request: NetworkOptions or raw text), or
        `update` of network `ctr` (request: the list of DNS servers, passed as Podman does)."""
        if command == "update":
            argv = [*self.argv(command), ctr, "--network-dns-servers", ",".join(request)]
            res = self.host.run(argv, input="", check=False)
        else:
            stdin = request if isinstance(request, str) else json.dumps(request)
            res = self.host.run([*self.argv(command), self.ctr(ctr).path], input=stdin,
                                check=False)
        try:
            out: Any = json.loads(res.stdout) if res.stdout.strip() else None
        except json.JSONDecodeError:
            out = res.stdout
        return Result(res.returncode, out, res.stderr)

    def dns_files(self) -> dict[str, list[str]]:
        """The aardvark-format files (lines; the container lines' order is insertion order)."""
        d = self.config / "aardvark-dns"
        if not d.is_dir():
            return {}
        return {p.name: p.read_text().splitlines() for p in sorted(d.iterdir())
                if p.is_file() and not p.name.endswith(".pid")}

    def snapshot(self, static_macs: set[str]) -> dict[str, Any]:
        out = {"host": _normalise(_raw(self.host, "host"), static_macs)}
        for key, ns in sorted(self.ctrs.items()):
            out[key] = _normalise(_raw(ns, "container"), static_macs)
        return out


def _raw(ns: Netns, role: str) -> dict[str, Any]:
    """Read the netns from this process (a thread's setns: no nsenter, no interpreter start;
    /proc/sys/net is the reading thread's netns)."""
    fd = os.open(ns.path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with entered(fd):
            return _read_here(role)
    finally:
        os.close(fd)


def _ip(*args: str, stdin: str | None = None) -> list[Any]:
    out = subprocess.run(["ip", "-j", "-d", *args], input=stdin, capture_output=True, text=True,
                         check=True).stdout
    found, pos, dec = [], 0, json.JSONDecoder()
    while pos < len(out):
        if out[pos].isspace():
            pos += 1
            continue
        obj, pos = dec.raw_decode(out, pos)
        found.append(obj)
    return found


def _read_here(role: str) -> dict[str, Any]:
    # `route show table all` in a batch lists both families.
    links, addrs, routes, neigh = _ip("-batch", "-", stdin=IP_BATCH)
    snap: dict[str, Any] = {"links": links, "addrs": addrs, "routes": routes, "neigh": neigh,
                            "sysctl": {}}
    for fam in ("ipv4", "ipv6"):
        base = f"/proc/sys/net/{fam}/conf"
        for dev in sorted(os.listdir(base)):
            for key in sorted(os.listdir(f"{base}/{dev}")):
                try:
                    with open(f"{base}/{dev}/{key}") as f:
                        snap["sysctl"][f"{fam}/{dev}/{key}"] = f.read().strip()
                except OSError:  # write-only or refused entries (stable_secret unset)
                    pass
    with open("/proc/sys/net/ipv4/ip_forward") as f:
        snap["sysctl"]["ipv4/ip_forward"] = f.read().strip()
    if role == "host":
        snap["iptables"] = [subprocess.run([t], capture_output=True, text=True, check=True).stdout
                            for t in ("iptables-save", "ip6tables-save")]
    return snap


def _blank(text: str, static_macs: set[str]) -> str:
    text = _MAC.sub(lambda m: m.group(0) if m.group(0) in static_macs or
                    m.group(0) in ("00:00:00:00:00:00", "ff:ff:ff:ff:ff:ff")
                    else "<mac>", text)
    return _LL6.sub("fe80::<ll>", text)


def _veth_names(links: list[dict[str, Any]]) -> dict[str, str]:
    """Host ends get kernel names (vethN) in creation order, and netavark 1.4 sets a request's
    networks up in HashMap order: name each by its bridge and its rank there instead."""
    by_master: dict[str, list[str]] = {}
    for link in links:
        if re.fullmatch(r"veth\d+", link["ifname"]) and link.get("master"):
            by_master.setdefault(link["master"], []).append(link["ifname"])
    return {name: f"veth@{master}.{i}" for master, names in by_master.items()
            for i, name in enumerate(sorted(names, key=lambda n: int(n[4:])))}


def _normalise(snap: dict[str, Any], static_macs: set[str]) -> dict[str, Any]:
    links = {}
    for link in snap["links"]:
        rec = {k: v for k, v in link.items() if k not in _LINK_DROP}
        info = rec.get("linkinfo", {})
        for part in ("info_data", "info_slave_data"):
            data = info.get(part)
            if isinstance(data, dict):
                # Running timers and kernel-assigned ids/counters, not configuration.
                info[part] = {k: v for k, v in data.items()
                              if "timer" not in k and k not in ("no", "id", "bridge_id",
                                                                 "root_id", "designated_root",
                                                                 "designated_bridge",
                                                                 "designated_port",
                                                                 "designated_cost", "root_port",
                                                                 "root_path_cost", "topology_change",
                                                                 "topology_change_detected",
                                                                 "config_pending", "state")}
        links[link["ifname"]] = rec
    addrs = {}
    for dev in snap["addrs"]:
        addrs[dev["ifname"]] = sorted(
            f"{a['local']}/{a['prefixlen']} brd {a.get('broadcast')} scope {a.get('scope')} "
            + " ".join(sorted(k for k in ("nodad", "noprefixroute", "deprecated", "dadfailed",
                                          "permanent", "home", "mngtmpaddr", "optimistic")
                              if a.get(k)))
            for a in dev.get("addr_info", []))
    routes = []
    for r in snap["routes"]:
        if r.get("table") == "local" and r.get("type") in ("local", "anycast"):
            # Made by the kernel from the addresses (compared above) and, for IPv6, only once
            # DAD has ended: when is timing, not state.
            continue
        if "nexthops" in r:
            # A multipath route's hops are in the order their routes were added, and netavark
            # 1.4 sets a request's networks up in HashMap order (random per run).
            r["nexthops"] = sorted(r["nexthops"], key=lambda h: json.dumps(h, sort_keys=True))
        routes.append(json.dumps(r, sort_keys=True))
    routes.sort()
    # Configured entries only: learned ones (REACHABLE, STALE, ...) come from whatever
    # traffic the kernel sent by the time of the snapshot (DAD, router solicitations).
    neigh = sorted(json.dumps(n, sort_keys=True) for n in snap["neigh"]
                   if set(n.get("state", [])) & {"PERMANENT", "NOARP"})
    out = {"links": links, "addrs": addrs, "routes": routes, "neigh": neigh,
           "sysctl": snap["sysctl"]}
    if "iptables" in snap:
        out["iptables"] = [_iptables(t) for t in snap["iptables"]]
    names = _veth_names(snap["links"])
    text = re.sub(r"\bveth\d+\b", lambda m: names.get(m.group(0), m.group(0)),
                  json.dumps(out, sort_keys=True))
    return dict(json.loads(_blank(text, static_macs)))


def _iptables(text: str) -> list[str]:
    """iptables-save without its comment lines and packet counters (they vary run to run)."""
    return [re.sub(r"\[\d+:\d+\]", "[0:0]", line) for line in text.splitlines()
            if not line.startswith("#")]

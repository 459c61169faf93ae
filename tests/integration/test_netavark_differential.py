"""Differential test: the same requests run by Debian's netavark 1.4 and by burrow-netavark.

Each tool gets its own private "host" netns, container netns and config dir
(tests/netavark_diff.py), both with the iptables firewall driver (1.4 has no nftables); burrow
with nftables runs too where the comparison is about everything but the firewall. Compared:
the exit code and stdout of every call (StatusBlocks with generated MACs blanked; for refused
requests the error class, not the text), the kernel state after setup (links, addresses,
routes of every table, configured neighbours, bridge and port settings, every per-interface
sysctl, iptables-save), the aardvark-format DNS files, and the state after teardown (the same
in both, and what it was before but for what netavark itself keeps: its base chains and
forwarding). Inputs: every setup Podman made in ../shared/samples, a bounded hypothesis set
over the shapes users have, and invalid requests.

Only the deviations listed in KNOWN_DEVIATIONS are taken out of the comparison, each where
the README documents it and why; any other difference fails the test.
"""

from __future__ import annotations

import copy
import hashlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.netavark_diff import NETAVARK, Result, Side
from tests.nsutil import Netns, have
from tests.samples import records

pytestmark = pytest.mark.skipif(
    not NETAVARK.exists() or not have("iptables-save"),
    reason="environment: Debian's netavark 1.4 (/usr/lib/podman/netavark) or iptables missing",
)
FIREWALL_FREE = ("iptables",)  # snapshot parts a burrow nftables run is not compared on


# --- the known deviations, each documented ---------------------------------------------------

def _drop_sysctls(ns: dict[str, Any], keys: list[str]) -> None:
    for key in keys:
        ns["sysctl"].pop(key, None)


def _bridge_ports(ns: dict[str, Any]) -> list[str]:
    return [n for n, link in ns["links"].items() if n.startswith("veth@")]


def _bridges(ns: dict[str, Any]) -> list[str]:
    return [n for n, link in ns["links"].items()
            if link.get("linkinfo", {}).get("info_kind") == "bridge"]


def _bridge_port_ifaces(ns: dict[str, Any]) -> list[str]:
    """A container's interfaces on a bridge (veth), not macvlan ones."""
    return [n for n, link in ns["links"].items()
            if link.get("linkinfo", {}).get("info_kind") == "veth"]


def known_deviations(snap: dict[str, Any]) -> dict[str, Any]:
    """The snapshot without what burrow documents as different from netavark 1.4."""
    snap = copy.deepcopy(snap)
    host = snap["host"]
    for br in _bridges(host):
        # Netavark 1.11's rp_filter=2 on a bridge it makes, and 2.x's route_localnet=1 on every
        # non-internal bridge (1.4: only with port mappings): README "What drop-in covers",
        # the kernel-state row (issue 10).
        _drop_sysctls(host, [f"ipv4/{br}/rp_filter", f"ipv4/{br}/route_localnet"])
    for port in _bridge_ports(host):
        # A container's host veth end has no IPv6 addresses (`addrgenmode none`) and hairpin
        # on: README "Benchmarks", issue 15 ("a container's host veth end gets no IPv6
        # addresses"), and netns/bridges.py (a container reaching its own published port
        # through br_netfilter). With no address there is no DAD, so accept_dad is moot too.
        _drop_sysctls(host, [f"ipv6/{port}/addr_gen_mode", f"ipv6/{port}/accept_dad"])
        host["addrs"].pop(port, None)
        host["routes"] = [r for r in host["routes"] if f'"dev": "{port}"' not in r]
        host["links"][port].get("linkinfo", {}).get("info_slave_data", {}).pop("hairpin", None)
    for key, ctr in snap.items():
        if key == "host":
            continue
        for dev in _bridge_port_ifaces(ctr):
            # Netavark 1.11's rp_filter=2 and arp_notify=1 on a container's bridge port
            # (README "What drop-in covers", issue 10); and the quieter IPv6 side of a managed
            # bridge port: router_solicitations=0, accept_dad=0 on IPv4 networks too (README
            # "Benchmarks", issue 15).
            _drop_sysctls(ctr, [f"ipv4/{dev}/rp_filter", f"ipv4/{dev}/arp_notify",
                                f"ipv6/{dev}/router_solicitations", f"ipv6/{dev}/accept_dad"])
        # Follows from accept_dad=0 above: the link-local address's local route appears once
        # DAD is done, which netavark's kernel has not finished at snapshot time.
        ctr["routes"] = [r for r in ctr["routes"]
                         if not ('"table": "local"' in r and '"dst": "fe80::<ll>"' in r)]
    return snap


def iptables_by_network(snap: dict[str, Any], nets: list[dict[str, Any]]) -> dict[str, Any]:
    """iptables-save per table and chain, each chain's rules grouped by the network they name
    (its subnet, its NETAVARK-<hash> chains, its name in a comment), in order within a group.
    Netavark 1.4 sets a request's networks up in HashMap order (random per run), so how two
    networks' rules interleave in a shared chain is not behaviour; the order of one network's
    rules, the base rules' order and the set of chains are."""
    snap = copy.deepcopy(snap)
    tags = {}
    for net in nets:
        marks = [s["subnet"] for s in net.get("subnets") or []]
        marks += [f"-{hashlib.sha512(net['name'].encode()).hexdigest()[:13].upper()}",
                  f"name: {net['name']} "]
        tags[net["name"]] = marks
    for ns in snap.values():
        if "iptables" not in ns:
            continue
        out: dict[str, Any] = {}
        for family, text in zip(("ipv4", "ipv6"), ns["iptables"], strict=True):
            table = ""
            for line in text:
                if line.startswith("*"):
                    table = f"{family} {line[1:]}"
                    out[table] = {"chains": [], "rules": {}}
                elif line.startswith(":"):
                    out[table]["chains"].append(line)
                elif line.startswith("-A "):
                    chain = line.split()[1]
                    tag = ",".join(sorted(n for n, marks in tags.items()
                                          if any(m in line for m in marks)))
                    out[table]["rules"].setdefault(chain, {}).setdefault(tag, []).append(line)
        ns["iptables"] = out
    return snap


def without_firewall(snap: dict[str, Any]) -> dict[str, Any]:
    snap = copy.deepcopy(snap)
    for ns in snap.values():
        for part in FIREWALL_FREE:
            ns.pop(part, None)
    return snap


# --- running one scenario on one tool ---------------------------------------------------------

@dataclass
class Call:
    command: str
    ctr: str
    request: Any  # a NetworkOptions dict, or raw text


@dataclass
class Trace:
    tool: str
    before: dict[str, Any]
    results: list[Result]
    after: dict[str, Any]
    dns: dict[str, list[str]]
    torn: list[Result]
    end: dict[str, Any]


def static_macs(calls: list[Call]) -> set[str]:
    out = set()
    for c in calls:
        if isinstance(c.request, dict):
            for per in c.request.get("networks", {}).values():
                if isinstance(per, dict) and isinstance(per.get("static_mac"), str):
                    out.add(per["static_mac"].lower())
    return out


def play(tool: str, factory: Callable[[], Netns], tmp: Path, calls: list[Call],
         prepare: Callable[[Netns], None] | None = None, *, teardown: bool = True) -> Trace:
    """Setups in order, a snapshot, then teardowns of the same requests in reverse."""
    side = Side(tool, factory, tmp / tool)
    if prepare:
        prepare(side.host)
    for c in calls:
        side.ctr(c.ctr)
    macs = static_macs(calls)
    before = side.snapshot(macs)
    results = [side.run(c.command, c.ctr, c.request) for c in calls]
    after = side.snapshot(macs)
    dns = side.dns_files()
    torn = [side.run("teardown", c.ctr, c.request) for c in reversed(calls)
            if teardown and c.command == "setup"]
    return Trace(tool, before, results, after, dns, torn, side.snapshot(macs))


def status(res: Result, request: Any) -> Any:
    """The reply, with MACs the tool made up itself blanked; a static one must come back."""
    if res.error_class != "ok" or not isinstance(res.out, dict):
        return res.error_class
    out = copy.deepcopy(res.out)
    for name, block in out.items():
        per = request["networks"][name]
        for iface in block.get("interfaces", {}).values():
            if per.get("static_mac"):
                assert iface["mac_address"] == per["static_mac"].lower()
            else:
                iface["mac_address"] = "<generated>"
    return out


def compare(ref: Trace, got: Trace, calls: list[Call], *, firewall: bool) -> None:
    what = f"{got.tool} against netavark 1.4"
    assert [status(r, c.request) for r, c in zip(got.results, calls, strict=True)] == \
        [status(r, c.request) for r, c in zip(ref.results, calls, strict=True)], what
    assert [r.error_class for r in got.torn] == [r.error_class for r in ref.torn], \
        (what, [(r.code, r.out) for r in ref.torn], [(r.code, r.out, r.err) for r in got.torn])
    nets = [n for c in calls if isinstance(c.request, dict)
            for n in (c.request.get("network_info") or {}).values() if isinstance(n, dict)]

    def strip(snap: dict[str, Any]) -> dict[str, Any]:
        return iptables_by_network(snap, nets) if firewall else without_firewall(snap)

    assert strip(got.before) == strip(ref.before), what
    assert_same(strip(known_deviations(ref.after)), strip(known_deviations(got.after)), what)
    assert got.dns == ref.dns, what
    assert_same(strip(ref.end), strip(got.end), f"{what}, after teardown")
    back_to_before(ref)
    back_to_before(got)


def back_to_before(t: Trace) -> None:
    """After the teardowns, each netns is as before but for what netavark 1.4 keeps on
    purpose (spec/netavark.md §4.1): its base chains, and forwarding on (it never turns it off;
    the kernel turns accept_redirects off with it)."""
    def kept(snap: dict[str, Any]) -> dict[str, Any]:
        snap = copy.deepcopy(snap)
        for ns in snap.values():
            ns.pop("iptables", None)
            ns["sysctl"] = {k: v for k, v in ns["sysctl"].items()
                            if not k.endswith(("/forwarding", "ip_forward", "all/accept_redirects"))}
        return snap
    assert_same(kept(t.before), kept(t.end), f"{t.tool}: after teardown", ("before", "after"))


def assert_same(ref: dict[str, Any], got: dict[str, Any], what: str,
                labels: tuple[str, str] = ("netavark", "burrow")) -> None:
    """Equality, failing with the differing leaves only (snapshots are large)."""
    if ref == got:
        return
    diffs: list[str] = []

    def walk(a: Any, b: Any, path: str) -> None:
        if isinstance(a, dict) and isinstance(b, dict):
            for k in sorted(set(a) | set(b)):
                walk(a.get(k, "<absent>"), b.get(k, "<absent>"), f"{path}/{k}")
        elif isinstance(a, list) and isinstance(b, list) and a != b:
            diffs.extend(f"{path}: {labels[0]} only {x}" for x in a if x not in b)
            diffs.extend(f"{path}: {labels[1]} only {x}" for x in b if x not in a)
        elif a != b:
            diffs.append(f"{path}: {labels[0]} {a!r}, {labels[1]} {b!r}")

    walk(ref, got, "")
    raise AssertionError(f"{what}: kernel state differs:\n" + "\n".join(diffs[:60]))


def run_all(factory: Callable[[], Netns], tmp: Path, calls: list[Call],
            prepare: Callable[[Netns], None] | None = None, *, nftables: bool = True
            ) -> dict[str, Trace]:
    tools = ["netavark", "iptables"] + (["nftables"] if nftables else [])
    traces = {t: play(t, factory, tmp, calls, prepare) for t in tools}
    ref = traces["netavark"]
    compare(ref, traces["iptables"], calls, firewall=True)
    if nftables:
        compare(ref, traces["nftables"], calls, firewall=False)
    return traces


# --- inputs: the captured Podman setups ---------------------------------------------------------

SAMPLES = {name: rec for name, rec in records().items()
           if rec["argv"][-2] == "setup"}


@pytest.mark.parametrize("name", sorted(SAMPLES))
def test_podman_sample(netns_factory: Callable[[], Netns], tmp_path: Path, name: str) -> None:
    request = SAMPLES[name]["stdin"]
    traces = run_all(netns_factory, tmp_path, [Call("setup", "c", request)])
    # Netavark's own result is what Podman got when the sample was captured.
    assert traces["netavark"].results[0].error_class == "ok"
    for trace in traces.values():
        assert [r.error_class for r in trace.torn] == ["ok"], trace.tool

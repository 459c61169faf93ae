"""iptables backend: the whole ruleset as ONE `iptables-restore --noflush` batch per family.

Chain names are Netavark 1.4's (spec §4.1). `--noflush` keeps everyone else's rules, while each
`:CHAIN - [0:0]` line creates or flushes one of OUR chains, so every batch re-adds all of their
rules from state: idempotent and self-repairing, in one exec per family.

Only the jumps from built-in chains can't be flushed. To keep them re-renderable they are fixed
(one per built-in chain, the same for every network); per-network jumps that Netavark puts into
built-in chains live in our own chains instead:
- `POSTROUTING -s <subnet> -j NETAVARK-<H>` sits in NETAVARK-HOSTPORT-MASQ, after the mark rule;
- `FORWARD -j NETAVARK_ISOLATION_1` is the first rule of NETAVARK_FORWARD.
State records which built-in jumps are in place; a batch deletes (`-D`) and re-adds them. If the
state lied (someone ran `iptables -F`) the `-D` fails the whole batch atomically; we then ask
the kernel with `-C` which jumps exist and retry once (extra execs only on that failure path).
"""

from __future__ import annotations

import hashlib
import shlex
from collections.abc import Sequence
from dataclasses import dataclass
from ipaddress import IPv4Network, IPv6Network

from netns.errors import BurrowError
from netns.firewall.rules import MASQ_MARK, PortDnat, Ruleset
from netns.firewall.runner import Runner, error_text, subprocess_runner
from netns.schema import IPAddress, IPNetwork

FORWARD_CHAIN = "NETAVARK_FORWARD"
ISO1, ISO2, ISO3 = "NETAVARK_ISOLATION_1", "NETAVARK_ISOLATION_2", "NETAVARK_ISOLATION_3"
DNAT_CHAIN = "NETAVARK-HOSTPORT-DNAT"
MARK_CHAIN = "NETAVARK-HOSTPORT-SETMARK"
MASQ_CHAIN = "NETAVARK-HOSTPORT-MASQ"
FILTER_CHAINS = (FORWARD_CHAIN, ISO1, ISO2, ISO3)
NAT_CHAINS = (DNAT_CHAIN, MARK_CHAIN, MASQ_CHAIN)
MARK = f"{MASQ_MARK:#x}/{MASQ_MARK:#x}"
_LOCALHOST: dict[int, IPNetwork] = {4: IPv4Network("127.0.0.1/32"), 6: IPv6Network("::1/128")}
_MULTICAST: dict[int, IPNetwork] = {4: IPv4Network("224.0.0.0/4"), 6: IPv6Network("ff00::/8")}
TOOLS = {4: ("iptables-restore", "iptables"), 6: ("ip6tables-restore", "ip6tables")}


@dataclass(frozen=True)
class Jump:
    """A rule in a built-in chain (the only rules a batch can't flush)."""

    table: str
    chain: str
    spec: str

    def key(self, family: int) -> str:
        return f"v{family} {self.table} {self.chain}"


JUMPS = (
    Jump("filter", "FORWARD",
         '-m comment --comment "netavark firewall plugin rules" -j NETAVARK_FORWARD'),
    Jump("nat", "PREROUTING", f"-m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"),
    Jump("nat", "OUTPUT", f"-m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"),
    Jump("nat", "POSTROUTING", f"-j {MASQ_CHAIN}"),
)


def net_hash(name: str) -> str:
    """First 13 upper-case hex digits of SHA-512(network name), Netavark's chain suffix."""
    return hashlib.sha512(name.encode()).hexdigest()[:13].upper()


def net_chain(name: str) -> str:
    return f"NETAVARK-{net_hash(name)}"


def dn_chain(name: str) -> str:
    return f"NETAVARK-DN-{net_hash(name)}"


def _cidr(net: IPNetwork) -> str:
    return str(net)


def _host(ip: IPAddress) -> str:
    return f"{ip}/{ip.max_prefixlen}"


def _hostport(ip: IPAddress, port: str) -> str:
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def _dport(p: PortDnat) -> str:
    ports = str(p.host_port) if p.range == 1 else f"{p.host_port}:{p.host_port_end}"
    return f"-p {p.protocol} -m {p.protocol} --dport {ports}"


def _per_net_chains(rs: Ruleset) -> dict[str, None]:
    chains = dict.fromkeys(net_chain(s.network_name) for s in rs.subnets)
    chains |= dict.fromkeys(dn_chain(p.network_name) for p in rs.ports)
    return chains


def render(family: int, old: Ruleset, new: Ruleset, present: frozenset[str]) -> str:
    """One `iptables-restore --noflush` input for `family` (rulesets already family-filtered).

    `present` holds the keys of the built-in jumps believed installed: they are deleted, then
    re-added when `new` isn't empty. Chains no longer needed are flushed and deleted.
    """
    keep = not new.empty
    own = _per_net_chains(new) if keep else {}
    stale = [c for c in _per_net_chains(old) if c not in own]
    lines: list[str] = ["*filter"]
    lines += [f":{c} - [0:0]" for c in FILTER_CHAINS]
    lines += _jump_lines(family, "filter", present, keep)
    if keep:
        lines += _filter_rules(new)
    else:
        lines += [f"-X {c}" for c in FILTER_CHAINS]
    lines += ["COMMIT", "*nat"]
    lines += [f":{c} - [0:0]" for c in (*NAT_CHAINS, *own, *stale)]
    lines += _jump_lines(family, "nat", present, keep)
    if keep:
        lines += _nat_rules(family, new)
    lines += [f"-X {c}" for c in (*stale, *(() if keep else NAT_CHAINS))]
    lines += ["COMMIT", ""]
    return "\n".join(lines)


def _jump_lines(family: int, table: str, present: frozenset[str], keep: bool) -> list[str]:
    jumps = [j for j in JUMPS if j.table == table]
    out = [f"-D {j.chain} {j.spec}" for j in jumps if j.key(family) in present]
    if keep:
        out += [f"-A {j.chain} {j.spec}" for j in jumps]
    return out


def _filter_rules(rs: Ruleset) -> list[str]:
    out = [f"-A {FORWARD_CHAIN} -j {ISO1}"]
    # Same semantics as the nftables layout: isolated bridges drop into other isolated ones
    # (ISOLATION_2); strict ones also into non-isolated ones (ISOLATION_3, then _2).
    for iso in rs.isolation:
        if iso.isolate != "false":
            target = ISO3 if iso.isolate == "strict" else ISO2
            out.append(f"-A {ISO1} -i {iso.bridge} ! -o {iso.bridge} -j {target}")
            out.append(f"-A {ISO2} -o {iso.bridge} -j DROP")
    out += [f"-A {ISO3} -o {i.bridge} -j DROP" for i in rs.isolation if i.isolate == "false"]
    out.append(f"-A {ISO3} -j {ISO2}")
    for s in rs.subnets:
        net = _cidr(s.subnet)
        out.append(f"-A {FORWARD_CHAIN} -d {net} -m conntrack --ctstate RELATED,ESTABLISHED "
                   f"-j ACCEPT")
        out.append(f"-A {FORWARD_CHAIN} -s {net} -j ACCEPT")
    return out


def _nat_rules(family: int, rs: Ruleset) -> list[str]:
    out = [
        f'-A {MASQ_CHAIN} -m comment --comment "netavark portfw masq mark" '
        f"-m mark --mark {MARK} -j MASQUERADE",
        f"-A {MARK_CHAIN} -j MARK --set-xmark {MARK}",
    ]
    for s in rs.subnets:
        chain, net = net_chain(s.network_name), _cidr(s.subnet)
        out.append(f"-A {MASQ_CHAIN} -s {net} -j {chain}")
        out.append(f"-A {chain} -d {net} -j ACCEPT")
        out.append(f"-A {chain} ! -d {_MULTICAST[family]} -j MASQUERADE")
    # DNS redirects first, so a port mapping of 53 can't shadow them.
    for d in rs.dns:
        for proto in ("udp", "tcp"):
            out.append(f"-A {DNAT_CHAIN} -d {_host(d.gateway)} -p {proto} -m {proto} --dport 53 "
                       f"-j DNAT --to-destination {_hostport(d.gateway, str(d.port))}")
    for p in rs.ports:
        out += _port_rules(family, p)
    return out


def _port_rules(family: int, p: PortDnat) -> list[str]:
    dn = dn_chain(p.network_name)
    daddr = f"-d {_host(p.host_ip)} " if p.host_ip is not None else ""
    dport = _dport(p)
    comment = f'-m comment --comment "dnat name: {p.network_name} id: {p.container_id}"'
    if p.range == 1:
        target = _hostport(p.container_ip, str(p.container_port))
    else:
        # `/<first host port>` makes the kernel shift the range 1:1 instead of picking any port.
        ports = f"{p.container_port}-{p.container_port_end}/{p.host_port}"
        target = _hostport(p.container_ip, ports)
    return [
        f"-A {DNAT_CHAIN} {daddr}{dport} {comment} -j {dn}",
        f"-A {dn} -s {_cidr(p.subnet)} {daddr}{dport} -j {MARK_CHAIN}",
        f"-A {dn} -s {_LOCALHOST[family]} {daddr}{dport} -j {MARK_CHAIN}",
        f"-A {dn} {daddr}{dport} -j DNAT --to-destination {target}",
    ]


class IptablesBackend:
    """Applies a render: one `iptables-restore`, plus one `ip6tables-restore` if v6 is involved."""

    name = "iptables"

    def __init__(
        self, *, argv_prefix: Sequence[str] = (), runner: Runner = subprocess_runner
    ) -> None:
        self.prefix = list(argv_prefix)
        self.runner = runner

    def apply(self, old: Ruleset | None, new: Ruleset, installed: frozenset[str]) -> frozenset[str]:
        old = old or Ruleset()  # unknown: declaring new's chains flushes them; -C probes jumps
        result = set(installed)
        done: list[int] = []
        try:
            for family in (4, 6):
                mine = frozenset(k for k in installed if k.startswith(f"v{family} "))
                old_f, new_f = old.for_family(family), new.for_family(family)
                if old_f.empty and new_f.empty and not mine:
                    continue  # nothing of this family, now or before: no exec at all
                now = self._apply_family(family, old_f, new_f, mine)
                result = (result - mine) | now
                done.append(family)
        except BurrowError:
            # Put families already switched back to `old`, so kernel and (restored) state agree.
            for family in done:
                mine = frozenset(k for k in result if k.startswith(f"v{family} "))
                try:
                    self._apply_family(family, new.for_family(family), old.for_family(family),
                                       mine)
                except BurrowError:
                    pass  # best effort: the original error is the one to report
            raise
        return frozenset(result)

    def _apply_family(
        self, family: int, old: Ruleset, new: Ruleset, present: frozenset[str]
    ) -> frozenset[str]:
        restore = TOOLS[family][0]
        argv = [*self.prefix, restore, "-w", "--noflush"]
        res = self.runner(argv, render(family, old, new, present))
        if res.returncode != 0:
            # Maybe the state lied about the built-in jumps (a `-D` of a flushed one, or an
            # `-X` of a chain still jumped to): ask the kernel with `-C`, retry once.
            probed = self._probe(family)
            if probed != present:
                res = self.runner(argv, render(family, old, new, probed))
        if res.returncode != 0:
            raise BurrowError(f"apply batch ({restore}): {error_text(res)}")
        return frozenset(j.key(family) for j in JUMPS) if not new.empty else frozenset()

    def _probe(self, family: int) -> frozenset[str]:
        tool = TOOLS[family][1]
        found = set()
        for j in JUMPS:
            argv = [*self.prefix, tool, "-w", "-t", j.table, "-C", j.chain, *shlex.split(j.spec)]
            if self.runner(argv, "").returncode == 0:
                found.add(j.key(family))
        return frozenset(found)

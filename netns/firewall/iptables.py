"""iptables backend in Netavark 1.4's layout, changed in place: only this change's rules.

Layout (spec §4.1, checked against Debian's netavark 1.4 with `iptables-save`):
- filter: `NETAVARK_FORWARD` (jumped to from FORWARD), `NETAVARK_ISOLATION_1/2` only when a
  network isolates (`FORWARD -j NETAVARK_ISOLATION_1` inserted first);
- nat: `NETAVARK-<H>` per network (jumped to from POSTROUTING per subnet), `NETAVARK-DN-<H>`
  per network with port mappings, `NETAVARK-HOSTPORT-DNAT/-SETMARK/-MASQ`;
- the base chains, their jumps and the two mark rules stay after the last teardown.

Every change is one `iptables-restore --noflush` batch per family made of `-N/-A/-I/-D/-X`
lines, so rules another tool made (Netavark, for its containers) are never flushed or moved.
A batch can't say "add if missing", so the plan asks an oracle what exists:
- `Ledger`: burrow's bookkeeping (chains and network rules it knows it made), no exec at all.
  Whatever it gets wrong fails the batch instead of doing harm: a network's rules are always
  sent together with `-N NETAVARK-<H>`, which fails if Netavark made them first; a rule added
  to a chain that is gone, or deleted when absent, fails too.
- `Saved`: the kernel's own `iptables-save`, asked only when the ledger's batch failed (and
  by `firewall-reload`). A plan from it is exact.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any, Protocol

from netns.errors import BurrowError
from netns.firewall import ipt_handles
from netns.firewall import rules as model
from netns.firewall.ipt_handles import HandleCounter
from netns.firewall.nfnl import Nfnl
from netns.firewall.rules import MASQ_MARK, PortDnat
from netns.firewall.runner import ExecResult, Runner, error_text, subprocess_runner
from netns.firewall.state import port_key
from netns.firewall.types import NetworkFw, PortFw
from netns.schema import IPAddress, IPNetwork

FORWARD_CHAIN = "NETAVARK_FORWARD"
ISO1, ISO2, ISO3 = "NETAVARK_ISOLATION_1", "NETAVARK_ISOLATION_2", "NETAVARK_ISOLATION_3"
DNAT_CHAIN = "NETAVARK-HOSTPORT-DNAT"
MARK_CHAIN = "NETAVARK-HOSTPORT-SETMARK"
MASQ_CHAIN = "NETAVARK-HOSTPORT-MASQ"
MARK = f"{MASQ_MARK:#x}/{MASQ_MARK:#x}"
_LOCALHOST: dict[int, IPNetwork] = {4: IPv4Network("127.0.0.1/32"), 6: IPv6Network("::1/128")}
_MULTICAST: dict[int, IPNetwork] = {4: IPv4Network("224.0.0.0/4"), 6: IPv6Network("ff00::/8")}
TOOLS = {4: ("iptables-restore", "iptables-save"), 6: ("ip6tables-restore", "ip6tables-save")}
FWD_JUMP = f'-m comment --comment "netavark firewall plugin rules" -j {FORWARD_CHAIN}'
LOCAL_JUMP = f"-m addrtype --dst-type LOCAL -j {DNAT_CHAIN}"
MASQ_RULE = f'-m comment --comment "netavark portfw masq mark" -m mark --mark {MARK} -j MASQUERADE'
MARK_RULE = f"-j MARK --set-xmark {MARK}"


def net_chain(net: NetworkFw) -> str:
    return f"NETAVARK-{net.hash}"


def dn_chain(net: NetworkFw) -> str:
    return f"NETAVARK-DN-{net.hash}"


# -- what exists ----------------------------------------------------------------------------


class Oracle(Protocol):
    def has_chain(self, table: str, chain: str) -> bool: ...
    def has_rule(self, table: str, chain: str, spec: str) -> bool: ...
    def count(self, table: str, chain: str) -> int: ...


@dataclass
class Saved:
    """The kernel's tables, parsed from `iptables-save` (exact)."""

    chains: dict[tuple[str, str], list[str]] = field(default_factory=dict)

    @classmethod
    def parse(cls, text: str) -> Saved:
        out = cls()
        table = ""
        for line in text.splitlines():
            if line.startswith("*"):
                table = line[1:].strip()
            elif line.startswith(":"):
                out.chains.setdefault((table, line[1:].split()[0]), [])
            elif line.startswith("-A "):
                chain, _, spec = line[3:].partition(" ")
                out.chains.setdefault((table, chain), []).append(spec.strip())
        return out

    def has_chain(self, table: str, chain: str) -> bool:
        return (table, chain) in self.chains

    def has_rule(self, table: str, chain: str, spec: str) -> bool:
        return spec in self.chains.get((table, chain), ())

    def count(self, table: str, chain: str) -> int:
        return len(self.chains.get((table, chain), ()))


@dataclass
class Ledger:
    """burrow's bookkeeping for one family: no exec, and any mistake fails the batch.

    `base`: NETAVARK_FORWARD, the HOSTPORT chains, their jumps and mark rules; `iso`/`iso3`:
    the isolation chains; `nets`: hash -> [isolate, bridge] of networks whose rules are in;
    `dn`: hashes whose NETAVARK-DN chain exists. `fresh` hashes (bridge just made) count as
    absent whatever the ledger says: their rules went with the bridge's last teardown.
    """

    fwd: bool = False
    hostport: bool = False
    iso: bool = False
    iso3: bool = False
    isojump: bool = False
    nets: dict[str, list[str]] = field(default_factory=dict)
    dn: set[str] = field(default_factory=set)
    fresh: frozenset[str] = frozenset()
    teardown: bool = False  # a teardown presumes its networks' chains and rules are there

    @classmethod
    def from_json(cls, obj: Any) -> Ledger:
        if not isinstance(obj, dict):
            return cls()
        try:
            return cls(bool(obj.get("fwd")), bool(obj.get("hostport")), bool(obj.get("iso")),
                       bool(obj.get("iso3")), bool(obj.get("isojump")),
                       {str(k): [str(v[0]), str(v[1])] for k, v in obj.get("nets", {}).items()},
                       {str(h) for h in obj.get("dn", [])})
        except (TypeError, IndexError, AttributeError):
            return cls()

    def to_json(self) -> dict[str, Any]:
        return {"fwd": self.fwd, "hostport": self.hostport, "iso": self.iso, "iso3": self.iso3,
                "isojump": self.isojump, "nets": dict(sorted(self.nets.items())),
                "dn": sorted(self.dn)}

    def _net(self, chain: str) -> bool:
        for prefix in ("NETAVARK-DN-", "NETAVARK-"):
            if chain.startswith(prefix):
                h = chain[len(prefix):]
                if self.teardown and prefix == "NETAVARK-":
                    return True
                if h in self.fresh:
                    return False
                return h in (self.dn if prefix == "NETAVARK-DN-" else self.nets)
        return False

    def has_chain(self, table: str, chain: str) -> bool:
        if self.teardown and chain not in (ISO3,) and not chain.startswith("NETAVARK-DN-"):
            return True  # presumed; a `-D` or `-X` on a missing chain fails (then: exact)
        if chain == FORWARD_CHAIN:
            return self.fwd
        if chain in (DNAT_CHAIN, MARK_CHAIN, MASQ_CHAIN):
            return self.hostport
        if chain in (ISO1, ISO2):
            return self.iso
        if chain == ISO3:
            return self.iso3
        return self._net(chain)

    def has_rule(self, table: str, chain: str, spec: str) -> bool:
        raise AssertionError("the ledger answers by a rule's owner (_ledger_has)")

    def count(self, table: str, chain: str) -> int:
        if chain == ISO1:  # one rule per isolated network
            return sum(1 for iso, _ in self.nets.values() if iso != "false")
        return 0  # only our own rules, just deleted; any other makes `-X` fail (then: exact)


# -- the plan --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Rule:
    table: str
    chain: str
    spec: str
    owner: str  # what the ledger ties it to: "fwd", "hostport", "isojump", "net:<H>", "ctr"
    port: str = field(default="", compare=False)  # a container's rule: its port key


class Plan:
    """Lines of one `iptables-restore` batch; queries see the batch's own earlier lines."""

    def __init__(self, oracle: Oracle | Ledger, *, teardown: bool = False) -> None:
        self.oracle = oracle
        self.teardown = teardown
        self.lines: dict[str, list[str]] = {"nat": [], "filter": []}
        self.ports: list[str] = []  # per nat line added by `add`: its port key ("" if none)
        self.made: set[tuple[str, str]] = set()
        self.dropped: set[tuple[str, str]] = set()
        self.added: set[tuple[str, str, str]] = set()
        self.deleted: set[tuple[str, str, str]] = set()
        self.counts: dict[tuple[str, str], int] = {}
        self.presume: set[tuple[str, str]] = set()  # chains a ledger plan takes as there

    def _exists(self, r: Rule) -> bool:
        key = (r.table, r.chain, r.spec)
        if key in self.added:
            return True
        if key in self.deleted:
            return False
        o = self.oracle
        if isinstance(o, Ledger):
            return _ledger_has(o, r, self.teardown)
        return o.has_rule(r.table, r.chain, r.spec)

    def has_chain(self, table: str, chain: str) -> bool:
        if (table, chain) in self.made:
            return True
        if (table, chain) in self.dropped:
            return False
        if isinstance(self.oracle, Ledger) and (table, chain) in self.presume:
            return True
        return self.oracle.has_chain(table, chain)

    def chain(self, table: str, chain: str) -> None:
        if not self.has_chain(table, chain):
            self.lines[table].append(f"-N {chain}")
            self.made.add((table, chain))

    def add(self, r: Rule, position: int | None = None) -> None:
        if self._exists(r):
            return
        where = f"-I {r.chain} {position}" if position else f"-A {r.chain}"
        self.lines[r.table].append(f"{where} {r.spec}")
        if r.table == "nat":
            self.ports.append(r.port)
        self.added.add((r.table, r.chain, r.spec))
        self.counts[(r.table, r.chain)] = self.counts.get((r.table, r.chain), 0) + 1

    def delete(self, r: Rule) -> None:
        if not self.has_chain(r.table, r.chain) or not self._exists(r):
            return
        self.lines[r.table].append(f"-D {r.chain} {r.spec}")
        self.deleted.add((r.table, r.chain, r.spec))
        self.counts[(r.table, r.chain)] = self.counts.get((r.table, r.chain), 0) - 1

    def remaining(self, table: str, chain: str) -> int:
        left = self.counts.get((table, chain), 0)
        if (table, chain) not in self.made:
            left += self.oracle.count(table, chain)
        return left

    def drop_chain_if_empty(self, table: str, chain: str) -> None:
        if not self.has_chain(table, chain):
            return
        if self.remaining(table, chain) <= 0:
            self.lines[table].append(f"-X {chain}")
            self.dropped.add((table, chain))

    def render(self) -> str:
        if not any(self.lines.values()):
            return ""
        # nat first: it holds the guard (-N NETAVARK-<H>) that stops a wrong ledger's batch
        # before anything is committed in filter.
        out: list[str] = []
        for table in ("nat", "filter"):
            if self.lines[table]:
                out += [f"*{table}", *self.lines[table], "COMMIT"]
        return "\n".join(out) + "\n"


def _ledger_has(led: Ledger, r: Rule, teardown: bool) -> bool:
    if r.owner == "ctr":
        return teardown  # a container's own rules: new on setup, there on teardown
    if teardown and not r.owner.startswith("iso3:"):
        if r.owner.startswith("net:"):
            return True  # whoever made them; if they are gone, `-D` fails (then: exact)
    if r.owner in ("fwd", "hostport", "isojump", "iso3"):
        return bool(getattr(led, r.owner))
    if r.owner.startswith("net:"):
        h = r.owner[4:]
        return h in led.nets and h not in led.fresh
    if r.owner.startswith("iso3:"):  # a non-isolated bridge's drop in ISOLATION_3
        bridge = r.owner[5:]
        return led.iso3 and any(v == ["false", bridge] for v in led.nets.values())
    return False


# -- Netavark 1.4's rules, in `iptables-save`'s own spelling (so Saved can compare text) -------


def _host(ip: IPAddress) -> str:
    return f"{ip}/{ip.max_prefixlen}"


def _hostport(ip: IPAddress, port: str) -> str:
    return f"{ip}:{port}" if ip.version == 4 else f"[{ip}]:{port}"


def _dport(p: PortDnat) -> str:
    ports = str(p.host_port) if p.range == 1 else f"{p.host_port}:{p.host_port_end}"
    return f"-p {p.protocol} -m {p.protocol} --dport {ports}"


def _outbound(net: NetworkFw, family: int) -> str:
    """MASQUERADE, or with `outbound_addr4/6` SNAT to that address (as iptables-save says it)."""
    addr = net.outbound(family)
    return "MASQUERADE" if addr is None else f"SNAT --to-source {addr}"


def network_rules(family: int, net: NetworkFw) -> list[tuple[Rule, int | None]]:
    """A network's own rules (teardown policy OnComplete), in Netavark's order."""
    owner, chain = f"net:{net.hash}", net_chain(net)
    out: list[tuple[Rule, int | None]] = []
    for s in (s for s in net.subnets if s.version == family):
        out += [(Rule("nat", chain, f"-d {s} -j ACCEPT", owner), None),
                (Rule("nat", chain, f"! -d {_MULTICAST[family]} -j {_outbound(net, family)}",
                      owner), None),
                (Rule("nat", "POSTROUTING", f"-s {s} -j {chain}", owner), None)]
        if net.isolate != "false":
            target = ISO3 if net.isolate == "strict" else ISO2
            out += [(Rule("filter", ISO1, f"-i {net.bridge} ! -o {net.bridge} -j {target}",
                          owner), 1),
                    (Rule("filter", ISO2, f"-o {net.bridge} -j DROP", owner), 1)]
        out += [(Rule("filter", FORWARD_CHAIN,
                      f"-d {s} -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT", owner), None),
                (Rule("filter", FORWARD_CHAIN, f"-s {s} -j ACCEPT", owner), None)]
    if net.dns_port is not None and net.dns_port != 53:
        for gw in (g for g in net.gateways if g.version == family):
            out.append((Rule("nat", DNAT_CHAIN, f"-d {_host(gw)} -p udp -m udp --dport 53 -j DNAT "
                             f"--to-destination {_hostport(gw, str(net.dns_port))}", owner), None))
    return out


def port_rules(family: int, pf: PortFw) -> list[Rule]:
    """One container's port forwards (teardown policy: always removed)."""
    out = []
    for p in (d for d in model.port_dnats(pf) if d.family == family):
        dn, dport = dn_chain(pf.network), _dport(p)
        daddr = f"-d {_host(p.host_ip)} " if p.host_ip is not None else ""
        if p.range == 1:
            target = _hostport(p.container_ip, str(p.container_port))
        else:  # `/<first host port>`: the kernel shifts the range 1:1
            target = _hostport(p.container_ip,
                               f"{p.container_port}-{p.container_port_end}/{p.host_port}")
        comment = f'-m comment --comment "dnat name: {p.network_name} id: {p.container_id}"'
        key = port_key(pf)
        out += [Rule("nat", dn, f"-s {p.subnet} {daddr}{dport} -j {MARK_CHAIN}", "ctr", key),
                Rule("nat", dn, f"-s {_LOCALHOST[family]} {daddr}{dport} -j {MARK_CHAIN}",
                     "ctr", key),
                Rule("nat", dn, f"{daddr}{dport} -j DNAT --to-destination {target}", "ctr", key),
                Rule("nat", DNAT_CHAIN, f"{dport} {comment} -j {dn}", "ctr", key)]
    return out


def _has_family(pf: PortFw, family: int) -> bool:
    return (pf.container_v4 if family == 4 else pf.container_v6) is not None


def plan_setup(plan: Plan, family: int, nets: Sequence[NetworkFw], ports: Sequence[PortFw],
               peers: Iterable[str] = ()) -> None:
    """What Netavark 1.4's setup_network + setup_port_forward add, each only if missing."""
    for net in nets:
        if not any(s.version == family for s in net.subnets):
            continue
        plan.chain("nat", net_chain(net))
        position = 1
        if net.isolate != "false":
            plan.chain("filter", ISO1)
            plan.chain("filter", ISO2)
            if net.isolate == "strict":
                _strict(plan, peers)
            plan.add(Rule("filter", "FORWARD", f"-j {ISO1}", "isojump"), 1)
            position = 2
        elif plan.has_chain("filter", ISO3):
            plan.add(Rule("filter", ISO3, f"-o {net.bridge} -j DROP", f"iso3:{net.bridge}"), 1)
        plan.chain("filter", FORWARD_CHAIN)
        if any(p.table == "nat" and p.chain == DNAT_CHAIN for p, _ in network_rules(family, net)):
            plan.chain("nat", DNAT_CHAIN)
        for rule, pos in network_rules(family, net):
            plan.add(rule, pos)
        plan.add(Rule("filter", "FORWARD", FWD_JUMP, "fwd"), position)
    for pf in (p for p in ports if _has_family(p, family)):
        for chain in (MARK_CHAIN, MASQ_CHAIN, DNAT_CHAIN):
            plan.chain("nat", chain)
        if pf.mappings:
            plan.chain("nat", dn_chain(pf.network))
        plan.add(Rule("nat", MARK_CHAIN, MARK_RULE, "hostport"))
        plan.add(Rule("nat", MASQ_CHAIN, MASQ_RULE, "hostport"))
        plan.add(Rule("nat", "POSTROUTING", f"-j {MASQ_CHAIN}", "hostport"), 1)
        for rule in port_rules(family, pf):
            plan.add(rule)
        plan.add(Rule("nat", "PREROUTING", LOCAL_JUMP, "hostport"))
        plan.add(Rule("nat", "OUTPUT", LOCAL_JUMP, "hostport"))


def _strict(plan: Plan, peers: Iterable[str]) -> None:
    """burrow's `strict` on this layout (1.4 has none): ISOLATION_3 drops into every
    non-isolated bridge burrow knows, then goes on to ISOLATION_2."""
    plan.chain("filter", ISO3)
    for bridge in peers:
        plan.add(Rule("filter", ISO3, f"-o {bridge} -j DROP", f"iso3:{bridge}"), 1)
    plan.add(Rule("filter", ISO3, f"-j {ISO2}", "iso3"))


def plan_teardown(plan: Plan, family: int, nets: Sequence[NetworkFw],
                  ports: Sequence[PortFw]) -> None:
    """Netavark 1.4's teardown: a container's port rules; on complete teardown (`nets`: the
    bridges deleted) the network's rules and its emptied chains. Base chains stay."""
    complete = {n.hash for n in nets}
    for pf in (p for p in ports if _has_family(p, family) and p.mappings):
        plan.presume.add(("nat", dn_chain(pf.network)))  # whoever made it
    for pf in (p for p in ports if _has_family(p, family)):
        for rule in port_rules(family, pf):
            plan.delete(rule)
        if pf.network.hash in complete and pf.mappings:  # 1.4: only if it had mappings
            plan.drop_chain_if_empty("nat", dn_chain(pf.network))
    for net in nets:
        if not any(s.version == family for s in net.subnets):
            continue
        for rule, _ in network_rules(family, net):
            plan.delete(rule)
        if net.isolate == "false" and plan.has_chain("filter", ISO3):
            plan.delete(Rule("filter", ISO3, f"-o {net.bridge} -j DROP", f"iso3:{net.bridge}"))
        plan.drop_chain_if_empty("nat", net_chain(net))
        plan.drop_chain_if_empty("nat", dn_chain(net))  # ports torn down before, if any
        if net.isolate != "false" and plan.remaining("filter", ISO1) <= 0:
            plan.delete(Rule("filter", "FORWARD", f"-j {ISO1}", "isojump"))


# -- the adapter ------------------------------------------------------------------------------


def families(nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> list[int]:
    fams = {s.version for n in nets for s in n.subnets}
    fams |= {f for p in ports for f in (4, 6) if _has_family(p, f)}
    return sorted(fams)


class IptablesFirewall:
    """A `Firewall`: Netavark 1.4's iptables layout, one `iptables-restore` per family.

    With `nfnl` (in-process, iptables-nft), a container's rules are counted in and deleted
    by handle, without `-D`'s search of the chain (firewall/ipt_handles.py)."""

    name = "iptables"

    def __init__(self, store: Any, *, argv_prefix: Sequence[str] = (),
                 runner: Runner = subprocess_runner, nfnl: Nfnl | None = None) -> None:
        self.store = store
        self.prefix = list(argv_prefix)
        self.runner = runner
        self.nfnl = nfnl

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        _validate(networks, ports)
        bridges = set(fresh)
        new = frozenset(n.hash for n in networks if n.bridge in bridges)
        with self.store.locked():
            networks = self.store.pin(networks, bridges, "false")  # 1.4: none unless asked
            ledger = self._ledger()
            if any(self.store.has_port(p) for p in ports):
                # Set up before (a retry): its own rules may be in, so ask the kernel.
                ledger = {4: None, 6: None}
            done: list[int] = []
            counter = None
            if self.nfnl is not None and ports:
                counter = HandleCounter(self.nfnl, {
                    f: sum(len(port_rules(f, p)) for p in ports) for f in (4, 6)})
            with self.store.applying():
                try:
                    for fam in families(networks, ports):
                        led = ledger.get(fam)
                        peers = _peers(led or Ledger.from_json(self._raw().get(f"v{fam}")))
                        plan = self._apply(fam, led, new, False, lambda p, f=fam, pe=peers:
                                           plan_setup(p, f, networks, ports, pe), counter)
                        ledger[fam] = _after_setup(plan, networks, ports, fam, led)
                        done.append(fam)
                except BurrowError:
                    for fam in done:  # the other family back as it was (best effort)
                        self._undo(fam, [n for n in networks if n.hash in new], ports)
                    raise
                recs = counter.records([port_key(p) for p in ports]) if counter else {}
                for key, rec in recs.items():
                    self.store.save_handles(key, rec, self.name)
                self.store.add(networks, ports, self.name, bridges)
                self._save(ledger)

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        _validate(networks, ports)
        keys = [port_key(p) for p in ports]
        with self.store.locked():
            ledger = self._ledger()
            trusted = ledger[4] is not None  # else the handles may be behind the kernel
            with self.store.applying():
                # A container leaving a network that stays: its rules by their handles.
                if networks or not trusted or not self._by_handle(keys):
                    for fam in families(networks, ports):
                        led = ledger.get(fam)
                        plan = self._apply(fam, led, frozenset(), True,
                                           lambda p, f=fam: plan_teardown(p, f, networks, ports))
                        ledger[fam] = _after_teardown(plan, networks, ports, led)
                self.store.drop_handles(keys, self.name)
                self.store.remove(networks, ports)
                self._save(ledger)

    def _by_handle(self, keys: Sequence[str]) -> bool:
        if self.nfnl is None or not keys:
            return False
        return ipt_handles.delete(self.nfnl, [self.store.handles(k, self.name) for k in keys])

    def reload(self) -> None:
        """Add whatever of the saved networks and ports the kernel lacks (asks the kernel)."""
        with self.store.locked():
            snap = self.store.load()
            nets, ports = snap.ordered_networks(), snap.ordered_ports()
            ledger = self._ledger()
            with self.store.applying():
                for fam in families(nets, ports):
                    peers = _peers(ledger.get(fam) or Ledger())
                    plan = self._apply(fam, None, frozenset(), False,
                                       lambda p, f=fam, pe=peers: plan_setup(p, f, nets, ports, pe))
                    ledger[fam] = _after_setup(plan, nets, ports, fam, None)
                self._save(ledger)

    # -- internals ---------------------------------------------------------------------------

    def _raw(self) -> dict[str, Any]:
        raw = self.store.ledger(self.name)
        return raw if isinstance(raw, dict) else {}

    def _ledger(self) -> dict[int, Ledger | None]:
        """Per family; None (ask the kernel) after a transaction that was cut short."""
        raw = self._raw()
        if self.store.interrupted():
            return {4: None, 6: None}
        return {f: Ledger.from_json(raw.get(f"v{f}")) for f in (4, 6)}

    def _save(self, ledger: dict[int, Ledger | None]) -> None:
        raw = self._raw()
        for fam, led in ledger.items():
            if led is not None:
                raw[f"v{fam}"] = led.to_json()
        self.store.save_ledger(self.name, raw)

    def _run(self, argv: list[str], stdin: str) -> ExecResult:
        return self.runner([*self.prefix, *argv], stdin)

    def _apply(self, fam: int, led: Ledger | None, new: frozenset[str], teardown: bool,
               build: Any, counter: HandleCounter | None = None) -> Plan:
        restore, save = TOOLS[fam]
        argv = [restore, "-w", "--noflush"]
        if led is not None:
            led.fresh, led.teardown = new, teardown
            plan = Plan(led, teardown=teardown)
            build(plan)
            text = plan.render()
            if not text or self._restore(argv, fam, plan, text, counter).returncode == 0:
                return plan
        # The ledger was wrong (another tool, a flush, a crash): plan from the kernel's tables.
        res = self._run([save], "")
        if res.returncode != 0:
            raise BurrowError(f"read tables ({save}): {error_text(res)}")
        plan = Plan(Saved.parse(res.stdout), teardown=teardown)
        build(plan)
        text = plan.render()
        if text:
            res = self._restore(argv, fam, plan, text, counter)
            if res.returncode != 0:
                raise BurrowError(f"apply batch ({restore}): {error_text(res)}")
        return plan

    def _restore(self, argv: list[str], fam: int, plan: Plan, text: str,
                 counter: HandleCounter | None) -> ExecResult:
        """Run one batch (learning its rules' handles, when counting)."""
        if counter is None:
            return self._run(argv, text)
        return counter.run(fam, plan.lines, plan.ports, lambda: self._run(argv, text))

    def _undo(self, fam: int, nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        try:
            # What this setup added presumed there; the kernel is asked only if that fails.
            self._apply(fam, Ledger(), frozenset(), True,
                        lambda p: plan_teardown(p, fam, nets, ports))
        except BurrowError:
            pass  # the original error is the one to report


def _validate(nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
    """Every name and value that goes into a rule or a file, before the first change."""
    try:
        model.build(nets, ports)
    except BurrowError as exc:
        raise exc.wrap("firewall (iptables)") from exc


def _peers(led: Ledger) -> list[str]:
    return [bridge for iso, bridge in led.nets.values() if iso == "false"]


def _after_setup(plan: Plan, nets: Sequence[NetworkFw], ports: Sequence[PortFw], fam: int,
                 led: Ledger | None) -> Ledger:
    """The ledger once a setup's batch is in: everything it made or found is there now."""
    out = led or Ledger()
    out.fresh, out.teardown = frozenset(), False
    for net in (n for n in nets if any(s.version == fam for s in n.subnets)):
        out.fwd = True
        out.nets[net.hash] = [net.isolate, net.bridge]
        if net.isolate != "false":
            out.iso = out.isojump = True
    for pf in (p for p in ports if _has_family(p, fam)):
        out.hostport = True
        if pf.mappings:
            out.dn.add(pf.network.hash)
    out.iso3 = out.iso3 or plan.has_chain("filter", ISO3)
    return out


def _after_teardown(plan: Plan, nets: Sequence[NetworkFw], ports: Sequence[PortFw],
                    led: Ledger | None) -> Ledger:
    out = led or Ledger()
    out.fresh, out.teardown = frozenset(), False
    for net in nets:
        out.nets.pop(net.hash, None)
        if not plan.has_chain("nat", dn_chain(net)):
            out.dn.discard(net.hash)
    if ("filter", "FORWARD", f"-j {ISO1}") in plan.deleted:
        out.isojump = False
    return out


__all__ = ["IptablesFirewall", "Plan", "Saved", "dn_chain", "net_chain", "plan_setup",
           "plan_teardown"]

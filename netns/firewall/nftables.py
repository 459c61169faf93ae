"""nftables backend in Netavark 2.x's layout (table `inet netavark`), changed in place.

Layout (spec §4.2 and netavark's `src/firewall/nft.rs`): five base chains, the HOSTPORT and
ISOLATION chains, `nv_<id[:8]>_<subnet>` per subnet and `..._dnat` for its port forwards; the
base rules are added once and stay after the last teardown, as Netavark's do.

Every change is one atomic `nft -j` batch that adds, inserts or deletes only this change's
rules: the table is never flushed or deleted, so chains and rules Netavark 2.x made for other
containers stay. Setup asks nothing first: a small ledger (what burrow knows is there) decides
what to add, and its guesses are guarded, because a network's rules travel with `create chain`
of its subnet chain and the base rules with `create chain NETAVARK-HOSTPORT-SETMARK`, which
fail the whole batch if someone made them already. Only then (and on teardown, which deletes
rules by handle) is the table listed, and the rules found by what they match, as Netavark
finds them.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from netns.errors import BurrowError
from netns.firewall.nfnl import Nfnl, NfnlError
from netns.firewall.rules import DNAT_CT_MARK, MASQ_MARK, PortDnat, build
from netns.firewall.runner import ExecResult, Runner, error_text, subprocess_runner
from netns.firewall.state import key_of, port_key
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import IPAddress, IPNetwork

TABLE = "netavark"
FAMILY = "inet"
# Netavark 2.x isolates a bridge network that has no `isolate` option strictly
# (src/network/bridge.rs get_isolate_option: "if no option default to strict isolation").
DEFAULT_ISOLATE: Isolate = "strict"
DNAT_CHAIN = "NETAVARK-HOSTPORT-DNAT"
MARK_CHAIN = "NETAVARK-HOSTPORT-SETMARK"
ISO1, ISO2, ISO3 = "NETAVARK-ISOLATION-1", "NETAVARK-ISOLATION-2", "NETAVARK-ISOLATION-3"
# name, type, hook, priority (Netavark's values)
BASE_CHAINS = (
    ("INPUT", "filter", "input", 0),
    ("FORWARD", "filter", "forward", 0),
    ("POSTROUTING", "nat", "postrouting", 100),
    ("PREROUTING", "nat", "prerouting", -100),
    ("OUTPUT", "nat", "output", -100),
)

Json = dict[str, Any]
Expr = list[Json]


def subnet_chain(network_id: str, subnet: IPNetwork, dnat: bool = False) -> str:
    """`nv_<id[:8]>_<subnet . → _, : → -, / → _nm>[_dnat]`, as Netavark names them."""
    clean = str(subnet).replace(".", "_").replace(":", "-").replace("/", "_nm")
    return f"nv_{network_id[:8]}_{clean}" + ("_dnat" if dnat else "")


# --- expression helpers (nft JSON schema) -------------------------------------------------------

def _ipproto(version: int) -> str:
    return "ip" if version == 4 else "ip6"


def _match(left: Any, right: Any, op: str = "==") -> Json:
    return {"match": {"op": op, "left": left, "right": right}}


def _payload(protocol: str, field: str) -> Json:
    return {"payload": {"protocol": protocol, "field": field}}


def _net(net: IPNetwork, field: str, op: str = "==") -> Json:
    prefix = {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}
    return _match(_payload(_ipproto(net.version), field), prefix, op)


def _addr(ip: IPAddress, field: str) -> Json:
    return _match(_payload(_ipproto(ip.version), field), str(ip))


def _meta(key: str) -> Json:
    return {"meta": {"key": key}}


def _jump(target: str) -> Json:
    return {"jump": {"target": target}}


def _dport(p: PortDnat) -> Json:
    right: Any = p.host_port if p.range == 1 else {"range": [p.host_port, p.host_port_end]}
    return _match(_payload(p.protocol, "dport"), right)


def _dnat(ip: IPAddress, port: int) -> Json:
    return {"dnat": {"addr": str(ip), "family": _ipproto(ip.version), "port": port}}


ACCEPT: Json = {"accept": None}
DROP: Json = {"drop": None}
MASQUERADE: Json = {"masquerade": None}
DNS_PORT_53: Expr = [
    _match(_meta("l4proto"), {"set": ["udp", "tcp"]}),
    _match(_payload("th", "dport"), 53),
]
_LOCALHOST: dict[int, IPNetwork] = {4: IPv4Network("127.0.0.1/32"), 6: IPv6Network("::1/128")}
_MULTICAST: dict[int, IPNetwork] = {4: IPv4Network("224.0.0.0/4"), 6: IPv6Network("ff00::/8")}


# --- Netavark 2.x's rules ---------------------------------------------------------------------


def _rule(chain: str, *expr: Json) -> Json:
    return {"chain": chain, "expr": list(expr)}


def base_rules() -> list[Json]:
    """The rules added once per table (Netavark checks each before adding it)."""
    mark, ctmark = _meta("mark"), {"ct": {"key": "mark"}}
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    return [
        _rule("POSTROUTING", _match({"&": [mark, MASQ_MARK]}, MASQ_MARK), MASQUERADE),
        _rule(MARK_CHAIN, {"mangle": {"key": mark, "value": {"|": [mark, MASQ_MARK]}}}),
        _rule("PREROUTING", local, _jump(DNAT_CHAIN)),
        _rule("OUTPUT", local, _jump(DNAT_CHAIN)),
        _rule("FORWARD", _match({"ct": {"key": "state"}}, "invalid", "in"), DROP),
        _rule("FORWARD", _match({"&": [ctmark, DNAT_CT_MARK]}, DNAT_CT_MARK), ACCEPT),
        _rule("FORWARD", _jump(ISO1)),
        _rule(ISO3, _jump(ISO2)),
    ]


def isolation_rules(net: NetworkFw) -> list[tuple[str, Json]]:
    """("add"|"insert", rule) for one bridge: isolated ones in ISO-1/2, others first in ISO-3."""
    oif = _meta("oifname")
    if net.isolate == "false":
        return [("insert", _rule(ISO3, _match(oif, net.bridge), DROP))]
    target = ISO3 if net.isolate == "strict" else ISO2
    return [("add", _rule(ISO1, _match(_meta("iifname"), net.bridge),
                          _match(oif, net.bridge, "!="), _jump(target))),
            ("add", _rule(ISO2, _match(oif, net.bridge), DROP))]


def _outbound(net: NetworkFw, subnet: IPNetwork) -> Json:
    """Masquerade, or with `outbound_addr4/6` Netavark 2.x's `snat ip[6] to <addr>`."""
    addr = net.outbound(subnet.version)
    if addr is None:
        return MASQUERADE
    return {"snat": {"addr": str(addr), "family": _ipproto(subnet.version)}}


def subnet_rules(net: NetworkFw, subnet: IPNetwork) -> list[Json]:
    chain = subnet_chain(net.id, subnet)
    established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
    return [
        _rule(chain, _net(subnet, "daddr"), ACCEPT),
        _rule(chain, _net(_MULTICAST[subnet.version], "daddr", "!="), _outbound(net, subnet)),
        _rule("INPUT", _net(subnet, "saddr"), *DNS_PORT_53, ACCEPT),
        _rule("FORWARD", _net(subnet, "daddr"), established, ACCEPT),
        _rule("FORWARD", _net(subnet, "saddr"), ACCEPT),
        _rule("POSTROUTING", _net(subnet, "saddr"), _jump(chain)),
    ]


def dns_rules(net: NetworkFw) -> list[Json]:
    if net.dns_port is None or net.dns_port == 53:
        return []
    return [_rule(DNAT_CHAIN, _addr(gw, "daddr"), *DNS_PORT_53, _dnat(gw, net.dns_port))
            for gw in net.gateways]


def port_rules(p: PortDnat) -> list[Json]:
    """One mapping of one container: the jump, hairpin/localhost marks, one dnat per port."""
    host = [_addr(p.host_ip, "daddr")] if p.host_ip is not None else []
    chain = subnet_chain(p.network_id, p.subnet, True)
    out = [_rule(DNAT_CHAIN, *host, _dport(p), _jump(chain)),
           _rule(chain, _net(p.subnet, "saddr"), *host, _dport(p), _jump(MARK_CHAIN))]
    if p.family == 4:  # Netavark 2.x marks localhost for IPv4 only (no route_localnet in v6)
        out.append(_rule(chain, _net(_LOCALHOST[4], "saddr"), *host, _dport(p), _jump(MARK_CHAIN)))
    setct = {"mangle": {"key": {"ct": {"key": "mark"}},
                        "value": {"|": [{"ct": {"key": "mark"}}, DNAT_CT_MARK]}}}
    # nft's dnat can't shift a port range 1:1, so each port gets its own rule (as Netavark).
    for i in range(p.range):
        dport = _match(_payload(p.protocol, "dport"), p.host_port + i)
        out.append(_rule(chain, *host, dport, setct, _dnat(p.container_ip, p.container_port + i)))
    return out


# --- what the table holds --------------------------------------------------------------------


@dataclass
class Listed:
    """`nft -j list table`: chain names and (handle, expr) per chain."""

    chains: set[str] = field(default_factory=set)
    rules: dict[str, list[tuple[int, list[Any]]]] = field(default_factory=dict)
    # Per chain, built on first use and again if rules were appended since.
    _expr_cache: dict[str, tuple[int, dict[int, tuple[int, list[Any]]]]] = field(
        default_factory=dict, repr=False, compare=False)
    _dport_cache: dict[str, tuple[int, dict[tuple[str, Any], list[int]]]] = field(
        default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, text: str) -> Listed:
        out = cls()
        for obj in json.loads(text).get("nftables", []) if text.strip() else []:
            if "chain" in obj:
                out.chains.add(obj["chain"]["name"])
            elif "rule" in obj:
                r = obj["rule"]
                out.rules.setdefault(r["chain"], []).append((int(r["handle"]), r["expr"]))
        return out

    def find(self, chain: str, pred: Callable[[list[Any]], bool]) -> list[int]:
        return [h for h, expr in self.rules.get(chain, []) if pred(expr)]

    def expr(self, chain: str, handle: int) -> list[Any]:
        return self._exprs(chain)[handle][1]

    def find_port(self, chain: str, p: PortDnat, pred: Callable[[list[Any]], bool]) -> list[int]:
        """`find(chain, pred)` for a `pred` that holds only for rules matching one of `p`'s host
        ports (`_port_match`), looked up by port: a scan of the chain per mapping, and a list
        search per port, made the teardown of `-p 1-65535` or of 10,000 mappings take hours."""
        index, exprs = self._dports(chain), self._exprs(chain)
        keys: list[Any] = [(p.protocol, _dport_key(_want(p)))]
        if p.range > 1:
            keys += [(p.protocol, port) for port in range(p.host_port, p.host_port_end + 1)]
        found = {h for key in keys for h in index.get(key, ())}
        return [h for h in sorted(found, key=lambda h: exprs[h][0]) if pred(exprs[h][1])]

    def _exprs(self, chain: str) -> dict[int, tuple[int, list[Any]]]:
        """handle -> (position in the chain, expr), built once per chain."""
        rules = self.rules.get(chain, [])
        size, cached = self._expr_cache.get(chain, (-1, {}))
        if size != len(rules):
            cached = {h: (i, e) for i, (h, e) in enumerate(rules)}
            self._expr_cache[chain] = (len(rules), cached)
        return cached

    def _dports(self, chain: str) -> dict[tuple[str, Any], list[int]]:
        """(protocol, dport) -> handles of the chain's rules with that dport match."""
        rules = self.rules.get(chain, [])
        size, cached = self._dport_cache.get(chain, (-1, {}))
        if size != len(rules):
            cached = {}
            for h, expr in rules:
                for proto, right in _dport_matches(expr):
                    cached.setdefault((proto, _dport_key(right)), []).append(h)
            self._dport_cache[chain] = (len(rules), cached)
        return cached


def _dport_matches(expr: list[Any]) -> Iterable[tuple[Any, Any]]:
    for st in expr:
        m = st.get("match") if isinstance(st, dict) else None
        if m and isinstance(m.get("left"), dict) and isinstance(m["left"].get("payload"), dict):
            pl = m["left"]["payload"]
            if pl.get("field") == "dport":
                yield pl.get("protocol"), m.get("right")


def _dport_key(right: Any) -> Any:
    return right if isinstance(right, int) else json.dumps(right, sort_keys=True)


def _want(p: PortDnat) -> Any:
    """The dport a mapping's jump and mark rules match: its port, or its range."""
    return {"range": [p.host_port, p.host_port_end]} if p.range > 1 else p.host_port


def _rights(expr: list[Any]) -> list[Any]:
    return [st["match"]["right"] for st in expr if isinstance(st, dict) and "match" in st]


def _jumps_to(target: str) -> Callable[[list[Any]], bool]:
    return lambda expr: any(isinstance(st, dict) and st.get("jump", {}).get("target") == target
                            for st in expr)


def _mentions(value: Any) -> Callable[[list[Any]], bool]:
    return lambda expr: value in _rights(expr)


def _dnats_to(ip: IPAddress) -> Callable[[list[Any]], bool]:
    return lambda expr: any(isinstance(st, dict) and isinstance(st.get("dnat"), dict)
                            and st["dnat"].get("addr") == str(ip) for st in expr)


def _has(key: str) -> Callable[[list[Any]], bool]:
    return lambda expr: any(isinstance(st, dict) and key in st for st in expr)


def _both(a: Callable[[list[Any]], bool], b: Callable[[list[Any]], bool]
          ) -> Callable[[list[Any]], bool]:
    return lambda expr: a(expr) and b(expr)


def _prefix(net: IPNetwork) -> Json:
    return {"prefix": {"addr": str(net.network_address), "len": net.prefixlen}}


# Netavark's own tests for "is this base rule there already" (nft.rs get_matching_rules_*).
BASE_MATCHERS: list[tuple[str, Callable[[list[Any]], bool]]] = [
    ("POSTROUTING", _mentions(MASQ_MARK)),
    (MARK_CHAIN, _has("mangle")),
    ("PREROUTING", _jumps_to(DNAT_CHAIN)),
    ("OUTPUT", _jumps_to(DNAT_CHAIN)),
    ("FORWARD", _has("drop")),
    ("FORWARD", _mentions(DNAT_CT_MARK)),
    ("FORWARD", _jumps_to(ISO1)),
    (ISO3, _jumps_to(ISO2)),
]


def _port_match(p: PortDnat) -> Callable[[list[Any]], bool]:
    """A rule of this mapping: its protocol's dport on one of its host ports (and its host ip)."""
    ports = range(p.host_port, p.host_port_end + 1)  # `in` on a range is arithmetic
    want = _want(p)

    def pred(expr: list[Any]) -> bool:
        hit = False
        for st in expr:
            m = st.get("match") if isinstance(st, dict) else None
            if not m or not isinstance(m.get("left"), dict) or "payload" not in m["left"]:
                continue
            pl = m["left"]["payload"]
            if pl.get("field") == "dport" and pl.get("protocol") == p.protocol:
                hit = m["right"] == want or (isinstance(m["right"], int) and m["right"] in ports)
            elif pl.get("field") == "daddr" and p.host_ip is not None and m["right"] != str(p.host_ip):
                return False
        if p.host_ip is not None and str(p.host_ip) not in _rights(expr):
            return False
        return hit

    return pred


# --- plans: ledger (no read) and listed (exact) ------------------------------------------------


class Batch:
    """Commands of one `nft -j` transaction, for one table."""

    def __init__(self, table: str) -> None:
        self.table = table
        self.cmds: list[Json] = []
        self.owners: list[str | None] = []  # per rule command: the port key it belongs to

    def _obj(self, kind: str, **kw: Any) -> Json:
        return {kind: {"family": FAMILY, "table": self.table, **kw}}

    def do(self, verb: str, kind: str, **kw: Any) -> None:
        self.cmds.append({verb: self._obj(kind, **kw)})

    def skeleton(self, guard: bool) -> None:
        """The table and its chains, in Netavark's order; `add` leaves existing ones alone.

        `guard`: `create` the SETMARK chain instead, failing the batch if it exists."""
        self.cmds.append({"add": {"table": {"family": FAMILY, "name": self.table}}})
        for name, kind, hook, prio in BASE_CHAINS:
            self.do("add", "chain", name=name, type=kind, hook=hook, prio=prio, policy="accept")
        self.do("add", "chain", name=DNAT_CHAIN)
        self.do("create" if guard else "add", "chain", name=MARK_CHAIN)
        for name in (ISO1, ISO2, ISO3):
            self.do("add", "chain", name=name)

    def rule(self, rule: Json, verb: str = "add", owner: str | None = None) -> None:
        self.do(verb, "rule", chain=rule["chain"], expr=rule["expr"])
        self.owners.append(owner)

    def ports_only(self) -> bool:
        """Only port rules and `add chain`: the batch's allocations are its rules (and a dnat
        chain if it was missing, which the probes' gap then shows)."""
        verbs = [(verb, kind) for c in self.cmds for verb, obj in c.items() for kind in obj]
        return (bool(self.owners) and all(o is not None for o in self.owners)
                and all(v == "add" and k in ("chain", "rule") for v, k in verbs))

    def counted(self, first: int) -> dict[str, list[list[Any]]]:
        """Owner -> [[chain, handle]] when the rules got first, first + 1, ... in order."""
        out: dict[str, list[list[Any]]] = {}
        rules = [c["add"]["rule"] for c in self.cmds if "rule" in c.get("add", {})]
        for i, (owner, rule) in enumerate(zip(self.owners, rules, strict=True)):
            if owner is not None:
                out.setdefault(owner, []).append([rule["chain"], first + i])
        return out

    def handles(self, echo: str) -> dict[str, list[list[Any]]]:
        """Owner -> [[chain, handle]] of its rules, from `nft -e -a -j`'s echo of this batch."""
        try:
            doc, _ = json.JSONDecoder().raw_decode(echo.strip())
            echoed = [c for c in doc.get("nftables", []) if any(
                isinstance(v, dict) and "rule" in v for v in c.values())]
        except (ValueError, AttributeError):
            return {}
        out: dict[str, list[list[Any]]] = {}
        if len(echoed) != len(self.owners):
            return {}  # not this batch's echo: keep nothing rather than wrong handles
        for owner, cmd in zip(self.owners, echoed, strict=True):
            rule = next(iter(cmd.values()))["rule"]
            if owner is not None and isinstance(rule.get("handle"), int):
                out.setdefault(owner, []).append([rule["chain"], rule["handle"]])
        return out

    def table_handle(self, echo: str) -> int | None:
        try:
            doc, _ = json.JSONDecoder().raw_decode(echo.strip())
        except ValueError:
            return None
        for c in doc.get("nftables", []):
            handle = c.get("add", {}).get("table", {}).get("handle")
            if isinstance(handle, int):
                return handle
        return None

    def dump(self) -> str:
        return json.dumps({"nftables": self.cmds}, separators=(",", ":"))


@dataclass
class NftLedger:
    """What burrow knows is in the table: the base rules, and networks (id -> bridge)."""

    base: bool = False
    nets: dict[str, str] = field(default_factory=dict)
    table: int | None = None  # the table's handle: a table made again gets another one

    @classmethod
    def from_json(cls, obj: Any) -> NftLedger:
        if isinstance(obj, dict):
            table = obj.get("table")
            return cls(bool(obj.get("base")), {str(k): str(v) for k, v in obj.get("nets", {}).items()},
                       table if isinstance(table, int) else None)
        return cls()  # none yet, or the old layout's list: ask the kernel when it matters

    def to_json(self) -> Json:
        return {"base": self.base, "nets": dict(sorted(self.nets.items())), "table": self.table}


def plan_setup(b: Batch, nets: Sequence[NetworkFw], dnats: Sequence[PortDnat],
               have: Listed | NftLedger, fresh: frozenset[str]) -> None:
    """What Netavark 2.x's setup_network + setup_port_forward add, only what is missing."""
    listed = have if isinstance(have, Listed) else None
    if isinstance(have, NftLedger):
        if not have.base:
            # Base rules unknown to the ledger: the guard fails the batch if someone made them.
            b.skeleton(guard=True)
            for rule in base_rules():
                b.rule(rule)
        # Known: no chain is (re)made, so if the table was flushed or deleted since, the first
        # rule or chain this batch adds fails it, and the table is listed and rebuilt.
    else:
        b.skeleton(guard=False)
        for rule, (chain, pred) in zip(base_rules(), BASE_MATCHERS, strict=True):
            if not have.find(chain, pred):
                b.rule(rule)
    for net in nets:
        _plan_network(b, net, listed, have, fresh)
    for chain in dict.fromkeys(subnet_chain(p.network_id, p.subnet, True) for p in dnats):
        b.do("add", "chain", name=chain)
    for p in dnats:
        chain = subnet_chain(p.network_id, p.subnet, True)
        if listed is not None and listed.find(chain, _port_match(p)):
            continue  # set up before (a retry): its rules are in
        for rule in port_rules(p):
            b.rule(rule, owner=key_of(p.network_id, p.container_id))


def _plan_network(b: Batch, net: NetworkFw, listed: Listed | None, have: Listed | NftLedger,
                  fresh: frozenset[str]) -> None:
    known = isinstance(have, NftLedger) and net.id in have.nets and net.bridge not in fresh
    if known:
        return  # the ledger knows its rules are in (they go only with the bridge)
    for verb, rule in isolation_rules(net):
        if listed is None or not listed.find(rule["chain"], _mentions(net.bridge)):
            b.rule(rule, verb)
    for subnet in net.subnets:
        chain = subnet_chain(net.id, subnet)
        if listed is not None and chain in listed.chains:
            continue  # Netavark: the subnet chain exists, so do its rules
        b.do("create", "chain", name=chain)  # the guard: fails if someone made it already
        for rule in subnet_rules(net, subnet):
            b.rule(rule)
    for rule in dns_rules(net):  # first in the DNAT chain, one per address (as Netavark)
        gw = rule["expr"][0]["match"]["right"]
        if listed is None or not listed.find(DNAT_CHAIN, _mentions(gw)):
            b.rule(rule, "insert")


def plan_teardown(b: Batch, nets: Sequence[NetworkFw], dnats: Sequence[PortDnat],
                  listed: Listed) -> None:
    """Netavark 2.x's teardown: the rules found for these ports; for complete networks, the
    rules naming their subnets, bridges and DNS addresses, and their chains."""
    gone: list[int] = []
    for p in dnats:
        gone += _port_teardown(listed, p)
    chains: list[str] = []
    for net in nets:
        for subnet in net.subnets:
            for base in ("INPUT", "FORWARD", "POSTROUTING"):
                gone += listed.find(base, _mentions(_prefix(subnet)))
            chains += [subnet_chain(net.id, subnet), subnet_chain(net.id, subnet, True)]
        for iso in (ISO1, ISO2, ISO3):
            gone += listed.find(iso, _mentions(net.bridge))
        for rule in dns_rules(net):
            gone += listed.find(DNAT_CHAIN, _mentions(rule["expr"][0]["match"]["right"]))
    handles = {h: chain for chain, rs in listed.rules.items() for h, _ in rs}
    doomed = set(gone)
    dropped = [chain for chain in chains if chain in listed.chains and not (
        chain.endswith("_dnat") and any(h not in doomed for h, _ in listed.rules.get(chain, [])))]
    # Deleting a chain deletes its rules: one by one, each a walk of the chain in the kernel,
    # the 65,535 dnat rules of `-p 1-65535` took most of a minute.
    for h in dict.fromkeys(gone):
        if handles[h] not in dropped:
            b.do("delete", "rule", chain=handles[h], handle=h)
    for chain in dropped:
        b.do("delete", "chain", name=chain)


def _port_teardown(listed: Listed, p: PortDnat) -> list[int]:
    """The rules of one mapping of one container. Its dnat rules name its address; the jump and
    mark rules before them name only the port, so while another container's dnat for the same
    port stays (Podman tearing down a run that failed on a port in use, after or before its
    setup), only the extra copies of those go, never the last one."""
    chain = subnet_chain(p.network_id, p.subnet, True)
    ours = _port_match(p)
    mine = listed.find_port(chain, p, _both(ours, _dnats_to(p.container_ip)))
    if not mine:
        return []  # none of this port's rules lead to this container: not its to remove
    mine_set = set(mine)
    shared = [*((DNAT_CHAIN, h) for h in listed.find_port(
        DNAT_CHAIN, p, _both(_jumps_to(chain), ours))),
              *((chain, h) for h in listed.find_port(chain, p, ours)
                if h not in mine_set and not _has("dnat")(listed.expr(chain, h)))]
    if not [h for h in listed.find_port(chain, p, _both(ours, _has("dnat")))
            if h not in mine_set]:
        return mine + [h for _, h in shared]
    seen: set[str] = set()
    extra: list[int] = []
    for where, h in shared:  # listed in table order: the first copy is the older owner's
        key = where + json.dumps(listed.expr(where, h), sort_keys=True)
        if key in seen:
            extra.append(h)
        seen.add(key)
    return mine + extra


def _drop_base_rules(b: Batch, listed: Listed) -> None:
    for chain, pred in BASE_MATCHERS:
        for h in listed.find(chain, pred):
            b.do("delete", "rule", chain=chain, handle=h)


# --- the adapter ---------------------------------------------------------------------------------


class NftablesFirewall:
    """A `Firewall`: one `nft -j` batch per change (libnftables in-process when it loads).

    A setup's batch is echoed with handles (`nft -e -a`), and each container's rule handles
    are kept (firewall/.burrow-nft-handles/<netid>_<cid>) with the table's handle: removing the
    container then deletes exactly those, without listing the table, as long as the table is
    the same one (a table made again has another handle; then, or if a delete fails, the table
    is listed and the rules found by what they match)."""

    name = "nftables"

    def __init__(self, store: Any, *, argv_prefix: Sequence[str] = (),
                 runner: Runner = subprocess_runner, nft: str = "nft", table: str = TABLE,
                 nfnl: Nfnl | None = None) -> None:
        self.store = store
        self.nfnl = nfnl  # in-process only: O(1) handle bookkeeping (see _counted)
        self.argv = [*argv_prefix, nft, "-j", "-f", "-"]
        self.echo_argv = [*argv_prefix, nft, "-e", "-a", "-j", "-f", "-"]
        self.runner = runner
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", table):
            raise BurrowError(f"invalid nftables table name {table!r}")
        # Each state dir owns its table: two worlds sharing one netns (rootful Podman and the
        # rootful burrow CLI) must never touch each other's rules.
        self.table = table

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        dnats = self._validate(networks, ports)
        with self.store.locked():
            networks = self.store.pin(networks, fresh := set(fresh), DEFAULT_ISOLATE)
            led = NftLedger.from_json(self.store.ledger(self.name))
            again = self.store.interrupted() or any(self.store.has_port(p) for p in ports)
            with self.store.applying():
                handles, table = self._setup(
                    networks, dnats, None if again else led, frozenset(fresh))
                led.base = True
                led.nets.update({n.id: n.bridge for n in networks})
                led.table = table or led.table or self._table_handle()
                for key, rules in handles.items():
                    self.store.save_handles(key, {"table": led.table, "rules": rules})
                self.store.add(networks, ports, self.name, fresh)
                self.store.save_ledger(self.name, led.to_json())

    def _setup(self, nets: Sequence[NetworkFw], dnats: Sequence[PortDnat], led: NftLedger | None,
               fresh: frozenset[str]) -> tuple[dict[str, list[list[Any]]], int | None]:
        """Apply; (owner -> its rules' [chain, handle], the table's handle if learnt)."""
        if led is not None:
            b = Batch(self.table)
            plan_setup(b, nets, dnats, led, fresh)
            if self.nfnl is not None and b.ports_only():
                counted = self._counted(b)
                if counted is not None:
                    return counted, None
            else:
                res = self.runner(self.echo_argv, b.dump())
                if res.returncode == 0:
                    return b.handles(res.stdout), b.table_handle(res.stdout)
        # The ledger was wrong (Netavark made some of it, a flush, a crash): list the table.
        b = Batch(self.table)
        plan_setup(b, nets, dnats, self._list(), fresh)
        echo = self._apply(b, echo=True)
        return b.handles(echo), b.table_handle(echo)

    def _counted(self, b: Batch) -> dict[str, list[list[Any]]] | None:
        """Apply a port-only batch without `--echo` (which makes libnftables fetch the whole
        ruleset, O(N)); its handles come from two probes of the table's handle counter
        (nfnl.Nfnl.next_handle): exactly R + 1 apart, the R rules got those in between.
        A wider gap (someone else added something, or the dnat chain was missing): no
        handles are kept and teardown finds the rules by listing. None: the batch failed."""
        assert self.nfnl is not None
        try:
            before = self.nfnl.next_handle(self.table, MARK_CHAIN)
        except NfnlError:
            return None  # no table or no SETMARK chain: the ledger is wrong
        if self.runner(self.argv, b.dump()).returncode != 0:
            return None
        try:
            after = self.nfnl.next_handle(self.table, MARK_CHAIN)
        except NfnlError:
            return {}
        return b.counted(before + 1) if after - before == len(b.owners) + 1 else {}

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        dnats = self._validate(networks, ports)
        keys = [port_key(p) for p in ports]
        with self.store.locked():
            led = NftLedger.from_json(self.store.ledger(self.name))
            trusted = not self.store.interrupted()  # else the handles may be behind the kernel
            with self.store.applying():
                for n in networks:
                    led.nets.pop(n.id, None)
                with_rules = sorted({key_of(d.network_id, d.container_id) for d in dnats})
                if networks or not trusted or not self._by_handle(with_rules, led):
                    self._teardown_listed(networks, dnats, led)
                self.store.drop_handles(keys)
                self.store.remove(networks, ports)
                self.store.save_ledger(self.name, led.to_json())

    def _by_handle(self, keys: Sequence[str], led: NftLedger) -> bool:
        """Delete the containers' rules by their saved handles; False: list the table instead."""
        saved = [self.store.handles(k) for k in keys]
        if led.table is None or any(
                not isinstance(h, dict) or h.get("table") != led.table for h in saved):
            return False
        b = Batch(self.table)
        for h in saved:
            for chain, handle in h.get("rules", []):
                b.do("delete", "rule", chain=str(chain), handle=int(handle))
        if not b.cmds:
            return True
        if self._table_handle() != led.table:
            return False  # the table was made again: the handles mean other rules now
        return self.runner(self.argv, b.dump()).returncode == 0

    def _teardown_listed(self, networks: Sequence[NetworkFw], dnats: Sequence[PortDnat],
                         led: NftLedger) -> None:
        b, listed = Batch(self.table), self._list()
        plan_teardown(b, networks, dnats, listed)
        if self.table != TABLE and networks and not led.nets:
            # A table of burrow's own (not Podman's) goes back to empty chains with its
            # last network, so whoever owns it can drop it.
            _drop_base_rules(b, listed)
            led.base = False
        if b.cmds:
            self._apply(b)

    def reload(self) -> None:
        """Add whatever of the saved networks and ports the table lacks; flush nothing."""
        with self.store.locked():
            snap = self.store.load()
            nets, ports = snap.ordered_networks(), snap.ordered_ports()
            dnats = self._validate(nets, ports)
            with self.store.applying():
                b = Batch(self.table)
                plan_setup(b, nets, dnats, self._list(), frozenset())
                echo = self._apply(b, echo=True)
                led = NftLedger(True, {n.id: n.bridge for n in nets}, self._table_handle())
                for key, rules in b.handles(echo).items():
                    self.store.save_handles(key, {"table": led.table, "rules": rules})
                self.store.save_ledger(self.name, led.to_json())

    def _validate(self, nets: Sequence[NetworkFw], ports: Sequence[PortFw]) -> list[PortDnat]:
        try:
            return list(build(nets, ports).ports)
        except BurrowError as exc:
            raise exc.wrap(f"firewall ({self.name})") from exc

    def _apply(self, b: Batch, *, echo: bool = False) -> str:
        res = self.runner(self.echo_argv if echo else self.argv, b.dump())
        if res.returncode != 0:
            raise BurrowError(f"firewall ({self.name}): apply batch: {error_text(res)}")
        return res.stdout

    def _query(self, obj: Json) -> ExecResult:
        return self.runner(self.argv, json.dumps({"nftables": [{"list": obj}]}))

    def _table_handle(self) -> int | None:
        if self.nfnl is not None:  # libnftables' `list tables` reads the whole ruleset
            try:
                return self.nfnl.table_handle(self.table)
            except NfnlError:
                pass
        res = self._query({"tables": {"family": FAMILY}})
        if res.returncode != 0:
            return None
        try:
            doc, _ = json.JSONDecoder().raw_decode(res.stdout.strip())
        except ValueError:
            return None
        for obj in doc.get("nftables", []):
            t = obj.get("table", {})
            if t.get("name") == self.table and isinstance(t.get("handle"), int):
                return int(t["handle"])
        return None

    def _list(self) -> Listed:
        res = self._query({"table": {"family": FAMILY, "name": self.table}})
        if res.returncode != 0:
            if "No such file or directory" in res.stderr:
                return Listed()  # no table yet
            raise BurrowError(f"firewall ({self.name}): list table: {error_text(res)}")
        doc, _ = json.JSONDecoder().raw_decode(res.stdout.strip() or '{"nftables": []}')
        return Listed.parse(json.dumps(doc))

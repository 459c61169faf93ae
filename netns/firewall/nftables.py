"""nftables backend: the whole ruleset as ONE `nft -j -f -` transaction, table `inet netavark`.

The batch starts with `add table` + `delete table` (together: "delete if present", which a bare
`delete` is not) and then re-creates the table, its chains and every rule. The kernel applies
the batch atomically, so a setup is one exec, idempotent, and repairs whatever was flushed.
Layout follows Netavark's nftables driver (spec §4.2).
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from ipaddress import IPv4Network, IPv6Network
from typing import Any

from netns.errors import BurrowError
from netns.firewall.rules import DNAT_CT_MARK, MASQ_MARK, PortDnat, Ruleset
from netns.firewall.runner import Runner, error_text, subprocess_runner
from netns.schema import IPAddress, IPNetwork

TABLE = "netavark"
FAMILY = "inet"
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


# --- the render ----------------------------------------------------------------------------------

class _Batch:
    def __init__(self) -> None:
        self.cmds: list[Json] = []

    def chain(self, name: str, base: tuple[str, int, str] | None = None) -> None:
        chain: Json = {"family": FAMILY, "table": TABLE, "name": name}
        if base is not None:
            chain |= {"type": base[0], "hook": base[2], "prio": base[1], "policy": "accept"}
        self.cmds.append({"add": {"chain": chain}})

    def rule(self, chain: str, *expr: Json) -> None:
        rule = {"family": FAMILY, "table": TABLE, "chain": chain, "expr": list(expr)}
        self.cmds.append({"add": {"rule": rule}})


SKELETON = "nft-skeleton"  # bookkeeping: our table and its base chains exist


def render(ruleset: Ruleset, old: Ruleset | None = None, *, skeleton: bool = False) -> Json:
    """The `nft -j` batch that makes the kernel's table match `ruleset`.

    Without `old`: delete and re-create the whole table (repairs anything; an empty ruleset
    just removes it). With `old` (what the last batch applied, per state): change only what
    differs. Why: on this kernel a transaction that deletes an existing rule or re-adds an
    existing chain waits for an RCU grace period (8-15 ms), while adding rules costs ~0.1 ms.
    So chains whose old rules are a prefix of the new ones only get the new rules appended,
    and only chains that really lose rules are flushed.
    """
    table = {"table": {"family": FAMILY, "name": TABLE}}
    if old is None:
        cmds: list[Json] = [{"add": table}, {"delete": table}]
        if not ruleset.empty:
            cmds.append({"add": table})
            cmds += _full(ruleset).cmds
        return {"nftables": cmds}
    if old.empty and not skeleton:
        # State knows no table: create what's missing; the flush clears anything stale.
        return {"nftables": [{"add": table}, *_chain_cmds(ruleset), {"flush": table},
                             *_rule_cmds(ruleset)]}
    return {"nftables": [{"add": table}, *_diff(old, ruleset)]}


def _full(rs: Ruleset) -> _Batch:
    b = _Batch()
    _render_chains(b, rs)
    if not rs.empty:
        _render_static(b)
        _render_isolation(b, rs)
        _render_subnets(b, rs)
        _render_dnat(b, rs)
    return b


def _chain_cmds(rs: Ruleset) -> list[Json]:
    return [c for c in _full(rs).cmds if "chain" in c["add"]]


def _rule_cmds(rs: Ruleset) -> list[Json]:
    return [c for c in _full(rs).cmds if "rule" in c["add"]]


def _by_chain(rs: Ruleset) -> dict[str, list[Json]]:
    """Chain name -> its rule commands, in order (every chain present, maybe empty)."""
    out: dict[str, list[Json]] = {c["add"]["chain"]["name"]: [] for c in _chain_cmds(rs)}
    for c in _rule_cmds(rs):
        out[c["add"]["rule"]["chain"]].append(c)
    return out


def _diff(old: Ruleset, new: Ruleset) -> list[Json]:
    before, after = _by_chain(old), _by_chain(new)
    base = {name for name, *_ in BASE_CHAINS}
    flushes: list[Json] = []
    adds: list[Json] = []
    deletes: list[Json] = []
    for cmd in _chain_cmds(new):
        name = cmd["add"]["chain"]["name"]
        if name not in before:
            adds.append(cmd)
    for name, rules_after in after.items():
        rules_before = before.get(name, [])
        if rules_after[: len(rules_before)] == rules_before:
            adds += rules_after[len(rules_before):]
        else:
            flushes.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
            adds += rules_after
    for name, rules_before in before.items():
        if name not in after and name not in base:
            if rules_before:
                flushes.append({"flush": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
            deletes.append({"delete": {"chain": {"family": FAMILY, "table": TABLE, "name": name}}})
    # Flush first (drops jumps into chains about to go), then add, then delete chains.
    return [*flushes, *adds, *deletes]


def _render_chains(b: _Batch, rs: Ruleset) -> None:
    for name, kind, hook, prio in BASE_CHAINS:
        b.chain(name, (kind, prio, hook))
    for name in (DNAT_CHAIN, MARK_CHAIN, ISO1, ISO2, ISO3):
        b.chain(name)
    for s in rs.subnets:
        b.chain(subnet_chain(s.network_id, s.subnet))
    for name in dict.fromkeys(subnet_chain(p.network_id, p.subnet, True) for p in rs.ports):
        b.chain(name)


def _render_static(b: _Batch) -> None:
    mark = _meta("mark")
    b.rule("POSTROUTING", _match({"&": [mark, MASQ_MARK]}, MASQ_MARK), MASQUERADE)
    b.rule(MARK_CHAIN, {"mangle": {"key": mark, "value": {"|": [mark, MASQ_MARK]}}})
    local = _match({"fib": {"result": "type", "flags": ["daddr"]}}, "local")
    b.rule("PREROUTING", local, _jump(DNAT_CHAIN))
    b.rule("OUTPUT", local, _jump(DNAT_CHAIN))
    b.rule("FORWARD", _match({"ct": {"key": "state"}}, "invalid", "in"), DROP)
    ctmark = {"ct": {"key": "mark"}}
    b.rule("FORWARD", _match({"&": [ctmark, DNAT_CT_MARK]}, DNAT_CT_MARK), ACCEPT)
    b.rule("FORWARD", _jump(ISO1))


def _render_isolation(b: _Batch, rs: Ruleset) -> None:
    # Isolated bridges: leaving traffic goes to ISO-2 (drops into other isolated bridges) or,
    # when strict, to ISO-3 (drops into non-isolated bridges too, then falls through to ISO-2).
    for iso in rs.isolation:
        if iso.isolate == "false":
            continue
        target = ISO3 if iso.isolate == "strict" else ISO2
        oif = _meta("oifname")
        b.rule(ISO1, _match(_meta("iifname"), iso.bridge), _match(oif, iso.bridge, "!="),
               _jump(target))
        b.rule(ISO2, _match(oif, iso.bridge), DROP)
    for iso in rs.isolation:
        if iso.isolate == "false":
            b.rule(ISO3, _match(_meta("oifname"), iso.bridge), DROP)
    b.rule(ISO3, _jump(ISO2))


def _render_subnets(b: _Batch, rs: Ruleset) -> None:
    for s in rs.subnets:
        chain = subnet_chain(s.network_id, s.subnet)
        b.rule(chain, _net(s.subnet, "daddr"), ACCEPT)
        b.rule(chain, _net(_MULTICAST[s.family], "daddr", "!="), MASQUERADE)
        b.rule("INPUT", _net(s.subnet, "saddr"), *DNS_PORT_53, ACCEPT)
        established = _match({"ct": {"key": "state"}}, ["established", "related"], "in")
        b.rule("FORWARD", _net(s.subnet, "daddr"), established, ACCEPT)
        b.rule("FORWARD", _net(s.subnet, "saddr"), ACCEPT)
        b.rule("POSTROUTING", _net(s.subnet, "saddr"), _jump(chain))


def _render_dnat(b: _Batch, rs: Ruleset) -> None:
    # DNS redirects first, so a port mapping of 53 can't shadow them.
    for d in rs.dns:
        b.rule(DNAT_CHAIN, _addr(d.gateway, "daddr"), *DNS_PORT_53, _dnat(d.gateway, d.port))
    for p in rs.ports:
        host = [_addr(p.host_ip, "daddr")] if p.host_ip is not None else []
        chain = subnet_chain(p.network_id, p.subnet, True)
        b.rule(DNAT_CHAIN, *host, _dport(p), _jump(chain))
        # Hairpin (container → its own host port) and localhost need masquerading on return.
        b.rule(chain, _net(p.subnet, "saddr"), *host, _dport(p), _jump(MARK_CHAIN))
        b.rule(chain, _net(_LOCALHOST[p.family], "saddr"), *host, _dport(p), _jump(MARK_CHAIN))
        setct = {"mangle": {"key": {"ct": {"key": "mark"}},
                            "value": {"|": [{"ct": {"key": "mark"}}, DNAT_CT_MARK]}}}
        # nft's dnat can't shift a port range 1:1, so each port gets its own rule (as Netavark).
        for i in range(p.range):
            dport = _match(_payload(p.protocol, "dport"), p.host_port + i)
            b.rule(chain, *host, dport, setct, _dnat(p.container_ip, p.container_port + i))


# --- the adapter ---------------------------------------------------------------------------------

class NftablesBackend:
    """Applies a render with exactly one `nft -j -f -` exec (optionally inside a netns)."""

    name = "nftables"

    def __init__(self, *, argv_prefix: Sequence[str] = (), runner: Runner = subprocess_runner,
                 nft: str = "nft", table: str = TABLE) -> None:
        self.argv = [*argv_prefix, nft, "-j", "-f", "-"]
        self.runner = runner
        if not re.fullmatch(r"[A-Za-z][A-Za-z0-9_-]{0,31}", table):
            raise BurrowError(f"invalid nftables table name {table!r}")
        # Each state dir owns its table: two worlds sharing one netns (rootful Podman and the
        # rootful burrow CLI) must never flush or rebuild each other's rules.
        self.table = table

    def _dump(self, batch: Json) -> str:
        if self.table != TABLE:
            batch = _retable(batch, self.table)
        return json.dumps(batch, separators=(",", ":"))

    def apply(self, old: Ruleset | None, new: Ruleset, installed: frozenset[str]) -> frozenset[str]:
        batch = render(new, old, skeleton=SKELETON in installed)
        res = self.runner(self.argv, self._dump(batch))
        if res.returncode != 0:
            # The kernel's table is not what state says (flushed by someone): rebuild it whole.
            res = self.runner(self.argv, self._dump(render(new)))
            if res.returncode == 0:
                return frozenset({SKELETON}) if not new.empty else frozenset()
        if res.returncode != 0:
            raise BurrowError(f"apply batch: {error_text(res)}")
        if old is None:  # a full render: the table exists only if there are rules
            return frozenset({SKELETON}) if not new.empty else frozenset()
        # Every non-full render leaves the table and its base chains in place.
        return frozenset({SKELETON})



def _retable(obj: Any, name: str) -> Any:
    """The same batch aimed at table `name` instead of TABLE."""
    if isinstance(obj, list):
        return [_retable(x, name) for x in obj]
    if not isinstance(obj, dict):
        return obj
    out = {k: _retable(v, name) for k, v in obj.items()}
    if out.get("table") == TABLE:  # chains and rules name their table
        out["table"] = name
    if isinstance(obj.get("table"), dict) and obj["table"].get("name") == TABLE:
        out["table"] = {**out["table"], "name": name}
    return out

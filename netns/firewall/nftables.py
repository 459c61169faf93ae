"""nftables backend: the whole ruleset as ONE `nft -j -f -` transaction, table `inet netavark`.

The batch starts with `add table` + `delete table` (together: "delete if present", which a bare
`delete` is not) and then re-creates the table, its chains and every rule. The kernel applies
the batch atomically, so a setup is one exec, idempotent, and repairs whatever was flushed.
Layout follows Netavark's nftables driver (spec §4.2).
"""

from __future__ import annotations

import json
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


def render(ruleset: Ruleset) -> Json:
    """The complete `nft -j` batch for `ruleset` (an empty ruleset removes the table)."""
    table = {"table": {"family": FAMILY, "name": TABLE}}
    b = _Batch()
    b.cmds += [{"add": table}, {"delete": table}]
    if not ruleset.empty:
        b.cmds.append({"add": table})
        _render_chains(b, ruleset)
        _render_static(b)
        _render_isolation(b, ruleset)
        _render_subnets(b, ruleset)
        _render_dnat(b, ruleset)
    return {"nftables": b.cmds}


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
                 nft: str = "nft") -> None:
        self.argv = [*argv_prefix, nft, "-j", "-f", "-"]
        self.runner = runner

    def apply(self, old: Ruleset, new: Ruleset, installed: frozenset[str]) -> frozenset[str]:
        batch = json.dumps(render(new), separators=(",", ":"))
        res = self.runner(self.argv, batch)
        if res.returncode != 0:
            raise BurrowError(f"apply batch: {error_text(res)}")
        return frozenset()


"""Pure planning for the firewalld backend: rule intent -> firewalld zone, policies and entries.

The layout is Netavark 2.x's `src/firewall/firewalld.rs` (read at the v2.x line, the version
whose setup makes four policies and keeps localhost forwards in `netavark_host_fwd`):

    zone   netavark_zone       every container subnet is a runtime source of it
    policy netavark_policy     netavark_zone -> ANY, target ACCEPT, masquerade (NAT, forwarding)
    policy netavark_portfwd    ANY -> HOST (firewalld < 2.2: ANY -> ANY): published ports
                               (forward-ports for wildcard host addresses, rich rules for a
                               given host_ip) and the DNS redirect
    policy netavark_host_fwd   HOST -> ANY: rich rules forwarding 127.0.0.1 (the host itself)
    policy netavark_zone_acc   ANY -> netavark_zone: masquerade of the host's own connections
                               to 127.0.0.1 (Netavark: of everything; hairpin is masqueraded
                               by netavark_policy, the zone being its egress too)

The zone and policies are permanent (made once, kept like Netavark's); the sources and entries
are runtime only, so a `firewall-cmd --reload` drops them and `firewalld-reload` re-adds them
from the state files. burrow adds what Netavark's driver lacks, in the same objects:
isolation (`isolate=true|strict`) as drop rich rules between container subnets in
`netavark_policy`, IPv6 masquerade as rich rules there, and the DNS redirect for tcp as well
as udp (the nftables driver's outcome).

Nothing here does I/O: the adapter (`firewalld.py`) reads the current entries over D-Bus, asks
`merge` for the new ones and writes them back, one `setPolicySettings` per policy.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from netns.errors import BurrowError
from netns.firewall.rules import PortDnat
from netns.firewall.types import NetworkFw
from netns.schema import IPAddress, IPNetwork

ZONE = "netavark_zone"
POLICY = "netavark_policy"
PORTFWD = "netavark_portfwd"
HOSTFWD = "netavark_host_fwd"
ZONEACC = "netavark_zone_acc"
ANY, HOST = "ANY", "HOST"

ForwardPort = tuple[str, str, str, str]  # (port, protocol, to-port, to-addr), firewalld's a(ssss)


@dataclass(frozen=True)
class PolicySpec:
    """One permanent policy as Netavark makes it (`addPolicy` settings)."""

    name: str
    ingress: str
    egress: str
    target: str
    masquerade: bool
    rich_rules: tuple[str, ...] = ()

    def settings(self) -> dict[str, Any]:
        out: dict[str, Any] = {"ingress_zones": [self.ingress], "egress_zones": [self.egress],
                               "target": self.target}
        if self.masquerade:
            out["masquerade"] = True
        if self.rich_rules:
            out["rich_rules"] = list(self.rich_rules)
        return out


# firewalld accepts a forward-port with to-addr in a policy whose egress is HOST only from 2.2
# on (firewalld/firewalld#1323); before, netavark_portfwd is ANY -> ANY, as Netavark 1.x made it.
HOST_EGRESS_FORWARDS = (2, 2)


def base_policies(version: tuple[int, ...]) -> tuple[PolicySpec, ...]:
    """Netavark's four policies, in the order it adds them, for this firewalld version."""
    portfwd_egress = HOST if version >= HOST_EGRESS_FORWARDS else ANY
    return (
        PolicySpec(POLICY, ZONE, ANY, "ACCEPT", True),
        PolicySpec(PORTFWD, ANY, portfwd_egress, "CONTINUE", False),
        PolicySpec(HOSTFWD, HOST, ANY, "CONTINUE", False),
        # Netavark masquerades everything into the zone; burrow only the host's own connections
        # to 127.0.0.1, so a container sees the real address of a client from outside, as with
        # the nftables driver.
        PolicySpec(ZONEACC, ANY, ZONE, "CONTINUE", False, (LOCALHOST_MASQUERADE,)),
    )


POLICY_NAMES = (POLICY, PORTFWD, HOSTFWD, ZONEACC)


def parse_version(text: str) -> tuple[int, ...]:
    """`2.3.1` -> (2, 3, 1); anything unparsable counts as the oldest (the layout that works
    everywhere)."""
    out: list[int] = []
    for part in text.strip().split("."):
        digits = part[:len(part) - len(part.lstrip("0123456789"))]
        if not digits:
            break
        out.append(int(digits))
    return tuple(out) or (0,)


@dataclass(frozen=True)
class Entries:
    """The runtime entries burrow manages in one policy."""

    forward_ports: tuple[ForwardPort, ...] = ()
    rich_rules: tuple[str, ...] = ()

    def __bool__(self) -> bool:
        return bool(self.forward_ports or self.rich_rules)

    def __add__(self, other: Entries) -> Entries:
        return Entries(_uniq((*self.forward_ports, *other.forward_ports)),
                       _uniq((*self.rich_rules, *other.rich_rules)))


@dataclass(frozen=True)
class Plan:
    """Runtime changes of one setup (to add) or teardown (to remove)."""

    sources: tuple[str, ...] = ()  # subnets of ZONE
    policies: tuple[tuple[str, Entries], ...] = ()  # (policy, entries), each policy once

    def entries(self, policy: str) -> Entries:
        return next((e for name, e in self.policies if name == policy), Entries())

    def __add__(self, other: Plan) -> Plan:
        merged: dict[str, Entries] = {}
        for name, e in (*self.policies, *other.policies):
            merged[name] = merged.get(name, Entries()) + e
        return Plan(_uniq((*self.sources, *other.sources)),
                    tuple((n, e) for n, e in merged.items() if e))


def _uniq(items: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(dict.fromkeys(items))


def _family(ip: IPAddress | IPNetwork) -> str:
    return "ipv4" if ip.version == 4 else "ipv6"


def forward_rule(family: str, dest: str, port: str, proto: str, to_port: str, to_addr: str) -> str:
    """A forward-port rich rule, in the exact text firewalld reads back (Netavark's format)."""
    return (f'rule family="{family}" destination address="{dest}" forward-port port="{port}" '
            f'protocol="{proto}" to-port="{to_port}" to-addr="{to_addr}"')


def drop_rule(src: IPNetwork, dst: IPNetwork) -> str:
    return (f'rule family="{_family(src)}" source address="{src}" '
            f'destination address="{dst}" drop')


# --- what one change adds or removes ----------------------------------------------------------


def masquerade_rule(subnet: IPNetwork | str, family: str = "") -> str:
    fam = family or _family(subnet)  # type: ignore[arg-type]
    return f'rule family="{fam}" source address="{subnet}" masquerade'


LOCALHOST_MASQUERADE = masquerade_rule("127.0.0.0/8", "ipv4")


def network_plan(nets: Sequence[NetworkFw]) -> Plan:
    """Each network's subnets as sources of the zone, its DNS redirect (dns_port != 53), and
    for IPv6 subnets a masquerade rich rule: a policy's own masquerade is IPv4 only before
    firewalld 2.x, and the nftables driver masquerades both families."""
    sources = _uniq(str(s) for net in nets for s in net.subnets)
    masq = _uniq(masquerade_rule(s) for net in nets for s in net.subnets if s.version == 6)
    dns: list[str] = []
    for net in nets:
        if net.dns_port is None or net.dns_port == 53:
            continue
        for gw in net.gateways:
            for proto in ("udp", "tcp"):
                dns.append(forward_rule(_family(gw), str(gw), "53", proto, str(net.dns_port),
                                        str(gw)))
    policies = ((POLICY, Entries(rich_rules=masq)), (PORTFWD, Entries(rich_rules=_uniq(dns))))
    return Plan(sources, tuple((n, e) for n, e in policies if e))


def port_plan(dnats: Sequence[PortDnat]) -> Plan:
    """Netavark's mapping of published ports onto the two port policies.

    Wildcard host address: a forward-port in netavark_portfwd for the container's address, and
    for IPv4 a rich rule for 127.0.0.1 in netavark_host_fwd (the kernel can't DNAT ::1).
    host_ip 127.0.0.1: only that rich rule. host_ip ::1: nothing (as Netavark). Any other
    host_ip: a rich rule matching it in netavark_portfwd."""
    fwd: list[ForwardPort] = []
    rich: list[str] = []
    local: list[str] = []
    # firewalld turns a range into `dnat to addr:first-last`, which picks any port of the range,
    # so a range is one entry per port (1:1, as the nftables driver maps it).
    for p, i in ((d, i) for d in dnats for i in range(d.range)):
        port, to_port = str(p.host_port + i), str(p.container_port + i)
        ctr = str(p.container_ip)
        loopback = forward_rule("ipv4", "127.0.0.1", port, p.protocol, to_port, ctr)
        if p.host_ip is None:
            fwd.append((port, p.protocol, to_port, ctr))
            if p.family == 4:
                local.append(loopback)
        elif str(p.host_ip) == "127.0.0.1":
            local.append(loopback)
        elif str(p.host_ip) != "::1":
            rich.append(forward_rule(_family(p.host_ip), str(p.host_ip), port, p.protocol,
                                     to_port, ctr))
    policies = [(PORTFWD, Entries(_uniq(fwd), _uniq(rich))), (HOSTFWD, Entries(rich_rules=_uniq(local)))]
    return Plan((), tuple((n, e) for n, e in policies if e))


def isolation_plan(nets: Iterable[NetworkFw]) -> Plan:
    """Drop rules between container subnets, for the nftables driver's isolation outcome.

    A pair of networks is cut (both ways) when both are isolated (`true` or `strict`) or either
    is `strict`: `true` keeps reaching non-isolated networks, `strict` reaches none. Both ways,
    because firewalld accepts established replies before any policy, where Netavark's nftables
    ISOLATION chains drop them."""
    nets = sorted({n.id: n for n in nets}.values(), key=lambda n: n.id)
    rules: list[str] = []
    for a in nets:
        for b in nets:
            if a.id == b.id or not _cut(a, b):
                continue
            rules += [drop_rule(sa, sb) for sa in a.subnets for sb in b.subnets
                      if sa.version == sb.version and sa != sb]
    return Plan((), ((POLICY, Entries(rich_rules=_uniq(rules))),) if rules else ())


def _cut(a: NetworkFw, b: NetworkFw) -> bool:
    if "strict" in (a.isolate, b.isolate):
        return True
    return a.isolate != "false" and b.isolate != "false"


# --- reading and writing a policy's entries ----------------------------------------------------


@dataclass(frozen=True)
class Current:
    """A policy's runtime entries as firewalld reported them (`getPolicySettings`)."""

    forward_ports: tuple[ForwardPort, ...] = ()
    rich_rules: tuple[str, ...] = ()
    other: Mapping[str, Any] = field(default_factory=dict)

    @classmethod
    def parse(cls, policy: str, settings: Any) -> Current:
        """Check the shapes before trusting them: a bad answer is an error, never a guess."""
        if not isinstance(settings, Mapping):
            raise BurrowError(f"firewalld policy {policy}: settings are not a dictionary")
        fwd = settings.get("forward_ports", [])
        rich = settings.get("rich_rules", [])
        if not isinstance(fwd, list | tuple) or not all(
                isinstance(t, list | tuple) and len(t) == 4 and all(isinstance(s, str) for s in t)
                for t in fwd):
            raise BurrowError(f"firewalld policy {policy}: forward_ports is not a list of 4 strings")
        if not isinstance(rich, list | tuple) or not all(isinstance(r, str) for r in rich):
            raise BurrowError(f"firewalld policy {policy}: rich_rules is not a list of strings")
        return cls(tuple((a, b, c, d) for a, b, c, d in fwd), tuple(rich), dict(settings))


@dataclass(frozen=True)
class Update:
    """The keys of one `setPolicySettings` call (firewalld leaves unnamed keys alone)."""

    policy: str
    forward_ports: tuple[ForwardPort, ...] | None = None
    rich_rules: tuple[str, ...] | None = None

    def __bool__(self) -> bool:
        return self.forward_ports is not None or self.rich_rules is not None


def merge(policy: str, cur: Current, add: Entries = Entries(), remove: Entries = Entries(),
          *, drop_to: Iterable[str] = ()) -> Update:
    """The entries after removing `remove` (and, as Netavark's teardown does, every forward-port
    and forward rich rule whose to-addr is in `drop_to`), then adding `add`; only changed keys."""
    to_addrs = set(drop_to)
    suffixes = tuple(f' to-addr="{a}"' for a in to_addrs)
    gone_f, gone_r = set(remove.forward_ports), set(remove.rich_rules)
    fwd = [t for t in cur.forward_ports if t not in gone_f and t[3] not in to_addrs]
    rich = [r for r in cur.rich_rules if r not in gone_r and not r.endswith(suffixes or ("\0",))]
    fwd += [t for t in add.forward_ports if t not in fwd]
    rich += [r for r in add.rich_rules if r not in rich]
    return Update(policy,
                  tuple(fwd) if tuple(fwd) != cur.forward_ports else None,
                  tuple(rich) if tuple(rich) != cur.rich_rules else None)


def restore(update: Update, cur: Current) -> Update:
    """The update that puts back what `update` changed (rollback)."""
    return Update(update.policy,
                  cur.forward_ports if update.forward_ports is not None else None,
                  cur.rich_rules if update.rich_rules is not None else None)

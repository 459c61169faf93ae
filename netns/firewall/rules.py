"""Pure firewall intent → a flat, backend-neutral rule model.

Everything a backend renders comes from `build(networks, ports)`: it expands comma protocol
lists, picks the address families a port mapping applies to, parses `host_ip`, and rejects
values that could corrupt a rule or a state file. Backends only turn these records into syntax,
so the semantics (which family, which subnet, which rules) live in one place.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address

from netns import names
from netns.errors import BurrowError
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import IPAddress, IPNetwork, PortMapping

PROTOCOLS = ("tcp", "udp", "sctp")
MASQ_MARK = 0x2000  # packets marked by SETMARK are masqueraded (hairpin, localhost)
DNAT_CT_MARK = 0x1000  # conntrack mark on port-forwarded flows: FORWARD accepts them first

# Names and ids are interpolated into rule text, chain names and file names; anything outside
# the sets in netns.names could break a batch's syntax or escape the state directory.


@dataclass(frozen=True)
class SubnetRules:
    """Masquerade, forward accept and DNS input accept for one subnet of one network."""

    network_id: str
    network_name: str
    subnet: IPNetwork

    @property
    def family(self) -> int:
        return self.subnet.version


@dataclass(frozen=True)
class Isolation:
    """Isolation mode of one bridge; `families` says which address families it carries."""

    bridge: str
    isolate: Isolate
    families: frozenset[int]


@dataclass(frozen=True)
class DnsDnat:
    """Redirect udp+tcp port 53 on a gateway to the port aardvark actually listens on."""

    gateway: IPAddress
    port: int

    @property
    def family(self) -> int:
        return self.gateway.version


@dataclass(frozen=True)
class PortDnat:
    """One host port (range) of one protocol forwarded to one container address."""

    network_id: str
    network_name: str
    container_id: str
    subnet: IPNetwork  # the container's subnet of this family (hairpin source match)
    container_ip: IPAddress
    protocol: str
    host_ip: IPAddress | None  # None: every local address of this family
    host_port: int
    container_port: int
    range: int  # >= 1

    @property
    def family(self) -> int:
        return self.container_ip.version

    @property
    def host_port_end(self) -> int:
        return self.host_port + self.range - 1

    @property
    def container_port_end(self) -> int:
        return self.container_port + self.range - 1


@dataclass(frozen=True)
class Ruleset:
    subnets: tuple[SubnetRules, ...] = ()
    isolation: tuple[Isolation, ...] = ()
    dns: tuple[DnsDnat, ...] = ()
    ports: tuple[PortDnat, ...] = ()

    @property
    def empty(self) -> bool:
        return not (self.subnets or self.dns or self.ports)

    def families(self) -> frozenset[int]:
        items: Iterable[SubnetRules | DnsDnat | PortDnat] = (*self.subnets, *self.dns, *self.ports)
        return frozenset(item.family for item in items)

    def for_family(self, family: int) -> Ruleset:
        return Ruleset(
            subnets=tuple(s for s in self.subnets if s.family == family),
            isolation=tuple(i for i in self.isolation if family in i.families),
            dns=tuple(d for d in self.dns if d.family == family),
            ports=tuple(p for p in self.ports if p.family == family),
        )


def build(networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> Ruleset:
    """The complete rule model for these networks and port forwards (validated)."""
    subnets: list[SubnetRules] = []
    isolation: list[Isolation] = []
    dns: list[DnsDnat] = []
    seen_bridges: set[str] = set()
    for net in networks:
        check_network(net)
        for subnet in net.subnets:
            subnets.append(SubnetRules(net.id, net.name, subnet))
        if net.bridge not in seen_bridges:
            seen_bridges.add(net.bridge)
            fams = frozenset(s.version for s in net.subnets)
            isolation.append(Isolation(net.bridge, net.isolate, fams))
        if net.dns_port is not None and net.dns_port != 53:
            dns.extend(DnsDnat(gw, net.dns_port) for gw in net.gateways)
    port_rules = [rule for pf in ports for rule in port_dnats(pf)]
    return Ruleset(tuple(subnets), tuple(isolation), tuple(dict.fromkeys(dns)), tuple(port_rules))


def check_network(net: NetworkFw) -> None:
    where = f"firewall: network {net.name!r}"
    if not names.is_name(net.name):
        raise BurrowError(f"{where}: invalid network name")
    if not names.is_name(net.id):
        raise BurrowError(f"{where}: invalid network id {net.id!r}")
    if not names.is_ifname(net.bridge):
        raise BurrowError(f"{where}: invalid bridge name {net.bridge!r}")
    if net.isolate not in ("false", "true", "strict"):
        raise BurrowError(f"{where}: invalid isolate {net.isolate!r}")
    if net.dns_port is not None and not 1 <= net.dns_port <= 65535:
        raise BurrowError(f"{where}: invalid dns port {net.dns_port}")


def port_dnats(pf: PortFw) -> list[PortDnat]:
    """Expand one container's port mappings into per-protocol, per-family DNAT records."""
    check_network(pf.network)
    if not names.is_name(pf.container_id):
        raise BurrowError(f"firewall: invalid container id {pf.container_id!r}")
    out: list[PortDnat] = []
    for pm in pf.mappings:
        protocols = _protocols(pm)
        host_ip, families = _host_ip(pm)
        for ctr_ip in (pf.container_v4, pf.container_v6):
            if ctr_ip is None or ctr_ip.version not in families:
                continue
            subnet = _subnet_of(pf.network, ctr_ip)
            for proto in protocols:
                out.append(PortDnat(
                    network_id=pf.network.id, network_name=pf.network.name,
                    container_id=pf.container_id, subnet=subnet, container_ip=ctr_ip,
                    protocol=proto, host_ip=host_ip, host_port=pm.host_port,
                    container_port=pm.container_port, range=max(pm.range, 1),
                ))
    return out


def _protocols(pm: PortMapping) -> tuple[str, ...]:
    protocols = tuple(dict.fromkeys(p.lower() for p in pm.protocols))
    bad = [p for p in protocols if p not in PROTOCOLS]
    if not protocols or bad:
        raise BurrowError(
            f"invalid protocol {pm.protocol!r} for port {pm.host_port}: "
            f"expected tcp, udp, sctp or a comma list of them"
        )
    rng = max(pm.range, 1)
    for what, port in (("host", pm.host_port), ("container", pm.container_port)):
        if not 1 <= port or port + rng - 1 > 65535:
            raise BurrowError(
                f"invalid {what} port {port} with range {pm.range}: ports must be 1-65535"
            )
    return protocols


def _host_ip(pm: PortMapping) -> tuple[IPAddress | None, frozenset[int]]:
    """The address to match (None = any) and the families the mapping applies to."""
    text = pm.host_ip.strip()
    if text == "":
        return None, frozenset({4, 6})
    try:
        addr = ip_address(text)
    except ValueError:
        raise BurrowError(
            f'invalid host ip "{pm.host_ip}" provided for port {pm.host_port}'
        ) from None
    # The wildcards mean "any address of this family", not a literal match.
    if addr == IPv4Address("0.0.0.0") or addr == IPv6Address("::"):
        return None, frozenset({addr.version})
    return addr, frozenset({addr.version})


def _subnet_of(net: NetworkFw, ip: IPAddress) -> IPNetwork:
    same_family = [s for s in net.subnets if s.version == ip.version]
    for subnet in same_family:
        if ip in subnet:
            return subnet
    if same_family:
        return same_family[0]
    # No subnet of this family: hairpin matches only the container itself.
    return IPv4Network(ip) if isinstance(ip, IPv4Address) else IPv6Network(ip)

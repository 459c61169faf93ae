"""The pure intent → rule model: protocol lists, families, host_ip, ranges, DNS, isolation."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address, ip_address, ip_network

import pytest

from netns.errors import BurrowError
from netns.firewall import rules
from netns.firewall.types import Isolate, NetworkFw, PortFw
from netns.schema import PortMapping

NET_ID = "3f0c5d8a1e2b4c6d8e0f1a2b3c4d5e6f7a8b9c0d1e2f3a4b5c6d7e8f9a0b1c2d"
CID = "6ea9e2e1f2c6a0c8d0e1b6e2c4c1f0e8a7b5d3c2e1f0a9b8c7d6e5f4a3b2c1d0"


def net(isolate: Isolate = "false", dns_port: int | None = None, dual: bool = True,
        name: str = "nanet1", bridge: str = "nabr1", nid: str = NET_ID) -> NetworkFw:
    subnets = [ip_network("10.89.7.0/24")] + ([ip_network("fd10:89:7::/64")] if dual else [])
    gws = [ip_address("10.89.7.1")] + ([ip_address("fd10:89:7::1")] if dual else [])
    return NetworkFw(name=name, id=nid, bridge=bridge, subnets=tuple(subnets),
                     gateways=tuple(gws), isolate=isolate, dns_port=dns_port)


def pf(*mappings: PortMapping, network: NetworkFw | None = None, v6: bool = True) -> PortFw:
    return PortFw(CID, network or net(), IPv4Address("10.89.7.2"),
                  IPv6Address("fd10:89:7::2") if v6 else None, tuple(mappings))


def pm(host_port: int = 8080, ctr: int = 80, proto: str = "tcp", host_ip: str = "",
       rng: int = 1) -> PortMapping:
    return PortMapping(host_ip=host_ip, container_port=ctr, host_port=host_port, range=rng,
                       protocol=proto)


def test_subnets_isolation_and_no_dns_on_53() -> None:
    rs = rules.build([net(isolate="true", dns_port=53)], [])
    assert [str(s.subnet) for s in rs.subnets] == ["10.89.7.0/24", "fd10:89:7::/64"]
    assert rs.isolation == (rules.Isolation("nabr1", "true", frozenset({4, 6})),)
    assert rs.dns == ()
    assert rs.families() == {4, 6}


def test_dns_dnat_per_gateway_when_port_not_53() -> None:
    rs = rules.build([net(dns_port=10053)], [])
    assert rs.dns == (rules.DnsDnat(ip_address("10.89.7.1"), 10053),
                      rules.DnsDnat(ip_address("fd10:89:7::1"), 10053))


def test_comma_protocols_and_both_families_when_host_ip_empty() -> None:
    out = rules.port_dnats(pf(pm(proto="tcp, UDP")))
    assert [(p.family, p.protocol) for p in out] == [(4, "tcp"), (4, "udp"), (6, "tcp"), (6, "udp")]
    assert {str(p.subnet) for p in out} == {"10.89.7.0/24", "fd10:89:7::/64"}
    assert all(p.host_ip is None for p in out)


@pytest.mark.parametrize(("host_ip", "families", "match"), [
    ("0.0.0.0", [4], None), ("::", [6], None),
    ("192.0.2.7", [4], "192.0.2.7"), ("2001:db8::7", [6], "2001:db8::7"),
])
def test_host_ip_picks_the_family(host_ip: str, families: list[int], match: str | None) -> None:
    out = rules.port_dnats(pf(pm(host_ip=host_ip)))
    assert [p.family for p in out] == families
    assert [str(p.host_ip) if p.host_ip else None for p in out] == [match]


def test_v6_host_ip_without_v6_container_gives_no_rule() -> None:
    assert rules.port_dnats(pf(pm(host_ip="2001:db8::7"), v6=False)) == []


def test_range_fields() -> None:
    (p,) = rules.port_dnats(pf(pm(8000, 9000, rng=3, host_ip="0.0.0.0")))
    assert (p.host_port, p.host_port_end, p.container_port, p.container_port_end) == (
        8000, 8002, 9000, 9002)


@pytest.mark.parametrize(("mapping", "message"), [
    (pm(host_ip="10.0.0.300"), 'invalid host ip "10.0.0.300" provided for port 8080'),
    (pm(proto="icmp"), "invalid protocol 'icmp' for port 8080"),
    (pm(proto=""), "invalid protocol '' for port 8080"),
    (pm(host_port=65535, rng=2), "invalid host port 65535 with range 2"),
    (pm(host_port=0), "invalid host port 0"),
])
def test_bad_mappings_are_rejected(mapping: PortMapping, message: str) -> None:
    with pytest.raises(BurrowError, match=message.replace("(", r"\(").replace(")", r"\)")):
        rules.port_dnats(pf(mapping))


@pytest.mark.parametrize("network", [
    net(bridge="br 0"), net(bridge="a" * 16), net(name='x"y'), net(nid="../etc"),
])
def test_unsafe_names_never_reach_a_rule(network: NetworkFw) -> None:
    with pytest.raises(BurrowError):
        rules.build([network], [])


def test_unsafe_container_id_rejected() -> None:
    bad = PortFw("a b", net(), IPv4Address("10.89.7.2"), None, (pm(),))
    with pytest.raises(BurrowError, match="invalid container id"):
        rules.port_dnats(bad)


def test_for_family_and_empty() -> None:
    rs = rules.build([net(dns_port=1053)], [pf(pm())])
    v6 = rs.for_family(6)
    assert {s.family for s in v6.subnets} == {6}
    assert [p.family for p in v6.ports] == [6]
    assert [d.family for d in v6.dns] == [6]
    assert rules.Ruleset().empty and not rs.empty
    assert rules.build([net(dual=False)], []).for_family(6).empty

"""`create`'s own checks, as netavark 2.x's create makes them (pure; messages follow its).

Setup applies the shared checks (`validate.check_network`); these are what only `create`
refuses: a new network's name, id, bridge name, IPAM choice, DNS servers, subnets and routes.
"""

from __future__ import annotations

import re

from netns import ipam, names
from netns.errors import BurrowError
from netns.plan import DEVICELESS_ROUTE_TYPES
from netns.schema import CreateRequest, IPNetwork, Network, Subnet, parse_ip

HEX_ID_RE = re.compile(r"^[0-9a-fA-F]{64}$")
IPAM_DRIVERS = ("host-local", "dhcp", "none")


def name_and_id(req: CreateRequest) -> None:
    net = req.network
    if not net.name:
        raise BurrowError("Network name must be supplied")
    if not names.is_name(net.name):
        raise BurrowError(
            f'Invalid characters in network name "{net.name}": must match [a-zA-Z0-9][a-zA-Z0-9_.-]*'
        )
    if net.name in req.used_names:
        raise BurrowError(f"network already exists {net.name}")
    if not net.id:
        raise BurrowError("Network id must be supplied")
    if not HEX_ID_RE.fullmatch(net.id):
        raise BurrowError(f'Network id must be a 64 character hexadecimal string "{net.id}"')


def ipam_driver(net: Network) -> str | None:
    driver = (net.ipam_options or {}).get("driver") or None
    if driver is None:
        return None
    if driver not in IPAM_DRIVERS:
        raise BurrowError(f"Unsupported ipam driver: {driver}")
    if driver == "none" and net.subnets:
        raise BurrowError("None ipam driver is set but subnets are given")
    return driver


def dns_servers(net: Network) -> None:
    if net.network_dns_servers is None:
        return
    for text in net.network_dns_servers:
        parse_ip(text, "network DNS server")
    if not net.dns_enabled:
        raise BurrowError("cannot set NetworkDNSServers if DNS is not enabled for the network")


def subnets(subs: tuple[Subnet, ...]) -> None:
    """No subnet twice or overlapping another; lease ranges inside their subnet."""
    seen: list[IPNetwork] = []
    for sub in subs:
        if sub.subnet in seen:
            raise BurrowError(f"duplicate subnet {sub.subnet}")
        if ipam.overlaps(sub.subnet, seen):
            raise BurrowError(f"subnet {sub.subnet} overlaps with another subnet of the network")
        seen.append(sub.subnet)
        lease_range(sub)


def lease_range(sub: Subnet) -> None:
    lr = sub.lease_range or {}
    ips = []
    for key in ("start_ip", "end_ip"):
        text = lr.get(key)
        if text is None:
            continue
        if not isinstance(text, str):
            raise BurrowError(f"invalid {key}: {text!r} is not an IP address")
        ip = parse_ip(text, key)
        if ip not in sub.subnet:
            raise BurrowError(f"lease range {key} {ip} not in subnet {sub.subnet}")
        ips.append(ip)
    if len(ips) == 2 and ips[0] > ips[1]:  # type: ignore[operator]  # same family: in subnet
        raise BurrowError(
            f"lease range start_ip {ips[0]} must be less than or equal to end_ip {ips[1]}"
        )


def routes(net: Network) -> None:
    """Destinations are networks (checked when parsed); gateways as the route type needs."""
    for r in net.routes or ():
        kind = r.route_type or "unicast"
        if kind == "unicast" and r.gateway is None:
            raise BurrowError(f"route {r.destination} requires a gateway for type unicast")
        if kind in DEVICELESS_ROUTE_TYPES and r.gateway is not None:
            raise BurrowError(f"route {r.destination} must not have a gateway for type {kind}")


def bridge_name(req: CreateRequest) -> None:
    """A given bridge name that another network or link uses already (managed mode only)."""
    net = req.network
    managed = (net.option("mode") or "managed") == "managed" and not net.option("vlan")
    if net.network_interface and managed and net.network_interface in req.used_interfaces:
        raise BurrowError(f"bridge name {net.network_interface} already in use")

"""Validate a whole setup/teardown request before the first side effect.

The output is a `Request`: every network turned into its driver's typed `Attachment` holding
only checked values (names, addresses, options), so IPAM, planning and apply never see raw
input. Every name that later reaches a path, a rule or the DNS config format is checked here.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from netns import drivers, names
from netns.drivers import macvlan
from netns.drivers.base import Attachment, bool_option, gateways, int_option, mtu_option
from netns.drivers.bridge import BridgeAttachment
from netns.errors import BurrowError
from netns.plan import ROUTE_TYPES
from netns.schema import (
    IPAddress,
    Network,
    NetworkOptions,
    PerNetworkOptions,
    PortMapping,
    Route,
    parse_ip,
)

log = logging.getLogger("netns.validate")

# Kept for the rootless CLI, which offers the engine's drivers and macvlan modes.
DRIVERS = drivers.USABLE
MAX_METRIC = 2**32 - 1
MACVLAN_MODES = macvlan.MODES


@dataclass(frozen=True)
class Request:
    options: NetworkOptions
    attachments: tuple[Attachment, ...]  # in the order of options.networks
    ports: tuple[PortMapping, ...]
    dns_servers: tuple[IPAddress, ...]  # the container's own, parsed

    @property
    def container_id(self) -> str:
        return self.options.container_id

    @property
    def container_name(self) -> str:
        return self.options.container_name

    @property
    def per_network(self) -> tuple[PerNetworkOptions, ...]:
        return tuple(per for _, per in self.options.networks)


def ip_list(texts: tuple[str, ...] | None, what: str) -> tuple[IPAddress, ...]:
    return tuple(parse_ip(t, what) for t in texts or ())


def _routes(net: Network) -> tuple[Route, ...]:
    routes = tuple(net.routes or ())
    for r in routes:
        if r.route_type is not None and r.route_type not in ROUTE_TYPES:
            raise BurrowError(f"route to {r.destination}: unknown route_type {r.route_type!r}")
        if r.gateway is not None and r.gateway.version != r.destination.version:
            raise BurrowError(f"route to {r.destination}: gateway {r.gateway} is another IP family")
        if r.metric is not None and not 0 <= r.metric <= MAX_METRIC:
            # a u32 in netlink: anything else failed mid-apply as an "internal error"
            raise BurrowError(f"route to {r.destination}: metric {r.metric} is not 0-{MAX_METRIC}")
    return routes


def dns_aliases(aliases: tuple[str, ...] | None) -> tuple[str, ...]:
    """Aliases that can be DNS names; the rest are warned about and skipped (netavark 1.15),
    so nothing invalid ever reaches the DNS config file."""
    out: list[str] = []
    for alias in aliases or ():
        if names.is_name(alias) and len(alias) <= names.MAX_NAME:
            out.append(alias)
        else:
            log.warning("skipping DNS alias %r: it is not a valid name", alias)
    return tuple(out)


def check_dns_loop(net: Network, gws: tuple[IPAddress, ...], dns: tuple[IPAddress, ...]) -> None:
    """A network DNS server on the network's own gateway is the DNS server itself (2.1)."""
    if not net.dns_enabled:
        return
    for server in dns:
        if server in gws:
            raise BurrowError(
                f"network DNS server {server} is the gateway of network {net.name}: the DNS "
                "server listens there and would forward queries to itself"
            )


def check_network(net: Network) -> None:
    """The network's own fields; also what `create` checks."""
    names.network_name(net.name)
    names.name(net.id, "network id")
    drivers.get(net.driver).check_network(net)
    mtu_option(net)


def attachment(net: Network, per: PerNetworkOptions) -> Attachment:
    """The driver's attachment, without addresses: IPAM fills them in (`netns.ipam.assign`)."""
    driver = drivers.get(net.driver)
    check_network(net)
    base = Attachment(
        network=net,
        ifname=names.ifname(per.interface_name, "container interface"),
        addresses=(),
        gateways=gateways(net),
        mac=names.mac(per.static_mac) if per.static_mac else None,
        mtu=mtu_option(net),
        metric=int_option(net, "metric", 100, 0, MAX_METRIC),
        default_route=not net.internal and not bool_option(net, "no_default_route"),
        routes=_routes(net),
        aliases=dns_aliases(per.aliases),
        network_dns=ip_list(net.network_dns_servers, "network DNS server"),
    )
    check_dns_loop(net, tuple(g.ip for g in base.gateways), base.network_dns)
    return driver.attach(base, per)


def _one_network_per_bridge(att: Attachment, bridges: dict[str, str]) -> None:
    """Two networks on one bridge: the first one's rules outlived the teardown (they go with the
    bridge, which the second still held)."""
    if not isinstance(att, BridgeAttachment) or not att.managed:
        return  # macvlan networks may share a parent; an unmanaged bridge has no rules of ours
    other = bridges.setdefault(att.bridge, att.network.name)
    if other != att.network.name:
        raise BurrowError(f"networks {other} and {att.network.name} both use bridge {att.bridge}: "
                          "give each network its own network_interface")


def request(opts: NetworkOptions) -> Request:
    """Check everything that can be checked without the kernel; raise on the first problem."""
    names.name(opts.container_id, "container id")
    names.name(opts.container_name, "container name")
    attachments: list[Attachment] = []
    seen_if: set[str] = set()
    seen_nets: set[str] = set()
    bridges: dict[str, str] = {}  # bridge -> the network using it in this request
    for name, per in opts.networks:
        names.network_name(name)
        if name in seen_nets:
            # The 2.x array shape can list one twice; its rules then clashed in the firewall.
            raise BurrowError(f"network {name} is listed twice in the request")
        seen_nets.add(name)
        net = opts.network_info.get(name)
        if net is None:
            raise BurrowError(f"network info for network {name} not found")
        try:
            att = attachment(net, per)
        except BurrowError as exc:
            raise exc.wrap(f"network {name}") from None
        if att.ifname in seen_if:
            raise BurrowError(
                f"network {name}: interface name {att.ifname} is used twice in the request"
            )
        seen_if.add(att.ifname)
        _one_network_per_bridge(att, bridges)
        attachments.append(att)
    # Port mappings were checked when parsed (`PortMapping.from_json`). A host_ip of a family
    # the container lacks on these networks is not an error: rootless Podman's `network connect`
    # sends all the container's mappings with only the new network. Such a mapping simply gets
    # no rule, as with netavark.
    return Request(
        options=opts,
        attachments=tuple(attachments),
        ports=opts.ports,
        dns_servers=ip_list(opts.dns_servers, "DNS server"),
    )

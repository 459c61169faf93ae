"""A parsed CNI request plus its addresses -> the engine's `schema.NetworkOptions` (pure)."""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

from netns.cni.config import Env, NetConf
from netns.schema import (
    IPAddress,
    Network,
    NetworkOptions,
    PerNetworkOptions,
    PortMapping,
    Route,
    Subnet,
)


def default_gateways(conf: NetConf) -> dict[int, IPAddress]:
    """The default route each IP family gets, as the reference bridge + host-local install
    them: a family whose `ipam.routes` hold its default route gets it (via that route's `gw`,
    else the family's gateway); with `isDefaultGateway`, every other family too, via its
    gateway. A family asked for neither gets none."""
    gateways = {rs[0].subnet.version: rs[0].gateway for rs in conf.range_sets}
    out: dict[int, IPAddress] = {}
    if conf.internal:
        return out  # no way out, whatever the routes say (burrow's `internal`)
    for r in conf.ipam_routes:
        if r.dst.prefixlen == 0 and r.dst.version in gateways:
            out.setdefault(r.dst.version, r.gw or gateways[r.dst.version])
    if conf.default_gateway:
        for version, gw in gateways.items():
            out.setdefault(version, gw)
    return out


def network(conf: NetConf) -> Network:
    options = {"isolate": conf.isolate}
    if conf.mtu:
        options["mtu"] = str(conf.mtu)
    if conf.vlan:
        options["vlan"] = str(conf.vlan)
    gateways = {rs[0].subnet.version: rs[0].gateway for rs in conf.range_sets}
    defaults = default_gateways(conf)
    extra: list[Route] = []
    if defaults != gateways and not conf.internal:
        # Not "every family via its own gateway" (the engine's default route): only the
        # families asked for, each via the gateway asked for, as static routes.
        options["no_default_route"] = "true"
        extra = [Route(destination=ipaddress.ip_network("0.0.0.0/0" if v == 4 else "::/0"), gateway=gw)
                 for v, gw in sorted(defaults.items())]
    routes = tuple(
        Route(destination=r.dst, gateway=r.gw if r.gw is not None else gateways.get(r.dst.version))
        for r in conf.routes
    ) + tuple(extra)
    return Network(
        name=conf.name,
        id=conf.network_id,
        driver="bridge",
        network_interface=conf.bridge,
        subnets=tuple(Subnet(rs[0].subnet, rs[0].gateway) for rs in conf.range_sets),
        ipv6_enabled=any(rs[0].subnet.version == 6 for rs in conf.range_sets),
        internal=conf.internal,
        dns_enabled=conf.dns_names,
        options=options,
        ipam_options={"driver": "host-local"},
        routes=routes or None,
    )


def options(
    env: Env,
    conf: NetConf,
    ips: Sequence[IPAddress],
    *,
    name: str,
    mac: str | None,
    aliases: Sequence[str],
    ports: Sequence[PortMapping],
) -> NetworkOptions:
    """`ips[i]` is the address in `conf.range_sets[i]`, as the engine's host-local wants."""
    per = PerNetworkOptions(
        interface_name=env.ifname,
        static_ips=tuple(ips),
        aliases=tuple(aliases) or None,
        static_mac=mac,
    )
    return NetworkOptions(
        container_id=env.container_id,
        container_name=name,
        networks=((conf.name, per),),
        network_info={conf.name: network(conf)},
        port_mappings=tuple(ports) or None,
    )

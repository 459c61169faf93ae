"""A parsed CNI request plus its addresses -> the engine's `schema.NetworkOptions` (pure)."""

from __future__ import annotations

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


def network(conf: NetConf) -> Network:
    options = {"isolate": conf.isolate}
    if conf.mtu:
        options["mtu"] = str(conf.mtu)
    if not conf.default_route:
        options["no_default_route"] = "true"
    gateways = {rs[0].subnet.version: rs[0].gateway for rs in conf.range_sets}
    routes = tuple(
        Route(destination=r.dst, gateway=r.gw if r.gw is not None else gateways.get(r.dst.version))
        for r in conf.routes
    )
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

"""The bridge driver, pure: an Attachment in, a plan out (spec/netavark.md §3 order)."""

from __future__ import annotations

import ipaddress

from netns.plan import (
    AddRoute,
    AddVeth,
    ConfigureInterface,
    DeleteLink,
    DetachFromBridge,
    EnsureBridge,
    Op,
    RequireLink,
    Sysctl,
)
from netns.validate import Attachment

DEFAULT_V4 = ipaddress.ip_network("0.0.0.0/0")
DEFAULT_V6 = ipaddress.ip_network("::/0")


def forwarding(ipv6: bool) -> tuple[Op, ...]:
    ops: list[Op] = [Sysctl("host", "net/ipv4/ip_forward", "1", tolerate_readonly=True)]
    if ipv6:
        ops.append(Sysctl("host", "net/ipv6/conf/all/forwarding", "1", tolerate_readonly=True))
    return tuple(ops)


def routes(att: Attachment) -> tuple[Op, ...]:
    """Default routes via the first gateway of each family, then the network's static routes."""
    ops: list[Op] = []
    if att.default_route:
        for version, dest in ((4, DEFAULT_V4), (6, DEFAULT_V6)):
            gw = next((g.ip for g in att.gateways if g.version == version), None)
            if gw is not None and att.first_address(version) is not None:
                ops.append(AddRoute("container", dest, gw, att.ifname, att.metric))
    for r in att.routes:
        ops.append(
            AddRoute(
                "container",
                r.destination,
                r.gateway,
                None if r.route_type in ("blackhole", "unreachable", "prohibit") else att.ifname,
                r.metric if r.metric is not None else att.metric,
                r.route_type or "unicast",
            )
        )
    return tuple(ops)


def plan_setup(att: Attachment, *, has_ports: bool) -> tuple[Op, ...]:
    ipv6 = att.ipv6
    ops: list[Op] = list(forwarding(ipv6))
    if att.managed:
        ops.append(EnsureBridge(att.bridge, att.mtu, att.gateways, ipv6))
    else:
        ops.append(RequireLink("host", att.bridge, "bridge"))
    ops.append(AddVeth(att.bridge, att.ifname, att.host_ifname, att.mac, att.mtu, ipv6))
    ops.append(ConfigureInterface(att.ifname, att.addresses, ipv6))
    ops.extend(routes(att))
    if att.managed and att.internal:
        ops.append(Sysctl("host", f"net/ipv4/conf/{att.bridge}/forwarding", "0"))
        if ipv6:
            ops.append(Sysctl("host", f"net/ipv6/conf/{att.bridge}/forwarding", "0"))
    if att.managed and has_ports and not att.internal:
        # Lets DNAT from 127.0.0.1 reach the container (the localhost SETMARK rule).
        ops.append(Sysctl("host", f"net/ipv4/conf/{att.bridge}/route_localnet", "1"))
    return tuple(ops)


def plan_teardown(att: Attachment) -> tuple[Op, ...]:
    if att.managed:
        return (DetachFromBridge(att.ifname, att.bridge),)
    return (DeleteLink("container", att.ifname),)

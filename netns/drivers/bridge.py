"""The bridge driver, pure: a BridgeAttachment in, a plan out (spec/netavark.md §3 order)."""

from __future__ import annotations

import dataclasses
import ipaddress
from dataclasses import dataclass

from netns import names
from netns.drivers.base import Attachment, check_options, own
from netns.errors import BurrowError
from netns.firewall.types import OUTBOUND_OPTIONS, Isolate, NetworkFw, outbound_options
from netns.plan import (
    DEVICELESS_ROUTE_TYPES,
    AddRoute,
    AddVeth,
    ConfigureInterface,
    DeleteLink,
    DeleteRoute,
    DetachFromBridge,
    EnsureBridge,
    ForgetNeighbours,
    Op,
    RequireLink,
    SeedNeighbours,
    Sysctl,
)
from netns.schema import Network, PerNetworkOptions

DEFAULT_V4 = ipaddress.ip_network("0.0.0.0/0")
DEFAULT_V6 = ipaddress.ip_network("::/0")
OPTIONS = frozenset({"mtu", "isolate", "metric", "mode", "no_default_route", "vrf", "vlan",
                     *OUTBOUND_OPTIONS})
MODES = ("managed", "unmanaged")
MAX_BRIDGES = 100_000
MAX_VLAN = 4094
MAX_U16 = 65535


@dataclass(frozen=True)
class BridgeAttachment(Attachment):
    bridge: str
    host_ifname: str | None  # None: the kernel names the host end
    isolate: Isolate
    managed: bool
    vlan: int | None  # the port's VLAN id (pvid, untagged); the bridge filters VLANs (1.14)
    vrf: str | None  # a VRF device a bridge this setup creates is enslaved to (1.8)


def isolate_option(net: Network) -> Isolate:
    text = (net.option("isolate") or "false").lower()
    if text == "true":
        return "true"
    if text == "strict":
        return "strict"
    if text == "false" or text == "":
        return "false"
    raise BurrowError(f'unable to parse "isolate": {text!r} is not `true`, `false` or `strict`')


def net_has_isolate(net: Network) -> bool:
    """Whether the network names its isolation; if not, the firewall backend's default applies
    (netavark 2.x: strict; 1.4: none)."""
    return net.option("isolate") is not None


def mode_option(net: Network) -> str:
    mode = net.option("mode") or "managed"
    if mode not in MODES:
        raise BurrowError(f"bridge mode {mode!r} is not valid (use managed or unmanaged)")
    return mode


def vlan_option(net: Network) -> int | None:
    """netavark 1.14: a u16, at most 4094 (the kernel then refuses 0 when the port gets it)."""
    text = net.option("vlan")
    if text is None or text == "":
        return None
    if not (text.isascii() and text.isdigit()) or int(text) > MAX_U16:  # "²".isdigit() too
        raise BurrowError(f"unable to parse 'vlan': {text!r} is not a number from 0 to {MAX_U16}")
    vlan = int(text)
    if vlan > MAX_VLAN:
        raise BurrowError(f"vlan must be between 0 and {MAX_VLAN}")
    return vlan


def vrf_option(net: Network) -> str | None:
    vrf = net.option("vrf") or None
    return names.ifname(vrf, "vrf interface") if vrf else None


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
                # With a gateway the kernel finds the interface that reaches it, which may be
                # another network's (netavark 1.7); the engine adds these after all interfaces.
                None if r.route_type in DEVICELESS_ROUTE_TYPES or r.gateway else att.ifname,
                r.metric if r.metric is not None else att.metric,
                r.route_type or "unicast",
            )
        )
    return tuple(ops)


def seeds_neighbours(att: BridgeAttachment) -> bool:
    """Managed bridges only: their gateways are the bridge's own addresses (an unmanaged
    bridge's may be another host); and not on a VLAN, whose frames the bridge device itself
    may not take (netavark 1.14 leaves it out of the VLAN: the gateway is elsewhere)."""
    return att.managed and att.vlan is None and bool(att.addresses)


def seed_neighbours(att: BridgeAttachment) -> SeedNeighbours:
    # The gateways of the subnets the container has an address in (its on-link next hops).
    mine = {a.network for a in att.addresses}
    gateways = tuple(g.ip for g in att.gateways if g.network in mine)
    return SeedNeighbours(att.bridge, att.ifname, gateways, tuple(a.ip for a in att.addresses))


def plan_setup(att: BridgeAttachment, *, has_ports: bool) -> tuple[Op, ...]:
    ipv6 = att.ipv6
    ops: list[Op] = list(forwarding(ipv6))
    if att.managed:
        ops.append(EnsureBridge(
            att.bridge, att.mtu, att.gateways, ipv6, route_localnet=not att.internal,
            vlan_filtering=att.vlan is not None, vrf=att.vrf,
        ))  # fmt: skip
    else:
        ops.append(RequireLink("host", att.bridge, "bridge"))
    ops.append(AddVeth(att.bridge, att.ifname, att.host_ifname, att.mac, att.mtu, ipv6, att.vlan))
    ops.append(ConfigureInterface(att.ifname, att.addresses, ipv6, bridge_port=att.managed))
    if seeds_neighbours(att):
        ops.append(seed_neighbours(att))
    ops.extend(routes(att))
    if att.managed and att.internal:
        ops.append(Sysctl("host", f"net/ipv4/conf/{att.bridge}/forwarding", "0"))
        if ipv6:
            ops.append(Sysctl("host", f"net/ipv6/conf/{att.bridge}/forwarding", "0"))
    if att.managed and has_ports and not att.internal:
        # Lets DNAT from 127.0.0.1 reach the container (the localhost SETMARK rule). A bridge
        # this setup makes gets it anyway (2.x); netavark 1.4 sets it here, on a bridge it may
        # have made without (`EnsureBridge.route_localnet`).
        ops.append(Sysctl("host", f"net/ipv4/conf/{att.bridge}/route_localnet", "1"))
    return tuple(ops)


def deviceless_routes(att: Attachment) -> tuple[Op, ...]:
    """Routes no interface takes with it: teardown removes them (netavark 2.0)."""
    return tuple(
        DeleteRoute("container", r.destination, r.metric if r.metric is not None else att.metric,
                    r.route_type)
        for r in att.routes
        if r.route_type in DEVICELESS_ROUTE_TYPES
    )


def plan_teardown(att: BridgeAttachment) -> tuple[Op, ...]:
    if att.managed:
        forget: tuple[Op, ...] = ()
        if seeds_neighbours(att):
            forget = (ForgetNeighbours(att.bridge, tuple(a.ip for a in att.addresses)),)
        return (*deviceless_routes(att), *forget, DetachFromBridge(att.ifname, att.bridge))
    return (*deviceless_routes(att), DeleteLink("container", att.ifname))


def _own(att: Attachment) -> BridgeAttachment:
    return own(att, BridgeAttachment, "bridge")


class BridgeDriver:
    name = "bridge"
    options = OPTIONS
    usable = True
    auto_gateway = True

    def check_network(self, net: Network) -> None:
        check_options(net, OPTIONS, {})
        mode_option(net)
        isolate_option(net)
        outbound_options(net.option)  # netavark 2.0: an address of that family
        vlan_option(net)
        vrf_option(net)

    def complete(self, net: Network, taken_ifnames: frozenset[str], prefix: str) -> Network:
        if net.network_interface:
            names.ifname(net.network_interface, "network interface")
            return net
        for i in range(MAX_BRIDGES):
            candidate = f"{prefix}{i}"
            if candidate not in taken_ifnames:
                bridge = names.ifname(candidate, "bridge interface")
                return dataclasses.replace(net, network_interface=bridge)
        raise BurrowError(f"no free bridge name {prefix}N left")

    def attach(self, base: Attachment, per: PerNetworkOptions) -> BridgeAttachment:
        net = base.network  # validate.check_network has checked its options
        if not net.network_interface:
            raise BurrowError("no bridge interface name given")
        host_ifname = (per.options or {}).get("host_interface_name") or None
        return BridgeAttachment(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            bridge=names.ifname(net.network_interface, "bridge interface"),
            host_ifname=names.ifname(host_ifname, "host interface") if host_ifname else None,
            isolate=isolate_option(net),
            managed=mode_option(net) == "managed",
            vlan=vlan_option(net),
            vrf=vrf_option(net),
        )

    def plan_setup(self, att: Attachment, *, has_ports: bool) -> tuple[Op, ...]:
        return plan_setup(_own(att), has_ports=has_ports)

    def plan_teardown(self, att: Attachment) -> tuple[Op, ...]:
        return plan_teardown(_own(att))

    def firewall(self, att: Attachment, dns_port: int | None) -> NetworkFw | None:
        # Internal networks and unmanaged bridges get no rules.
        b = _own(att)
        if not b.managed or b.internal:
            return None
        v4, v6 = outbound_options(b.network.option)
        return NetworkFw(
            name=b.name,
            id=b.network.id,
            bridge=b.bridge,
            subnets=tuple(s.subnet for s in b.network.subnets),
            gateways=tuple(g.ip for g in b.gateways),
            isolate=b.isolate,
            dns_port=dns_port,
            outbound4=v4,
            outbound6=v6,
            isolate_given=net_has_isolate(b.network),
        )

    def dns(self, att: Attachment) -> bool:
        return True

    def dns_link(self, att: Attachment) -> str | None:
        b = _own(att)
        return None if b.managed else b.bridge

"""Operations a driver plans and the netlink adapter applies (pure data).

A plan is a tuple of these. Applying one may return an undo operation, so a failure part-way
through can be rolled back in reverse order; a transcript of a plan is a readable test.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from netns.schema import IPAddress, IPInterface, IPNetwork

Where = Literal["host", "container"]
ROUTE_TYPES = ("unicast", "blackhole", "unreachable", "prohibit")  # what Netavark accepts
DEVICELESS_ROUTE_TYPES = frozenset({"blackhole", "unreachable", "prohibit"})  # no oif


@dataclass(frozen=True)
class Sysctl:
    where: Where
    path: str  # below /proc/sys, '/'-separated (interface names may contain dots)
    value: str
    # Netavark tolerates a read-only /proc for the global forwarding switches.
    tolerate_readonly: bool = False


@dataclass(frozen=True)
class EnsureBridge:
    """Create the bridge if missing (MTU, v6 sysctls, gateway addresses, up); else check its kind."""

    name: str
    mtu: int
    addresses: tuple[IPInterface, ...]
    ipv6: bool
    # A bridge made here for a non-internal network gets route_localnet=1 (netavark 2.x).
    route_localnet: bool = False
    # VLAN filtering on (a new bridge is made with it, an existing one gets it: netavark 1.14).
    vlan_filtering: bool = False
    # A new bridge's master VRF; it must exist and be a vrf (netavark 1.8).
    vrf: str | None = None


@dataclass(frozen=True)
class RequireLink:
    """An existing link (unmanaged bridge, macvlan parent) that must be there."""

    where: Where
    name: str
    kind: str | None = None


@dataclass(frozen=True)
class AddVeth:
    """A veth whose peer is created straight inside the container netns, host end on the bridge."""

    bridge: str
    ifname: str
    host_ifname: str | None  # None: kernel picks vethN, as netavark 1.4 does
    mac: str | None
    mtu: int
    ipv6: bool
    vlan: int | None = None  # the host end's VLAN id on the bridge (pvid, untagged)


@dataclass(frozen=True)
class AddMacvlan:
    parent: str | None  # None: the interface of the host's default route
    ifname: str
    mode: str
    mac: str | None
    mtu: int


@dataclass(frozen=True)
class ConfigureInterface:
    """Inside the container: no SLAAC, no DAD, addresses, lo and the interface up."""

    ifname: str
    addresses: tuple[IPInterface, ...]
    # accept_dad=0 (a hard sysctl): netavark's bridge driver on IPv6 networks. Its macvlan
    # keeps DAD: that link is a real LAN, where another machine may hold the address.
    no_dad: bool
    # Managed bridge ports (netavark 1.11): loose reverse-path filtering (rp_filter=2), so a
    # reply routed back over another network's interface is not dropped; and arp_notify=1.
    bridge_port: bool = False


@dataclass(frozen=True)
class SeedNeighbours:
    """A new bridge port's two ends learn each other's MAC (netns/neigh.py): in the container,
    each gateway -> the bridge's MAC on `ifname`; on the host, each container address -> the
    container's MAC on `bridge`. Else the container's first packet to its gateway, and the
    reply, each wait for an ARP/ND exchange the bridge floods to every port (issue 15).
    Kernel-checked entries (STALE); failing to write them is logged, never a setup error."""

    bridge: str
    ifname: str
    gateways: tuple[IPAddress, ...]
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class ForgetNeighbours:
    """Teardown (and rollback) of `SeedNeighbours`' host side: the bridge's entries for the
    container's addresses, so a later holder of an address never gets the old MAC (the
    container side goes with its interface). Entries already gone are fine."""

    bridge: str
    addresses: tuple[IPAddress, ...]


@dataclass(frozen=True)
class AddRoute:
    where: Where
    destination: IPNetwork
    gateway: IPAddress | None
    ifname: str | None
    metric: int
    route_type: str = "unicast"


@dataclass(frozen=True)
class DeleteRoute:
    """Teardown of a route that no interface takes with it (blackhole, unreachable, prohibit)."""

    where: Where
    destination: IPNetwork
    metric: int
    route_type: str


@dataclass(frozen=True)
class DeleteLink:
    where: Where
    name: str
    missing_ok: bool = True


@dataclass(frozen=True)
class DetachFromBridge:
    """Teardown of one bridge port: delete the container's veth and, if it was the bridge's
    last port, the bridge too (the result says whether the bridge went)."""

    ifname: str
    bridge: str


@dataclass(frozen=True)
class DeleteBridgeIfUnused:
    """Delete the bridge when no port is left on it; the result says whether it went."""

    name: str


Op = (
    Sysctl
    | EnsureBridge
    | RequireLink
    | AddVeth
    | AddMacvlan
    | ConfigureInterface
    | SeedNeighbours
    | ForgetNeighbours
    | AddRoute
    | DeleteRoute
    | DeleteLink
    | DetachFromBridge
    | DeleteBridgeIfUnused
)


def describe(op: Op) -> str:
    """A short human description, used as the context of an error."""
    match op:
        case Sysctl(where, path, value):
            return f"set sysctl {path}={value} ({where})"
        case EnsureBridge(name):
            return f"set up bridge {name}"
        case RequireLink(where, name):
            return f"find interface {name} ({where})"
        case AddVeth():
            return "create veth pair"
        case AddMacvlan(parent, ifname):
            return f"create macvlan {ifname} on {parent or 'the default-route interface'}"
        case ConfigureInterface(ifname):
            return f"configure container interface {ifname}"
        case SeedNeighbours(bridge, ifname):
            return f"seed neighbour entries of {ifname} and bridge {bridge}"
        case ForgetNeighbours(bridge):
            return f"remove neighbour entries on bridge {bridge}"
        case AddRoute(where, dest, gw):
            return f"add route {dest} via {gw or 'link'} ({where})"
        case DeleteRoute(where, dest, _, kind):
            return f"failed to delete {kind} route {dest} ({where})"
        case DeleteLink(where, name):
            return f"failed to delete {'container veth' if where == 'container' else 'link'} {name}"
        case DetachFromBridge(ifname, bridge):
            return f"failed to delete container veth {ifname} (bridge {bridge})"
        case DeleteBridgeIfUnused(name):
            return f"delete bridge {name}"
    raise AssertionError(op)

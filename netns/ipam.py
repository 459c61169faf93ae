"""IPAM: which addresses a container gets on a network, and which subnet a new network gets.

The pipeline runs IPAM after validation and before planning (`assign`): validation has checked
everything without side effects, so a driver that must lease an address (dhcp, one day) does it
only for a request that is otherwise known to be good. Drivers are picked in `REGISTRY` only.

`free_subnet` is the one free-subnet search, used by `netns.create` and `rootless.netconf`.
"""

from __future__ import annotations

import dataclasses
import ipaddress
from collections.abc import Iterable
from typing import Protocol

from netns.drivers.base import Attachment
from netns.errors import BurrowError
from netns.schema import IPInterface, IPNetwork, Network, PerNetworkOptions


class Ipam(Protocol):
    name: str

    def allocate(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        """Setup: the container's addresses on `net`, with the subnet's prefix."""

    def release(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        """Teardown: give the addresses back; returns them (port rules are keyed by them)."""


class HostLocal:
    """Podman's host-local: Podman picked the addresses and sends them as `static_ips`."""

    name = "host-local"

    def allocate(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        if not net.subnets:
            return ()
        ips = per.static_ips
        if ips is None:
            raise BurrowError("no static ips provided")
        if len(ips) != len(net.subnets):
            raise BurrowError(
                f"wrong number of static ips: got {len(ips)} for {len(net.subnets)} subnets "
                "(static_ips[i] must be an address in subnets[i])"
            )
        out: list[IPInterface] = []
        for ip, sub in zip(ips, net.subnets, strict=True):
            if ip not in sub.subnet:
                raise BurrowError(f"static ip {ip} is not in subnet {sub.subnet}")
            # A static IP equal to the gateway is accepted, as netavark accepts it.
            if (
                isinstance(sub.subnet, ipaddress.IPv4Network)
                and sub.subnet.prefixlen < 31
                and ip in (sub.subnet.network_address, sub.subnet.broadcast_address)
            ):
                raise BurrowError(
                    f"static ip {ip} is the network or broadcast address of {sub.subnet}"
                )
            out.append(ipaddress.ip_interface(f"{ip}/{sub.subnet.prefixlen}"))
        return tuple(out)

    def release(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        return self.allocate(net, per)  # nothing is held: Podman keeps the allocations


class NoIpam:
    """`--ipam-driver none`: the interface comes up without addresses."""

    name = "none"

    def allocate(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        return ()

    def release(self, net: Network, per: PerNetworkOptions) -> tuple[IPInterface, ...]:
        return ()


REGISTRY: dict[str, Ipam] = {i.name: i for i in (HostLocal(), NoIpam())}
# Known to Podman but not served here; named so the error says so rather than "unknown".
UNSUPPORTED = {"dhcp": "dhcp ipam driver is not supported by burrow"}


def get(name: str) -> Ipam:
    if name in UNSUPPORTED:
        raise BurrowError(UNSUPPORTED[name])
    try:
        return REGISTRY[name]
    except KeyError:
        raise BurrowError(
            f"unsupported ipam driver {name!r} (use {' or '.join(REGISTRY)})"
        ) from None


def assign(att: Attachment, per: PerNetworkOptions, *, release: bool = False) -> Attachment:
    """The attachment with its addresses filled in by its network's IPAM driver."""
    ipam = get(att.network.ipam_driver)
    net = att.network
    addresses = ipam.release(net, per) if release else ipam.allocate(net, per)
    return dataclasses.replace(att, addresses=addresses)


def overlaps(net: IPNetwork, used: Iterable[IPNetwork]) -> bool:
    return any(net.version == u.version and net.overlaps(u) for u in used)


def free_subnet(
    candidates: Iterable[IPNetwork], used: Iterable[IPNetwork], *, exhausted: str
) -> IPNetwork:
    """The first candidate that overlaps nothing in use; `exhausted` is the error otherwise."""
    taken = list(used)
    for candidate in candidates:
        if not overlaps(candidate, taken):
            return candidate
    raise BurrowError(exhausted)


def pool_subnets(base: IPNetwork, size: int) -> Iterable[IPNetwork]:
    """The /size subnets of a pool, in order."""
    if not base.prefixlen <= size <= base.max_prefixlen:
        raise BurrowError(f"subnet pool {base}: size /{size} does not fit the pool")
    return base.subnets(new_prefix=size)

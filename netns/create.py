"""`create`: complete a network definition the way Netavark 2.x does (pure).

Input (`schema.CreateRequest`): a partial Network, the interfaces, names and subnets in use,
the subnet pools and the bridge-name prefix. Output: the Network with a bridge name, subnets and
gateways, checked by the same rules setup applies (driver options, MTU, names).
"""

from __future__ import annotations

import dataclasses
import ipaddress
import itertools
import secrets
import time
from collections.abc import Iterator

from netns import create_checks as checks
from netns import drivers, ipam, names, validate
from netns.errors import BurrowError
from netns.schema import CreateRequest, IPNetwork, Network, Subnet, SubnetPool

DEFAULT_POOLS = (SubnetPool(ipaddress.ip_network("10.89.0.0/16"), 24),)
DEFAULT_PREFIX = "podman"
ULA_TRIES = 1000
LAN_DRIVERS = ("macvlan", "ipvlan")  # no bridge: DNS off, DHCP when no subnet is given


def pool_candidates(pools: tuple[SubnetPool, ...], used: list[IPNetwork]) -> Iterator[IPNetwork]:
    """The pools' /size subnets in order, for the network's IPv4 subnet, but never one by one
    through a used block: a pool 10.0.0.0/8 of /30s with 10.0.0.0/8 in use took 40 s to say
    "no free subnet", and fd00::/8 of /64s never returned. Past an overlap the next candidate
    is the first one after the used block, so the walk is as long as the used list. IPv6
    pools have nothing to give here (Podman's pools are IPv4) and are passed over."""
    taken = [(int(u.network_address), int(u.broadcast_address)) for u in used if u.version == 4]
    for pool in pools:
        if pool.base.version != 4:
            continue
        ipam.pool_subnets(pool.base, pool.size)  # checks that the size fits the pool
        step = 1 << (32 - pool.size)
        addr, end = int(pool.base.network_address), int(pool.base.broadcast_address)
        while addr + step - 1 <= end:
            last = max((hi for lo, hi in taken if lo <= addr + step - 1 and addr <= hi), default=None)
            if last is None:
                yield ipaddress.IPv4Network((addr, pool.size))
                addr += step
            else:  # the first /size boundary past the used block (the pool base is aligned)
                addr = (last // step + 1) * step


def random_ulas() -> Iterator[IPNetwork]:
    # Podman picks a random /64 under fd00::/8 for --ipv6 without a subnet.
    for _ in range(ULA_TRIES):
        yield ipaddress.ip_network(
            f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"
        )


def choose_subnets(req: CreateRequest) -> list[IPNetwork]:
    """The network's subnets, plus a free IPv4 one and a free IPv6 one where it needs them."""
    net = req.network
    nets = [s.subnet for s in net.subnets]
    if req.check_used_subnets:
        for n in nets:
            if ipam.overlaps(n, req.used_subnets):
                raise BurrowError(f"subnet {n} is already used on the host or by another network")
    used = list(req.used_subnets)
    if not any(n.version == 4 for n in nets) and not (net.ipv6_enabled and nets):
        pools = pool_candidates(req.subnet_pools or DEFAULT_POOLS, used + nets)
        nets.append(ipam.free_subnet(pools, used + nets, exhausted=(
            "could not find a free subnet in the subnet pools; remove unused networks")))
    if net.ipv6_enabled and not any(n.version == 6 for n in nets):
        nets.append(ipam.free_subnet(
            random_ulas(), used + nets, exhausted="could not find a free IPv6 subnet"))
    return nets


def with_gateways(net: Network, nets: list[IPNetwork], auto_gateway: bool) -> tuple[Subnet, ...]:
    given = {s.subnet: s for s in net.subnets}
    out: list[Subnet] = []
    for subnet in nets:
        sub = given.get(subnet, Subnet(subnet))
        if subnet.num_addresses < 4:
            raise BurrowError(f"subnet {subnet} is too small for a gateway and a container")
        if sub.gateway is None and auto_gateway:
            first = next(itertools.islice(subnet.hosts(), 1)) if subnet.version == 4 else subnet[1]
            sub = dataclasses.replace(sub, gateway=first)
        elif sub.gateway is not None and sub.gateway not in subnet:
            raise BurrowError(f"gateway {sub.gateway} is not in subnet {subnet}")
        out.append(sub)
    return tuple(out)


def _defaults(net: Network, ipam_name: str | None) -> Network:
    """IPAM and DNS defaults by driver, as netavark's create sets them."""
    if net.driver in LAN_DRIVERS:
        # DNS is not implemented for macvlan/ipvlan; without subnets the LAN's DHCP serves.
        if ipam_name is None:
            ipam_name = "host-local" if net.subnets else "dhcp"
        if ipam_name == "host-local" and not net.subnets:
            raise BurrowError(f"{net.driver} driver needs at least one subnet specified when "
                              "the host-local ipam driver is set")
        if ipam_name == "dhcp" and net.driver == "ipvlan":
            raise BurrowError("ipam driver dhcp is not supported with ipvlan")
        if ipam_name == "dhcp" and net.subnets:
            raise BurrowError("ipam driver dhcp set but subnets are set")
        net = dataclasses.replace(net, dns_enabled=False)
    ipam_name = ipam_name or "host-local"
    if ipam_name == "none":
        net = dataclasses.replace(net, dns_enabled=False)
    return dataclasses.replace(net, ipam_options={**(net.ipam_options or {}), "driver": ipam_name})


def create_network(req: CreateRequest) -> Network:
    net = req.network
    checks.name_and_id(req)
    if net.network_interface:
        names.ifname(net.network_interface, "network interface")
    net = _defaults(net, checks.ipam_driver(net))
    req = dataclasses.replace(req, network=net)
    driver = drivers.get(net.driver)
    if net.driver == "bridge":
        checks.bridge_name(req)
    checks.dns_servers(net)
    checks.subnets(net.subnets)
    checks.routes(net)
    allocate = net.driver not in LAN_DRIVERS and (net.ipam_options or {}).get("driver") == "host-local"
    nets = choose_subnets(req) if allocate else [s.subnet for s in net.subnets]
    auto_gateway = driver.auto_gateway and (not net.internal or net.dns_enabled)
    net = dataclasses.replace(
        net,
        subnets=with_gateways(net, nets, auto_gateway),
        ipv6_enabled=net.ipv6_enabled or any(n.version == 6 for n in nets),
        extra={**net.extra, "created": created_now()},
    )
    # The same checks setup applies, so a network that `create` accepts can be set up.
    validate.check_network(net)
    prefix = req.default_interface_name or DEFAULT_PREFIX
    return driver.complete(net, req.used_interfaces, prefix)


def created_now() -> str:
    """RFC 3339 UTC with nanoseconds, as netavark's chrono `Utc::now()` serializes."""
    now = time.time_ns()
    secs, nanos = divmod(now, 1_000_000_000)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(secs)) + f".{nanos:09d}Z"

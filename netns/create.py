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
from collections.abc import Iterator

from netns import drivers, ipam, validate
from netns.errors import BurrowError
from netns.schema import CreateRequest, IPNetwork, Network, Subnet, SubnetPool

DEFAULT_POOLS = (SubnetPool(ipaddress.ip_network("10.89.0.0/16"), 24),)
DEFAULT_PREFIX = "podman"
ULA_TRIES = 1000


def pool_candidates(pools: tuple[SubnetPool, ...]) -> Iterator[IPNetwork]:
    for pool in pools:
        yield from ipam.pool_subnets(pool.base, pool.size)


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
        pools = pool_candidates(req.subnet_pools or DEFAULT_POOLS)
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


def create_network(req: CreateRequest) -> Network:
    net = req.network
    if net.name in req.used_names:
        raise BurrowError(f"network name {net.name} is already used")
    driver = drivers.get(net.driver)
    nets = choose_subnets(req)
    net = dataclasses.replace(
        net,
        subnets=with_gateways(net, nets, driver.auto_gateway),
        ipv6_enabled=any(n.version == 6 for n in nets),
        ipam_options=net.ipam_options if net.ipam_options is not None else {"driver": "host-local"},
    )
    # The same checks setup applies, so a network that `create` accepts can be set up.
    validate.check_network(net)
    prefix = req.default_interface_name or DEFAULT_PREFIX
    return driver.complete(net, req.used_interfaces, prefix)

"""`create`: complete a network definition the way Netavark 2.x does (pure).

Input: `{"network": Network, "used": {"interfaces": [...], "names": [...], "subnets": [...]},
"options": {"subnet_pools": [{"base": CIDR, "size": N}], "default_interface_name": "podman",
"check_used_subnets": bool}}`. Output: the Network with a bridge name, subnets and gateways.
"""

from __future__ import annotations

import ipaddress
import secrets
from collections.abc import Iterable
from typing import Any

from netns import names, validate
from netns.errors import BurrowError
from netns.schema import IPNetwork, Network, parse_net

DEFAULT_POOLS = ({"base": "10.89.0.0/16", "size": 24},)
MAX_BRIDGES = 100_000


def _overlaps(net: IPNetwork, used: Iterable[IPNetwork]) -> bool:
    return any(net.version == u.version and net.overlaps(u) for u in used)


def free_subnet(pools: Iterable[dict[str, Any]], used: list[IPNetwork]) -> IPNetwork:
    """The first subnet of the first pool that overlaps nothing in use."""
    for pool in pools:
        base = parse_net(str(pool.get("base", "")), "subnet pool base")
        size = int(pool.get("size", 24))
        if size < base.prefixlen:
            raise BurrowError(f"subnet pool {base}: size /{size} is larger than the pool")
        for candidate in base.subnets(new_prefix=size):
            if not _overlaps(candidate, used):
                return candidate
    raise BurrowError("could not find a free subnet in the subnet pools; remove unused networks")


def free_ula(used: list[IPNetwork]) -> IPNetwork:
    # Podman picks a random /64 under fd00::/8 for --ipv6 without a subnet.
    for _ in range(1000):
        candidate = ipaddress.ip_network(
            f"fd{secrets.token_hex(1)}:{secrets.token_hex(2)}:{secrets.token_hex(2)}::/64"
        )
        if not _overlaps(candidate, used):
            return candidate
    raise BurrowError("could not find a free IPv6 subnet")


def create_network(obj: Any) -> dict[str, Any]:
    if not isinstance(obj, dict) or "network" not in obj:
        raise BurrowError("create: input must be a JSON object with a `network` field")
    used = obj.get("used") or {}
    options = obj.get("options") or {}
    raw = dict(obj["network"])
    raw.setdefault("id", secrets.token_hex(32))
    raw.setdefault("driver", "bridge")
    raw.setdefault("ipv6_enabled", False)
    raw.setdefault("internal", False)
    raw.setdefault("dns_enabled", False)
    net = Network.from_json(raw)
    names.config_token(net.name, "network name")
    if net.name in (used.get("names") or []):
        raise BurrowError(f"network name {net.name} is already used")
    if net.driver not in validate.DRIVERS:
        raise BurrowError(f"unknown network driver {net.driver!r}")
    allowed = validate.BRIDGE_OPTIONS if net.driver == "bridge" else validate.MACVLAN_OPTIONS
    for key in net.options or {}:
        if key not in allowed:
            raise BurrowError(
                f"unsupported {net.driver} network option {key!r}; valid: {', '.join(sorted(allowed))}"
            )

    used_subnets = [parse_net(s, "used subnet") for s in used.get("subnets") or []]
    subnets = [s.to_json() for s in net.subnets]
    nets = [s.subnet for s in net.subnets]
    if options.get("check_used_subnets", True):
        for n in nets:
            if _overlaps(n, used_subnets):
                raise BurrowError(f"subnet {n} is already used on the host or by another network")
    if not any(n.version == 4 for n in nets) and not (net.ipv6_enabled and nets):
        chosen = free_subnet(options.get("subnet_pools") or DEFAULT_POOLS, used_subnets + nets)
        subnets.append({"subnet": str(chosen)})
        nets.append(chosen)
    if net.ipv6_enabled and not any(n.version == 6 for n in nets):
        chosen6 = free_ula(used_subnets + nets)
        subnets.append({"subnet": str(chosen6)})
        nets.append(chosen6)
    for sub in subnets:
        subnet = parse_net(sub["subnet"], "subnet")
        if subnet.num_addresses < 4:
            raise BurrowError(f"subnet {subnet} is too small for a gateway and a container")
        if "gateway" not in sub and net.driver == "bridge":
            sub["gateway"] = str(next(iter(subnet.hosts())) if subnet.version == 4 else subnet[1])
        elif "gateway" in sub and ipaddress.ip_address(sub["gateway"]) not in subnet:
            raise BurrowError(f"gateway {sub['gateway']} is not in subnet {subnet}")
    raw["subnets"] = subnets
    raw["ipv6_enabled"] = any(n.version == 6 for n in nets)

    if net.driver == "bridge" and not net.network_interface:
        taken = set(used.get("interfaces") or [])
        prefix = options.get("default_interface_name") or "podman"
        for i in range(MAX_BRIDGES):
            candidate = f"{prefix}{i}"
            if candidate not in taken:
                raw["network_interface"] = names.ifname(candidate, "bridge interface")
                break
    elif net.network_interface:
        names.ifname(net.network_interface, "network interface")
    raw.setdefault("ipam_options", {"driver": "host-local"})
    return Network.from_json(raw).to_json()

"""Firewall intent handed from the engine to a firewall backend (pure data, no I/O).

The engine builds these after validation; backends render them into one atomic batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, Protocol

from netns.errors import BurrowError
from netns.schema import IPAddress, IPNetwork, PortMapping

Isolate = Literal["false", "true", "strict"]


def net_hash(name: str) -> str:
    """First 13 upper-case hex digits of SHA-512(network name): Netavark's `network_hash_name`."""
    return hashlib.sha512(name.encode()).hexdigest()[:13].upper()


@dataclass(frozen=True)
class NetworkFw:
    """Per-network rules: masquerade, forward accept, isolation, DNS DNAT.

    Teardown policy: these go only when the network's bridge is deleted (last container left).
    """

    name: str  # network name: iptables chain hash (SHA-512 of the name), comments
    id: str  # network id: nftables chain names use id[:8]
    bridge: str  # bridge interface name
    subnets: tuple[IPNetwork, ...]
    gateways: tuple[IPAddress, ...]  # DNS listen addresses (for the DNS DNAT)
    isolate: Isolate = "false"
    # When set and != 53, DNAT udp+tcp dport 53 to each gateway onto this port.
    dns_port: int | None = None
    # Netavark's `network_hash_name` (iptables chain suffix). Derived from `name` unless given:
    # state files written by Netavark carry the hash, not the name.
    hash: str = ""
    # Netavark 2.0's `outbound_addr4`/`outbound_addr6`: the subnet's outbound traffic is
    # SNATed to this host address instead of masqueraded (None: masquerade).
    outbound4: IPv4Address | None = None
    outbound6: IPv6Address | None = None
    # False: the network has no `isolate` option, so `isolate` is only a placeholder and the
    # backend applies the default of the Netavark version it stands in for (StateStore.pin):
    # nftables as 2.x (strict), iptables as 1.4 (none).
    isolate_given: bool = True

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", net_hash(self.name))

    def outbound(self, version: int) -> IPAddress | None:
        """The SNAT address for this IP version's subnets (None: masquerade)."""
        return self.outbound4 if version == 4 else self.outbound6


OUTBOUND_OPTIONS = ("outbound_addr4", "outbound_addr6")


def outbound_options(get: Callable[[str], str | None]
                     ) -> tuple[IPv4Address | None, IPv6Address | None]:
    """`outbound_addr4`/`outbound_addr6` (`get`: a network's option by name) as Netavark 2.x
    parses them: an Ipv4Addr/Ipv6Addr, no prefix, no other family. Netavark does not check
    that the host has the address (the SNAT rule goes in all the same)."""
    out: list[IPv4Address | IPv6Address | None] = []
    for version, name in ((4, "outbound_addr4"), (6, "outbound_addr6")):
        text = get(name)
        try:
            out.append(None if text is None else
                       IPv4Address(text) if version == 4 else IPv6Address(text))
        except ValueError:
            raise BurrowError(
                f'unable to parse "{name}": invalid IPv{version} address syntax ({text!r})'
            ) from None
    v4, v6 = out
    assert v4 is None or isinstance(v4, IPv4Address)
    assert v6 is None or isinstance(v6, IPv6Address)
    return v4, v6


@dataclass(frozen=True)
class PortFw:
    """Per-container port forwarding on one network. Teardown policy: always removed."""

    container_id: str
    network: NetworkFw
    container_v4: IPv4Address | None
    container_v6: IPv6Address | None
    mappings: tuple[PortMapping, ...]


class Firewall(Protocol):
    """One backend: nftables, iptables, or none. Every call is one atomic change."""

    name: str

    def setup(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw], *,
              fresh: Iterable[str] = ()) -> None:
        """Add rules for these networks (idempotent per network) and these port forwards.

        `fresh`: bridges this setup created; their networks can't have rules yet."""

    def teardown(self, networks: Sequence[NetworkFw], ports: Sequence[PortFw]) -> None:
        """Remove these port forwards, and the rules of these networks (bridges deleted)."""

    def reload(self) -> None:
        """Re-apply every persisted network and port forward (after a firewall flush)."""

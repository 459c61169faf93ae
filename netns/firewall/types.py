"""Firewall intent handed from the engine to a firewall backend (pure data, no I/O).

The engine builds these after validation; backends render them into one atomic batch.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from ipaddress import IPv4Address, IPv6Address
from typing import Literal, Protocol

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

    def __post_init__(self) -> None:
        if not self.hash:
            object.__setattr__(self, "hash", net_hash(self.name))


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

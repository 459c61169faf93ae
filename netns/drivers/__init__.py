"""Network drivers: one Protocol, one registry (the only place a driver is picked by name).

A driver turns a validated network into its own attachment type, plans setup and teardown as
pure data, and says whether the firewall and DNS apply. A new driver is one module here with a
class implementing `Driver`, plus one line in `REGISTRY`.
"""

from __future__ import annotations

from typing import Protocol

from netns.drivers.base import Attachment
from netns.drivers.bridge import BridgeDriver
from netns.drivers.ipvlan import IpvlanDriver
from netns.drivers.macvlan import MacvlanDriver
from netns.errors import BurrowError
from netns.firewall.types import NetworkFw
from netns.plan import Op
from netns.schema import Network, PerNetworkOptions


class Driver(Protocol):
    name: str
    options: frozenset[str]  # network options it takes (`create` and `setup` refuse others)
    auto_gateway: bool  # `create` gives each subnet a gateway
    usable: bool  # setup can apply it on this machine

    def check_network(self, net: Network) -> None:
        """Raise if the network's own fields or options are invalid for this driver."""

    def complete(self, net: Network, taken_ifnames: frozenset[str], prefix: str) -> Network:
        """`create`: fill in or check what the driver needs (the bridge name)."""

    def attach(self, base: Attachment, per: PerNetworkOptions) -> Attachment:
        """The driver's own attachment type from the common fields and per-network options."""

    def plan_setup(self, att: Attachment, *, has_ports: bool) -> tuple[Op, ...]: ...

    def plan_teardown(self, att: Attachment) -> tuple[Op, ...]: ...

    def firewall(self, att: Attachment, dns_port: int | None) -> NetworkFw | None:
        """The network's firewall intent, or None when no rules apply to it."""

    def dns(self, att: Attachment) -> bool:
        """Whether containers on it get entries in the DNS server (if the network asks)."""

    def dns_link(self, att: Attachment) -> str | None:
        """A host link whose existing addresses the DNS server listens on, or None for the
        gateways (an unmanaged bridge: netavark 1.17)."""


REGISTRY: dict[str, Driver] = {d.name: d for d in (BridgeDriver(), MacvlanDriver(), IpvlanDriver())}
NAMES = tuple(REGISTRY)
# The drivers this machine can set up (ipvlan is known, for `create`, but needs a kernel module).
USABLE = tuple(n for n, d in REGISTRY.items() if d.usable)


def get(name: str) -> Driver:
    try:
        return REGISTRY[name]
    except KeyError:
        raise BurrowError(
            f"unknown network driver {name!r} (supported: {', '.join(NAMES)})"
        ) from None


def of(att: Attachment) -> Driver:
    return get(att.network.driver)

"""The ipvlan driver: known by name, so `create` validates it as netavark does; setup refuses
it with the reason (this machine's kernel has no ipvlan), before the first side effect."""

from __future__ import annotations

from netns.drivers.base import Attachment, check_options
from netns.errors import BurrowError
from netns.firewall.types import NetworkFw
from netns.plan import Op
from netns.schema import Network, PerNetworkOptions

OPTIONS = frozenset({"mtu", "mode", "metric", "no_default_route"})
MODES = ("l2", "l3", "l3s")
NO_KERNEL = "ipvlan networks cannot be set up: the kernel on this machine has no ipvlan support"


class IpvlanDriver:
    name = "ipvlan"
    options = OPTIONS
    usable = False
    auto_gateway = False  # as macvlan: the LAN's router is the gateway

    def check_network(self, net: Network) -> None:
        check_options(net, OPTIONS, {})
        mode = net.option("mode") or "l2"
        if mode not in MODES:
            raise BurrowError(f"invalid ipvlan mode {mode!r} (use {', '.join(MODES)})")

    def complete(self, net: Network, taken_ifnames: frozenset[str], prefix: str) -> Network:
        return net

    def attach(self, base: Attachment, per: PerNetworkOptions) -> Attachment:
        raise BurrowError(NO_KERNEL)

    def plan_setup(self, att: Attachment, *, has_ports: bool) -> tuple[Op, ...]:
        raise BurrowError(NO_KERNEL)

    def plan_teardown(self, att: Attachment) -> tuple[Op, ...]:
        raise BurrowError(NO_KERNEL)

    def firewall(self, att: Attachment, dns_port: int | None) -> NetworkFw | None:
        return None

    def dns(self, att: Attachment) -> bool:
        return False

    def dns_link(self, att: Attachment) -> str | None:
        return None

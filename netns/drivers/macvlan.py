"""The macvlan driver, pure: the container interface sits on a host parent link, no firewall."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from netns import names
from netns.drivers.base import Attachment, check_options, own
from netns.drivers.bridge import deviceless_routes, routes
from netns.errors import BurrowError
from netns.firewall.types import NetworkFw
from netns.plan import AddMacvlan, ConfigureInterface, DeleteLink, Op, RequireLink
from netns.schema import Network, PerNetworkOptions

OPTIONS = frozenset({"mtu", "mode", "metric", "no_default_route", "bclim"})
MODES = ("bridge", "private", "vepa", "passthru", "source")


@dataclass(frozen=True)
class MacvlanAttachment(Attachment):
    parent: str | None  # None: the interface of the host's default route
    mode: str


def mode_option(net: Network) -> str:
    mode = net.option("mode") or "bridge"
    if mode not in MODES:
        raise BurrowError(f"macvlan mode {mode!r} is not valid (use {', '.join(MODES)})")
    return mode


def plan_setup(att: MacvlanAttachment) -> tuple[Op, ...]:
    ops: list[Op] = []
    if att.parent:
        ops.append(RequireLink("host", att.parent))
    ops.append(AddMacvlan(att.parent, att.ifname, att.mode, att.mac, att.mtu))
    ops.append(ConfigureInterface(att.ifname, att.addresses, no_dad=False))
    ops.extend(routes(att))
    return tuple(ops)


def plan_teardown(att: MacvlanAttachment) -> tuple[Op, ...]:
    return (*deviceless_routes(att), DeleteLink("container", att.ifname))


def _own(att: Attachment) -> MacvlanAttachment:
    return own(att, MacvlanAttachment, "macvlan")


class MacvlanDriver:
    name = "macvlan"
    options = OPTIONS
    usable = True
    auto_gateway = False  # the LAN's router is the gateway; only the user knows it

    def check_network(self, net: Network) -> None:
        check_options(net, OPTIONS, {})
        mode_option(net)

    def complete(self, net: Network, taken_ifnames: frozenset[str], prefix: str) -> Network:
        if net.network_interface:
            names.ifname(net.network_interface, "network interface")
        return net

    def attach(self, base: Attachment, per: PerNetworkOptions) -> MacvlanAttachment:
        net = base.network  # validate.check_network has checked its options
        parent = net.network_interface or None
        return MacvlanAttachment(
            **{f.name: getattr(base, f.name) for f in dataclasses.fields(base)},
            parent=names.ifname(parent, "macvlan parent interface") if parent else None,
            mode=mode_option(net),
        )

    def plan_setup(self, att: Attachment, *, has_ports: bool) -> tuple[Op, ...]:
        return plan_setup(_own(att))

    def plan_teardown(self, att: Attachment) -> tuple[Op, ...]:
        return plan_teardown(_own(att))

    def firewall(self, att: Attachment, dns_port: int | None) -> NetworkFw | None:
        return None  # macvlan traffic never crosses the host's forwarding path

    def dns(self, att: Attachment) -> bool:
        return False

    def dns_link(self, att: Attachment) -> str | None:
        return None

"""The macvlan driver, pure: the container interface sits on a host parent link, no firewall."""

from __future__ import annotations

from netns.drivers.bridge import routes
from netns.plan import AddMacvlan, ConfigureInterface, DeleteLink, Op, RequireLink
from netns.validate import Attachment


def plan_setup(att: Attachment) -> tuple[Op, ...]:
    ops: list[Op] = []
    if att.parent:
        ops.append(RequireLink("host", att.parent))
    ops.append(AddMacvlan(att.parent, att.ifname, att.macvlan_mode, att.mac, att.mtu))
    ops.append(ConfigureInterface(att.ifname, att.addresses, att.ipv6))
    ops.extend(routes(att))
    return tuple(ops)


def plan_teardown(att: Attachment) -> tuple[Op, ...]:
    return (DeleteLink("container", att.ifname),)

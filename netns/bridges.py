"""Make the host-side links of a setup: bridges, and the veth or macvlan that joins a container.

Part of the netlink adapter (`netns/netlink.py` applies each plan operation and calls these). No
pyroute2 import here (only netns/netlink.py may): the sockets, lookups and the one netlink error
check these need all come through the `Handles` they are given.
"""

from __future__ import annotations

import errno
import os
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from netns import mldquiet
from netns.errors import BurrowError
from netns.plan import AddMacvlan, AddVeth, DeleteBridgeIfUnused, DeleteLink, EnsureBridge, Op

RTN_UNICAST = 1  # rtnetlink route type (linux/rtnetlink.h)

if TYPE_CHECKING:
    from collections.abc import Callable
    from ipaddress import IPv4Interface, IPv6Interface

    from netns.netlink import Handles

IN6_ADDR_GEN_MODE_NONE = 1  # the kernel makes no IPv6 address for the link (addrgenmode none)
NO_HOST_PORT_ADDRESSES = {
    "attrs": [("AF_INET6", {"attrs": [("IFLA_INET6_ADDR_GEN_MODE", IN6_ADDR_GEN_MODE_NONE)]})]}
BRPORT_HAIRPIN = 1  # IFLA_BRPORT_MODE: the bridge may send a frame back out of its own port
HAIRPIN_PORT = {"attrs": [("IFLA_INFO_SLAVE_KIND", "bridge"), (
    "IFLA_INFO_SLAVE_DATA", {"attrs": [("IFLA_BRPORT_MODE", BRPORT_HAIRPIN)]})]}


@dataclass(frozen=True)
class Outcome:
    undo: Op | None = None
    deleted: bool = False  # DeleteBridgeIfUnused: the bridge is gone
    # Teardown: the container interface that was already gone from a live container netns
    # (the host side was still cleaned; the caller reports it, as netavark does).
    missing: str | None = None


def random_mac() -> str:
    """A random locally administered unicast MAC."""
    octets = bytearray(os.urandom(6))
    octets[0] = (octets[0] & 0xFC) | 0x02
    return ":".join(f"{b:02x}" for b in octets)


def ensure_bridge(h: Handles, op: EnsureBridge) -> Outcome:
    if h.index("host", op.name) is not None:
        h.preflight((op,))
        if op.vlan_filtering:
            _vlan_filtering(h, op.name)
        return Outcome()
    # A fixed MAC: otherwise the bridge takes its lowest port's MAC and changes it when that
    # container leaves, and the others' ARP caches point at a MAC nobody answers for.
    # Made up at once (one request less): with no port it has no carrier, so nothing (DAD,
    # link-local addresses) happens before the sysctls and addresses below.
    # QUIET_GROUP: a bridge burrow made, whose container ports keep MLD reports among
    # themselves off (netns/mldquiet.py).
    args: dict[str, Any] = {
        "ifname": op.name, "kind": "bridge", "br_stp_state": 0, "address": random_mac(),
        "state": "up", "group": mldquiet.QUIET_GROUP,
    }  # fmt: skip
    if op.mtu:
        args["mtu"] = op.mtu
    if op.vlan_filtering:
        args["br_vlan_filtering"] = 1
    if op.vrf is not None:
        args["master"], table = h.vrf(op.vrf)
        if table is not None:
            h.route_tables[op.name] = table
    if h.tolerating(lambda: h.host.link("add", **args), errno.EEXIST):
        h.preflight((op,))  # a parallel setup made it first
        return Outcome()
    # Ours from here: a failure in the sysctls or addresses below rolls the bridge back.
    h.made_bridges.add(op.name)
    link = h.lookup("host", op.name)
    assert link is not None
    idx = int(link["index"])
    if op.ipv6:
        # Before the addresses: DAD would hold the gateway "tentative" for a second or more.
        for key in ("accept_dad", "accept_ra"):
            h.write_sysctl("host", f"net/ipv6/conf/{op.name}/{key}", "0")
    # Loose reverse-path filtering (netavark 1.11): strict mode (RHEL's default) drops port
    # forwards whose replies take another network's interface.
    h.soft_sysctl("host", f"net/ipv4/conf/{op.name}/rp_filter", "2")
    if op.route_localnet:
        # Lets DNAT from 127.0.0.1 reach a container (the localhost SETMARK rule).
        h.soft_sysctl("host", f"net/ipv4/conf/{op.name}/route_localnet", "1")
    for addr in op.addresses:
        h.host.addr("add", index=idx, **addr_args(addr))
    return Outcome(undo=DeleteBridgeIfUnused(op.name))


def addr_args(addr: IPv4Interface | IPv6Interface) -> dict[str, Any]:
    """An address as netavark's add_addr makes it: an IPv4 one with IFA_BROADCAST, its
    network's broadcast address (ipnet's `broadcast()`, so /31 and /32 too). Without it
    `ip addr` shows no `brd`, and a container's subnet-directed broadcast (10.88.0.255) is
    neither sent as one nor received."""
    args: dict[str, Any] = {"address": str(addr.ip), "prefixlen": addr.network.prefixlen}
    if addr.version == 4:
        args["broadcast"] = str(addr.network.broadcast_address)
    return args


def _vlan_filtering(h: Handles, name: str) -> None:
    """An existing bridge asked for a VLAN: turn its VLAN filtering on if off (1.14)."""
    link = h.lookup("host", name)
    assert link is not None
    data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
    if data is None or not data.get_attr("IFLA_BR_VLAN_FILTERING"):
        h.host.link("set", index=link["index"], kind="bridge", br_vlan_filtering=1)


def add_veth(h: Handles, op: AddVeth, rollback: Callable[[Op], object]) -> Outcome:
    """The veth pair, its host end a port of the bridge; `rollback(undo)` if a later step fails."""
    assert h.container_fd is not None
    bridge = h.index("host", op.bridge)
    if bridge is None:
        raise BurrowError(f"bridge {op.bridge} does not exist")
    peer: dict[str, Any] = {"ifname": op.ifname, "net_ns_fd": h.container_fd}
    if op.mac:
        peer["address"] = op.mac
    mtu = op.mtu or _default_mtu(h, op.bridge, bridge)
    if mtu:
        peer["mtu"] = mtu
    # The host end joins the bridge as it is made (as netavark does), and comes up with it
    # unless something must happen first (v6 DAD off, the VLAN): one or two requests less.
    up_at_once = not op.ipv6 and op.vlan is None
    args: dict[str, Any] = {"kind": "veth", "peer": peer, "master": bridge}
    if up_at_once:
        args["state"] = "up"
    if mtu:
        args["mtu"] = mtu
    if op.host_ifname:
        args["ifname"] = op.host_ifname
    if h.known_group("host", op.bridge) == mldquiet.QUIET_GROUP:
        args["group"] = mldquiet.QUIET_GROUP  # a port of a bridge burrow made (mldquiet.py)
    h.host.link("add", **args)
    undo = DeleteLink("container", op.ifname)
    try:
        link = h.lookup("container", op.ifname)
        assert link is not None
        host_idx = link.get_attr("IFLA_LINK")
        if op.ipv6:
            host_name = h.host.get_links(host_idx)[0].get_attr("IFLA_IFNAME")
            h.write_sysctl("host", f"net/ipv6/conf/{host_name}/accept_dad", "0")
        if op.vlan is not None:
            # The port's untagged VLAN, also its PVID: the container is on that VLAN only.
            vlan_info = {"vid": op.vlan, "flags": ["pvid", "untagged"]}
            h.host.vlan_filter("add", index=host_idx, vlan_info=vlan_info)
        _finish_host_port(h, host_idx, up=not up_at_once)
    except BaseException:
        rollback(undo)
        raise
    return Outcome(undo=undo)


def _finish_host_port(h: Handles, index: int, *, up: bool) -> None:
    """Hairpin on and no IPv6 addresses on a container's host end (and up, if asked), in
    one request, before the peer's carrier would make those addresses.

    Hairpin: a container reaching its own published port (DNAT back to itself) needs the
    bridge to send the frame out of the port it came in on; with bridge netfilter on (as
    here), that is otherwise dropped. No IPv6: a bridge port's own addresses are never
    used (the bridge takes its frames), but each one's link-local route, DAD and MLD/RS
    multicasts (flooded to every port) made every later link change cost more with the
    number of containers."""
    args: dict[str, Any] = {"IFLA_LINKINFO": HAIRPIN_PORT}
    if up:
        args["state"] = "up"
    # A kernel without IPv6 (EAFNOSUPPORT) has nothing to turn off.
    if h.tolerating(lambda: h.host.link(
            "set", index=index, IFLA_AF_SPEC=NO_HOST_PORT_ADDRESSES, **args), errno.EAFNOSUPPORT):
        h.host.link("set", index=index, **args)


def _default_mtu(h: Handles, name: str, index: int) -> int:
    """Without an `mtu` option (netavark 1.16, 1.17.2): an existing bridge's MTU, or for a
    bridge this request made, the MTU of the main table's default-route interface."""
    if name not in h.made_bridges:
        # Preflight read the bridge a moment ago, under the config dir's lock.
        known = h.known_mtu("host", name)
        if known is not None:
            return known
        return int(h.host.get_links(index)[0].get_attr("IFLA_MTU") or 0)
    table = h.route_tables.get(name, 254)
    for route in h.host.get_default_routes(family=2, table=table):
        # pyroute2 also returns other tables' default routes (table > 255 is not filtered):
        # burrow's client-address `local default dev lo table 25202` gave lo's 65536.
        if (route.get_attr("RTA_TABLE") or route["table"]) != table or route["type"] != RTN_UNICAST:
            continue
        oif = route.get_attr("RTA_OIF")
        if oif is not None:
            return int(h.host.get_links(oif)[0].get_attr("IFLA_MTU") or 0)
    return 0


def add_macvlan(h: Handles, op: AddMacvlan) -> Outcome:
    assert h.container_fd is not None
    if op.parent:
        parent = h.index("host", op.parent)
    else:
        routes = h.host.route("get", dst="0.0.0.0") if h.host.get_default_routes() else []
        parent = routes[0].get_attr("RTA_OIF") if routes else None
    if parent is None:
        raise BurrowError("no parent interface given and the host has no default route")
    args: dict[str, Any] = {
        "ifname": op.ifname, "kind": "macvlan", "link": parent,
        "macvlan_mode": op.mode, "net_ns_fd": h.container_fd,
    }  # fmt: skip
    if op.mac:
        args["address"] = op.mac
    if op.mtu:
        args["mtu"] = op.mtu
    h.host.link("add", **args)
    return Outcome(undo=DeleteLink("container", op.ifname))

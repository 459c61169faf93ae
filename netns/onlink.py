"""What a network namespace reaches directly: its gatewayless routes (its own subnets) and
whether it has a default route, read from /proc/thread-self/net (the calling thread's netns;
stdlib only, no netlink: burrow-rootlessport and the CLI read it).

burrow-rootlessport reads a container's (a client inside one of its subnets is answered over
its link, rootless.ports.target.Target.onlink); the rootful CLI reads the host's (a new bridge
network must not take a subnet the host already routes, as Podman refuses it).
"""

from __future__ import annotations

import ipaddress
import sys

Subnet = ipaddress.IPv4Network | ipaddress.IPv6Network
RTF_REJECT = 0x0200


def _rows(family: int) -> list[list[str]]:
    name = "route" if family == 4 else "ipv6_route"
    with open(f"/proc/thread-self/net/{name}") as f:
        lines = f.readlines()
    rows = [ln.split() for ln in (lines[1:] if family == 4 else lines)]  # v4 has a header
    return [x for x in rows if len(x) >= (8 if family == 4 else 10)]


def has_default(family: int) -> bool:
    """A default route (not lo's IPv6 reject route)."""
    if family == 4:  # Iface Destination Gateway Flags RefCnt Use Metric Mask (hex)
        return any(x[1] == "00000000" and x[7] == "00000000" for x in _rows(4))
    return any(x[:2] == ["0" * 32, "00"] and not int(x[8], 16) & RTF_REJECT for x in _rows(6))


def subnets() -> tuple[Subnet, ...]:
    """The routes without a gateway, but for lo's and a default route. OSError, ValueError."""
    out: list[Subnet] = []
    for x in _rows(4):
        if x[0] != "lo" and x[2] == "00000000" and x[7] != "00000000":
            net = ipaddress.IPv4Address(int(x[1], 16).to_bytes(4, sys.byteorder))
            out.append(ipaddress.IPv4Network((net, bin(int(x[7], 16)).count("1")), strict=False))
    for x in _rows(6):  # dst plen src splen nexthop metric refcnt use flags iface
        if x[9] != "lo" and x[4] == "0" * 32 and x[1] != "00" and not int(x[8], 16) & RTF_REJECT:
            out.append(ipaddress.IPv6Network((int(x[0], 16), int(x[1], 16)), strict=False))
    return tuple(out)

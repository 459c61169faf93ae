"""The host side of a container's bridge port (the bridge and the veth's host end), for the result.

The reference `bridge` plugin lists three interfaces in its result: the bridge and the host
end of the veth (name and MAC, no sandbox), then the container's interface, which the `ips`
point at. Plugins chained after it find the host end there: `bandwidth` shapes it, and fails
with "no host interface found" without it; `portmap` and others read it too. The engine's
StatusBlock (Netavark's) names only the container side, so it is read back here: three
RTM_GETLINK requests (the container interface's IFLA_LINK is the host end's index), decoded
with struct, as netns/linkdump.py reads its dumps (only netns/netlink.py imports pyroute2).
"""

from __future__ import annotations

import errno
import os
import socket
import struct
from dataclasses import dataclass

from netns.linkdump import (
    IFINFOMSG,
    NLMSG_ERROR,
    NLMSGHDR,
    RTATTR,
    RTM_GETLINK,
    RTM_NEWLINK,
    error_code,
    open_socket,
    replies,
)
from netns.nsenter import entered

IFLA_ADDRESS, IFLA_IFNAME, IFLA_LINK = 1, 3, 5
_U32 = struct.Struct("=I")


@dataclass(frozen=True)
class HostSide:
    bridge_mac: str
    veth: str
    veth_mac: str


def _attr(kind: int, payload: bytes) -> bytes:
    size = RTATTR.size + len(payload)
    return RTATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def _get(sock: socket.socket, *, index: int = 0, name: str = "") -> dict[int, bytes]:
    """One link's attributes (type -> payload), by index or by name."""
    body = IFINFOMSG.pack(0, 0, index, 0, 0)
    if name:
        body += _attr(IFLA_IFNAME, name.encode() + b"\0")
    for kind, buf, off, length in replies(sock, RTM_GETLINK, 0, body):
        if kind == NLMSG_ERROR:
            code = error_code(buf, off) or errno.EPROTO
            raise OSError(code, f"link {name or index}: {os.strerror(code)}")
        if kind != RTM_NEWLINK:
            continue
        attrs: dict[int, bytes] = {}
        pos, end = off + NLMSGHDR.size + IFINFOMSG.size, off + length
        while pos + RTATTR.size <= end:
            alen, atype = RTATTR.unpack_from(buf, pos)
            if alen < RTATTR.size:
                break
            attrs[atype & 0x3FFF] = bytes(buf[pos + RTATTR.size : pos + alen])
            pos += (alen + 3) & ~3
        return attrs
    raise AssertionError("unreachable: replies() never ends")  # pragma: no cover


def _mac(attrs: dict[int, bytes]) -> str:
    return attrs.get(IFLA_ADDRESS, b"").hex(":")


def read(container_fd: int, ifname: str, bridge: str) -> HostSide | None:
    """The bridge's MAC and the host end of `ifname`'s veth; None if they cannot be read
    (the result then lists the container's interface alone, as before)."""
    try:
        with entered(container_fd):
            inner = open_socket()
        with inner:
            peer = _get(inner, name=ifname).get(IFLA_LINK)
        if peer is None:
            return None
        with open_socket() as host:
            veth = _get(host, index=_U32.unpack(peer[:4])[0])
            br = _get(host, name=bridge)
        name = veth.get(IFLA_IFNAME, b"").rstrip(b"\0").decode(errors="replace")
        return HostSide(_mac(br), name, _mac(veth)) if name else None
    except OSError:
        return None

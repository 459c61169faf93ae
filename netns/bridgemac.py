"""Pin the MAC of a bridge burrow did not make, so it stops following its ports.

A bridge made without an address (netavark 1.4: `ip link add type bridge`) has no MAC of its
own (addr_assign_type is not NET_ADDR_SET): the kernel gives it its lowest port's MAC and
changes it whenever that port leaves or a lower one joins. Every container's neighbour entry
for its gateway then points at a MAC nobody answers for, and the gateway (DNS included) is
lost until the entry times out, up to a minute. burrow's own bridges get a MAC when they are
made (netns/bridges.py); newer netavark sets a bridge's MAC to its current value after the
first veth joined. Setting it to its current value changes nothing on the wire and makes the
kernel treat it as chosen (br_set_mac_address: NET_ADDR_SET), so it never moves again.

When: before the new port joins, as a floating bridge would take the new port's MAC if it is
the lowest; but a floating bridge with no port has a MAC nobody knows yet and takes the new
port's, so that one is pinned after (its MAC moved on attach).

Knowing whether a bridge floats: rtnetlink does not carry addr_assign_type (and /sys shows
the links of the netns that mounted it, the host's in a rootless world). A floating bridge with
a port always has that port's MAC, so its forwarding entry for its own MAC is the port's local
entry (`bridge fdb get MAC br BR` names the port); a pinned bridge with a random MAC (burrow's,
newer netavark's) has an entry that names the bridge. A bridge pinned here keeps its lowest
port's MAC, whose entry names that port until it leaves: so the pin also moves that local
entry to the bridge (`bridge fdb replace MAC dev BR self local`; frames to the MAC are taken
by the bridge either way), and the next setup sees a pinned bridge. Pinning again would be
harmless but not free: the kernel announces NETDEV_CHANGEADDR and flushes the bridge's
neighbour entries, so it happens once per bridge.
"""

from __future__ import annotations

import errno
import os
import socket
import struct

from netns import neigh
from netns.linkdump import IFINFOMSG, NLMSG_ERROR, NLMSGHDR, RTATTR, error_code, replies

RTM_NEWNEIGH, RTM_GETNEIGH, RTM_SETLINK = 28, 30, 19
NLM_F_REPLACE, NLM_F_CREATE = 0x100, 0x400
NDA_LLADDR, NDA_MASTER = 2, 9
NUD_PERMANENT, NTF_SELF = 0x80, 0x02
IFLA_ADDRESS = 1
_NDMSG = struct.Struct("=BxxxiHBB")  # family, pad, ifindex, state, flags, type
_U32 = struct.Struct("=I")


def _attr(kind: int, payload: bytes) -> bytes:
    size = RTATTR.size + len(payload)
    return RTATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def fdb_owner(sock: socket.socket, bridge: int, mac: bytes) -> int | None:
    """The ifindex `bridge fdb get MAC br BRIDGE` names (a port's, or the bridge's own);
    None if the bridge has no entry for it."""
    body = _NDMSG.pack(socket.AF_BRIDGE, 0, 0, 0, 0) + _attr(NDA_LLADDR, mac) + _attr(
        NDA_MASTER, _U32.pack(bridge))
    for kind, buf, off, _length in replies(sock, RTM_GETNEIGH, 0, body):
        if kind == NLMSG_ERROR:
            code = error_code(buf, off) or errno.EPROTO
            if code == errno.ENOENT:
                return None
            raise OSError(code, f"fdb get on bridge {bridge}: {os.strerror(code)}")
        return int(_NDMSG.unpack_from(buf, off + NLMSGHDR.size)[1])
    raise AssertionError("unreachable: replies() never ends")  # pragma: no cover


def before_attach(sock: socket.socket, name: str, bridge: int) -> tuple[bytes, bool]:
    """Before a new port joins: pin a floating bridge that has ports, so it keeps the MAC its
    containers know (were the new port the lowest, the bridge would take its MAC on attach).
    Returns (its MAC now, whether this pinned it)."""
    mac = neigh.link_address(sock, bridge)
    owner = fdb_owner(sock, bridge, mac)
    if owner is None or owner == bridge:
        return mac, False  # pinned, or floating with no port (`after_attach` sees to that)
    _pin(sock, name, bridge, mac)
    return mac, True


def after_attach(sock: socket.socket, name: str, bridge: int, before: bytes) -> bytes | None:
    """After the port joined: a bridge whose MAC moved floats (it had no port and took the new
    one's); pin the MAC it has now. Returns the MAC pinned, None if nothing moved."""
    mac = neigh.link_address(sock, bridge)
    if mac == before:
        return None
    _pin(sock, name, bridge, mac)
    return mac


def _pin(sock: socket.socket, name: str, bridge: int, mac: bytes) -> None:
    setlink = IFINFOMSG.pack(0, 0, bridge, 0, 0) + _attr(IFLA_ADDRESS, mac)
    (code,) = neigh.batch(sock, [(RTM_SETLINK, 0, setlink)])
    if code:
        raise OSError(code, f"set the MAC of bridge {name}: {os.strerror(code)}")
    own = _NDMSG.pack(socket.AF_BRIDGE, bridge, NUD_PERMANENT, NTF_SELF, 0) + _attr(NDA_LLADDR, mac)
    (code,) = neigh.batch(sock, [(RTM_NEWNEIGH, NLM_F_CREATE | NLM_F_REPLACE, own)])
    if code:
        raise OSError(code, f"bridge {name}: move the local entry of {mac.hex(':')}: "
                      f"{os.strerror(code)} (pinned; the next setup pins again)")

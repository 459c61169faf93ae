"""IPv4 sysctls over rtnetlink instead of /proc/sys, where the kernel offers the same setting.

Why: a path below /proc/sys/net is looked up among the "net" directories of every network
namespace whose /proc/sys anyone has opened (procfs keeps one dentry per namespace under one
parent, and tells them apart by comparing each in turn: proc_sys_compare). With a container
per namespace, every open of such a path walks past all N containers' entries, so writing
sysctls the /proc/sys way made each setup grow with the number of containers (perf at N = 300:
__d_lookup/proc_sys_compare). And a container's own sysctl written through /proc/sys adds its
namespace to the ones every later lookup walks past.

rtnetlink reaches the same values by interface index, in the namespace the socket was made in:
- `set_ipv4_conf`: RTM_SETLINK with IFLA_AF_SPEC/AF_INET/IFLA_INET_CONF sets per-interface
  IPV4_DEVCONF_* values, as a /proc/sys/net/ipv4/conf/<if>/<key> write does (the value and its
  "explicitly set" bit). What the kernel does on top for a /proc/sys write differs only for
  keys this module is not used for (forwarding: LRO off; route_localnet 1 -> 0: a route cache
  flush) and in one notification: a changed rp_filter sends RTM_NEWNETCONF to listeners.
- `forwarding`: RTM_GETNETCONF of the "all" device, the value of net/ipv4/ip_forward or of
  net/ipv6/conf/all/forwarding. A setup skips the write when this says it is already on:
  writing the value again only sets every interface's own forwarding to it once more (and for
  IPv6 walks them all and purges RA default routes, under the RTNL lock).

What has no rtnetlink way (IPv6 per-interface sysctls, for one) is written through procfs, but
not through /proc: `procfs_instance` makes a procfs of one's own for one request. Dentries
belong to a superblock, and each mount of procfs made with the new mount API (fsopen,
fsconfig, fsmount; Linux 5.2) is one of its own, attached nowhere (only its fd reaches it), so
its lookups walk past at most the namespaces that request touched, and none is added to the
walk of /proc's. Which namespace's sysctls a path shows is decided at each lookup by the
caller's network namespace, as under /proc/sys. Measured, opening a sysctl directory in a new
namespace with 0 -> 500 namespaces seen by /proc: /proc/sys 16 -> 263 us, an instance of one's
own (made, looked up, closed) 87-91 us (load 5).
"""

from __future__ import annotations

import ctypes
import errno
import functools
import os
import socket
import struct
from collections.abc import Mapping

from netns.linkdump import IFINFOMSG, NLMSG_ERROR, NLMSGHDR, RTATTR, error_code, replies

RTM_SETLINK = 19
RTM_NEWNETCONF, RTM_GETNETCONF = 80, 82
NLM_F_ACK = 0x4
NLA_F_NESTED = 0x8000
IFLA_AF_SPEC = 26
IFLA_INET_CONF = 1
IFF_UP = 0x1
NETCONFA_IFINDEX, NETCONFA_FORWARDING = 1, 2
NETCONFA_IFINDEX_ALL = -1
# include/uapi/linux/ip.h, IPV4_DEVCONF_*: the keys set this way (others keep /proc/sys).
IPV4_DEVCONF = {"rp_filter": 8, "arp_notify": 22, "route_localnet": 26}
_S32 = struct.Struct("=i")
_NETCONFMSG = struct.Struct("=Bxxx")  # ncm_family, padded to the attributes' alignment


def _attr(kind: int, payload: bytes) -> bytes:
    size = RTATTR.size + len(payload)
    return RTATTR.pack(size, kind) + payload + b"\0" * (-size % 4)


def set_ipv4_conf(sock: socket.socket, index: int, values: Mapping[str, int],
                  up: bool = False) -> None:
    """Set per-interface IPv4 sysctls (names of IPV4_DEVCONF) of link `index`, and with `up`
    bring the link up in the same request; OSError if the kernel refuses (no such link, no
    permission, a key it does not know)."""
    conf = b"".join(_attr(IPV4_DEVCONF[k], struct.pack("=I", v)) for k, v in values.items())
    spec = _attr(IFLA_AF_SPEC | NLA_F_NESTED,
                 _attr(socket.AF_INET | NLA_F_NESTED, _attr(IFLA_INET_CONF | NLA_F_NESTED, conf)))
    flags = IFF_UP if up else 0
    _request(sock, RTM_SETLINK, NLM_F_ACK, IFINFOMSG.pack(0, 0, index, flags, flags) + spec)


def forwarding(sock: socket.socket, family: int = socket.AF_INET) -> int:
    """The namespace's net/ipv4/ip_forward (AF_INET) or net/ipv6/conf/all/forwarding
    (AF_INET6), read by netlink (OSError if it cannot be read)."""
    body = _NETCONFMSG.pack(family) + _attr(NETCONFA_IFINDEX, _S32.pack(NETCONFA_IFINDEX_ALL))
    reply = _request(sock, RTM_GETNETCONF, 0, body)
    off = _NETCONFMSG.size
    while off + RTATTR.size <= len(reply):
        alen, atype = RTATTR.unpack_from(reply, off)
        if alen < RTATTR.size:
            break
        if atype & ~NLA_F_NESTED == NETCONFA_FORWARDING and alen >= 8:
            return int(_S32.unpack_from(reply, off + 4)[0])
        off += (alen + 3) & ~3
    raise OSError(errno.EPROTO, "netconf reply without NETCONFA_FORWARDING")


def _request(sock: socket.socket, kind: int, flags: int, body: bytes) -> bytes:
    """Send one request; returns the body of its answer (b"" for an ack), OSError on an error."""
    for rkind, buf, off, length in replies(sock, kind, flags, body):
        if rkind == NLMSG_ERROR:
            code = error_code(buf, off)
            if code:
                raise OSError(code, os.strerror(code))
            return b""
        if rkind == RTM_NEWNETCONF:
            return bytes(buf[off + NLMSGHDR.size : off + length])
    raise AssertionError("unreachable: replies() never ends")  # pragma: no cover


# The new mount API's system calls: the same numbers on every architecture (asm-generic, 5.2).
SYS_FSOPEN, SYS_FSCONFIG, SYS_FSMOUNT = 430, 431, 432
FSOPEN_CLOEXEC, FSMOUNT_CLOEXEC, FSCONFIG_CMD_CREATE = 0x1, 0x1, 6


@functools.cache
def _libc() -> ctypes.CDLL:
    libc = ctypes.CDLL(None, use_errno=True)
    libc.syscall.restype = ctypes.c_long
    return libc


def procfs_instance() -> int | None:
    """An fd of the root of a new procfs mount attached nowhere (close it to free it all), or
    None where one cannot be made: no CAP_SYS_ADMIN over the pid namespace (rootless), a
    kernel before 5.2, a seccomp filter. Callers then use /proc."""
    libc = _libc()
    fs = int(libc.syscall(SYS_FSOPEN, b"proc", FSOPEN_CLOEXEC))
    if fs < 0:
        return None
    try:
        if libc.syscall(SYS_FSCONFIG, fs, FSCONFIG_CMD_CREATE, None, None, 0) < 0:
            return None
        root = int(libc.syscall(SYS_FSMOUNT, fs, FSMOUNT_CLOEXEC, 0))
        return root if root >= 0 else None
    finally:
        os.close(fs)

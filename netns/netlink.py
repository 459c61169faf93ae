"""The only pyroute2 importer: apply plan operations in the host and container netns.

Uses `IPRoute` (never NDB: no background thread, no in-memory database). The container socket
is opened after a thread-local `setns` into the container netns, so one process can hold both
without a helper child; netlink sockets stay bound to the netns they were created in.
"""

from __future__ import annotations

import errno
import ipaddress
import logging
import os
import random
import socket
from collections.abc import Callable, Sequence
from typing import Any, Self

from pyroute2 import IPRoute  # noqa: TID251 - this module is the one allowed importer
from pyroute2.netlink.exceptions import NetlinkError  # noqa: TID251

from netns import bridgemac, bridges, devconf, linkdump, neigh
from netns.bridges import Outcome
from netns.errors import BurrowError
from netns.nsenter import entered
from netns.plan import (
    AddMacvlan,
    AddRoute,
    AddVeth,
    ConfigureInterface,
    DeleteBridgeIfUnused,
    DeleteLink,
    DeleteRoute,
    DetachFromBridge,
    EnsureBridge,
    ForgetNeighbours,
    Op,
    RequireLink,
    SeedNeighbours,
    Sysctl,
    Where,
    describe,
)

log = logging.getLogger("netns.netlink")
FORWARDING = {"net/ipv4/ip_forward": socket.AF_INET, "net/ipv6/conf/all/forwarding": socket.AF_INET6}
RTPROT_STATIC = 4
# The kernel's numbers (RTN_*) for plan.ROUTE_TYPES.
RTN_TYPES = {"unicast": 1, "blackhole": 6, "unreachable": 7, "prohibit": 8}


def netlink_error(exc: NetlinkError) -> BurrowError:
    code = exc.code or errno.EIO
    return BurrowError(f"Netlink error: {os.strerror(code)} (os error {code})")


def sysctl_error(path: str, exc: OSError) -> BurrowError:
    return BurrowError(f"Sysctl error: {exc.strerror or exc} for /proc/sys/{path}")


# What a managed bridge port's IPv6 side is spared (soft: a read-only /proc/sys keeps the
# kernel's defaults). The bridge copies each multicast frame a container sends to all N ports,
# through N containers' stacks: CPU the next setups wait for (bench_scale_frames.py counts).
# - router_solicitations=0: no router solicitation, which the kernel repeats for as long as
#   the link lives (4 s, 8 s, 16 s, ... apart). Nothing on a managed bridge sends router
#   advertisements unless the user runs a router there; its periodic ones are still taken.
# - accept_dad=0, as netavark sets it on IPv6 networks: no DAD probe of the link-local
#   address (made from the container's random MAC) on IPv4-only ones either.
QUIET_PORT_V6 = {"router_solicitations": "0", "accept_dad": "0"}


def _proc_sys_writable() -> bool:
    """/proc/sys is there and not mounted read-only (statvfs of it: no lookup under net/)."""
    try:
        return not os.statvfs("/proc/sys").f_flag & os.ST_RDONLY
    except OSError:
        return False


def _open_sys(path: str, flags: int, proc: int | None) -> int:
    """Open sys/<path> of procfs: of `proc` (an own instance, devconf.procfs_instance), or /proc."""
    if proc is None:
        return os.open(f"/proc/sys/{path}", flags | os.O_CLOEXEC)
    return os.open(f"sys/{path}", flags | os.O_CLOEXEC, dir_fd=proc)


def _write_proc_sys(path: str, value: str, conf_dir: int | None = None,
                    proc: int | None = None) -> None:
    """Write /proc/sys/<path> (through `proc`, if given); with `conf_dir` (an open fd of its
    directory) relative to it, without the lookup from sys/ down (devconf.py)."""
    if conf_dir is None:
        fd = _open_sys(path, os.O_WRONLY, proc)
    else:
        fd = os.open(path.rsplit("/", 1)[1], os.O_WRONLY | os.O_CLOEXEC, dir_fd=conf_dir)
    try:
        os.write(fd, value.encode())
    finally:
        os.close(fd)


def _write_ipv6_conf(ifname: str, hard: dict[str, str], soft: dict[str, str],
                     proc: int | None = None) -> None:
    """Per-interface IPv6 sysctls in the current netns, with one lookup of their directory.
    `hard` ones raise; `soft` ones tolerate a read-only /proc/sys, and a kernel without IPv6."""
    conf = f"net/ipv6/conf/{ifname}"
    try:
        conf_dir = _open_sys(conf, os.O_RDONLY | os.O_DIRECTORY, proc)
    except FileNotFoundError:
        if hard:
            raise
        return  # no IPv6 here: nothing to keep quiet
    try:
        for key, value in hard.items():
            _write_proc_sys(f"{conf}/{key}", value, conf_dir, proc)
        for key, value in soft.items():
            try:
                _write_proc_sys(f"{conf}/{key}", value, conf_dir, proc)
            except OSError as exc:
                _tolerate_readonly(f"{conf}/{key}", value, exc)
    finally:
        os.close(conf_dir)


def _tolerate_readonly(path: str, value: str, exc: OSError) -> None:
    if exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM):
        raise exc
    log.warning("cannot set /proc/sys/%s=%s: %s", path, value, exc.strerror)


def _container_sysctls(op: ConfigureInterface, proc: int | None) -> None:
    """In the container's netns: no SLAAC on every network and no DAD if asked; on bridge
    ports a quiet IPv6 side (QUIET_PORT_V6). All soft but accept_dad."""
    hard = {"accept_dad": "0"} if op.no_dad else {}
    # autoconf=0 on IPv4 networks too, and soft (a read-only /proc/sys, a kernel without
    # IPv6), as netavark's disable_ipv6_autoconf: else a router advertising on the bridge
    # gives the container a SLAAC address and route the network never had.
    quiet = {"autoconf": "0"}
    if op.bridge_port:
        quiet |= {k: v for k, v in QUIET_PORT_V6.items() if k not in hard}
    _write_ipv6_conf(op.ifname, hard, quiet, proc)


def _thread_netns() -> tuple[int, int]:
    st = os.stat("/proc/thread-self/ns/net")
    return (st.st_dev, st.st_ino)


def _inet_conf(link: Any) -> dict[str, int]:
    """The link's IPv4 sysctls by name as RTM_GETLINK gave them ({} if it gave none)."""
    spec = link.get_attr("IFLA_AF_SPEC")
    inet = spec.get_attr("AF_INET") if spec is not None else None
    if not isinstance(inet, dict):
        return {}
    return {k: v for k, v in inet.items() if isinstance(v, int)}


def _kind(link: Any) -> str | None:
    info = link.get_attr("IFLA_LINKINFO")
    return info.get_attr("IFLA_INFO_KIND") if info is not None else None


class Links:
    """Sockets on the host netns (the caller's) and, optionally, one container netns, with a
    per-request cache of the links looked up by name (index, MTU, group, MAC, IPv4 sysctls)."""

    def __init__(self, container_fd: int | None) -> None:
        self.container_fd = container_fd
        self._indexes: dict[tuple[Where, str], int] = {}
        # Names a lookup found missing: preflight's answer serves the operations after it (one
        # RTM_GETLINK less); an operation that makes links clears it (`Netlink.apply`).
        self._absent: set[tuple[Where, str]] = set()
        self._macs: dict[tuple[Where, str], str] = {}
        self._mtus: dict[tuple[Where, str], int] = {}
        self._groups: dict[tuple[Where, str], int] = {}  # device groups (netns/mldquiet.py)
        # IPv4 sysctls of a link as its lookup read them (IFLA_AF_SPEC/AF_INET): a value that is
        # already set is not set again (`_sysctl_by_netlink`).
        self._inet_conf: dict[tuple[Where, str], dict[str, int]] = {}
        self.host = IPRoute()
        # Raw sockets for the bridge-port dump are made here and again after a dump left
        # unfinished (`_ports`): both only while the thread is in the host netns (checked).
        self._host_ns = _thread_netns()
        self.host_raw: socket.socket | None = linkdump.open_socket()
        self.made_bridges: set[str] = set()  # created by this request (their MTU is not set)
        # An existing managed bridge's MAC before a port joins it (netns/bridgemac.py).
        self._bridge_macs: dict[str, bytes] = {}
        # A new bridge in a VRF: the VRF's routing table has the default route for its MTU.
        self.route_tables: dict[str, int] = {}
        self.ctr: IPRoute | None = None
        self.ctr_raw: socket.socket | None = None  # IPv4 sysctls of the container's links
        self._proc: int | None = None  # a procfs of this request's own (`proc`)
        self._proc_tried = False
        if container_fd is not None:
            with entered(container_fd):
                self.ctr = IPRoute()
                self.ctr_raw = linkdump.open_socket()

    def close(self) -> None:
        if self._proc is not None:
            os.close(self._proc)
            self._proc = None
        self.host.close()
        self._drop_host_raw()
        if self.ctr is not None:
            self.ctr.close()
        if self.ctr_raw is not None:
            self.ctr_raw.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- helpers -------------------------------------------------------------------------

    def _ipr(self, where: Where) -> IPRoute:
        if where == "host":
            return self.host
        if self.ctr is None:
            raise BurrowError("the container network namespace is not available")
        return self.ctr

    def _ports(self, bridge: int, limit: int | None = None) -> list[int]:
        """The host links whose master is `bridge` (netns/linkdump.py: read, not decoded); with
        `limit`, at most that many (enough to answer "is this the last port?" whatever N)."""
        sock = self._host_raw()
        try:
            ports = linkdump.bridge_ports(sock, bridge, limit)
        except OSError as exc:
            self._drop_host_raw()
            raise BurrowError(f"list the ports of bridge {bridge}: {exc}") from exc
        if not linkdump.finished(ports, limit):
            self._drop_host_raw()  # mid-dump: a netlink socket runs one dump at a time
        return ports

    def group_bridge_left(self, group: int) -> bool:
        """Whether a bridge of device `group` is in the host netns (netns/mldquiet.py)."""
        sock = self._host_raw()
        try:
            return bool(linkdump.group_bridges(sock, group))
        except OSError:
            self._drop_host_raw()
            raise

    def proc(self) -> int | None:
        """This request's own procfs (devconf.procfs_instance) for the sysctls it writes,
        made at the first; None (use /proc) where none can be made."""
        if not self._proc_tried:
            self._proc_tried = True
            # Only where /proc/sys may itself be written: a read-only one (a container's, an
            # admin's bind mount) stays the rule, and the writes meet it as before.
            if _proc_sys_writable():
                self._proc = devconf.procfs_instance()
        return self._proc

    def _host_raw(self) -> socket.socket:
        if self.host_raw is None:
            if _thread_netns() != self._host_ns:
                raise BurrowError("internal: host link dump asked for outside the host netns")
            self.host_raw = linkdump.open_socket()
        return self.host_raw

    def _drop_host_raw(self) -> None:
        if self.host_raw is not None:
            self.host_raw.close()
            self.host_raw = None

    def lookup(self, where: Where, name: str) -> Any | None:
        """One RTM_GETLINK by name (a dump of every link is slow on a host with many veths)."""
        try:
            link = self._ipr(where).link("get", ifname=name)[0]
        except NetlinkError as exc:
            if exc.code == errno.ENODEV:
                self._indexes.pop((where, name), None)
                self._absent.add((where, name))
                return None
            raise
        self._absent.discard((where, name))
        self._indexes[(where, name)] = link["index"]
        self._macs[(where, name)] = str(link.get_attr("IFLA_ADDRESS"))
        self._mtus[(where, name)] = int(link.get_attr("IFLA_MTU") or 0)
        self._groups[(where, name)] = int(link.get_attr("IFLA_GROUP") or 0)
        self._inet_conf[(where, name)] = _inet_conf(link)
        return link

    def index(self, where: Where, name: str) -> int | None:
        # Cached per request: a setup asks for the same few names many times.
        if (where, name) in self._indexes:
            return self._indexes[(where, name)]
        if (where, name) in self._absent:
            return None
        link = self.lookup(where, name)
        return None if link is None else int(link["index"])

    def known_mtu(self, where: Where, name: str) -> int | None:
        """The MTU the last lookup of this link in this request read, if any."""
        return self._mtus.get((where, name))

    def known_group(self, where: Where, name: str) -> int | None:
        """The device group the last lookup of this link in this request read, if any."""
        return self._groups.get((where, name))

    @staticmethod
    def tolerating(request: Callable[[], object], code: int) -> bool:
        """Run one netlink request: False if it succeeded, True if the kernel answered `code`
        (an expected answer, not a failure); any other error is raised as it came."""
        try:
            request()
        except NetlinkError as exc:
            if exc.code != code:
                raise
            return True
        return False

    def _forget(self, where: Where, name: str) -> None:
        self._indexes.pop((where, name), None)
        self._mtus.pop((where, name), None)
        self._groups.pop((where, name), None)
        self._macs.pop((where, name), None)
        self._inet_conf.pop((where, name), None)

    def link_addresses(self, where: Where, name: str) -> tuple[str, ...]:
        """The link's global addresses (no link-local: a DNS server can't serve on those)."""
        idx = self.index(where, name)
        if idx is None:
            return ()
        out = []
        for msg in self._ipr(where).get_addr(index=idx):
            ip = ipaddress.ip_address(msg.get_attr("IFA_ADDRESS"))
            if not ip.is_link_local:
                out.append(str(ip))
        return tuple(out)

    def mac(self, ifname: str) -> str:
        # Read back when the veth was created (a MAC never changes by bringing a link up).
        if ("container", ifname) in self._macs:
            return self._macs[("container", ifname)]
        link = self.lookup("container", ifname)
        if link is None:
            raise BurrowError(f"interface {ifname} vanished from the container namespace")
        return str(link.get_attr("IFLA_ADDRESS"))

    def vrf(self, name: str) -> tuple[int, int | None]:
        """The VRF device's index and routing table (netavark's messages, 1.8)."""
        try:
            link = self.host.link("get", ifname=name)[0]
        except NetlinkError as exc:
            raise netlink_error(exc).wrap("get vrf to set up bridge interface") from None
        if _kind(link) != "vrf":
            raise BurrowError(f"vrf {name} already exists but is a {_kind(link) or 'plain'} interface")
        data = link.get_attr("IFLA_LINKINFO").get_attr("IFLA_INFO_DATA")
        table = data.get_attr("IFLA_VRF_TABLE") if data is not None else None
        return int(link["index"]), None if table is None else int(table)


class Handles(Links):
    """Links, and the kernel's settings: sysctls (over rtnetlink where the kernel offers the
    same setting, netns/devconf.py; else /proc/sys or a procfs of the request's own) and the
    checks made before the first change (`preflight`)."""

    def write_sysctl(self, where: Where, path: str, value: str) -> None:
        if self._sysctl_by_netlink(where, path, value):
            return
        if where == "container":
            if self.container_fd is None:
                raise BurrowError("the container network namespace is not available")
            with entered(self.container_fd):
                _write_proc_sys(path, value, proc=self.proc())
        else:
            _write_proc_sys(path, value, proc=self.proc())

    def _sysctl_by_netlink(self, where: Where, path: str, value: str) -> bool:
        """Set (or find already set) a sysctl over rtnetlink, not /proc/sys, whose lookups grow
        with the namespaces (netns/devconf.py). False: not such a sysctl, or the kernel said no;
        the /proc/sys write then happens as before, with its errors and tolerance."""
        parts = path.split("/")
        if not value.isdigit():
            return False
        try:
            if path in FORWARDING:  # already on: not written again (devconf.forwarding)
                return where == "host" and \
                    devconf.forwarding(self._host_raw(), FORWARDING[path]) == int(value)
            if len(parts) != 5 or parts[:3] != ["net", "ipv4", "conf"] \
                    or parts[4] not in devconf.IPV4_DEVCONF or parts[3] in ("all", "default"):
                return False
            index = self.index(where, parts[3])
            sock = self._host_raw() if where == "host" else self.ctr_raw
            if index is None or sock is None:
                return False
            known = self._inet_conf.get((where, parts[3]), {})
            if known.get(parts[4]) == int(value):
                # Already so (the bridge's route_localnet on every setup after its first). Not
                # set again: an RTM_SETLINK that carries IFLA_AF_SPEC makes the kernel announce a
                # state change of the link (NETDEV_CHANGE), and for a link with IPv6 that resends
                # its MLD reports; the bridge's go to all N ports (netns/devconf.py).
                return True
            devconf.set_ipv4_conf(sock, index, {parts[4]: int(value)})
            known[parts[4]] = int(value)
        except (OSError, NetlinkError, BurrowError):
            return False
        return True

    def _forwarding_was(self, where: Where, path: str) -> str | None:
        """A host's global forwarding switch as it is (over rtnetlink, devconf.forwarding);
        None for any other sysctl, or if it can't be read."""
        if where != "host" or path not in FORWARDING:
            return None
        try:
            return str(devconf.forwarding(self._host_raw(), FORWARDING[path]))
        except (OSError, NetlinkError, BurrowError):
            return None

    def soft_sysctl(self, where: Where, path: str, value: str) -> None:
        """A tuning sysctl: a read-only /proc/sys (tolerated for forwarding) skips it."""
        try:
            self.write_sysctl(where, path, value)
        except OSError as exc:
            _tolerate_readonly(path, value, exc)

    def read_sysctl(self, where: Where, path: str) -> str | None:
        def read() -> str:
            with open(f"/proc/sys/{path}") as f:
                return f.read().strip()

        try:
            if where == "container" and self.container_fd is not None:
                with entered(self.container_fd):
                    return read()
            return read()
        except OSError:
            return None

    # -- checks before the first change ---------------------------------------------------

    def preflight(self, ops: Sequence[Op]) -> None:
        """Fail on kernel state that would stop the plan, before anything is changed."""
        for op in ops:
            match op:
                case EnsureBridge(name, vrf=vrf):
                    link = self.lookup("host", name)
                    if link is not None and _kind(link) != "bridge":
                        raise BurrowError(
                            f"bridge interface {name} already exists but is a "
                            f"{_kind(link) or 'plain'} interface"
                        )
                    if link is None and vrf is not None:
                        self.vrf(vrf)
                case RequireLink(where, name, kind):
                    link = self.lookup(where, name)
                    if link is None:
                        raise BurrowError(f"interface {name} does not exist ({where})")
                    if kind is not None and _kind(link) != kind:
                        raise BurrowError(f"interface {name} is not a {kind}")
                case AddVeth() | AddMacvlan():
                    if self.index("container", op.ifname) is not None:
                        what = "create veth pair" if isinstance(op, AddVeth) else "create macvlan"
                        raise BurrowError(
                            f"{what}: interface {op.ifname} already exists on container namespace: "
                            "Netlink error: File exists (os error 17)"
                        )
                    host_ifname = op.host_ifname if isinstance(op, AddVeth) else None
                    if host_ifname and self.index("host", host_ifname) is not None:
                        raise BurrowError(
                            f"create veth pair: host interface {host_ifname} already exists: "
                            "Netlink error: File exists (os error 17)"
                        )
                case _:
                    pass



class Netlink(Handles):
    """Applies plan operations; each returns the operation that undoes it (if any)."""

    def __enter__(self) -> Netlink:
        return self

    def apply(self, op: Op) -> Outcome:
        try:
            return self._apply(op)
        except NetlinkError as exc:
            raise netlink_error(exc).wrap(describe(op)) from exc
        except BurrowError as exc:
            raise exc.wrap(describe(op)) from exc
        except OSError as exc:
            raise BurrowError(
                f"{describe(op)}: IO error: {exc.strerror} (os error {exc.errno})"
            ) from exc
        finally:
            if isinstance(op, EnsureBridge | AddVeth | AddMacvlan):
                self._absent.clear()  # what was missing may exist now

    def _apply(self, op: Op) -> Outcome:
        match op:
            case Sysctl(where, path, value, tolerate):
                was = self._forwarding_was(where, path)
                if was == value:
                    return Outcome()
                try:
                    self.write_sysctl(where, path, value)
                except OSError as exc:
                    if tolerate and exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
                        # A read-only /proc is fine only if the switch is already on: otherwise
                        # setup would "succeed" and the container's traffic silently die.
                        if self.read_sysctl(where, path) == value:
                            return Outcome()
                    raise sysctl_error(path, exc) from exc
                # A global forwarding switch this setup turned on goes back off if the setup
                # is rolled back: a refused request leaves nothing behind (README, Guarantees).
                return Outcome(undo=Sysctl(where, path, was) if was is not None else None)
            case EnsureBridge():
                out = bridges.ensure_bridge(self, op)
                if op.name not in self.made_bridges:
                    self._pin_bridge_mac(op.name, None)
                return out
            case RequireLink():
                self.preflight((op,))
                return Outcome()
            case AddVeth():
                out = bridges.add_veth(self, op, rollback=self._apply)
                if op.bridge in self._bridge_macs:
                    self._pin_bridge_mac(op.bridge, self._bridge_macs.pop(op.bridge))
                return out
            case AddMacvlan():
                return bridges.add_macvlan(self, op)
            case ConfigureInterface():
                self._configure(op)
                return Outcome()
            case SeedNeighbours():
                return self._seed_neighbours(op)
            case ForgetNeighbours():
                self._forget_neighbours(op)
                return Outcome()
            case AddRoute():
                self._add_route(op)
                return Outcome()
            case DeleteLink(where, name, missing_ok):
                idx = self.index(where, name)
                if idx is None:
                    if missing_ok:
                        gone = name if where == "container" and self.ctr is not None else None
                        return Outcome(deleted=True, missing=gone)
                    raise BurrowError(f"Netlink error: No such device (os error {errno.ENODEV})")
                self._ipr(where).link("del", index=idx)
                self._forget(where, name)
                return Outcome(deleted=True)
            case DetachFromBridge():
                return self._detach(op)
            case DeleteRoute():
                self._delete_route(op)
                return Outcome()
            case DeleteBridgeIfUnused(name):
                link = self.lookup("host", name)
                if link is None:
                    return Outcome(deleted=True)
                if _kind(link) != "bridge":  # a host link named as the bridge: never ours
                    return Outcome(deleted=False)
                idx = int(link["index"])
                if self._ports(idx, limit=1):
                    return Outcome(deleted=False)
                self.host.link("del", index=idx)
                self._forget("host", name)
                return Outcome(deleted=True)
        raise AssertionError(op)

    def _detach(self, op: DetachFromBridge) -> Outcome:
        bridge = self.index("host", op.bridge)
        link = self.lookup("container", op.ifname) if self.ctr is not None else None
        if link is None:  # the container side is gone already (its netns died)
            out = self._apply(DeleteBridgeIfUnused(op.bridge))
            return Outcome(deleted=out.deleted, missing=op.ifname if self.ctr is not None else None)
        peer = link.get_attr("IFLA_LINK")
        # Two ports at most: none, just the peer, or another one too (then it is not the last).
        ports = self._ports(bridge, limit=2) if bridge is not None else []
        if bridge is not None and ports == [peer]:
            # The last port: delete veth and bridge in ONE request. Each RTM_DELLINK waits for
            # an RCU grace period (~15-30 ms here); a group delete unregisters both under one.
            group = random.randrange(1 << 30, 1 << 31)  # unused by anything else in practice
            self.host.link("set", index=peer, group=group)
            self.host.link("set", index=bridge, group=group)
            self.host.link("del", group=group)
            self._forget("host", op.bridge)
            self._forget("container", op.ifname)
            return Outcome(deleted=True)
        self._ipr("container").link("del", index=link["index"])
        self._forget("container", op.ifname)
        if bridge is not None and not ports:
            # A setup cut short before the host end joined the bridge: nothing else uses it.
            return self._apply(DeleteBridgeIfUnused(op.bridge))
        return Outcome(deleted=bridge is None)

    def _configure(self, op: ConfigureInterface) -> None:
        ctr = self._ipr("container")
        idx = self.index("container", op.ifname)
        if idx is None:
            raise BurrowError(f"interface {op.ifname} is missing in the container namespace")
        assert self.container_fd is not None
        proc = self.proc()
        with entered(self.container_fd):  # one setns there and back for all of it
            _container_sysctls(op, proc)
            for addr in op.addresses:
                ctr.addr("add", index=idx, **bridges.addr_args(addr))
            try:  # loopback is ifindex 1 in every network namespace
                ctr.link("set", index=1, state="up")
            except NetlinkError as exc:
                if exc.code != errno.ENODEV:
                    raise
            self._up(op, idx, proc)

    def _up(self, op: ConfigureInterface, index: int, proc: int | None) -> None:
        """The interface up; a bridge port's loose rp_filter (2) and arp_notify=1 (netavark
        1.11) set in the same request, after the up (the kernel applies a request's flags
        before its IFLA_AF_SPEC). So the kernel sends no gratuitous ARP at this link-up, in
        every shape, as netavark 1.4 (README row "gratuitous ARP at setup"). With arp_notify
        set before (1.11), whether that ARP reached every other container on the bridge (O(N)
        per setup) was a kernel race: a host end brought up before the kernel saw it without
        carrier forwards at once (IPv4 networks); one read first waits for its carrier (IPv6)."""
        conf = {"rp_filter": 2, "arp_notify": 1} if op.bridge_port else {}
        if conf and self.ctr_raw is not None:
            try:
                devconf.set_ipv4_conf(self.ctr_raw, index, conf, True)  # True: up
                return
            except OSError:
                pass  # the /proc/sys way below, with its errors and tolerance
        self._ipr("container").link("set", index=index, state="up")
        for key, value in conf.items():
            try:
                _write_proc_sys(f"net/ipv4/conf/{op.ifname}/{key}", str(value), proc=proc)
            except OSError as exc:
                _tolerate_readonly(f"net/ipv4/conf/{op.ifname}/{key}", str(value), exc)

    def _seed_neighbours(self, op: SeedNeighbours) -> Outcome:
        """One raw request in the container (gateways -> the bridge's MAC) and one on the host
        (addresses -> the container's MAC): netns/neigh.py. Not getting them is no error (the
        kernel resolves as it always did), so failures are logged; the undo removes whatever
        host entries may have been made."""
        bridge, port = self.index("host", op.bridge), self.index("container", op.ifname)
        if bridge is None or port is None or self.ctr_raw is None:
            return Outcome()
        undo = ForgetNeighbours(op.bridge, op.addresses)
        refused: list[tuple[neigh.Address, int]] = []
        try:
            # A bridge made here has the MAC it was given. Any other is read now: one with no
            # MAC of its own (not made by burrow) may have just taken the new port's.
            made = self._macs.get(("host", op.bridge)) if op.bridge in self.made_bridges else None
            mac = neigh.mac_bytes(made) if made else neigh.link_address(self._host_raw(), bridge)
            refused += neigh.replace(self.ctr_raw, port, [(gw, mac) for gw in op.gateways])
            mine = neigh.mac_bytes(self.mac(op.ifname))
            refused += neigh.replace(self._host_raw(), bridge, [(a, mine) for a in op.addresses])
        except (OSError, ValueError) as exc:
            log.warning("%s: %s", describe(op), exc)
        for ip, code in refused:
            log.warning("%s: %s: %s", describe(op), ip, os.strerror(code))
        return Outcome(undo=undo)

    def _pin_bridge_mac(self, name: str, before: bytes | None) -> None:
        """An existing bridge (netavark 1.4's) may have no MAC of its own and follow its lowest
        port's: pin the one its containers know, before the new port joins (`before` None)
        or, if it had no port, after (netns/bridgemac.py). Before the neighbour seeding:
        pinning flushes the bridge's entries. Failing to pin only logs."""
        index = self.index("host", name)
        if index is None:
            return
        try:
            if before is None:
                self._bridge_macs[name], pinned = bridgemac.before_attach(
                    self._host_raw(), name, index)
                mac = self._bridge_macs[name] if pinned else None
            else:
                mac = bridgemac.after_attach(self._host_raw(), name, index, before)
        except OSError as exc:
            log.warning("pin the MAC of bridge %s: %s", name, exc)
            return
        if mac is not None:
            log.info("bridge %s had no MAC of its own: pinned %s", name, mac.hex(":"))

    def _forget_neighbours(self, op: ForgetNeighbours) -> None:
        """Best effort, as seeding: an entry left behind is a STALE one the kernel checks, and
        the address's next setup replaces it."""
        bridge = self.index("host", op.bridge)
        if bridge is None:  # the bridge went, and its entries with it
            return
        try:
            refused = neigh.delete(self._host_raw(), bridge, op.addresses)
        except OSError as exc:
            log.warning("%s: %s", describe(op), exc)
            return
        for ip, code in refused:
            log.warning("%s: %s: %s", describe(op), ip, os.strerror(code))

    def _delete_route(self, op: DeleteRoute) -> None:
        try:
            self._ipr(op.where).route(
                "del", dst=str(op.destination), family=10 if op.destination.version == 6 else 2,
                priority=op.metric, type=RTN_TYPES[op.route_type],
            )
        except NetlinkError as exc:
            if exc.code != errno.ESRCH:  # gone already: nothing to remove
                raise

    def _add_route(self, op: AddRoute) -> None:
        ipr = self._ipr(op.where)
        args: dict[str, Any] = {
            "dst": str(op.destination),
            "family": 10 if op.destination.version == 6 else 2,
            "priority": op.metric,
            "proto": RTPROT_STATIC,
            "type": RTN_TYPES[op.route_type],
        }
        if op.gateway is not None:
            args["gateway"] = str(op.gateway)
        if op.ifname is not None:
            idx = self.index(op.where, op.ifname)
            if idx is None:
                raise BurrowError(f"interface {op.ifname} does not exist")
            args["oif"] = idx
        # "append", not "add": a container on two networks has two default routes with the
        # same metric (as netavark makes them), which an exclusive add refuses with EEXIST.
        ipr.route("append", **args)

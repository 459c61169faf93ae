"""The engine's typed API: parse → validate → ipam → plan → apply (undo stack) → status.

Front doors (the Netavark CLI in `netavark_cli`, the warm engine through it, a CNI adapter)
parse their own wire format into `netns.schema` types and call these four functions:

    setup(ctx, options, netns) -> {network name: StatusBlock}
    teardown(ctx, options, netns) -> None
    update(ctx, network, servers) -> None
    create(request) -> Network

Setup is transactional across networks: if anything fails, what was applied is undone in
reverse and the error is returned. Teardown attempts every step and reports all failures.
"""

from __future__ import annotations

import dataclasses
import errno
import fcntl
import functools
import ipaddress
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netns import drivers, ipam, locks, mldquiet, names, statefiles, sysctld, validate
from netns.aardvark import AardvarkConfig, Entry, dns_port
from netns.drivers.base import Attachment
from netns.errors import BurrowError, MultiError
from netns.firewall.types import Firewall, NetworkFw, PortFw
from netns.plan import AddRoute, DeleteBridgeIfUnused, DetachFromBridge, EnsureBridge, Op
from netns.schema import (
    CreateRequest,
    IPAddress,
    NetAddress,
    NetInterface,
    Network,
    NetworkOptions,
    StatusBlock,
)
from netns.undo import UndoStack
from netns.validate import Request

if TYPE_CHECKING:
    from netns.netlink import Netlink

log = logging.getLogger("netns.engine")
SEARCH_DOMAIN = "dns.podman"
NS_GET_NSTYPE = 0xB703  # ioctl on a namespace fd: its CLONE_NEW* type
CLONE_NEWNET = 0x40000000
# A netns to work in: a path (opened and closed here) or an open fd (the caller's to close).
NetnsRef = str | os.PathLike[str] | int


@dataclass(frozen=True)
class Context:
    config_dir: Path
    rootless: bool
    firewall: Firewall
    dns: AardvarkConfig
    env: Mapping[str, str]
    # Where /run is: the sysctl.d files (a test points it at a scratch dir via BURROW_ROOT).
    root: Path = Path("/")

    @classmethod
    def build(
        cls,
        *,
        config: str | None,
        rootless: bool,
        aardvark_binary: str,
        firewall_driver: str | None,
        env: Mapping[str, str],
    ) -> Context:
        from netns.firewall import select

        # Netavark 1.4 defaults --config to /tmp; 2.x requires it. Accept both.
        config_dir = Path(config or "/tmp")
        firewall = select(firewall_driver, config_dir, env)
        log.info("Using %s firewall driver", firewall.name)
        return cls(
            config_dir=config_dir,
            rootless=rootless,
            firewall=firewall,
            dns=AardvarkConfig(config_dir, aardvark_binary, dns_port(dict(env)), rootless),
            env=env,
            root=Path(env.get("BURROW_ROOT") or "/"),
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One setup/teardown at a time per config dir: bridges and rules are shared state."""
        statefiles.private_dir(self.config_dir, shared=True)
        with locks.locked(self.config_dir / statefiles.ENGINE_LOCK):
            yield


# -- the network namespace ---------------------------------------------------------------


def check_netns(fd: int, path: object) -> None:
    """Refuse an fd that is not a network namespace (a plain file, a directory, a mount ns)."""
    try:
        kind = fcntl.ioctl(fd, NS_GET_NSTYPE)
    except OSError as exc:
        if exc.errno not in (errno.ENOTTY, errno.EINVAL):
            raise
        kind = None
    if kind != CLONE_NEWNET:
        raise BurrowError(f"invalid namespace path: {path} is not a network namespace")
    ns, host = os.fstat(fd), os.stat("/proc/thread-self/ns/net")
    if (ns.st_dev, ns.st_ino) == (host.st_dev, host.st_ino):
        # The host's own namespace (/proc/self/ns/net, /proc/1/ns/net, a bind mount of it) as
        # the container's: setup put the container's addresses and default route on the host,
        # and teardown deleted the host interface named like the container's (its uplink).
        raise BurrowError(
            f"invalid namespace path: {path} is the host's own network namespace, not a "
            "container's: give the container's (/proc/<container pid>/ns/net, /run/netns/NAME)"
        )


def open_netns(path: str | os.PathLike[str]) -> int:
    try:
        # O_NONBLOCK, as the client and burrow-cni open it: a FIFO's open() would wait for a
        # writer forever (check_netns then refuses it); a namespace file does not care.
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK)
    except OSError as exc:
        raise BurrowError(
            f"invalid namespace path: IO error: {exc.strerror} (os error {exc.errno})"
        ) from None
    try:
        check_netns(fd, os.fspath(path))
    except BaseException:
        os.close(fd)
        raise
    return fd


@contextmanager
def netns_fd(ref: NetnsRef) -> Iterator[int]:
    if isinstance(ref, int):
        check_netns(ref, f"fd {ref}")
        yield ref
        return
    fd = open_netns(ref)
    try:
        yield fd
    finally:
        os.close(fd)


# -- parse → validate → ipam → plan ------------------------------------------------------


def prepare(options: NetworkOptions, *, teardown: bool = False) -> Request:
    """Validate the whole request, then let each network's IPAM fill in the addresses."""
    req = validate.request(options)
    atts = []
    for att, per in zip(req.attachments, req.per_network, strict=True):
        try:
            atts.append(ipam.assign(att, per, release=teardown))
        except BurrowError as exc:
            raise exc.wrap(f"network {att.name}") from None
    return dataclasses.replace(req, attachments=tuple(atts))


def dns_on(ctx: Context, att: Attachment) -> bool:
    return drivers.of(att).dns(att) and att.network.dns_enabled and ctx.dns.available


def network_fw(ctx: Context, att: Attachment) -> NetworkFw | None:
    port = ctx.dns.port if dns_on(ctx, att) and ctx.dns.port != 53 else None
    return drivers.of(att).firewall(att, port)


def port_fw(req: Request, att: Attachment, net: NetworkFw) -> PortFw:
    v4, v6 = att.first_address(4), att.first_address(6)
    return PortFw(
        container_id=req.container_id,
        network=net,
        container_v4=v4 if isinstance(v4, ipaddress.IPv4Address) else None,
        container_v6=v6 if isinstance(v6, ipaddress.IPv6Address) else None,
        mappings=req.ports,
    )


def firewall_intent(
    ctx: Context, req: Request, atts: Sequence[Attachment]
) -> tuple[list[NetworkFw], list[PortFw]]:
    """Network rules for `atts`, and port rules for every firewalled network of the request."""
    nets = [fw for a in atts if (fw := network_fw(ctx, a)) is not None]
    ports = []
    # One per firewalled network even without mappings, as Netavark (its port state file).
    for a in req.attachments:
        fw = network_fw(ctx, a)
        if fw is not None:
            ports.append(port_fw(req, a, fw))
    return nets, ports


def dns_entry(req: Request, att: Attachment, listen: Mapping[str, tuple[str, ...]]) -> Entry:
    return Entry(
        network=att.name,
        internal=att.internal,
        listen_ips=listen.get(att.name) or tuple(str(g.ip) for g in att.gateways),
        network_dns=tuple(str(ip) for ip in att.network_dns),
        container_id=req.container_id,
        ipv4=tuple(str(a.ip) for a in att.addresses if a.version == 4),
        ipv6=tuple(str(a.ip) for a in att.addresses if a.version == 6),
        names=(req.container_name, *att.aliases),
        container_dns=tuple(str(ip) for ip in req.dns_servers),
    )


def status_block(
    ctx: Context, req: Request, att: Attachment, mac: str, listen: Mapping[str, tuple[str, ...]]
) -> StatusBlock:
    gw_by_net = {g.network: g.ip for g in att.gateways}
    subnets = tuple(NetAddress(gw_by_net.get(a.network), a) for a in att.addresses)
    if dns_on(ctx, att):
        domains: tuple[str, ...] = (SEARCH_DOMAIN,)
        servers = listen.get(att.name) or tuple(str(g.ip) for g in att.gateways)
    elif drivers.of(att).dns(att):
        # The bridge driver hands the container's own servers back when its DNS is off.
        domains, servers = (), tuple(str(ip) for ip in req.dns_servers)
    else:  # netavark's macvlan/ipvlan report none (vlan.rs; found by the differential test)
        domains, servers = (), ()
    return StatusBlock(domains, servers, {att.ifname: NetInterface(mac, subnets)})


class InterfaceGone(BurrowError):
    """Teardown found a live container netns without the network's interface: the host side
    was cleaned, and the caller is told (netavark exits 1). CNI DEL, idempotent by its spec,
    ignores these."""


# -- setup -------------------------------------------------------------------------------


def setup(ctx: Context, options: NetworkOptions, netns: NetnsRef) -> dict[str, StatusBlock]:
    """Attach the container in `netns` to every network of `options`; all or nothing."""
    with netns_fd(netns) as fd:
        req = prepare(options)
        if not req.attachments:
            return {}
        with ctx.locked():
            return _setup(ctx, req, fd)


def _setup(ctx: Context, req: Request, fd: int) -> dict[str, StatusBlock]:
    from netns.netlink import Netlink

    plans = [(a, drivers.of(a).plan_setup(a, has_ports=bool(req.ports))) for a in req.attachments]
    # Routes via a gateway may go through another network's interface: after all of them.
    late = [(a, op) for a, ops in plans for op in ops if _via_gateway(op)]
    plans = [(a, tuple(op for op in ops if not _via_gateway(op))) for a, ops in plans]
    fw_nets, fw_ports = firewall_intent(ctx, req, req.attachments)
    status: dict[str, StatusBlock] = {}
    undo = UndoStack()
    with Netlink(fd) as nl:
        for att, ops in plans:
            with _network_context(att, len(plans)):
                nl.preflight(ops)
        listen = _dns_listen(ctx, req, nl)
        entries = [dns_entry(req, a, listen) for a in req.attachments if dns_on(ctx, a)]
        try:
            created: set[str] = set()
            quiet = _quiet_mld(ctx, plans)
            if quiet:  # unwound last: after the bridges this setup made are gone
                undo.push("rollback MLD filter", functools.partial(_sync_mld_filter, nl))
            for att, ops in plans:
                with _network_context(att, len(plans)):
                    _apply(nl, ops, undo, created)
                    status[att.name] = status_block(ctx, req, att, nl.mac(att.ifname), listen)
            for att, op in late:
                with _network_context(att, len(plans)):
                    _apply(nl, (op,), undo, created)
            _write_sysctl_d(ctx, plans, created, undo)
            if quiet and any(op.name in created for op in quiet):
                _sync_mld_filter(nl)
            if fw_nets or fw_ports:
                ctx.firewall.setup(fw_nets, fw_ports, fresh=created)
                # Only the networks whose bridge this setup made lose their rules again:
                # other containers may still use the rest.
                gone = [n for n in fw_nets if n.bridge in created]
                undo.push("rollback firewall", lambda: ctx.firewall.teardown(gone, fw_ports))
            if entries:
                nets = [(e.network, e.internal) for e in entries]
                undo.push(
                    "rollback: remove DNS entries", lambda: ctx.dns.remove(req.container_id, nets)
                )
                ctx.dns.add(entries)
                ctx.dns.notify(start=True, env=dict(ctx.env))
        except BaseException as exc:
            errors = undo.unwind()
            for e in errors:
                log.error("%s", e)
            if errors and isinstance(exc, BurrowError):
                raise MultiError([exc, *errors]) from exc
            raise
    return status


def _dns_listen(ctx: Context, req: Request, nl: Netlink) -> dict[str, tuple[str, ...]]:
    """Networks whose DNS server listens on an existing link's addresses (an unmanaged
    bridge, netavark 1.17); with none there, setup fails before any change."""
    out: dict[str, tuple[str, ...]] = {}
    for att in req.attachments:
        link = drivers.of(att).dns_link(att)
        if link is None or not dns_on(ctx, att):
            continue
        ips = nl.link_addresses("host", link)
        if not ips:
            raise BurrowError(
                f"network {att.name}: DNS is enabled but bridge {link} has no IP addresses "
                "for the DNS server to listen on"
            )
        out[att.name] = ips
    return out


def _write_sysctl_d(
    ctx: Context, plans: Sequence[tuple[Attachment, Sequence[Op]]], created: set[str],
    undo: UndoStack,
) -> None:
    """Rootful with systemd: a /run/sysctl.d file per bridge this setup made (netavark 1.16)."""
    if not sysctld.wanted(ctx.root, ctx.rootless):
        return
    for att, ops in plans:
        for op in ops:
            if isinstance(op, EnsureBridge) and op.name in created:
                sysctls = sysctld.bridge_sysctls(op.name, internal=att.internal, ipv6=op.ipv6)
                if sysctld.write(ctx.root, op.name, sysctls):
                    undo.push("rollback sysctl.d", functools.partial(sysctld.remove, ctx.root, op.name))


def _quiet_mld(ctx: Context, plans: Sequence[tuple[Attachment, Sequence[Op]]]
               ) -> list[EnsureBridge]:
    """The managed bridges a setup may make, whose container ports keep MLD reports among
    themselves off (netns/mldquiet.py); none without a firewall (`--firewall-driver none`)."""
    if ctx.firewall.name == "none":
        return []
    return [op for _, ops in plans for op in ops if isinstance(op, EnsureBridge)]


def _sync_mld_filter(nl: Netlink) -> None:
    """After this request made or deleted a bridge of the group: the table follows the netns's
    bridges, whichever engine made them (netns/mldquiet.py)."""
    mldquiet.sync(functools.partial(nl.group_bridge_left, mldquiet.QUIET_GROUP))


def _via_gateway(op: Op) -> bool:
    return isinstance(op, AddRoute) and op.ifname is None and op.route_type == "unicast"


@contextmanager
def _network_context(att: Attachment, count: int) -> Iterator[None]:
    """Name the network in an error when the request has more than one."""
    try:
        yield
    except BurrowError as exc:
        if count > 1:
            raise exc.wrap(f"network {att.name}") from None
        raise


def _apply(nl: Netlink, ops: Sequence[Op], undo: UndoStack, created: set[str]) -> None:
    for op in ops:
        try:
            out = nl.apply(op)
        except BurrowError:
            if isinstance(op, EnsureBridge) and op.name in nl.made_bridges:
                # Made, then its addresses failed (an IPv6 gateway on a host with IPv6 off:
                # EACCES): the bridge gives no undo, and was left behind by the failed setup.
                undo.push("rollback", functools.partial(nl.apply, DeleteBridgeIfUnused(op.name)))
            raise
        if out.undo is not None:
            undo.push("rollback", functools.partial(nl.apply, out.undo))
            if isinstance(out.undo, DeleteBridgeIfUnused):
                created.add(out.undo.name)


# -- teardown ----------------------------------------------------------------------------


def teardown(ctx: Context, options: NetworkOptions, netns: NetnsRef | None) -> None:
    """Undo what setup made; `netns` None (or gone) removes the host side only."""
    req = prepare(options, teardown=True)
    errors: list[BurrowError] = []
    with ExitStack() as stack:
        fd: int | None = None
        if netns is not None:
            try:
                fd = stack.enter_context(netns_fd(netns))
            except BurrowError as exc:
                # The netns is already gone (container died): its interfaces went with it, but
                # rules, bridges and DNS entries still need removing.
                log.warning("%s; removing host-side state only", exc)
        with ctx.locked():
            _teardown(ctx, req, fd, errors)
    if errors:
        raise MultiError(errors)


def _teardown(ctx: Context, req: Request, fd: int | None, errors: list[BurrowError]) -> None:
    from netns.netlink import Netlink

    with Netlink(fd) as nl:
        complete: list[Attachment] = []
        bridges_gone = False
        for att in req.attachments:
            for op in drivers.of(att).plan_teardown(att):
                if fd is None and getattr(op, "where", None) == "container":
                    continue
                try:
                    out = nl.apply(op)
                except BurrowError as exc:
                    errors.append(exc)
                    continue
                if isinstance(op, DeleteBridgeIfUnused | DetachFromBridge) and out.deleted:
                    complete.append(att)
                    bridge = op.name if isinstance(op, DeleteBridgeIfUnused) else op.bridge
                    if sysctld.wanted(ctx.root, ctx.rootless):
                        sysctld.remove(ctx.root, bridge)
                    bridges_gone = True
                if out.missing is not None:
                    # Host side cleaned all the same; the caller learns the interface was gone.
                    errors.append(InterfaceGone(
                        f"failed to delete container interface {out.missing}: it does not "
                        "exist in the container namespace"
                    ).wrap(f"network {att.name}"))
        if bridges_gone:
            _sync_mld_filter(nl)
    fw_nets, fw_ports = firewall_intent(ctx, req, complete)
    if fw_nets or fw_ports:
        try:
            ctx.firewall.teardown(fw_nets, fw_ports)
        except BurrowError as exc:
            errors.append(exc)
        # And by the driver that set the container up, if another (NETAVARK_FW changed).
        from netns.firewall import previous, select
        errors += previous.teardown(ctx.firewall, ctx.config_dir, ctx.env, req.container_id,
                                    fw_nets, fw_ports, select)
    dns_nets = [(a.name, a.internal) for a in req.attachments if dns_on(ctx, a)]
    if dns_nets:
        # A network whose bridge went has no container left: its other records are stale
        # (rootless Podman 4.3 never tears down a container whose rootlessport failed) and
        # would keep the server alive in a rootless netns Podman has dropped.
        emptied = [(a.name, a.internal) for a in complete if dns_on(ctx, a)]
        try:
            ctx.dns.remove(req.container_id, dns_nets, whole=emptied)
            ctx.dns.notify(start=False)
        except (BurrowError, OSError) as exc:
            errors.append(BurrowError(f"remove DNS entries: {exc}"))


# -- update and create -------------------------------------------------------------------


def update(ctx: Context, network: str, servers: Sequence[IPAddress]) -> None:
    """Change a network's upstream DNS servers and reload the DNS server."""
    names.network_name(network)
    if not ctx.dns.available or not _has_dns_config(ctx, network):
        # Netavark 1.7: a network without DNS (or no DNS server binary) has nothing to update.
        log.info("network %s has no DNS configuration: nothing to update", network)
        return
    ctx.dns.update_dns(network, [str(s) for s in servers])
    pid_file = ctx.dns.dir / statefiles.AARDVARK_PID
    if not pid_file.exists():
        raise BurrowError(f"DNS server is not running: no {statefiles.AARDVARK_PID} to signal")
    ctx.dns.notify(start=False)


def _has_dns_config(ctx: Context, network: str) -> bool:
    from netns.dns import config as dnsfmt

    return any((ctx.dns.dir / dnsfmt.filename(network, i)).exists() for i in (False, True))


def create(request: CreateRequest) -> Network:
    """Complete a network definition (bridge name, subnets, gateways) as Netavark 2.x does."""
    from netns.create import create_network

    return create_network(request)

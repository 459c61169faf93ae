"""Netavark semantics: validate all → plan all → apply with rollback → firewall → DNS → status.

Setup is transactional across networks: if anything fails, what was applied is undone in
reverse and the error is returned. Teardown attempts every step and reports all failures.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import os
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from netns import locks, statefiles, validate
from netns.aardvark import AardvarkConfig, Entry, dns_port
from netns.drivers import bridge, macvlan
from netns.errors import BurrowError, MultiError
from netns.firewall.types import Firewall, NetworkFw, PortFw
from netns.plan import DeleteBridgeIfUnused, DetachFromBridge, Op
from netns.schema import (
    NetAddress,
    NetInterface,
    NetworkOptions,
    StatusBlock,
    dump_status,
)
from netns.validate import Attachment, Request

if TYPE_CHECKING:
    from netns.netlink import Netlink

log = logging.getLogger("netns.engine")
SEARCH_DOMAIN = "dns.podman"


@dataclass(frozen=True)
class Context:
    config_dir: Path
    rootless: bool
    firewall: Firewall
    dns: AardvarkConfig
    env: Mapping[str, str]

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
            dns=AardvarkConfig(config_dir, aardvark_binary, dns_port(dict(env))),
            env=env,
        )

    @contextmanager
    def locked(self) -> Iterator[None]:
        """One setup/teardown at a time per config dir: bridges and rules are shared state."""
        self.config_dir.mkdir(parents=True, exist_ok=True)
        with locks.locked(self.config_dir / statefiles.ENGINE_LOCK):
            yield


def open_netns(path: str) -> int:
    try:
        return os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    except OSError as exc:
        raise BurrowError(
            f"invalid namespace path: IO error: {exc.strerror} (os error {exc.errno})"
        ) from None


def parse(stdin: bytes) -> Request:
    return validate.request(NetworkOptions.loads(stdin))


def plan_setup(att: Attachment, has_ports: bool) -> tuple[Op, ...]:
    if att.driver == "bridge":
        return bridge.plan_setup(att, has_ports=has_ports)
    return macvlan.plan_setup(att)


def plan_teardown(att: Attachment) -> tuple[Op, ...]:
    if att.driver == "bridge":
        return bridge.plan_teardown(att)
    return macvlan.plan_teardown(att)


def _firewalled(att: Attachment) -> bool:
    # Internal networks and unmanaged bridges get no rules; macvlan never does.
    return att.driver == "bridge" and att.managed and not att.internal


def _dns_on(ctx: Context, att: Attachment) -> bool:
    return att.driver == "bridge" and att.network.dns_enabled and ctx.dns.available


def network_fw(ctx: Context, att: Attachment) -> NetworkFw:
    port = ctx.dns.port if _dns_on(ctx, att) and ctx.dns.port != 53 else None
    return NetworkFw(
        name=att.name,
        id=att.network.id,
        bridge=att.bridge,
        subnets=tuple(s.subnet for s in att.network.subnets),
        gateways=tuple(g.ip for g in att.gateways),
        isolate=att.isolate,
        dns_port=port,
    )


def port_fw(ctx: Context, req: Request, att: Attachment) -> PortFw:
    v4, v6 = att.first_address(4), att.first_address(6)
    return PortFw(
        container_id=req.container_id,
        network=network_fw(ctx, att),
        container_v4=v4 if isinstance(v4, ipaddress.IPv4Address) else None,
        container_v6=v6 if isinstance(v6, ipaddress.IPv6Address) else None,
        mappings=req.ports,
    )


def dns_entry(ctx: Context, req: Request, att: Attachment) -> Entry:
    opts = req.options
    return Entry(
        network=att.name,
        internal=att.internal,
        listen_ips=tuple(str(g.ip) for g in att.gateways),
        network_dns=tuple(att.network.network_dns_servers or ()),
        container_id=opts.container_id,
        ipv4=tuple(str(a.ip) for a in att.addresses if a.version == 4),
        ipv6=tuple(str(a.ip) for a in att.addresses if a.version == 6),
        names=(opts.container_name, *att.aliases),
        container_dns=tuple(opts.dns_servers or ()),
    )


def status_block(ctx: Context, req: Request, att: Attachment, mac: str) -> StatusBlock:
    gw_by_net = {g.network: g.ip for g in att.gateways}
    subnets = tuple(NetAddress(gw_by_net.get(a.network), a) for a in att.addresses)
    if _dns_on(ctx, att):
        domains: tuple[str, ...] = (SEARCH_DOMAIN,)
        servers = tuple(str(g.ip) for g in att.gateways)
    else:
        domains, servers = (), tuple(req.options.dns_servers or ())
    return StatusBlock(domains, servers, {att.ifname: NetInterface(mac, subnets)})


def setup(ctx: Context, stdin: bytes, netns_path: str) -> str:
    fd = open_netns(netns_path)
    try:
        req = parse(stdin)
        if not req.attachments:
            return "{}"
        with ctx.locked():
            return dump_status(_setup(ctx, req, fd))
    finally:
        os.close(fd)


def _setup(ctx: Context, req: Request, fd: int) -> dict[str, StatusBlock]:
    from netns.netlink import Netlink, apply_all

    plans = [(att, plan_setup(att, bool(req.ports))) for att in req.attachments]
    fw_nets = [network_fw(ctx, a) for a in req.attachments if _firewalled(a)]
    fw_ports = (
        [port_fw(ctx, req, a) for a in req.attachments if _firewalled(a)] if req.ports else []
    )
    entries = [dns_entry(ctx, req, a) for a in req.attachments if _dns_on(ctx, a)]
    undo: list[Op] = []
    status: dict[str, StatusBlock] = {}
    with Netlink(fd) as nl:
        for att, ops in plans:
            try:
                nl.preflight(ops)
            except BurrowError as exc:
                raise exc.wrap(f"network {att.name}") if len(plans) > 1 else exc from None
        stage = "netlink"
        try:
            for att, ops in plans:
                try:
                    apply_all(nl, ops, undo)
                    status[att.name] = status_block(ctx, req, att, nl.mac(att.ifname))
                except BurrowError as exc:
                    raise exc.wrap(f"network {att.name}") if len(plans) > 1 else exc from None
            stage = "firewall"
            if fw_nets or fw_ports:
                ctx.firewall.setup(fw_nets, fw_ports)
            stage = "dns"
            if entries:
                ctx.dns.add(entries)
                ctx.dns.notify(start=True, env=dict(ctx.env))
        except BaseException as exc:
            errors = _undo_setup(ctx, req, nl, undo, stage, fw_ports, entries)
            for e in errors:
                log.error("rollback: %s", e)
            if errors and isinstance(exc, BurrowError):
                raise MultiError([exc, *errors]) from exc
            raise
    return status


def _undo_setup(
    ctx: Context, req: Request, nl: Netlink, undo: list[Op], stage: str,
    fw_ports: Sequence[PortFw], entries: Sequence[Entry],
) -> list[BurrowError]:  # fmt: skip
    from netns.netlink import rollback

    errors: list[BurrowError] = []
    if stage == "dns" and entries:
        try:
            ctx.dns.remove(req.container_id, [(e.network, e.internal) for e in entries])
        except (BurrowError, OSError) as exc:
            errors.append(BurrowError(f"rollback: remove DNS entries: {exc}"))
    # Undo the netlink prefix first, so the firewall sees which bridges this setup made and
    # then removes only those networks' rules (other containers may still use the rest).
    created = {op.name for op in undo if isinstance(op, DeleteBridgeIfUnused)}
    errors.extend(rollback(nl, undo))
    if stage == "dns":  # a failed firewall batch applied nothing
        gone = [
            network_fw(ctx, a) for a in req.attachments if _firewalled(a) and a.bridge in created
        ]
        try:
            ctx.firewall.teardown(gone, fw_ports)
        except BurrowError as exc:
            errors.append(exc.wrap("rollback firewall"))
    return errors


def teardown(ctx: Context, stdin: bytes, netns_path: str) -> None:
    from netns.netlink import Netlink

    req = parse(stdin)
    errors: list[BurrowError] = []
    try:
        fd: int | None = open_netns(netns_path)
    except BurrowError as exc:
        # The netns is already gone (container died): its interfaces went with it, but rules,
        # bridges and DNS entries still need removing.
        log.warning("%s; removing host-side state only", exc)
        fd = None
    try:
        with ctx.locked(), Netlink(fd) as nl:
            complete: list[Attachment] = []
            for att in req.attachments:
                for op in plan_teardown(att):
                    if fd is None and getattr(op, "where", None) == "container":
                        continue
                    try:
                        out = nl.apply(op)
                    except BurrowError as exc:
                        errors.append(exc)
                        continue
                    if isinstance(op, DeleteBridgeIfUnused | DetachFromBridge) and out.deleted:
                        complete.append(att)
            fw_nets = [network_fw(ctx, a) for a in complete if _firewalled(a)]
            fw_ports = (
                [port_fw(ctx, req, a) for a in req.attachments if _firewalled(a)]
                if req.ports
                else []
            )
            if fw_nets or fw_ports:
                try:
                    ctx.firewall.teardown(fw_nets, fw_ports)
                except BurrowError as exc:
                    errors.append(exc)
            dns_nets = [(a.name, a.internal) for a in req.attachments if _dns_on(ctx, a)]
            if dns_nets:
                try:
                    ctx.dns.remove(req.container_id, dns_nets)
                    ctx.dns.notify(start=False)
                except (BurrowError, OSError) as exc:
                    errors.append(BurrowError(f"remove DNS entries: {exc}"))
    finally:
        if fd is not None:
            os.close(fd)
    if errors:
        raise MultiError(errors)


def update(ctx: Context, network: str, servers: Sequence[str]) -> None:
    for s in servers:
        try:
            ipaddress.ip_address(s)
        except ValueError:
            raise BurrowError(f"invalid DNS server {s!r}: not an IP address") from None
    ctx.dns.update_dns(network, servers)
    pid_file = ctx.dns.dir / statefiles.AARDVARK_PID
    if not pid_file.exists():
        raise BurrowError(f"DNS server is not running: no {statefiles.AARDVARK_PID} to signal")
    ctx.dns.notify(start=False)


def create(stdin: bytes) -> str:
    from netns.create import create_network

    try:
        obj = json.loads(stdin)
    except ValueError as exc:
        raise BurrowError(
            f"failed to load network create options: JSON Decoding error: {exc}"
        ) from None
    return json.dumps(create_network(obj), separators=(",", ":"))
